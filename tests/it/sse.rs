//! SSE: exact resume, filters, slow subscribers, retention, shutdown.

use std::collections::HashSet;
use std::io::{Read, Write};
use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::*;

async fn publish_range(server: &Server, topic: &str, range: std::ops::Range<u64>) {
    publish_numbered(&server.events_url(topic), "e", range).await;
}

fn numbers(events: &[SseEvent]) -> Vec<u64> {
    events
        .iter()
        .map(|e| e.data["data"]["n"].as_u64().unwrap())
        .collect()
}

/// Every key's events arrive in publish order.
fn assert_per_key_order(events: &[SseEvent]) {
    for key in 0..7 {
        let of_key: Vec<_> = numbers(events)
            .into_iter()
            .filter(|n| n % 7 == key)
            .collect();
        assert!(
            of_key.windows(2).all(|w| w[0] < w[1]),
            "key k{key} out of order: {of_key:?}"
        );
    }
}

fn sorted(mut v: Vec<u64>) -> Vec<u64> {
    v.sort_unstable();
    v
}

#[tokio::test]
async fn resume_after_disconnect_delivers_exactly_the_missed_events() {
    let ws = Workspace::new();
    ws.topic("resume", 4, "");
    let server = ws.serve(&[]);
    publish_range(&server, "resume", 0..30).await;

    let mut sse = Sse::connect(
        &format!("{}?from=earliest", server.stream_url("resume")),
        None,
    )
    .await;
    let first = sse.take(12).await;
    assert!(first.iter().all(|e| e.event == "test.event"));
    let last_id = first.last().unwrap().id.clone();
    drop(sse);

    publish_range(&server, "resume", 30..50).await;
    let mut sse = Sse::connect(&server.stream_url("resume"), Some(&last_id)).await;
    let rest = sse.take(38).await;

    let mut all = first.clone();
    all.extend(rest.iter().cloned());
    assert_eq!(
        sorted(numbers(&all)),
        (0..50).collect::<Vec<_>>(),
        "each event exactly once"
    );
    assert_per_key_order(&all);
    // Nothing more is pending.
    publish_range(&server, "resume", 50..51).await;
    assert_eq!(numbers(&sse.take(1).await), [50]);
}

#[tokio::test]
async fn resume_across_a_server_restart() {
    let ws = Workspace::new();
    ws.topic("restart", 3, "");
    let server = ws.serve(&[]);
    publish_range(&server, "restart", 0..20).await;
    let mut sse = Sse::connect(
        &format!("{}?from=earliest", server.stream_url("restart")),
        None,
    )
    .await;
    let first = sse.take(9).await;
    let last_id = first.last().unwrap().id.clone();
    drop(sse);

    // SIGKILL, restart on the same data, publish more, resume.
    let server = server.restart();
    publish_range(&server, "restart", 20..35).await;
    let mut sse = Sse::connect(&server.stream_url("restart"), Some(&last_id)).await;
    let rest = sse.take(26).await;
    let mut all = first;
    all.extend(rest);
    assert_eq!(sorted(numbers(&all)), (0..35).collect::<Vec<_>>());
    assert_per_key_order(&all);
}

#[tokio::test]
async fn last_event_id_query_parameter_works_like_the_header() {
    let ws = Workspace::new();
    ws.topic("qid", 2, "");
    let server = ws.serve(&[]);
    publish_range(&server, "qid", 0..10).await;
    let mut sse = Sse::connect(&format!("{}?from=earliest", server.stream_url("qid")), None).await;
    let first = sse.take(4).await;
    let id = &first.last().unwrap().id;

    let mut by_header = Sse::connect(&server.stream_url("qid"), Some(id)).await;
    let mut by_query = Sse::connect(
        &format!("{}?last_event_id={id}", server.stream_url("qid")),
        None,
    )
    .await;
    let a = by_header.take(6).await;
    let b = by_query.take(6).await;
    assert_eq!(numbers(&a), numbers(&b));
    let ids_a: Vec<_> = a.iter().map(|e| e.id.clone()).collect();
    let ids_b: Vec<_> = b.iter().map(|e| e.id.clone()).collect();
    assert_eq!(ids_a, ids_b);
    let mut all = first;
    all.extend(a);
    assert_eq!(sorted(numbers(&all)), (0..10).collect::<Vec<_>>());

    // A malformed id is a 400, not a silent restart from somewhere.
    let response = client()
        .get(server.stream_url("qid"))
        .header("last-event-id", "garbage")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["header"], "last-event-id");
}

