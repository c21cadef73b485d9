// Signs webhook requests with the senders' own npm libraries.
// Protocol: one JSON request per stdin line
//   {"scheme", "secret", "body", "timestamp" (unix s), "id"}
// and one JSON object of headers per stdout line.
import readline from "node:readline";
import { Webhook } from "standardwebhooks";
import { sign as signGithub } from "@octokit/webhooks-methods";
import Stripe from "stripe";

const stripe = new Stripe("sk_test_unused_by_signing");

async function headersFor(r) {
  switch (r.scheme) {
    case "standard-webhooks": {
      const signature = new Webhook(r.secret).sign(r.id, new Date(r.timestamp * 1000), r.body);
      return { "webhook-id": r.id, "webhook-timestamp": String(r.timestamp), "webhook-signature": signature };
    }
    case "github":
      return { "x-hub-signature-256": await signGithub(r.secret, r.body) };
    case "stripe":
      return {
        "stripe-signature": stripe.webhooks.generateTestHeaderString({
          payload: r.body,
          secret: r.secret,
          timestamp: r.timestamp,
        }),
      };
    default:
      throw new Error(`sign.mjs does not sign ${r.scheme}`);
  }
}

const lines = readline.createInterface({ input: process.stdin });
for await (const line of lines) {
  if (line.trim() === "") continue;
  process.stdout.write(JSON.stringify(await headersFor(JSON.parse(line))) + "\n");
}
