// What the browser drivers (console.mjs, eventsource.mjs) share: Debian's
// headless Chromium through puppeteer-core (it downloads no browser), the
// named tabs, and the protocol with the Rust test: one JSON request per
// stdin line, one JSON answer per stdout line, after a first "ready" line.
// Every driver answers, besides its own commands:
//   {"cmd": "cookies"}  -> {"ok": true, "cookies": [{"name", "domain", "http_only", "same_site"}]}
//   {"cmd": "screenshot", "page": NAME, "path": FILE}  -> {"ok": true}
//   {"cmd": "quit"}  (or end of stdin) closes Chromium and exits.
// A failed request answers {"ok": false, "error": "..."}.
import readline from "node:readline";
import puppeteer from "puppeteer-core";

const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";

export function option(name, fallback) {
  const at = process.argv.indexOf(`--${name}`);
  return at >= 0 ? process.argv[at + 1] : fallback;
}

/** Starts Chromium (profile in --profile), prints the ready line with
 *  `ready`'s fields, then answers requests: `handle(request, driver)` for
 *  the driver's own commands (`undefined` for one it does not know), the
 *  shared ones here. `onQuit` runs before exiting. */
export async function drive({ handle, ready = {}, onQuit = () => {} }) {
  const browser = await puppeteer.launch({
    executablePath: CHROMIUM,
    headless: true, // with the arguments below: Chromium's own --headless=new
    args: ["--no-sandbox", "--headless=new", "--disable-dev-shm-usage"],
    userDataDir: option("profile", undefined),
    // The test ends us by closing stdin (see below); never leave Chromium behind.
    handleSIGINT: true,
    handleSIGTERM: true,
    handleSIGHUP: true,
  });
  const pages = new Map();
  const driver = {
    browser,
    pages,
    page(name) {
      const found = pages.get(name);
      if (!found) throw new Error(`no page named ${name}`);
      return found;
    },
  };

  let quitting = false;
  async function quit(code) {
    if (quitting) return;
    quitting = true;
    try {
      await browser.close();
    } catch {
      browser.process()?.kill("SIGKILL");
    }
    onQuit();
    process.exit(code);
  }

  async function answer(request) {
    const own = await handle(request, driver);
    if (own !== undefined) return own;
    switch (request.cmd) {
      case "cookies": {
        const cookies = await browser.defaultBrowserContext().cookies();
        return {
          ok: true,
          cookies: cookies.map((c) => ({
            name: c.name,
            domain: c.domain,
            http_only: c.httpOnly,
            same_site: c.sameSite ?? null,
          })),
        };
      }
      case "screenshot":
        await driver.page(request.page).screenshot({ path: request.path, fullPage: true });
        return { ok: true };
      case "quit":
        await quit(0);
        return { ok: true };
      default:
        throw new Error(`unknown command ${request.cmd}`);
    }
  }

  process.stdout.write(
    JSON.stringify({
      ready: true,
      ...ready,
      browser_pid: browser.process()?.pid ?? null,
      browser_version: await browser.version(),
    }) + "\n",
  );

  const lines = readline.createInterface({ input: process.stdin });
  for await (const line of lines) {
    if (line.trim() === "") continue;
    let reply;
    try {
      reply = await answer(JSON.parse(line));
    } catch (err) {
      reply = { ok: false, error: String(err?.stack ?? err) };
    }
    process.stdout.write(JSON.stringify(reply) + "\n");
  }
  // End of stdin: the test is done with us, or died.
  await quit(0);
}
