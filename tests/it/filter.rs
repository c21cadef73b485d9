//! CEL filters (`?filter=`, `subscribe.filter`, `tail --filter`, MCP
//! `read_events`' `filter`): only the events the expression is true of,
//! on SSE, pages, a handler and the command line; a bad expression is a
//! 400 (or a `check` problem) naming where it goes wrong.

use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::*;
use crate::sink::Sink;

/// `data.n >= 7 || data.k == "k2"` over events 0..10 whose k is `k{n % 4}`.
const FILTER: &str = r#"data.n >= 7 || data.k == "k2""#;
const PASSING: [u64; 5] = [2, 6, 7, 8, 9];

async fn publish_ten(server: &Server, topic: &str) {
    for n in 0..10 {
        let (status, body) = publish(
            &client(),
            &server.events_url(topic),
            &event(&format!("e-{n}"), n, &format!("k{}", n % 4)),
        )
        .await;
        assert_eq!(status, 200, "{body}");
    }
}

fn numbers(events: impl IntoIterator<Item = Value>) -> Vec<u64> {
    let mut ns: Vec<u64> = events
        .into_iter()
        .map(|e| e["data"]["n"].as_u64().unwrap())
        .collect();
    ns.sort();
    ns
}

fn encoded(text: &str) -> String {
    percent_encoding::utf8_percent_encode(text, percent_encoding::NON_ALPHANUMERIC).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filter_passes_only_matching_events_on_sse_pages_and_the_cli() {
    let ws = Workspace::new();
    ws.topic("jobs", 3, "");
    let server = ws.serve(&[]);
    publish_ten(&server, "jobs").await;

    // SSE, from the start (catch-up) and live.
    let url = format!(
        "{}?from=earliest&filter={}",
        server.stream_url("jobs"),
        encoded(FILTER)
    );
    let mut sse = Sse::connect(&url, None).await;
    let caught_up = sse.take(PASSING.len()).await;
    assert_eq!(numbers(caught_up.into_iter().map(|e| e.data)), PASSING);
    for n in [10, 3] {
        let (status, _) = publish(
            &client(),
            &server.events_url("jobs"),
            &event(&format!("e-{n}"), n, "k0"),
        )
        .await;
        assert_eq!(status, 200);
    }
    let live = sse.next(Duration::from_secs(20)).await.unwrap();
    assert_eq!(live.data["data"]["n"], 10);
    let nothing =
        tokio::time::timeout(Duration::from_millis(500), sse.next(Duration::from_secs(1))).await;
    assert!(nothing.is_err(), "event 3 does not pass");

    // A page.
    let page = get_json(&format!(
        "{}?limit=100&filter={}",
        server.events_url("jobs"),
        encoded(FILTER)
    ))
    .await;
    let events = page["events"].as_array().unwrap().clone();
    assert_eq!(numbers(events), [2, 6, 7, 8, 9, 10]);

    // A bad expression: 400 naming the place.
    for url in [
        format!(
            "{}?filter={}",
            server.stream_url("jobs"),
            encoded("data.n >")
        ),
        format!(
            "{}?filter={}",
            server.events_url("jobs"),
            encoded("data.n >")
        ),
    ] {
        let answer = client().get(&url).send().await.unwrap();
        assert_eq!(answer.status(), 400, "{url}");
        let body: Value = answer.json().await.unwrap();
        assert_eq!(body["error"]["code"], "invalid_filter", "{body}");
        assert_eq!(body["error"]["parameter"], "filter", "{body}");
        assert_eq!(
            (
                body["error"]["line"].clone(),
                body["error"]["column"].clone()
            ),
            (json!(1), json!(9)),
            "{body}"
        );
    }

    // The command line.
    let mut tail = Command::new(BIN)
        .args([
            "tail",
            "jobs",
            "--from",
            "earliest",
            "--filter",
            FILTER,
            "--url",
            &server.url,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = tail.stdout.take().unwrap();
    let lines = std::thread::spawn(move || {
        use std::io::BufRead;
        std::io::BufReader::new(stdout)
            .lines()
            .take(6)
            .map(|l| serde_json::from_str::<Value>(&l.unwrap()).unwrap())
            .collect::<Vec<_>>()
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !lines.is_finished() {
        assert!(
            std::time::Instant::now() < deadline,
            "tail printed too little"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = tail.kill();
    let _ = tail.wait();
    assert_eq!(numbers(lines.join().unwrap()), [2, 6, 7, 8, 9, 10]);
}

/// A handler with `subscribe.filter` calls its target for the matching
/// events only; a broken expression is a `check` problem naming the key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_filter_passes_only_matching_events() {
    let sink = Sink::start().await;
    let ws = crate::handler::workspace();
    let handler = |filter: &str| {
        format!(
            "name = \"picky\"\n[subscribe]\ntopic = \"jobs\"\nstart = \"earliest\"\nfilter = '{filter}'\n\
             [action]\nkind = \"http\"\nurl = \"{}/ok\"\n\
             [outputs]\nresults = \"results\"\ndead_letters = \"dead\"\n",
            sink.url
        )
    };
    std::fs::write(ws.path().join("handlers/picky.toml"), handler("data.n >")).unwrap();
    let out = Command::new(BIN)
        .args([
            "check",
            "--topics-dir",
            "topics",
            "--handlers-dir",
            "handlers",
        ])
        .current_dir(ws.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("subscribe.filter") && stderr.contains("column 9"),
        "{stderr}"
    );

    std::fs::write(ws.path().join("handlers/picky.toml"), handler(FILTER)).unwrap();
    let server = ws.serve(&[]);
    publish_ten(&server, "jobs").await;
    let results =
        crate::handler::outcomes(&server, "results", crate::handler::RESULT, PASSING.len()).await;
    assert_eq!(results.len(), PASSING.len());
    let received = sink.wait_for(PASSING.len()).await;
    let mut ns: Vec<u64> = received
        .iter()
        .map(|r| r.json()["data"]["n"].as_u64().unwrap())
        .collect();
    ns.sort();
    assert_eq!(ns, PASSING);
    // Nothing else comes.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(sink.received().len(), PASSING.len());
}
