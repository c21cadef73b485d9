//! A real browser: Debian's headless Chromium, driven by puppeteer-core
//! (tests/browser/eventsource.mjs, installed by scripts/setup), signs in on
//! a page of another origin with `POST /v1/session` (a cookie) and reads a
//! topic with its own EventSource, which reconnects by itself with
//! Last-Event-ID when the server is killed and started again.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harness::{Server, TokenMinter, Workspace, client, event, publish};

const SECRET: &str = "a-browser-test-secret-0123456789";

/// Generous: nothing here asserts how long anything takes.
pub(crate) const WAIT: Duration = Duration::from_secs(90);

/// Chromium, driven by a puppeteer-core script of tests/browser (here
/// eventsource.mjs, with the test page served on loopback origins; the
/// console's test drives console.mjs).
pub(crate) struct Browser {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    log: PathBuf,
    /// Chromium leads its own process group (puppeteer starts it detached).
    browser_pid: Option<i32>,
    origins: Vec<String>,
}

impl Browser {
    fn start(dir: &Path, pages: usize) -> Browser {
        let (mut browser, ready) =
            Browser::launch(dir, "eventsource.mjs", &["--pages", &pages.to_string()]);
        browser.origins = ready["origins"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o.as_str().unwrap().to_owned())
            .collect();
        assert_eq!(browser.origins.len(), pages);
        browser
    }

    /// Starts `node <script> <args> --profile <dir>/chromium-profile` in
    /// tests/browser; returns it with its first line (`ready`).
    pub(crate) fn launch(dir: &Path, script: &str, args: &[&str]) -> (Browser, Value) {
        let scripts = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
        assert!(
            scripts.join("node_modules/puppeteer-core").exists()
                && Path::new("/usr/bin/chromium").exists(),
            "the browser is not installed: run scripts/setup (Debian's chromium, npm ci in tests/browser)"
        );
        let log = dir.join("browser.log");
        let mut child = Command::new("node")
            .arg(script)
            .args(args)
            .arg("--profile")
            .arg(dir.join("chromium-profile"))
            .current_dir(&scripts)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap_or_else(|err| panic!("start node tests/browser/{script}: {err}"));
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut browser = Browser {
            child,
            stdin,
            lines,
            log,
            browser_pid: None,
            origins: Vec::new(),
        };
        let ready = browser.answer("start");
        assert_eq!(ready["ready"], true, "{ready}");
        browser.browser_pid = ready["browser_pid"].as_i64().map(|pid| pid as i32);
        (browser, ready)
    }

