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
//   {"cmd": "widths", "page": NAME}  -> {"ok": true, "content": W, "viewport": V}:
//          how wide the page's content is, and the window
// and cookies, screenshot and quit (driver.mjs).
import { drive } from "./driver.mjs";

const errors = new Map();

async function handle(request, { browser, pages, page }) {
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
    case "widths":
      return {
        ok: true,
        ...(await page(request.page).evaluate(() => ({
          content: document.documentElement.scrollWidth,
          viewport: window.innerWidth,
        }))),
      };
    default:
      return undefined;
  }
}

await drive({ handle });
