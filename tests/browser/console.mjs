// Drives a real headless Chromium (Debian's /usr/bin/chromium, through
// puppeteer-core) for tests/it/console.rs: the console served by Switchyard
// itself, used as a person would (typing, clicking, reading the page).
//
//   node console.mjs --profile DIR
//
// starts Chromium with its profile in DIR and prints one line:
//   {"ready": true, "browser_pid": PID}
// Then one JSON request per stdin line, one JSON answer per stdout line:
//   {"cmd": "open", "page": NAME, "url": URL, "width": W, "height": H}
//                                                  -> {"ok": true}  (a new tab)
//   {"cmd": "goto", "page": NAME, "url": URL}      -> {"ok": true}
//   {"cmd": "type", "page": NAME, "selector": S, "text": T} -> {"ok": true}
//   {"cmd": "click", "page": NAME, "selector": S}  -> {"ok": true}
//   {"cmd": "select", "page": NAME, "selector": S, "value": V} -> {"ok": true}
//   {"cmd": "read", "page": NAME, "selector": S, "attributes": [A, ...]}
//       -> {"ok": true, "found": [{"text", "values", "visible"}]}: every element
//          matching S (read at one moment), its text, the values of the
//          attributes asked for, and whether it is shown (neither it nor an
//          ancestor hidden)
//   {"cmd": "errors", "page": NAME}  -> {"ok": true, "errors": [...]}: script
//          errors and console errors (a CSP refusal is one) so far
//   {"cmd": "cookies"}  -> {"ok": true, "cookies": [{"name", "domain", "http_only", "same_site"}]}
//   {"cmd": "screenshot", "page": NAME, "path": FILE}  -> {"ok": true}
//   {"cmd": "quit"}  (or end of stdin) closes Chromium and exits.
// A failed request answers {"ok": false, "error": "..."}.
import readline from "node:readline";
import puppeteer from "puppeteer-core";

const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";

function option(name, fallback) {
  const at = process.argv.indexOf(`--${name}`);
  return at >= 0 ? process.argv[at + 1] : fallback;
}

const browser = await puppeteer.launch({
  executablePath: CHROMIUM,
  headless: true, // with the arguments below: Chromium's own --headless=new
  args: ["--no-sandbox", "--headless=new", "--disable-dev-shm-usage"],
  userDataDir: option("profile", undefined),
  handleSIGINT: true,
  handleSIGTERM: true,
  handleSIGHUP: true,
});
const pages = new Map();
const errors = new Map();

let quitting = false;
async function quit(code) {
  if (quitting) return;
  quitting = true;
  try {
    await browser.close();
  } catch {
    browser.process()?.kill("SIGKILL");
  }
  process.exit(code);
}

function page(name) {
  const found = pages.get(name);
  if (!found) throw new Error(`no page named ${name}`);
  return found;
}

async function handle(request) {
  switch (request.cmd) {
    case "open": {
      const tab = await browser.newPage();
      await tab.setViewport({ width: request.width ?? 1280, height: request.height ?? 800 });
      const seen = [];
      errors.set(request.page, seen);
      tab.on("console", (msg) => {
        process.stderr.write(`[${request.page}] console.${msg.type()}: ${msg.text()}\n`);
        if (msg.type() === "error") seen.push(msg.text());
      });
      tab.on("pageerror", (err) => {
        process.stderr.write(`[${request.page}] error: ${err}\n`);
        seen.push(String(err));
      });
      pages.set(request.page, tab);
      await tab.goto(request.url, { waitUntil: "load" });
      return { ok: true };
    }
    case "goto":
      await page(request.page).goto(request.url, { waitUntil: "load" });
      return { ok: true };
    case "type": {
      const tab = page(request.page);
      await tab.waitForSelector(request.selector, { visible: true, timeout: 30000 });
      await tab.type(request.selector, request.text);
      return { ok: true };
    }
    case "click": {
      const tab = page(request.page);
      await tab.waitForSelector(request.selector, { visible: true, timeout: 30000 });
      await tab.click(request.selector);
      return { ok: true };
    }
    case "select": {
      const tab = page(request.page);
      await tab.select(request.selector, request.value);
      return { ok: true };
    }
    case "read": {
      const found = await page(request.page).$$eval(
        request.selector,
        (elements, attributes) =>
          elements.map((e) => ({
            text: e.textContent,
            values: attributes.map((a) => e.getAttribute(a)),
            visible: !e.closest("[hidden]") && e.getClientRects().length > 0,
          })),
        request.attributes ?? [],
      );
      return { ok: true, found };
    }
    case "errors":
      return { ok: true, errors: errors.get(request.page) ?? [] };
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
      await page(request.page).screenshot({ path: request.path, fullPage: true });
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
    browser_pid: browser.process()?.pid ?? null,
    browser_version: await browser.version(),
  }) + "\n",
);

const lines = readline.createInterface({ input: process.stdin });
for await (const line of lines) {
  if (line.trim() === "") continue;
  let answer;
  try {
    answer = await handle(JSON.parse(line));
  } catch (err) {
    answer = { ok: false, error: String(err?.stack ?? err) };
  }
  process.stdout.write(JSON.stringify(answer) + "\n");
}
// End of stdin: the test is done with us, or died.
await quit(0);
