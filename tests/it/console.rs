//! The web console, served by the binary at `/`, in a real browser:
//! Debian's headless Chromium driven by puppeteer-core
//! (tests/browser/console.mjs), typing and clicking as a person would and
//! reading what the page shows. Sign-in with a token (the HttpOnly cookie),
//! the topics a token may see, the live tail across a server restart, and a
//! dead letter replayed from the page; plus the rule that lets the console
//! (and only the console's own origin) write with the cookie.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::browser::{Browser, WAIT};
use crate::harness::{BIN, Server, Workspace, client, event, publish};

const SECRET: &str = "a-console-test-secret-0123456789";

/// Mints a token with `switchyard token` (HS256, [`SECRET`]).
fn token(scopes: &[&str]) -> String {
    let out = std::process::Command::new(BIN)
        .arg("token")
        .args(scopes)
        .args(["--ttl", "2h", "--secret", SECRET])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// An HTTP client presenting `token` as a bearer header.
fn bearer(token: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        // No kept-alive connection to a killed server is reused.
        .pool_max_idle_per_host(0)
        .default_headers(
            [(
                reqwest::header::AUTHORIZATION,
                format!("Bearer {token}").parse().unwrap(),
            )]
            .into_iter()
            .collect(),
        )
        .build()
        .unwrap()
}

/// One element the page shows (or holds hidden).
#[derive(Debug)]
struct Found {
    text: String,
    /// The values of the attributes asked for (`None`: not set).
    values: Vec<Option<String>>,
    visible: bool,
}

struct Console {
    browser: Browser,
    dir: PathBuf,
}

impl Console {
    fn start(dir: &Path) -> Console {
        let (browser, _) = Browser::launch(dir, "console.mjs", &[]);
        Console {
            browser,
            dir: dir.to_owned(),
        }
    }

    fn open(&mut self, page: &str, url: &str) {
        self.browser
            .call(json!({"cmd": "open", "page": page, "url": url}));
    }

    fn open_sized(&mut self, page: &str, url: &str, width: u32, height: u32) {
        self.browser.call(
            json!({"cmd": "open", "page": page, "url": url, "width": width, "height": height}),
        );
    }

    fn goto(&mut self, page: &str, url: &str) {
        self.browser
            .call(json!({"cmd": "goto", "page": page, "url": url}));
    }

    fn click(&mut self, page: &str, selector: &str) {
        self.browser
            .call(json!({"cmd": "click", "page": page, "selector": selector}));
    }

    fn type_text(&mut self, page: &str, selector: &str, text: &str) {
        self.browser
            .call(json!({"cmd": "type", "page": page, "selector": selector, "text": text}));
    }

    /// Every element matching `selector` (read at one moment), with the
    /// values of `attributes`.
    fn read(&mut self, page: &str, selector: &str, attributes: &[&str]) -> Vec<Found> {
        let answer = self.browser.call(
            json!({"cmd": "read", "page": page, "selector": selector, "attributes": attributes}),
        );
        answer["found"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| Found {
                text: f["text"].as_str().unwrap_or_default().to_owned(),
                values: f["values"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_str().map(str::to_owned))
                    .collect(),
                visible: f["visible"] == true,
            })
            .collect()
    }

    /// The values of `attribute` on the visible elements matching `selector`.
    fn values(&mut self, page: &str, selector: &str, attribute: &str) -> Vec<String> {
        self.read(page, selector, &[attribute])
            .into_iter()
            .filter(|f| f.visible)
            .filter_map(|mut f| f.values.remove(0))
            .collect()
    }

    /// The text of the visible elements matching `selector`.
    fn texts(&mut self, page: &str, selector: &str) -> Vec<String> {
        self.read(page, selector, &[])
            .into_iter()
            .filter(|f| f.visible)
            .map(|f| f.text)
            .collect()
    }

    /// Polls until `done` holds of what `look` reads; returns that.
    fn wait_for<T: std::fmt::Debug>(
        &mut self,
        what: &str,
        mut look: impl FnMut(&mut Console) -> T,
        done: impl Fn(&T) -> bool,
    ) -> T {
        let deadline = Instant::now() + WAIT;
        loop {
            let seen = look(self);
            if done(&seen) {
                return seen;
            }
            assert!(
                Instant::now() < deadline,
                "{what} did not happen; the page shows {seen:?}; the browser's log:\n{}",
                self.browser.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Signs in on the sign-in form with `token`.
    fn sign_in(&mut self, page: &str, token: &str) {
        self.wait_for(
            "the sign-in form",
            |c| c.texts(page, "#page-signin h1"),
            |h| h == &["Sign in"],
        );
        self.type_text(page, "#token", token);
        self.click(page, "#signin-submit");
    }

    /// The topics the topics page lists.
    fn listed_topics(&mut self, page: &str) -> BTreeSet<String> {
        self.values(page, "#topics article[data-topic]", "data-topic")
            .into_iter()
            .collect()
    }

    /// The live tail's rows: (topic, event id).
    fn tail_rows(&mut self, page: &str) -> Vec<(String, String)> {
        self.read(page, "#tail-events tr", &["data-topic", "data-event-id"])
            .into_iter()
            .filter(|f| f.visible)
            .map(|f| {
                let value = |i: usize| f.values[i].clone().unwrap_or_default();
                (value(0), value(1))
            })
            .collect()
    }

    /// Saves a screenshot in the test's directory (and, with
    /// `CONSOLE_SCREENSHOTS=<dir>`, a copy there to look at).
    fn screenshot(&mut self, page: &str, name: &str) -> PathBuf {
        let path = self.dir.join(name);
        self.browser.screenshot(page, &path);
        if let Some(dir) = std::env::var_os("CONSOLE_SCREENSHOTS") {
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::copy(&path, Path::new(&dir).join(name)).unwrap();
        }
        path
    }

    /// Whether the page's content fits the window's width (nothing to
    /// scroll sideways); answers both widths when it does not.
    fn overflow(&mut self, page: &str) -> Option<(u64, u64)> {
        let widths = self.browser.call(json!({"cmd": "widths", "page": page}));
        let (content, viewport) = (
            widths["content"].as_u64().unwrap(),
            widths["viewport"].as_u64().unwrap(),
        );
        (content > viewport).then_some((content, viewport))
    }

    /// Script errors and console errors (a refused CSP is one) so far,
    /// but for failed requests: the page meets 401s before sign-in and
    /// refused connections while the server restarts, and handles both.
    fn errors(&mut self, page: &str) -> Vec<String> {
        let errors = self.browser.call(json!({"cmd": "errors", "page": page}))["errors"].take();
        errors
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e.as_str().unwrap_or_default().to_owned())
            .filter(|e| !e.contains("Failed to load resource") && !e.contains("net::ERR_"))
            .collect()
    }
}

/// `UPDATE_DOCS_SCREENSHOT=1`: the screenshot also becomes the README's.
fn maybe_update_docs(path: &Path) {
    if std::env::var_os("UPDATE_DOCS_SCREENSHOT").is_some() {
        let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/console.png");
        std::fs::create_dir_all(docs.parent().unwrap()).unwrap();
        std::fs::copy(path, docs).unwrap();
    }
}

async fn publish_ok(http: &reqwest::Client, server: &Server, topic: &str, id: &str, n: u64) {
    // One key per topic: one partition, so each topic's order is the publish order.
    let (status, body) = publish(http, &server.events_url(topic), &event(id, n, "a")).await;
    assert_eq!(status, 200, "publish {id} to {topic}: {body}");
}

#[tokio::test]
async fn the_console_signs_in_lists_topics_and_tails_across_a_restart() {
    let ws = Workspace::new();
    ws.topic("orders", 2, "").topic("audit", 1, "");
    let mut server = ws.serve_with(&[], &[("SWITCHYARD_JWT_SECRET", SECRET)]);
    let writer = bearer(&token(&["--publish", "orders,audit"]));
    let mut console = Console::start(ws.path());

    // No cookie yet: the page asks for a token.
    console.open("main", &format!("{}/", server.url));
    console.sign_in("main", &token(&["--admin"]));
    let listed = console.wait_for(
        "the topics page",
        |c| c.listed_topics("main"),
        |t| !t.is_empty(),
    );
    assert_eq!(listed, BTreeSet::from(["audit".into(), "orders".into()]));
    let partitions = console.texts("main", "#topics [data-topic='orders'] .stat");
    assert!(
        partitions.iter().any(|s| s == "2partitions"),
        "{partitions:?}"
    );
    // The token went into an HttpOnly cookie, out of the script's reach.
    let cookies = console.browser.call(json!({"cmd": "cookies"}))["cookies"].take();
    let cookie = cookies
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "switchyard_token")
        .unwrap_or_else(|| panic!("no session cookie: {cookies}"));
    assert_eq!(cookie["http_only"], true, "{cookie}");
    assert_eq!(cookie["same_site"], "Lax", "{cookie}");
    // The topics page counts what is published (live numbers).
    publish_ok(&writer, &server, "orders", "counted", 0).await;
    console.wait_for(
        "the publish counted",
        |c| c.texts("main", "#topics [data-topic='orders'] .stat"),
        |s| s.iter().any(|s| s == "1published"),
    );
    console.screenshot("main", "topics.png");

    // The live tail of both topics, started from the topics page's link.
    console.goto(
        "main",
        &format!("{}/#/tail?topics=orders,audit", server.url),
    );
    console.wait_for(
        "the live tail connecting",
        |c| c.texts("main", "#tail-status"),
        |s| s.iter().any(|s| s.starts_with("live")),
    );
    let mut expected = BTreeSet::new();
    for n in 1..=3 {
        publish_ok(&writer, &server, "orders", &format!("o{n}"), n).await;
        expected.insert(("orders".to_owned(), format!("o{n}")));
    }
    publish_ok(&writer, &server, "audit", "a1", 1).await;
    expected.insert(("audit".to_owned(), "a1".to_owned()));
    let rows = console.wait_for(
        "4 events in the tail",
        |c| c.tail_rows("main"),
        |rows| rows.len() >= 4,
    );
    assert_eq!(rows.iter().cloned().collect::<BTreeSet<_>>(), expected);
    assert_eq!(rows.len(), 4, "{rows:?}");
    // The event view: attributes, position and the data as JSON.
    console.click("main", "#tail-events tr[data-event-id='o2']");
    let view = console.texts("main", "#event-view");
    let view = view.first().cloned().unwrap_or_default();
    assert!(
        view.contains("position") && view.contains("orders:"),
        "{view}"
    );
    assert!(view.contains("\"n\": 2"), "{view}");
    assert!(view.contains("test.event"), "{view}");

    // kill -9 and a new server on the same address: the page's
    // EventSource reconnects with Last-Event-ID and misses nothing.
    server = server.restart_same_port();
    for n in 4..=6 {
        publish_ok(&writer, &server, "orders", &format!("o{n}"), n).await;
        expected.insert(("orders".to_owned(), format!("o{n}")));
    }
    publish_ok(&writer, &server, "audit", "a2", 2).await;
    expected.insert(("audit".to_owned(), "a2".to_owned()));
    console.wait_for(
        "8 events in the tail",
        |c| c.tail_rows("main"),
        |rows| rows.len() >= 8,
    );
    // Nothing more comes: every event exactly once.
    std::thread::sleep(Duration::from_secs(2));
    let rows = console.tail_rows("main");
    assert_eq!(rows.len(), 8, "{rows:?}");
    assert_eq!(rows.iter().cloned().collect::<BTreeSet<_>>(), expected);
    // Newest first, each topic in publish order.
    let orders: Vec<&str> = rows
        .iter()
        .rev()
        .filter(|(topic, _)| topic == "orders")
        .map(|(_, id)| id.as_str())
        .collect();
    assert_eq!(orders, ["o1", "o2", "o3", "o4", "o5", "o6"]);

    // Pause holds what arrives; resume shows it.
    console.click("main", "#tail-pause");
    publish_ok(&writer, &server, "orders", "o7", 7).await;
    console.wait_for(
        "the paused tail holding an event",
        |c| c.texts("main", "#tail-status"),
        |s| s.iter().any(|s| s.contains("1 held")),
    );
    assert_eq!(console.tail_rows("main").len(), 8);
    console.click("main", "#tail-pause");
    console.wait_for(
        "the held event shown",
        |c| c.tail_rows("main"),
        |rows| rows.len() == 9,
    );

    // A type filter on the same topics goes on from the last event seen:
    // of what comes next, only the type asked for.
    console.type_text("main", "#tail-types", "test.other");
    console.click("main", "#tail-start");
    console.wait_for(
        "the filtered tail connecting",
        |c| c.texts("main", "#tail-status"),
        |s| s.iter().any(|s| s.starts_with("live")),
    );
    publish_ok(&writer, &server, "orders", "o8", 8).await;
    let mut other = event("x1", 1, "a");
    other["type"] = json!("test.other");
    let (status, body) = publish(&writer, &server.events_url("audit"), &other).await;
    assert_eq!(status, 200, "{body}");
    let rows = console.wait_for(
        "the other type shown",
        |c| c.tail_rows("main"),
        |rows| rows.len() >= 10,
    );
    assert_eq!(rows[0], ("audit".to_owned(), "x1".to_owned()), "{rows:?}");
    assert!(!rows.iter().any(|(_, id)| id == "o8"), "{rows:?}");

    console.click("main", "#tail-events tr[data-event-id='o7']");
    let path = console.screenshot("main", "tail.png");
    maybe_update_docs(&path);
    assert_eq!(console.errors("main"), Vec::<String>::new());
}

#[tokio::test]
async fn a_token_limited_to_one_topic_sees_only_that_topic() {
    let ws = Workspace::new();
    ws.topic("orders", 1, "")
        .topic("audit", 1, "")
        .topic("payroll", 1, "");
    let server = ws.serve_with(&[], &[("SWITCHYARD_JWT_SECRET", SECRET)]);
    let mut console = Console::start(ws.path());
    // On a phone-sized screen.
    console.open_sized("phone", &format!("{}/", server.url), 390, 844);
    console.sign_in("phone", &token(&["--subscribe", "orders"]));
    let listed = console.wait_for(
        "the topics page",
        |c| c.listed_topics("phone"),
        |t| !t.is_empty(),
    );
    assert_eq!(listed, BTreeSet::from(["orders".into()]));
    assert_eq!(
        console.overflow("phone"),
        None,
        "the topics page is wider than the phone"
    );
    // Nor does the live tail offer the others, nor the admin pages show.
    console.goto("phone", &format!("{}/#/tail", server.url));
    let choices = console.wait_for(
        "the tail's topics",
        |c| c.values("phone", "#tail-topics input", "value"),
        |v| !v.is_empty(),
    );
    assert_eq!(choices, ["orders"]);
    let nav = console.texts("phone", "#nav a");
    assert_eq!(nav, ["Topics", "Live tail"]);
    assert_eq!(
        console.overflow("phone"),
        None,
        "the live tail is wider than the phone"
    );
    console.screenshot("phone", "one-topic.png");

    // A bad token is refused on the form, with the server's reason.
    console.open("other", &format!("{}/", server.url));
    console.click("other", "#sign-out");
    console.sign_in("other", "not-a-token");
    let error = console.wait_for(
        "the sign-in error",
        |c| c.texts("other", "#signin-error"),
        |e| e.iter().any(|e| !e.is_empty()),
    );
    assert!(error[0].starts_with("not signed in"), "{error:?}");
    assert_eq!(console.errors("phone"), Vec::<String>::new());
}

// Several threads: the target (the sink) runs on this runtime while the
// test waits on the browser.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_is_listed_and_replayed_from_the_console() {
    let sink = crate::sink::Sink::start().await;
    sink.state.failing.store(true, Ordering::SeqCst);
    let ws = crate::handler::workspace();
    crate::handler::handler(
        &ws,
        "billing",
        &format!("{}/toggle", sink.url),
        "",
        "max_attempts = 2",
    );
    // A webhook source too, for the webhooks page.
    ws.topic(
        "hooks",
        1,
        "[[webhooks]]\nsource = \"gh\"\nscheme = \"github\"\nsecrets_env = [\"T_GH\"]\n",
    );
    // No key configured: the console needs no sign-in.
    let server = ws.serve_with(&[], &[("T_GH", "a-github-webhook-secret")]);
    let (status, body) = publish(
        &client(),
        &server.events_url("jobs"),
        &event("job-1", 1, "a"),
    )
    .await;
    assert_eq!(status, 200, "{body}");

    let mut console = Console::start(ws.path());
    console.open("main", &format!("{}/#/handlers", server.url));
    let letters = console.wait_for(
        "the dead letter listed",
        |c| {
            c.values(
                "main",
                "[data-handler='billing'] tr.dead-letter",
                "data-state",
            )
        },
        |s| !s.is_empty(),
    );
    assert_eq!(letters, ["unresolved"]);
    let health = console.texts("main", "[data-handler='billing'] h2 .badge");
    assert_eq!(health, ["unhealthy"]);
    let reason = console.texts("main", "[data-handler='billing'] tr.dead-letter summary");
    assert!(reason[0].contains("gave up after 2 attempts"), "{reason:?}");

    // The target works again: replay from the page, and the outcome shows.
    sink.state.failing.store(false, Ordering::SeqCst);
    console.click(
        "main",
        "[data-handler='billing'] tr.dead-letter input[type=checkbox]",
    );
    console.click("main", "[data-handler='billing'] button.replay-selected");
    let outcome = console.wait_for(
        "the dead letter resolved",
        |c| c.texts("main", "[data-handler='billing'] tr.dead-letter .badge"),
        |s| s.iter().any(|s| s == "resolved: succeeded"),
    );
    assert_eq!(outcome, ["resolved: succeeded"]);
    let results = crate::handler::outcomes(&server, "results", crate::handler::RESULT, 1).await;
    assert_eq!(results[0]["causationid"], "job-1");
    console.screenshot("main", "handlers.png");

    // The handler's consumer group, on the groups page.
    console.goto("main", &format!("{}/#/groups", server.url));
    let groups = console.wait_for(
        "the handler's group listed",
        |c| c.texts("main", "#groups [data-topic='jobs'] tr[data-group]"),
        |g| !g.is_empty(),
    );
    assert!(groups[0].contains("(handler billing)"), "{groups:?}");
    console.screenshot("main", "groups.png");

    // An unsigned webhook delivery is rejected, and counted on its page.
    let unsigned = || async {
        let response = client()
            .post(format!("{}/v1/webhooks/gh", server.url))
            .header("content-type", "application/json")
            .header("x-github-event", "push")
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401);
    };
    unsigned().await;
    console.goto("main", &format!("{}/#/webhooks", server.url));
    let stats = console.wait_for(
        "the rejected delivery counted",
        |c| c.texts("main", "#webhooks [data-source='gh'] .stat"),
        |s| s.iter().any(|s| s == "1rejected"),
    );
    assert!(stats.iter().any(|s| s == "1received"), "{stats:?}");
    assert!(stats.iter().any(|s| s == "0accepted"), "{stats:?}");
    // Rejected over time: another rejection while the page is open rises
    // above the chart's baseline (y = 34).
    unsigned().await;
    let rising = |points: &str| {
        points
            .split(' ')
            .filter_map(|p| p.split_once(',')?.1.parse::<f64>().ok())
            .any(|y| y < 34.0)
    };
    let chart = "#webhooks [data-source='gh'] .over-time[data-outcome='rejected'] polyline";
    let points = console.wait_for(
        "the rejection charted",
        |c| c.values("main", chart, "points"),
        |p| p.iter().any(|p| rising(p)),
    );
    assert_eq!(points.len(), 1, "{points:?}");
    let accepted = "#webhooks [data-source='gh'] .over-time[data-outcome='accepted'] polyline";
    let flat = console.values("main", accepted, "points");
    assert!(
        !flat.iter().any(|p| rising(p)),
        "nothing accepted: {flat:?}"
    );
    console.screenshot("main", "webhooks.png");
    assert_eq!(console.errors("main"), Vec::<String>::new());
}