#[tokio::test]
async fn filters_by_type_and_subject_prefix() {
    let ws = Workspace::new();
    ws.topic("filters", 2, "");
    let server = ws.serve(&[]);
    let client = client();
    let url = server.events_url("filters");
    let mut by_type = Sse::connect(
        &format!("{}?types=test.other", server.stream_url("filters")),
        None,
    )
    .await;
    let mut by_subject = Sse::connect(
        &format!("{}?subject=acct/7", server.stream_url("filters")),
        None,
    )
    .await;
    for n in 0..12u64 {
        let mut e = event(&format!("f-{n}"), n, "k");
        if n % 3 == 0 {
            e["type"] = json!("test.other");
        }
        if n % 4 == 0 {
            e["subject"] = json!(format!("acct/7/{n}"));
        } else {
            e["subject"] = json!(format!("acct/8/{n}"));
        }
        let (status, body) = publish(&client, &url, &e).await;
        assert_eq!(status, 200, "{body}");
    }
    let other = by_type.take(4).await;
    assert_eq!(sorted(numbers(&other)), [0, 3, 6, 9]);
    assert!(other.iter().all(|e| e.event == "test.other"));
    let acct7 = by_subject.take(3).await;
    assert_eq!(sorted(numbers(&acct7)), [0, 4, 8]);

    // Resuming a filtered stream still skips what the filter excludes.
    let mut resumed = Sse::connect(
        &format!("{}?types=test.other", server.stream_url("filters")),
        Some(&other[1].id),
    )
    .await;
    assert_eq!(sorted(numbers(&resumed.take(2).await)), [6, 9]);
}

#[tokio::test]
async fn a_stalled_subscriber_delays_neither_publishers_nor_a_fast_subscriber() {
    let ws = Workspace::new();
    ws.topic("stall", 2, "");
    let server = ws.serve(&[]);

    // A client that sends the request and then never reads.
    let mut stalled = std::net::TcpStream::connect(&server.addr).unwrap();
    write!(
        stalled,
        "GET /v1/topics/stall/stream?from=earliest HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    .unwrap();
    let mut fast = Sse::connect(
        &format!("{}?from=earliest", server.stream_url("stall")),
        None,
    )
    .await;

    // ~24 MiB: far more than the socket buffers and the broadcast hold.
    let count = 3000u64;
    let pad = "x".repeat(8000);
    let client = client();
    let url = server.events_url("stall");
    let started = std::time::Instant::now();
    let publisher = {
        let client = client.clone();
        let url = url.clone();
        tokio::spawn(async move {
            for n in 0..count {
                let mut e = event(&format!("s-{n}"), n, &format!("k{}", n % 7));
                e["data"]["pad"] = json!(pad);
                let (status, body) = publish(&client, &url, &e).await;
                assert_eq!(status, 200, "{body}");
            }
        })
    };
    let received = fast.take(count as usize).await;
    publisher.await.unwrap();
    assert_eq!(sorted(numbers(&received)), (0..count).collect::<Vec<_>>());
    assert_per_key_order(&received);
    eprintln!(
        "fast subscriber got {count} events in {:?} beside a stalled one",
        started.elapsed()
    );

    // The stalled client, once it reads, still gets every event: it caught
    // up from the log with its own cursor.
    stalled
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut seen = HashSet::new();
    let mut buffer = Vec::new();
    let mut chunk = vec![0u8; 1 << 16];
    while seen.len() < count as usize {
        let n = stalled.read(&mut chunk).expect("stalled client read");
        assert!(n > 0, "stream closed after {} events", seen.len());
        buffer.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buffer);
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("data: ")
                && let Ok(value) = serde_json::from_str::<Value>(rest)
            {
                seen.insert(value["data"]["n"].as_u64().unwrap());
            }
        }
        // Keep only the unfinished last line for the next round.
        let keep = buffer
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |i| i + 1);
        buffer.drain(..keep);
    }
    assert_eq!(seen.len(), count as usize);
}