    /// The browser's log (what its pages printed), for failure messages.
    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn answer(&self, what: &str) -> Value {
        match self.lines.recv_timeout(WAIT) {
            Ok(line) => serde_json::from_str(&line).unwrap(),
            Err(_) => panic!(
                "no answer from the browser to {what}; its log:\n{}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            ),
        }
    }

    pub(crate) fn call(&mut self, request: Value) -> Value {
        let stdin = self.stdin.as_mut().unwrap();
        writeln!(stdin, "{request}").unwrap();
        stdin.flush().unwrap();
        let answer = self.answer(&request["cmd"].to_string());
        assert_eq!(answer["ok"], true, "{request} -> {answer}");
        answer
    }

    /// Opens `origin` in a new tab, signs in with `token`, and streams `topic`.
    fn open(&mut self, page: &str, origin: &str, server: &Server, token: &str, topic: &str) {
        self.call(json!({"cmd": "open", "page": page, "origin": origin,
                         "switchyard": server.url, "token": token, "topic": topic}));
    }

    /// The same, with `?event=message`, listening with `onmessage` alone.
    fn open_unnamed(
        &mut self,
        page: &str,
        origin: &str,
        server: &Server,
        token: &str,
        topic: &str,
    ) {
        self.call(json!({"cmd": "open", "page": page, "origin": origin,
                         "switchyard": server.url, "token": token, "topic": topic,
                         "unnamed": true}));
    }

    fn state(&mut self, page: &str) -> Value {
        self.call(json!({"cmd": "state", "page": page}))["state"].take()
    }

    /// Polls the page's state until `done` holds.
    fn wait_for(&mut self, page: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + WAIT;
        loop {
            let state = self.state(page);
            if done(&state) {
                return state;
            }
            assert!(
                Instant::now() < deadline,
                "page {page}: {what} did not happen; its state: {state}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub(crate) fn screenshot(&mut self, page: &str, path: &Path) {
        self.call(json!({"cmd": "screenshot", "page": page, "path": path}));
        let png = std::fs::read(path).unwrap();
        assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // End of stdin: the script closes Chromium and exits.
        drop(self.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        if let Some(pid) = self.browser_pid {
            // SAFETY: a plain kill(2) of Chromium's process group.
            unsafe {
                libc::kill(-pid, libc::SIGKILL);
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The page's events as (id, n) pairs, and its cursors.
fn received(state: &Value) -> (Vec<(String, u64)>, Vec<String>) {
    let events = state["events"].as_array().unwrap();
    let seen = events
        .iter()
        .map(|e| {
            assert_eq!(e["type"], "test.event", "{e}");
            (
                e["data"]["id"].as_str().unwrap().to_owned(),
                e["data"]["data"]["n"].as_u64().unwrap(),
            )
        })
        .collect();
    let cursors = events
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect();
    (seen, cursors)
}

fn expected(range: std::ops::RangeInclusive<u64>) -> Vec<(String, u64)> {
    range.map(|n| (format!("e{n}"), n)).collect()
}

#[tokio::test]
async fn a_browser_streams_with_a_session_cookie_across_a_restart() {
    let ws = Workspace::new();
    ws.topic("orders", 2, "");
    // Two page origins on loopback (same host, other ports than the
    // server's): only the first is listed for CORS.
    let mut browser = Browser::start(ws.path(), 2);
    let (listed, unlisted) = (browser.origins[0].clone(), browser.origins[1].clone());
    let mut server = ws.serve_with(
        &["--cors-origins", &listed],
        &[("SWITCHYARD_JWT_SECRET", SECRET)],
    );

    let mut minter = TokenMinter::new();
    let reader = minter.mint(
        "HS256",
        SECRET,
        json!({"exp_in": 3600, "switchyard": {"subscribe": ["orders"]}}),
    );
    let writer = minter.mint(
        "HS256",
        SECRET,
        json!({"exp_in": 3600, "switchyard": {"publish": ["orders"]}}),
    );
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        // No kept-alive connection to the killed server is reused.
        .pool_max_idle_per_host(0)
        .default_headers(
            [(
                reqwest::header::AUTHORIZATION,
                format!("Bearer {writer}").parse().unwrap(),
            )]
            .into_iter()
            .collect(),
        )
        .build()
        .unwrap();

    // The stream needs a token: without one (no cookie, no header) it is refused.
    let anonymous = client()
        .get(format!("{}?from=earliest", server.stream_url("orders")))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);

    browser.open("listed", &listed, &server, &reader, "orders");
    for n in 1..=3 {
        // One key: one partition, so the stream's order is the publish order.
        let (status, body) = publish(
            &http,
            &server.events_url("orders"),
            &event(&format!("e{n}"), n, "a"),
        )
        .await;
        assert!(status < 300, "publish e{n}: {status} {body}");
    }
    let state = browser.wait_for("listed", "3 events", |s| {
        assert_ne!(s["ready_state"], 2, "the EventSource gave up: {s}");
        s["events"].as_array().unwrap().len() >= 3
    });
    assert_eq!(state["session"], 204, "{state}");
    let (seen, cursors) = received(&state);
    assert_eq!(seen, expected(1..=3), "{state}");
    assert!(cursors.iter().all(|c| !c.is_empty()), "{state}");

    // The session is an HttpOnly cookie on the server's host, which the
    // page's EventSource sent: its URL holds no token.
    let cookies = browser.call(json!({"cmd": "cookies"}))["cookies"].take();
    let cookie = cookies
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "switchyard_token")
        .unwrap_or_else(|| panic!("no session cookie in the browser: {cookies}"));
    assert_eq!(cookie["domain"], "127.0.0.1", "{cookie}");
    assert_eq!(cookie["http_only"], true, "{cookie}");
    assert_eq!(cookie["same_site"], "Lax", "{cookie}");

    // kill -9, and a new server on the same address and data: the page's
    // EventSource reconnects by itself, with Last-Event-ID.
    server = server.restart_same_port();
    for n in 4..=6 {
        let (status, body) = publish(
            &http,
            &server.events_url("orders"),
            &event(&format!("e{n}"), n, "a"),
        )
        .await;
        assert!(status < 300, "publish e{n}: {status} {body}");
    }
    browser.wait_for("listed", "6 events", |s| {
        assert_ne!(s["ready_state"], 2, "the EventSource gave up: {s}");
        s["events"].as_array().unwrap().len() >= 6
    });
    // Nothing more comes: every event exactly once, in order.
    std::thread::sleep(Duration::from_secs(2));
    let state = browser.state("listed");
    let (seen, cursors) = received(&state);
    assert_eq!(seen, expected(1..=6), "{state}");
    let distinct: std::collections::BTreeSet<&String> = cursors.iter().collect();
    assert_eq!(distinct.len(), 6, "cursors: {cursors:?}");
    assert!(
        state["opens"].as_u64().unwrap() >= 2,
        "no reconnection: {state}"
    );
    assert!(
        state["errors"].as_u64().unwrap() >= 1,
        "no reconnection: {state}"
    );
    assert_eq!(state["ready_state"], 1, "{state}");
    browser.screenshot("listed", &ws.path().join("listed.png"));

    // `?event=message`: a page that only sets `onmessage` gets every event.
    browser.open_unnamed("onmessage", &listed, &server, &reader, "orders");
    let state = browser.wait_for("onmessage", "6 events", |s| {
        assert_ne!(s["ready_state"], 2, "the EventSource gave up: {s}");
        s["events"].as_array().unwrap().len() >= 6
    });
    let events = state["events"].as_array().unwrap();
    assert!(events.iter().all(|e| e["type"] == "message"), "{state}");
    let ids: Vec<&str> = events
        .iter()
        .map(|e| e["data"]["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["e1", "e2", "e3", "e4", "e5", "e6"], "{state}");

    // A page on an unlisted origin gets nowhere: the preflight of its
    // sign-in is refused, and although the browser holds the cookie for the
    // server's host (set for the listed page), its EventSource cannot read
    // an answer that does not name its origin: it fails for good.
    browser.open("unlisted", &unlisted, &server, &reader, "orders");
    let state = browser.wait_for("unlisted", "the EventSource closing", |s| {
        s["ready_state"] == 2 && !s["session"].is_null()
    });
    assert!(
        state["session"]
            .as_str()
            .is_some_and(|s| s.starts_with("failed")),
        "{state}"
    );
    assert_eq!(state["events"], json!([]), "{state}");
    assert_eq!(state["opens"], 0, "{state}");
    browser.screenshot("unlisted", &ws.path().join("unlisted.png"));
    drop(server);
}