/// The handlers page draws each handler's latency over the last refreshes
/// and lists its breaker's changes (published to its results topic): a
/// target failing its first three calls opens the breaker, which closes
/// again once a probe succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_handlers_page_charts_latency_and_lists_breaker_changes() {
    let sink = crate::sink::Sink::start().await;
    let ws = crate::handler::workspace();
    crate::handler::handler(
        &ws,
        "guarded",
        &format!("{}/fail-first/3", sink.url),
        "",
        "max_attempts = 6\nmax_concurrency = 1\n[policy.breaker]\nconsecutive_failures = 3\nopen_for = \"1s\"\nhalf_open_probes = 1",
    );
    let server = ws.serve(&[]);
    let (status, body) = publish(
        &client(),
        &server.events_url("jobs"),
        &event("job-1", 1, "a"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    crate::handler::outcomes(&server, "results", crate::handler::RESULT, 1).await;

    let mut console = Console::start(ws.path());
    console.open("main", &format!("{}/#/handlers", server.url));
    let chart = console
        .wait_for(
            "the latency chart",
            |c| {
                (
                    c.values(
                        "main",
                        "[data-handler='guarded'] .latency svg",
                        "aria-label",
                    ),
                    c.texts("main", "#notice"),
                    c.texts("main", "[data-handler='guarded'] h2"),
                )
            },
            |(labels, _, _)| !labels.is_empty(),
        )
        .0;
    assert!(chart[0].contains("latency p99"), "{chart:?}");
    console.wait_for(
        "the breaker history",
        |c| c.texts("main", "[data-handler='guarded'] .breaker-history summary"),
        |s| s.iter().any(|s| s.contains("(3)")),
    );
    console.click("main", "[data-handler='guarded'] .breaker-history summary");
    let changes = console.wait_for(
        "the breaker's changes, newest first",
        |c| {
            c.values(
                "main",
                "[data-handler='guarded'] tr.breaker-change",
                "data-to",
            )
        },
        |to| to.len() == 3,
    );
    assert_eq!(changes, ["closed", "half_open", "open"]);
    console.screenshot("main", "breakers.png");
}

/// The console of the demo (the topics and handlers the README's run
/// command serves): the topics page lists every demo topic, and only them;
/// every page fits a phone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_topics_page_lists_the_demo_topics() {
    use crate::asyncapi::{copy_dir, declared, repo};
    let ws = Workspace::new();
    copy_dir(&repo().join("topics"), &ws.topics_dir());
    copy_dir(&repo().join("handlers"), &ws.path().join("handlers"));
    let server = ws.serve(&[]);
    let (topics, _, _) = declared();
    let mut console = Console::start(ws.path());
    console.open("main", &format!("{}/#/topics", server.url));
    let shown: BTreeSet<String> = console
        .wait_for(
            "the demo topics listed",
            |c| c.values("main", "#topics article.topic", "data-topic"),
            |shown| shown.len() >= topics.len(),
        )
        .into_iter()
        .collect();
    assert_eq!(shown, topics);
    console.screenshot("main", "demo-topics.png");

    // Every page, filled with the demo's topics, handler and webhook
    // source, fits a phone's width: nothing to scroll sideways.
    console.open_sized("phone", &format!("{}/#/topics", server.url), 390, 844);
    for (page, filled) in [
        ("topics", "#topics article"),
        ("tail", "#tail-topics input"),
        ("handlers", "#handlers article"),
        ("groups", "#groups > *"),
        ("webhooks", "#webhooks article"),
    ] {
        console.goto("phone", &format!("{}/#/{page}", server.url));
        console.wait_for(
            &format!("the {page} page filled"),
            |c| c.read("phone", filled, &[]).iter().any(|f| f.visible),
            |filled| *filled,
        );
        assert_eq!(
            console.overflow("phone"),
            None,
            "the {page} page is wider than a phone"
        );
    }
    console.screenshot("phone", "demo-phone.png");
}