#[tokio::test]
async fn a_subscriber_behind_retention_gets_lagged_and_is_closed() {
    let ws = Workspace::new();
    ws.topic(
        "short",
        1,
        "segment_bytes = \"4KiB\"\nretention_bytes = \"8KiB\"",
    );
    let server = ws.serve(&[]);
    let client = client();
    let url = server.events_url("short");
    for n in 0..100u64 {
        let mut e = event(&format!("r-{n}"), n, "k");
        e["data"]["pad"] = json!("y".repeat(500));
        let (status, body) = publish(&client, &url, &e).await;
        assert_eq!(status, 200, "{body}");
    }
    // Retention runs about once a second.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let oldest = loop {
        let response = client
            .get(&url)
            .query(&[("from", "0")])
            .send()
            .await
            .unwrap();
        if response.status() == 410 {
            let body: Value = response.json().await.unwrap();
            assert_eq!(body["error"]["code"], "cursor_expired");
            break body["error"]["oldest"].as_str().unwrap().to_owned();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "retention never removed a segment"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_ne!(oldest, "0");

    let mut sse = Sse::connect(&server.stream_url("short"), Some("0")).await;
    let lagged = sse
        .next(Duration::from_secs(10))
        .await
        .expect("a lagged event");
    assert_eq!(lagged.event, "lagged");
    assert_eq!(lagged.data["oldest"], oldest);
    assert!(
        sse.next(Duration::from_secs(10)).await.is_none(),
        "the stream closes after lagged"
    );

    // From the oldest cursor, the retained tail is there up to the last event.
    let mut sse = Sse::connect(&server.stream_url("short"), Some(&oldest)).await;
    let first = sse.take(1).await;
    let start = first[0].data["data"]["n"].as_u64().unwrap();
    let rest = sse.take((99 - start) as usize).await;
    assert_eq!(rest.last().unwrap().data["data"]["n"], 99);
}

#[tokio::test]
async fn heartbeats_keep_idle_streams_alive() {
    let ws = Workspace::new();
    ws.topic("beat", 1, "");
    let server = ws.serve(&["--heartbeat", "200ms"]);
    let mut stream = std::net::TcpStream::connect(&server.addr).unwrap();
    write!(
        stream,
        "GET /v1/topics/beat/stream HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    .unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut received = Vec::new();
    let mut chunk = [0u8; 4096];
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !String::from_utf8_lossy(&received).contains("\n:\n") {
        assert!(
            std::time::Instant::now() < deadline,
            "no heartbeat: {}",
            String::from_utf8_lossy(&received)
        );
        let n = stream.read(&mut chunk).unwrap();
        received.extend_from_slice(&chunk[..n]);
    }
    let text = String::from_utf8_lossy(&received).to_lowercase();
    assert!(text.contains("x-accel-buffering: no"), "{text}");
    assert!(text.contains("retry: "), "{text}");
}

#[tokio::test]
async fn shutdown_completes_with_open_streams() {
    let ws = Workspace::new();
    ws.topic("bye", 2, "");
    let mut server = ws.serve(&[]);
    let mut streams = Vec::new();
    for _ in 0..5 {
        streams.push(Sse::connect(&server.stream_url("bye"), None).await);
    }
    publish_range(&server, "bye", 0..3).await;
    for sse in &mut streams {
        sse.take(3).await;
    }
    let status = server.terminate();
    assert!(status.success(), "exit status {status}");
    for sse in &mut streams {
        assert!(
            sse.next(Duration::from_secs(5)).await.is_none(),
            "stream ended"
        );
    }
    assert!(server.log().contains("stopped"));
}

/// `?event=message`: every event goes out unnamed, so a client that only
/// listens to `onmessage` gets them all (caught up and live alike); any
/// other value is a 400 naming the parameter.
#[tokio::test]
async fn unnamed_events_reach_onmessage() {
    let ws = Workspace::new();
    ws.topic("plain", 2, "");
    let server = ws.serve(&[]);
    let client = client();
    let url = server.events_url("plain");
    let mut other = event("e2", 2, "b");
    other["type"] = json!("test.other");
    for e in [event("e1", 1, "a"), other] {
        assert_eq!(publish(&client, &url, &e).await.0, 200);
    }
    let mut sse = Sse::connect(
        &format!("{}?from=earliest&event=message", server.stream_url("plain")),
        None,
    )
    .await;
    let caught_up = sse.take(2).await;
    publish(&client, &url, &event("e3", 3, "a")).await;
    let live = sse.take(1).await;
    let all: Vec<&SseEvent> = caught_up.iter().chain(&live).collect();
    for e in &all {
        assert_eq!(e.event, "message", "named: {}", e.data);
        assert!(!e.id.is_empty());
    }
    let mut ids: Vec<&str> = all.iter().map(|e| e.data["id"].as_str().unwrap()).collect();
    ids.sort();
    assert_eq!(ids, ["e1", "e2", "e3"]);

    let response = client
        .get(format!("{}?event=named", server.stream_url("plain")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "invalid_query", "{body}");
    assert_eq!(body["error"]["parameter"], "event", "{body}");
}

/// `?event=topic` on a stream over several topics: each event is named by
/// the topic it came from (caught up and live alike), so one connection
/// tells them apart (the console's live tail).
#[tokio::test]
async fn events_named_by_topic_on_a_stream_over_several() {
    let ws = Workspace::new();
    ws.topic("left", 2, "").topic("right", 1, "");
    let server = ws.serve(&[]);
    let client = client();
    assert_eq!(
        publish(&client, &server.events_url("left"), &event("l1", 1, "a"))
            .await
            .0,
        200
    );
    assert_eq!(
        publish(&client, &server.events_url("right"), &event("r1", 1, "a"))
            .await
            .0,
        200
    );
    let mut sse = Sse::connect(
        &format!(
            "{}/v1/stream?topics=left,right&from=earliest&event=topic",
            server.url
        ),
        None,
    )
    .await;
    let mut seen = sse.take(2).await;
    publish(&client, &server.events_url("right"), &event("r2", 2, "a")).await;
    seen.extend(sse.take(1).await);
    let mut named: Vec<(String, String)> = seen
        .iter()
        .map(|e| (e.event.clone(), e.data["id"].as_str().unwrap().to_owned()))
        .collect();
    named.sort();
    assert_eq!(
        named,
        [
            ("left".to_owned(), "l1".to_owned()),
            ("right".to_owned(), "r1".to_owned()),
            ("right".to_owned(), "r2".to_owned())
        ]
    );
}

fn ids(prefix: &str, range: std::ops::Range<u64>) -> Vec<String> {
    range.map(|n| format!("{prefix}-{n}")).collect()
}

/// `GET /v1/stream?topics=orders.*`: the events of every matching topic in
/// one stream (not the others), each id the position of the whole set;
/// resumed with Last-Event-ID after a server restart, during which a new
/// matching topic appeared, it delivers exactly what was not seen, the new
/// topic's events included. A matching topic created over the API while
/// the stream runs joins it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_stream_over_several_topics_resumes_exactly_across_a_restart() {
    let ws = Workspace::new();
    ws.topic("orders.eu", 2, "")
        .topic("orders.us", 1, "")
        .topic("audit", 1, "");
    let server = ws.serve(&[]);
    publish_numbered(&server.events_url("orders.eu"), "eu", 0..3).await;
    publish_numbered(&server.events_url("orders.us"), "us", 0..3).await;
    publish_numbered(&server.events_url("audit"), "audit", 0..3).await;
    let url = |server: &Server| format!("{}/v1/stream?topics=orders.*&from=earliest", server.url);
    let mut sse = Sse::connect(&url(&server), None).await;
    let first = sse.take(6).await;
    let got: HashSet<String> = first
        .iter()
        .map(|e| e.data["id"].as_str().unwrap().to_owned())
        .collect();
    let expected: HashSet<String> = ids("eu", 0..3).into_iter().chain(ids("us", 0..3)).collect();
    assert_eq!(got, expected, "the audit topic is not in orders.*");
    for event in &first {
        assert!(
            event.id.starts_with("orders.eu:") && event.id.contains(",orders.us:"),
            "{}",
            event.id
        );
    }
    // A topic created over the API while the stream runs joins it.
    let created = client()
        .put(format!("{}/v1/topics/orders.live", server.url))
        .json(&serde_json::json!({
            "partitions": 1,
            "types": {"test.event": {"schema": {"type": "object"}}},
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    publish_numbered(&server.events_url("orders.live"), "live", 0..2).await;
    let joined = sse.take(2).await;
    let got: Vec<&str> = joined
        .iter()
        .map(|e| e.data["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        got,
        ["live-0", "live-1"],
        "a matching topic created later joins"
    );
    assert!(joined[1].id.contains("orders.live:"), "{}", joined[1].id);
    // Seen: the first four; then the server goes down.
    let resume = first[3].id.clone();
    let seen: HashSet<String> = first[..4]
        .iter()
        .map(|e| e.data["id"].as_str().unwrap().to_owned())
        .collect();
    drop(sse);
    let mut server = server;
    server.kill();
    ws.topic("orders.asia", 1, "");
    let server = server.restart();
    publish_numbered(&server.events_url("orders.eu"), "eu", 3..5).await;
    publish_numbered(&server.events_url("orders.asia"), "asia", 0..2).await;
    publish_numbered(&server.events_url("audit"), "audit", 3..4).await;
    publish_numbered(&server.events_url("orders.us"), "us", 3..4).await;

    let mut sse = Sse::connect(&url(&server), Some(&resume)).await;
    // 7, and the live topic's two: the resumed id predates it.
    let rest = sse.take(9).await;
    let got: Vec<String> = rest
        .iter()
        .map(|e| e.data["id"].as_str().unwrap().to_owned())
        .collect();
    let mut expected: Vec<String> = ids("eu", 0..5)
        .into_iter()
        .chain(ids("us", 0..4))
        .chain(ids("asia", 0..2))
        .chain(ids("live", 0..2))
        .filter(|id| !seen.contains(id))
        .collect();
    let mut sorted_got = got.clone();
    sorted_got.sort();
    expected.sort();
    assert_eq!(sorted_got, expected, "exactly the unseen events: {got:?}");
    assert!(
        rest.last().unwrap().id.contains("orders.asia:"),
        "{}",
        rest.last().unwrap().id
    );
    // Nothing more (no repeat).
    let more =
        tokio::time::timeout(Duration::from_millis(500), sse.next(Duration::from_secs(1))).await;
    assert!(
        more.is_err() || more.unwrap().is_none(),
        "an event too many"
    );

    // Bad requests name the problem.
    for (query, code) in [
        ("", "invalid_query"),
        ("topics=nope", "unknown_topic"),
        ("topics=nope.*", "unknown_topic"),
    ] {
        let answer = client()
            .get(format!("{}/v1/stream?{query}", server.url))
            .send()
            .await
            .unwrap();
        let body: Value = answer.json().await.unwrap();
        assert_eq!(body["error"]["code"], code, "{query}: {body}");
    }
    let answer = client()
        .get(format!("{}/v1/stream?topics=orders.*", server.url))
        .header("last-event-id", "orders.eu:1")
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 400);
    let body: Value = answer.json().await.unwrap();
    assert_eq!(body["error"]["code"], "invalid_cursor", "{body}");
}
