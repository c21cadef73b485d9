// Drives a real headless Chromium (Debian's /usr/bin/chromium, through
// puppeteer-core) for tests/it/browser.rs: pages on their own origins that
// sign in to Switchyard with a cookie and read a topic with EventSource.
//
//   node eventsource.mjs --pages N --profile DIR
//
// serves the test page on N loopback ports (N origins, same host), starts
// Chromium with its profile in DIR, and prints one line:
//   {"ready": true, "origins": ["http://127.0.0.1:PORT", ...], "browser_pid": PID}
// Then one JSON request per stdin line, one JSON answer per stdout line:
//   {"cmd": "open", "page": NAME, "origin": O, "switchyard": URL, "token": T, "topic": TOPIC,
//    "unnamed": BOOL}
//       opens O in a new tab; the page POSTs /v1/session with the token as a
//       bearer header (Switchyard answers with a cookie), then opens
//       EventSource(URL/v1/topics/TOPIC/stream?from=earliest, {withCredentials: true})
//       and listens for its event types; with "unnamed", the stream is
//       ?event=message and the page listens with onmessage alone
//       -> {"ok": true}
//   {"cmd": "state", "page": NAME}
//       -> {"ok": true, "state": {"session", "ready_state", "opens", "errors", "events": [{"id", "type", "data"}]}}
// and cookies, screenshot and quit (driver.mjs).
import http from "node:http";
import { drive, option } from "./driver.mjs";

// The page: everything it learns goes into window.state, and on screen.
const PAGE = `<!doctype html>
<html><head><meta charset="utf-8"><title>switchyard EventSource test</title>
<style>body{font:14px monospace;margin:1em} li{margin:2px 0}</style></head>
<body>
<h1>EventSource from <span id="origin"></span></h1>
<p>session: <b id="session">not started</b> &middot; readyState: <b id="rs">-</b>
 &middot; opens: <b id="opens">0</b> &middot; errors: <b id="errors">0</b></p>
<ol id="events"></ol>
<script>
document.getElementById("origin").textContent = location.origin;
window.state = { session: null, ready_state: null, opens: 0, errors: 0, events: [] };
function show() {
  const s = window.state;
  document.getElementById("session").textContent = String(s.session);
  document.getElementById("rs").textContent = String(s.ready_state);
  document.getElementById("opens").textContent = String(s.opens);
  document.getElementById("errors").textContent = String(s.errors);
}
window.start = async function (switchyard, token, topic, unnamed) {
  const s = window.state;
  try {
    const answer = await fetch(switchyard + "/v1/session", {
      method: "POST",
      credentials: "include",
      headers: { Authorization: "Bearer " + token },
    });
    s.session = answer.status;
  } catch (err) {
    s.session = "failed: " + err;
  }
  show();
  // No token in this URL: the cookie set by /v1/session carries it.
  const source = new EventSource(
    switchyard + "/v1/topics/" + encodeURIComponent(topic) + "/stream?from=earliest" +
      (unnamed ? "&event=message" : ""),
    { withCredentials: true },
  );
  window.source = source;
  const record = (e) => {
    s.events.push({ id: e.lastEventId, type: e.type, data: JSON.parse(e.data) });
    const li = document.createElement("li");
    li.textContent = e.lastEventId + "  " + e.type + "  " + e.data;
    document.getElementById("events").appendChild(li);
  };
  if (unnamed) {
    source.onmessage = record;
  } else {
    for (const type of ["message", "test.event", "test.other"]) {
      source.addEventListener(type, record);
    }
  }
  source.onopen = () => { s.opens += 1; s.ready_state = source.readyState; show(); };
  source.onerror = () => { s.errors += 1; s.ready_state = source.readyState; show(); };
  s.ready_state = source.readyState;
  show();
};
</script></body></html>`;

async function servePage() {
  const server = http.createServer((req, res) => {
    if (req.url === "/" || req.url.startsWith("/?")) {
      res.writeHead(200, { "content-type": "text/html; charset=utf-8", "cache-control": "no-store" });
      res.end(PAGE);
    } else {
      res.writeHead(404);
      res.end();
    }
  });
  await new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", resolve);
  });
  return { server, origin: `http://127.0.0.1:${server.address().port}` };
}

const count = Number(option("pages", "1"));
const served = [];
for (let i = 0; i < count; i++) served.push(await servePage());

async function handle(request, { browser, pages, page }) {
  switch (request.cmd) {
    case "open": {
      const tab = await browser.newPage();
      tab.on("console", (msg) => process.stderr.write(`[${request.page}] console: ${msg.text()}\n`));
      tab.on("pageerror", (err) => process.stderr.write(`[${request.page}] error: ${err}\n`));
      await tab.goto(request.origin + "/", { waitUntil: "load" });
      pages.set(request.page, tab);
      await tab.evaluate(
        (switchyard, token, topic, unnamed) => window.start(switchyard, token, topic, unnamed),
        request.switchyard,
        request.token,
        request.topic,
        Boolean(request.unnamed),
      );
      return { ok: true };
    }
    case "state":
      return { ok: true, state: await page(request.page).evaluate(() => window.state) };
    default:
      return undefined;
  }
}

await drive({
  handle,
  ready: { origins: served.map((s) => s.origin) },
  onQuit: () => {
    for (const { server } of served) server.close();
  },
});