/// The console's writes (replay) take the cookie; nothing else's does:
/// not without the console's header, not from another origin (another
/// port of the same host is the same site, so `SameSite` lets the cookie
/// through), not with the token in the query.
#[tokio::test]
async fn only_the_console_s_own_origin_writes_with_the_cookie() {
    let ws = Workspace::new();
    ws.topic("orders", 1, "");
    let server = ws.serve_with(&[], &[("SWITCHYARD_JWT_SECRET", SECRET)]);
    let admin = token(&["--admin"]);
    let cookie = format!("switchyard_token={admin}");
    let origin = server.url.clone();
    let reload = format!("{}/v1/reload", server.url);
    let post = |headers: &[(&str, &str)]| {
        let mut request = client().post(&reload).header("cookie", &cookie);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.send()
    };
    let status = |r: reqwest::Response| r.status().as_u16();
    assert_eq!(status(post(&[]).await.unwrap()), 401);
    assert_eq!(
        status(post(&[("origin", &origin)]).await.unwrap()),
        401,
        "a cookie without the console header"
    );
    assert_eq!(
        status(
            post(&[
                ("x-switchyard-console", "1"),
                ("origin", "http://127.0.0.1:1")
            ])
            .await
            .unwrap()
        ),
        401,
        "another origin"
    );
    assert_eq!(
        status(post(&[("x-switchyard-console", "1")]).await.unwrap()),
        401,
        "no origin"
    );
    let answer = post(&[("x-switchyard-console", "1"), ("origin", &origin)])
        .await
        .unwrap();
    assert_eq!(answer.status(), 200, "{:?}", answer.text().await);
    // The overview says what the cookie's token may do, and what each
    // topic takes on disk (the embedded log's segments).
    let stored = |overview: &Value| overview["topics"][0]["stored_bytes"].as_u64();
    let before: Value = client()
        .get(format!("{}/v1/overview", server.url))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let published = client()
        .post(server.events_url("orders"))
        .bearer_auth(&admin)
        .header("content-type", "application/cloudevents+json")
        .body(event("o1", 1, "a").to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(published.status(), 200);
    let overview: Value = client()
        .get(format!("{}/v1/overview", server.url))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(overview["auth"], "token", "{overview}");
    assert_eq!(overview["admin"], true, "{overview}");
    assert_eq!(overview["topics"][0]["name"], "orders", "{overview}");
    let (before, after) = (stored(&before).unwrap(), stored(&overview).unwrap());
    assert!(after > before, "stored bytes {before} then {after}");
    // The page is served with a policy that keeps it to its own origin.
    let page = client()
        .get(format!("{}/", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let policy = page.headers()["content-security-policy"].to_str().unwrap();
    assert!(policy.contains("connect-src 'self'"), "{policy}");
    assert!(page.text().await.unwrap().contains("/console/app.js"));
    let missing = client()
        .get(format!("{}/console/nope.js", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
}

/// A burst far above what a person reads: the tail counts every event
/// (the page keeps the newest rows only), the newest on top. The rate it
/// kept up with is printed, not asserted (tests never assert timings).
#[tokio::test]
async fn the_live_tail_keeps_up_with_a_burst() {
    const EVENTS: u64 = 5000;
    const BATCH: u64 = 250;
    let ws = Workspace::new();
    ws.topic("burst", 2, "");
    let server = ws.serve(&[]);
    let mut console = Console::start(ws.path());
    console.open("main", &format!("{}/#/tail?topics=burst", server.url));
    console.wait_for(
        "the live tail connecting",
        |c| c.texts("main", "#tail-status"),
        |s| s.iter().any(|s| s.starts_with("live")),
    );
    let started = Instant::now();
    let http = client();
    for first in (0..EVENTS).step_by(BATCH as usize) {
        let batch: Vec<Value> = (first..first + BATCH)
            .map(|n| event(&format!("b{n}"), n, &format!("k{}", n % 2)))
            .collect();
        let response = http
            .post(server.events_url("burst"))
            .header("content-type", "application/cloudevents-batch+json")
            .body(Value::from(batch).to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    let published = started.elapsed();
    let status = console.wait_for(
        "every event counted",
        |c| c.texts("main", "#tail-status"),
        |s| s.iter().any(|s| s == &format!("live: {EVENTS} events")),
    );
    let shown = started.elapsed();
    println!(
        "live tail: {EVENTS} events published in {published:?}, all shown after {shown:?} ({:.0} events/s)",
        EVENTS as f64 / shown.as_secs_f64()
    );
    // Nothing more comes (each event counted once).
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(console.texts("main", "#tail-status"), status);
    let rows = console.tail_rows("main");
    assert_eq!(rows.len(), 500, "the page keeps the newest 500 rows");
    let distinct: BTreeSet<&String> = rows.iter().map(|(_, id)| id).collect();
    assert_eq!(distinct.len(), 500);
    assert!(
        rows.iter()
            .all(|(_, id)| id[1..].parse::<u64>().unwrap() >= EVENTS - 500 - 250),
        "old rows on the page: {rows:?}"
    );
    console.screenshot("main", "burst.png");
}
