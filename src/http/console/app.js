// Switchyard console: plain JavaScript, no build step. Everything it shows
// comes from the HTTP API with the session cookie (POST /v1/session);
// whatever an event holds is put on the page as text, never as HTML.
"use strict";

const POLL_MS = 2000;
/** Rows the live tail keeps on the page; older ones leave it. */
const MAX_ROWS = 500;
/** Events held while the tail is paused; past it the oldest are dropped. */
const MAX_PAUSED = 10000;
/** Samples in a topic's rate chart. */
const SPARK_SAMPLES = 60;
/** Pages of 1,000 events read from a dead-letter topic per refresh. */
const DEAD_LETTER_PAGES = 20;
/** Dead letters kept per handler (the newest). */
const MAX_DEAD_LETTERS = 5000;

const $ = (selector, root = document) => root.querySelector(selector);

/** An element: `attrs` sets properties (class, text, dataset, on*). */
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key in node && typeof value !== "string") node[key] = value;
    else node.setAttribute(key, value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

class ApiError extends Error {
  constructor(status, body) {
    super(body?.error?.message || `the server answered ${status}`);
    this.status = status;
    this.code = body?.error?.code;
  }
}

/** Calls the API on this origin with the session cookie. Writes carry the
 *  console header, without which the server takes no cookie for a write. */
async function api(path, { method = "GET", body, headers = {} } = {}) {
  const init = { method, credentials: "same-origin", headers: { accept: "application/json", ...headers } };
  if (method !== "GET") init.headers["x-switchyard-console"] = "1";
  if (body !== undefined) {
    init.headers["content-type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  let answer = null;
  if (response.status !== 204) {
    try {
      answer = await response.json();
    } catch {
      answer = null;
    }
  }
  if (!response.ok) throw new ApiError(response.status, answer);
  return answer;
}

const app = {
  overview: null,
  topics: [], // GET /v1/topics
  page: null,
  timer: null,
  generation: 0, // bumped when a page's polling stops
  samples: new Map(), // topic -> [{at, published}]
};

function notice(text) {
  const box = $("#notice");
  box.textContent = text || "";
  box.hidden = !text;
}

function show(id) {
  for (const page of document.querySelectorAll(".page")) page.hidden = page.id !== `page-${id}`;
  for (const link of document.querySelectorAll("#nav a")) {
    link.classList.toggle("active", link.dataset.page === id);
  }
}

// ---------------------------------------------------------------- sign-in

async function start() {
  notice("");
  try {
    app.overview = await api("/v1/overview");
  } catch (err) {
    if (err.status === 401) return signInPage(err.code === "invalid_token" ? err.message : "");
    return notice(`cannot reach the server: ${err.message}`);
  }
  const { overview } = app;
  $("#nav").hidden = false;
  for (const link of document.querySelectorAll("#nav [data-admin]")) link.hidden = !overview.admin;
  $("#sign-out").hidden = overview.auth !== "token";
  $("#who").textContent = overview.auth === "none" ? "open server (no tokens)" : describeScopes(overview);
  await loadTopics();
  route();
}

function describeScopes(overview) {
  if (overview.admin) return "signed in: admin";
  const scopes = overview.scopes || {};
  const parts = [];
  if (scopes.subscribe?.length) parts.push(`reads ${scopes.subscribe.join(", ")}`);
  if (scopes.publish?.length) parts.push(`publishes ${scopes.publish.join(", ")}`);
  return `signed in: ${parts.join("; ") || "no topics"}`;
}

function signInPage(message) {
  stopPolling();
  tail.stop();
  $("#nav").hidden = true;
  $("#sign-out").hidden = true;
  $("#who").textContent = "";
  $("#signin-error").textContent = message || "";
  show("signin");
  $("#token").focus();
}

$("#signin-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const token = $("#token").value.trim();
  $("#signin-error").textContent = "";
  try {
    // The bearer header is turned into the HttpOnly cookie SSE also uses.
    await api("/v1/session", { method: "POST", headers: { authorization: `Bearer ${token}` } });
  } catch (err) {
    if (err.code !== "no_tokens") {
      $("#signin-error").textContent = `not signed in: ${err.message}`;
      return;
    }
  }
  $("#token").value = "";
  if (!location.hash || location.hash === "#/signin") location.hash = "#/topics";
  await start();
});

$("#sign-out").addEventListener("click", async () => {
  try {
    await api("/v1/session", { method: "DELETE" });
  } finally {
    signInPage("");
  }
});

// ---------------------------------------------------------------- routing

function route() {
  if (!app.overview) return;
  const name = (location.hash.replace(/^#\/?/, "").split(/[?/]/)[0]) || "topics";
  const pages = { topics: topicsPage, tail: tailPage, handlers: handlersPage, groups: groupsPage, webhooks: webhooksPage };
  const page = pages[name] || topicsPage;
  stopPolling();
  app.page = page;
  show(pages[name] ? name : "topics");
  page();
}

window.addEventListener("hashchange", route);

/** Runs `refresh` now and every POLL_MS while its page is shown. A 401
 *  (the token expired) goes back to sign-in. */
function poll(refresh) {
  const generation = app.generation;
  const run = async () => {
    if (app.generation !== generation) return;
    try {
      await refresh();
      notice("");
    } catch (err) {
      if (err.status === 401) return signInPage(err.message);
      notice(err.message);
    }
    if (app.generation === generation) app.timer = setTimeout(run, POLL_MS);
  };
  run();
}

function stopPolling() {
  app.generation++;
  clearTimeout(app.timer);
  app.timer = null;
}

// ---------------------------------------------------------------- topics

async function loadTopics() {
  const answer = await api("/v1/topics");
  app.topics = answer.topics;
}

function overviewOf(name) {
  return app.overview.topics.find((t) => t.name === name) || {};
}

function duration(seconds) {
  if (seconds === null || seconds === undefined) return "forever";
  const units = [["d", 86400], ["h", 3600], ["m", 60], ["s", 1]];
  for (const [unit, size] of units) if (seconds % size === 0 && seconds >= size) return `${seconds / size}${unit}`;
  return `${seconds}s`;
}

function bytes(n) {
  if (n === null || n === undefined) return "no limit";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${Math.round(n * 10) / 10} ${units[i]}`;
}

function topicsPage() {
  poll(async () => {
    const [overview] = await Promise.all([api("/v1/overview"), loadTopics()]);
    app.overview = overview;
    const now = performance.now();
    for (const topic of overview.topics) {
      const samples = app.samples.get(topic.name) || [];
      samples.push({ at: now, published: topic.published });
      while (samples.length > SPARK_SAMPLES + 1) samples.shift();
      app.samples.set(topic.name, samples);
    }
    renderTopics();
  });
}

function sparkline(values, label = "publish rate over the last two minutes") {
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("class", "spark");
  svg.setAttribute("viewBox", `0 0 ${SPARK_SAMPLES} 36`);
  svg.setAttribute("preserveAspectRatio", "none");
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", label);
  const max = Math.max(1, ...values);
  const offset = SPARK_SAMPLES - values.length;
  const points = values.map((v, i) => `${offset + i},${(34 - (v / max) * 32).toFixed(1)}`).join(" ");
  const line = document.createElementNS(ns, "polyline");
  line.setAttribute("points", points || `0,34 ${SPARK_SAMPLES},34`);
  svg.append(line);
  return svg;
}

function renderTopics() {
  const box = $("#topics");
  const open = new Set([...box.querySelectorAll("details[open]")].map((d) => d.dataset.key));
  if (!app.topics.length) {
    box.replaceChildren(el("p", { class: "muted", text: "This token sees no topics." }));
    return;
  }
  const cards = app.topics.map((topic) => {
    const live = overviewOf(topic.name);
    const rate = countRates(app.samples.get(topic.name) || [], "published");
    const current = rate.length ? rate[rate.length - 1] : 0;
    const types = Object.entries(topic.types).map(([name, type]) =>
      el("li", {},
        el("details", { dataset: { key: `${topic.name}/${name}` }, open: open.has(`${topic.name}/${name}`) },
          el("summary", {}, el("code", { text: name }), type.description ? ` ${type.description}` : ""),
          el("pre", { text: JSON.stringify(type.schema, null, 2) }))));
    return el("article", { class: "card topic", dataset: { topic: topic.name } },
      el("h2", {}, topic.name),
      topic.description ? el("p", { class: "muted", text: topic.description }) : null,
      live.handler ? el("p", { class: "muted", text: `written by handler ${live.handler}` }) : null,
      el("div", { class: "stats" },
        stat(current.toFixed(current < 10 ? 1 : 0), "events/s now"),
        stat(live.published ?? 0, "published"),
        stat(live.subscribers ?? 0, "SSE subscribers"),
        stat(live.delivered ?? 0, "delivered over SSE"),
        stat(live.stored_bytes === null || live.stored_bytes === undefined ? "–" : bytes(live.stored_bytes), "stored"),
        stat(topic.partitions, "partitions"),
        stat(duration(topic.retention.max_age_seconds), "retention (age)"),
        stat(bytes(topic.retention.max_bytes), "retention (size)")),
      sparkline(rate),
      el("span", { class: "hint", text: "publish rate, last two minutes" }),
      el("h3", { text: `Event types (${Object.keys(topic.types).length})` }),
      el("ul", { class: "types" }, types),
      live.may_subscribe
        ? el("a", { href: `#/tail?topics=${encodeURIComponent(topic.name)}`, text: "Tail this topic →" })
        : null);
  });
  box.replaceChildren(el("div", { class: "grid" }, cards));
}

function stat(value, label) {
  return el("div", { class: "stat" }, el("b", { text: String(value) }), el("span", { text: label }));
}

// ---------------------------------------------------------------- live tail

const tail = {
  source: null,
  topics: [],
  from: "",
  paused: false,
  held: [], // events while paused
  dropped: 0,
  pending: [], // events waiting for the next frame
  frame: 0,
  lastId: "",
  received: 0,
  filterKey: "",
  retry: 0,

  /** Opens the stream of `topics`. With the same topics and start as
   *  before, it goes on from the last event seen (a new filter misses
   *  nothing between). */
  start(topics, from, types, subject) {
    const same = topics.join(",") === this.topics.join(",") && from === this.from;
    const resumeFrom = same ? this.lastId : "";
    this.stop();
    this.topics = topics;
    this.from = from;
    if (!same) this.lastId = "";
    if (!topics.length) return status("choose at least one topic", "trouble");
    const query = new URLSearchParams({ topics: topics.join(","), event: "topic" });
    if (resumeFrom) query.set("last_event_id", resumeFrom);
    else query.set("from", from);
    if (types) query.set("types", types);
    if (subject) query.set("subject", subject);
    this.filterKey = `${types}\n${subject}`;
    this.open(query);
  },

  open(query) {
    // EventSource reconnects by itself and sends Last-Event-ID: a server
    // restart loses nothing and repeats nothing.
    const source = new EventSource(`/v1/stream?${query}`);
    this.source = source;
    $("#tail-pause").disabled = false;
    status("connecting…");
    source.onopen = () => status(this.paused ? "paused" : "live", "live");
    for (const topic of this.topics) source.addEventListener(topic, (e) => this.receive(e));
    // The server ends a stream whose position retention removed; the
    // browser would reconnect to the same end, so stop here.
    source.addEventListener("lagged", () => {
      this.stop();
      this.lastId = "";
      status("fell behind the topics' retention: events were removed before they were shown; Start again", "trouble");
    });
    source.onerror = (e) => {
      if (e.data) status(`stream error: ${e.data}`, "trouble");
      if (source.readyState === EventSource.CONNECTING) status("reconnecting…", "trouble");
      else if (source.readyState === EventSource.CLOSED && this.source === source) this.reopen(query);
    };
  },

  /** The browser gave up (the server answered an error): try again from
   *  the last event seen, after a pause, and go to sign-in on a 401. */
  async reopen(query) {
    status("disconnected; retrying…", "trouble");
    this.source = null;
    clearTimeout(this.retry);
    try {
      await api("/v1/overview");
    } catch (err) {
      if (err.status === 401) return signInPage(err.message);
    }
    this.retry = setTimeout(() => {
      if (this.lastId) {
        query.delete("from");
        query.set("last_event_id", this.lastId);
      }
      this.open(query);
    }, POLL_MS);
  },

  stop() {
    clearTimeout(this.retry);
    if (this.source) this.source.close();
    this.source = null;
    $("#tail-pause").disabled = true;
    status("stopped");
  },

  receive(message) {
    this.lastId = message.lastEventId;
    let event;
    try {
      event = JSON.parse(message.data);
    } catch {
      event = { data: message.data };
    }
    const item = { topic: message.type, position: message.lastEventId, event };
    this.received++;
    if (this.paused) {
      this.held.push(item);
      if (this.held.length > MAX_PAUSED) {
        this.held.shift();
        this.dropped++;
      }
      status(`paused: ${this.held.length} held${this.dropped ? `, ${this.dropped} dropped` : ""}`);
      return;
    }
    this.pending.push(item);
    if (!this.frame) this.frame = requestAnimationFrame(() => this.flush());
  },

  /** Puts the pending events on the page, one DOM update per frame. */
  flush() {
    this.frame = 0;
    const body = $("#tail-events");
    const rows = document.createDocumentFragment();
    // Rows that would leave the page at once are never built.
    for (const item of this.pending.splice(0).slice(-MAX_ROWS)) rows.prepend(eventRow(item));
    body.prepend(rows);
    while (body.rows.length > MAX_ROWS) body.deleteRow(-1);
    if (this.source) status(`live: ${this.received} events`, "live");
  },

  pause() {
    this.paused = !this.paused;
    $("#tail-pause").textContent = this.paused ? "Resume" : "Pause";
    if (this.paused) {
      status("paused", "");
      return;
    }
    this.pending.push(...this.held.splice(0));
    this.dropped = 0;
    this.flush();
  },
};

function status(text, kind = "") {
  const line = $("#tail-status");
  line.textContent = text;
  line.className = `status ${kind}`;
}

function eventRow(item) {
  const { event } = item;
  const row = el("tr", {
    dataset: { eventId: String(event.id ?? ""), topic: item.topic, position: item.position },
    onclick: () => {
      for (const selected of document.querySelectorAll("#tail-events tr.selected")) selected.classList.remove("selected");
      row.classList.add("selected");
      eventView(item);
    },
  },
  el("td", { text: event.time ? new Date(event.time).toLocaleTimeString() : "" }),
  el("td", { text: item.topic }),
  el("td", { text: event.type ?? "" }),
  el("td", { text: event.subject ?? "" }),
  el("td", { text: event.id ?? "" }));
  return row;
}

function eventView(item) {
  const view = $("#event-view");
  const { data, data_base64: base64, ...attributes } = item.event;
  const rows = Object.entries(attributes).map(([key, value]) =>
    el("tr", {}, el("td", { text: key }), el("td", { class: "mono", text: typeof value === "string" ? value : JSON.stringify(value) })));
  view.replaceChildren(
    el("div", { class: "actions" },
      el("h2", { text: "Event" }),
      el("button", { type: "button", class: "secondary", text: "Close", onclick: () => { view.hidden = true; } })),
    el("table", {},
      el("tr", {}, el("td", { text: "topic" }), el("td", { class: "mono", text: item.topic })),
      el("tr", {}, el("td", { text: "position" }), el("td", { class: "mono", text: item.position })),
      rows),
    el("h3", { text: base64 !== undefined ? "data (base64)" : "data" }),
    el("pre", { class: "event-data", text: base64 !== undefined ? base64 : JSON.stringify(data, null, 2) }));
  view.hidden = false;
}

function tailPage() {
  const query = new URLSearchParams(location.hash.split("?")[1] || "");
  const wanted = (query.get("topics") || "").split(",").filter(Boolean);
  const readable = app.overview.topics.filter((t) => t.may_subscribe).map((t) => t.name);
  const box = $("#tail-topics");
  const checked = new Set(wanted.length ? wanted : tail.topics);
  box.replaceChildren(...readable.map((name) =>
    el("label", {}, el("input", { type: "checkbox", value: name, checked: checked.has(name) }), ` ${name}`)));
  if (!readable.length) box.replaceChildren(el("span", { class: "muted", text: "This token may read no topic." }));
  if (readable.length === 1) box.querySelector("input").checked = true;
  // A link from the topics page starts the tail at once.
  if (wanted.length && chosenTopics().join(",") !== tail.topics.join(",")) startTail();
}

function chosenTopics() {
  return [...document.querySelectorAll("#tail-topics input:checked")].map((input) => input.value);
}

function startTail() {
  tail.start(chosenTopics(), $("#tail-from").value, $("#tail-types").value.trim(), $("#tail-subject").value.trim());
}

$("#tail-form").addEventListener("submit", (event) => {
  event.preventDefault();
  startTail();
});
$("#tail-pause").addEventListener("click", () => tail.pause());
$("#tail-clear").addEventListener("click", () => {
  $("#tail-events").replaceChildren();
  $("#event-view").hidden = true;
  tail.received = 0;
});

// ---------------------------------------------------------------- handlers

const replaying = new Set(); // dead letters sent to replay, until resolved
const replayMessages = new Map(); // handler -> what its last replay answered

function handlersPage() {
  poll(async () => {
    const status = await api("/v1/handlers");
    const letters = await Promise.all(status.handlers.map((h) => deadLetters(h)));
    const histories = await Promise.all(status.handlers.map((h) => breakerHistory(h)));
    for (const handler of status.handlers) sampleLatency(handler);
    renderHandlers(status.handlers, letters, histories);
  });
}

/** Each handler's latency (p50, p99) at each refresh, for its chart. */
const latencySamples = new Map();

function sampleLatency(handler) {
  const samples = latencySamples.get(handler.name) || [];
  samples.push(handler.latency_ms ? { p50: handler.latency_ms.p50, p99: handler.latency_ms.p99 } : { p50: 0, p99: 0 });
  while (samples.length > SPARK_SAMPLES) samples.shift();
  latencySamples.set(handler.name, samples);
}

/** The breaker changes each handler has published (to its results topic,
 *  else its dead letters), read on from where the last refresh stopped;
 *  the newest BREAKER_HISTORY are kept. */
const breakerCache = new Map();
const BREAKER_HISTORY = 20;

async function breakerHistory(handler) {
  const topic = handler.results ?? handler.dead_letters;
  let cache = breakerCache.get(handler.name);
  if (!cache || cache.topic !== topic) {
    cache = { topic, from: "earliest", changes: [] };
    breakerCache.set(handler.name, cache);
  }
  const url = `/v1/topics/${encodeURIComponent(topic)}/events`;
  for (let page = 0; page < DEAD_LETTER_PAGES; page++) {
    let answer;
    try {
      answer = await api(`${url}?${new URLSearchParams({ from: cache.from, limit: "1000", filter: 'type == "switchyard.handler.breaker"' })}`);
    } catch (err) {
      if (err.code === "cursor_expired") breakerCache.delete(handler.name);
      throw err;
    }
    for (const event of answer.events) {
      if (event.data?.handler === handler.name) cache.changes.push(event);
    }
    cache.changes.splice(0, Math.max(0, cache.changes.length - BREAKER_HISTORY));
    const moved = answer.next !== cache.from;
    cache.from = answer.next;
    if (!answer.events.length || !moved) break;
  }
  return [...cache.changes].reverse();
}

/** A handler's breaker changes, newest first (kept open across refreshes). */
function breakerList(handler, changes, open) {
  if (!changes.length) return null;
  const key = `breakers/${handler.name}`;
  return el("details", { class: "breaker-history", dataset: { key }, open: open.has(key) },
    el("summary", { text: `Breaker history (${changes.length})` }),
    el("table", {},
      el("thead", {}, el("tr", {}, el("th", { text: "time" }), el("th", { text: "target" }), el("th", { text: "change" }))),
      el("tbody", {}, ...changes.map((event) =>
        el("tr", { class: "breaker-change", dataset: { to: event.data.to } },
          el("td", { text: event.time ? new Date(event.time).toLocaleString() : "–" }),
          el("td", {}, el("code", { text: event.data.target })),
          el("td", {}, el("span", { class: `badge ${event.data.from}`, text: event.data.from }), " → ",
            el("span", { class: `badge ${event.data.to}`, text: event.data.to })))))));
}

/** A handler's latency over the last refreshes: p99 drawn, p50 and p99 named. */
function latencyChart(handler) {
  const samples = latencySamples.get(handler.name) || [];
  if (!samples.length) return null;
  return el("div", { class: "latency" },
    el("span", { class: "muted", text: `latency p99 over the last ${samples.length} refreshes` }),
    sparkline(samples.map((s) => s.p99), `${handler.name}: latency p99 over the last refreshes`));
}

/** What has been read of each handler's dead-letter topic: each poll
 *  reads on from where the last one stopped. */
const deadLetterCache = new Map();

/** The handler's dead letters, newest first, each with its resolution if
 *  there is one. */
async function deadLetters(handler) {
  let cache = deadLetterCache.get(handler.name);
  if (!cache || cache.topic !== handler.dead_letters) {
    cache = { topic: handler.dead_letters, from: "earliest", letters: [], resolutions: new Map() };
    deadLetterCache.set(handler.name, cache);
  }
  // One reader at a time per cache (a refresh of a page left and shown
  // again may overlap the last one): each event is taken once.
  cache.reading = (cache.reading || Promise.resolve()).catch(() => {}).then(() => readOn(cache, handler));
  await cache.reading;
  for (const id of cache.resolutions.keys()) replaying.delete(id);
  return [...cache.letters].reverse().map((letter) => ({ letter, resolution: cache.resolutions.get(letter.id) }));
}

async function readOn(cache, handler) {
  const url = `/v1/topics/${encodeURIComponent(handler.dead_letters)}/events`;
  for (let page = 0; page < DEAD_LETTER_PAGES; page++) {
    let answer;
    try {
      answer = await api(`${url}?${new URLSearchParams({ from: cache.from, limit: "1000" })}`);
    } catch (err) {
      // Retention removed what the cursor points at: read it all again.
      if (err.code === "cursor_expired") deadLetterCache.delete(handler.name);
      throw err;
    }
    for (const event of answer.events) {
      if (event.data?.handler !== handler.name) continue;
      if (event.type === "switchyard.handler.failed") cache.letters.push(event);
      if (event.type === "switchyard.handler.resolved") cache.resolutions.set(event.data.dead_letter, event);
    }
    if (cache.letters.length > MAX_DEAD_LETTERS) cache.letters.splice(0, cache.letters.length - MAX_DEAD_LETTERS);
    const moved = answer.next !== cache.from;
    cache.from = answer.next;
    if (!answer.events.length || !moved) break;
  }
}

function percent(rate) {
  return rate === null || rate === undefined ? "–" : `${(rate * 100).toFixed(1)}%`;
}

let handlersShown = "";

function renderHandlers(handlers, letters, histories) {
  const box = $("#handlers");
  // Unchanged: the page stays as it is (nothing moves under the pointer).
  const shown = JSON.stringify([handlers, [...replaying], [...replayMessages],
    letters.map((list) => list.map(({ letter, resolution }) => [letter.id, resolution?.id])),
    histories.map((list) => list.map((event) => event.id))]);
  if (shown === handlersShown && box.isConnected && box.childElementCount) return;
  handlersShown = shown;
  if (!handlers.length) {
    box.replaceChildren(el("p", { class: "muted", text: "No handlers are loaded." }));
    return;
  }
  // Keep what the operator ticked across refreshes.
  const ticked = new Set([...box.querySelectorAll(".dead-letter input:checked")].map((i) => i.value));
  const open = new Set([...box.querySelectorAll("details[open]")].map((d) => d.dataset.key));
  box.replaceChildren(...handlers.map((handler, i) => {
    const breakers = Object.entries(handler.breakers || {});
    const unresolved = letters[i].filter((l) => !l.resolution);
    return el("article", { class: "card handler", dataset: { handler: handler.name } },
      el("h2", {}, `${handler.name} `, el("span", { class: `badge ${handler.health}`, text: handler.health })),
      handler.description ? el("p", { class: "muted", text: handler.description }) : null,
      el("p", { class: "muted" }, `reads `, el("code", { text: handler.topic }), ` in group `, el("code", { text: handler.group }),
        `; results to `, el("code", { text: handler.results ?? "–" }), `, dead letters to `, el("code", { text: handler.dead_letters })),
      el("div", { class: "stats" },
        stat(percent(handler.success_rate), "success rate"),
        stat(handler.latency_ms ? `${Math.round(handler.latency_ms.p50)} ms` : "–", "latency p50"),
        stat(handler.latency_ms ? `${Math.round(handler.latency_ms.p99)} ms` : "–", "latency p99"),
        stat(handler.in_flight, "in flight"),
        stat(handler.lag ?? "–", "lag"),
        stat(unresolved.length, "unresolved dead letters")),
      breakers.length
        ? el("p", {}, "Breakers: ", breakers.map(([target, state]) =>
          el("span", {}, el("code", { text: target }), " ", el("span", { class: `badge ${state}`, text: state }), " ")))
        : null,
      latencyChart(handler),
      handler.last_error ? el("p", { class: "error", text: lastError(handler.last_error) }) : null,
      breakerList(handler, histories[i], open),
      deadLetterList(handler, letters[i], ticked, open));
  }));
}

function lastError(error) {
  if (typeof error !== "object") return `last error: ${error}`;
  const at = error.at ? ` (${new Date(error.at).toLocaleString()})` : "";
  return `last error${at}: ${error.error ?? JSON.stringify(error)}`;
}

function deadLetterList(handler, letters, ticked, open) {
  const result = el("span", { class: "replay-result muted", text: replayMessages.get(handler.name) || "" });
  const say = (text) => {
    replayMessages.set(handler.name, text);
    result.textContent = text;
  };
  const replay = async (ids) => {
    say("replaying…");
    try {
      const answer = await api(`/v1/handlers/${encodeURIComponent(handler.name)}/replay`, {
        method: "POST",
        body: ids ? { ids } : {},
      });
      for (const id of answer.ids) replaying.add(id);
      const skipped = answer.skipped.length ? `; skipped ${answer.skipped.length}: ${answer.skipped.map((s) => s.reason).join("; ")}` : "";
      say(`replaying ${answer.replaying}${skipped}`);
    } catch (err) {
      if (err.status === 401) return signInPage(err.message);
      say(`replay failed: ${err.message}`);
    }
  };
  const rows = letters.map(({ letter, resolution }) => {
    const state = resolution ? "resolved" : replaying.has(letter.id) ? "replaying" : "unresolved";
    const input = letter.data?.event || {};
    const attempts = letter.data?.attempts || [];
    const key = `${handler.name}/${letter.id}`;
    return el("tr", { class: "dead-letter", dataset: { letterId: letter.id, state } },
      el("td", {}, resolution ? "" : el("input", { type: "checkbox", value: letter.id, checked: ticked.has(letter.id), "aria-label": `select ${letter.id}` })),
      el("td", {},
        el("span", { class: `badge ${state === "resolved" ? resolution.data?.outcome : state}`, text: state === "resolved" ? `resolved: ${resolution.data?.outcome}` : state })),
      el("td", { text: letter.time ? new Date(letter.time).toLocaleString() : "" }),
      el("td", {}, el("code", { text: `${input.type ?? ""} ${input.id ?? ""}` })),
      el("td", {},
        el("details", { dataset: { key }, open: open.has(key) },
          el("summary", { text: letter.data?.reason ?? "" }),
          el("h3", { text: `Attempts (${Array.isArray(attempts) ? attempts.length : attempts})` }),
          el("pre", { text: JSON.stringify(attempts, null, 2) }),
          el("h3", { text: "Event" }),
          el("pre", { text: JSON.stringify(input, null, 2) }))));
  });
  const selected = () => [...document.querySelectorAll(`[data-handler="${CSS.escape(handler.name)}"] .dead-letter input:checked`)].map((i) => i.value);
  return el("section", { class: "dead-letters" },
    el("h3", { text: `Dead letters (${letters.length})` }),
    letters.length
      ? [el("div", { class: "actions" },
        el("button", { type: "button", class: "replay-selected", text: "Replay selected", onclick: () => { const ids = selected(); if (ids.length) replay(ids); else say("tick the dead letters to replay"); } }),
        el("button", { type: "button", class: "replay-all secondary", text: "Replay all unresolved", onclick: () => replay(null) }),
        result),
      el("div", { class: "scroll" },
        el("table", {},
          el("thead", {}, el("tr", {}, ["", "state", "time", "event", "reason"].map((h) => el("th", { text: h })))),
          el("tbody", {}, rows)))]
      : el("p", { class: "muted", text: "None." }));
}

// ---------------------------------------------------------------- groups

function groupsPage() {
  poll(async () => {
    const listed = await Promise.all(app.overview.topics.map((t) =>
      api(`/v1/topics/${encodeURIComponent(t.name)}/groups`)));
    const box = $("#groups");
    const withGroups = listed.filter((l) => l.groups.length);
    if (!withGroups.length) {
      box.replaceChildren(el("p", { class: "muted", text: "No consumer groups." }));
      return;
    }
    box.replaceChildren(...withGroups.map((listing) =>
      el("article", { class: "card", dataset: { topic: listing.topic } },
        el("h2", { text: listing.topic }),
        el("div", { class: "scroll" },
          el("table", {},
            el("thead", {}, el("tr", {}, ["group", "lag", "leased", "members", "state", "committed", "filter"].map((h) => el("th", { text: h })))),
            el("tbody", {}, listing.groups.map((group) =>
              el("tr", { dataset: { group: group.name } },
                el("td", {}, el("code", { text: group.name }), group.handler ? el("span", { class: "muted", text: ` (handler ${group.handler})` }) : null),
                el("td", { text: `${group.lag}${group.partitions.some((p) => p.lag_at_least) ? "+" : ""}` }),
                el("td", { text: String(group.leased ?? 0) }),
                el("td", { text: memberText(group.members) }),
                el("td", { text: group.active ? "active" : "idle" }),
                el("td", {}, el("code", { text: group.committed })),
                el("td", {}, group.filter ? el("code", { text: group.filter }) : "")))))))));
  });
}

function memberText(members) {
  if (Array.isArray(members)) return members.length ? members.map((m) => (typeof m === "string" ? m : m.member ?? JSON.stringify(m))).join(", ") : "–";
  if (typeof members === "number") return String(members);
  return members ? JSON.stringify(members) : "–";
}

// ---------------------------------------------------------------- webhooks

/** Each webhook source's counts at each refresh, for its charts. */
const webhookSamples = new Map();

/** Per second between samples, of the count `key`. */
function countRates(samples, key) {
  const out = [];
  for (let i = 1; i < samples.length; i++) {
    const seconds = (samples[i].at - samples[i - 1].at) / 1000;
    out.push(seconds > 0 ? Math.max(0, samples[i][key] - samples[i - 1][key]) / seconds : 0);
  }
  return out;
}

function webhooksPage() {
  poll(async () => {
    app.overview = await api("/v1/overview");
    const sources = app.overview.webhooks || [];
    const box = $("#webhooks");
    if (!sources.length) {
      box.replaceChildren(el("p", { class: "muted", text: "No webhook sources are configured." }));
      return;
    }
    box.replaceChildren(el("div", { class: "grid" }, sources.map((source) => {
      const { received = 0, accepted = 0, duplicate = 0, ...rest } = source.outcomes;
      const rejected = Object.entries(rest).filter(([outcome]) => outcome !== "challenge");
      const rejectedCount = rejected.reduce((sum, [, n]) => sum + n, 0);
      const samples = webhookSamples.get(source.source) || [];
      samples.push({ at: Date.now(), received, accepted, duplicate, rejected: rejectedCount });
      while (samples.length > SPARK_SAMPLES + 1) samples.shift();
      webhookSamples.set(source.source, samples);
      return el("article", { class: "card", dataset: { source: source.source } },
        el("h2", { text: source.source }),
        el("p", { class: "muted" }, `${source.scheme} signatures, into `, el("code", { text: source.topic }),
          `; POST /v1/webhooks/${source.source}`),
        el("div", { class: "stats" },
          stat(received, "received"), stat(accepted, "accepted"), stat(duplicate, "duplicate"),
          stat(rejectedCount, "rejected")),
        ...["accepted", "rejected"].map((outcome) => el("div", { class: "over-time", dataset: { outcome } },
          sparkline(countRates(samples, outcome), `${source.source}: ${outcome} per second, last two minutes`),
          el("span", { class: "hint", text: `${outcome} per second, last two minutes` }))),
        rejected.length
          ? el("table", {}, el("tbody", {}, rejected.map(([reason, n]) => el("tr", {}, el("td", {}, el("code", { text: reason })), el("td", { text: String(n) })))))
          : null);
    })));
  });
}

start();
