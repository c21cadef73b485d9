//! Scheduled events: published with a `deliverat` time (or `?delay=`), they
//! wait in `switchyard.scheduled` and reach their topic, and so handlers,
//! consumer groups, SSE and pages, at their due time, across a restart.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::conformance::{Member, ids};
use crate::handler::handler;
use crate::harness::*;
use crate::sink::Sink;

/// The margin the due time is kept to (the issue's ± 1 s).
const MARGIN: Duration = Duration::from_secs(1);

fn rfc3339(at: std::time::SystemTime) -> String {
    time::OffsetDateTime::from(at)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

fn workspace() -> Workspace {
    let ws = Workspace::new();
    ws.topic("jobs", 2, "schedule = true")
        .topic("results", 1, "")
        .topic("dead", 1, "")
        .topic("plain", 1, "");
    std::fs::create_dir_all(ws.path().join("handlers")).unwrap();
    ws
}

#[tokio::test]
async fn a_scheduled_event_reaches_a_handler_at_its_due_time_across_a_restart() {
    let ws = workspace();
    let sink = Sink::start().await;
    handler(&ws, "worker", &format!("{}/ok", sink.url), "", "");
    let server = ws.serve(&[]);
    let client = client();

    // Due in 4 s, as a CloudEvents extension attribute.
    let due = std::time::SystemTime::now() + Duration::from_secs(4);
    let due_at = Instant::now() + Duration::from_secs(4);
    let mut later = event("later-1", 1, "a");
    later["deliverat"] = json!(rfc3339(due));
    let (status, body) = publish(&client, &server.events_url("jobs"), &later).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["events"][0]["scheduled"], later["deliverat"], "{body}");
    assert!(body["events"][0].get("position").is_none(), "{body}");
    // And one due now, beside it.
    let (status, _) = publish(&client, &server.events_url("jobs"), &event("now-1", 2, "b")).await;
    assert_eq!(status, 200);

    // Not in the topic yet; waiting in the schedule topic (readable).
    let stored = read_all(&client, &server.events_url("jobs")).await;
    assert_eq!(ids_of(&stored), ["now-1"]);
    let waiting = read_all(&client, &server.events_url("switchyard.scheduled")).await;
    assert_eq!(waiting.len(), 1);
    assert_eq!(waiting[0]["subject"], "jobs");
    assert_eq!(waiting[0]["data"]["id"], "later-1");

    // Clients may not publish there themselves.
    let (status, body) = publish(&client, &server.events_url("switchyard.scheduled"), &later).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"]["code"], "internal_topic", "{body}");

    // A crash while it waits: the schedule is durable.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let server = server.restart();
    let received = sink.wait_for(2).await;
    let later_call = received
        .iter()
        .find(|r| r.event_id() == "later-1")
        .expect("the scheduled event reached the handler");
    assert!(
        later_call.at + MARGIN >= due_at,
        "delivered {:?} before its due time",
        due_at - later_call.at
    );
    // Exactly once, and in the topic from then on.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let calls = sink
        .received()
        .iter()
        .filter(|r| r.event_id() == "later-1")
        .count();
    assert_eq!(calls, 1);
    let stored = read_all(&client, &server.events_url("jobs")).await;
    let mut ids = ids_of(&stored);
    ids.sort();
    assert_eq!(ids, ["later-1", "now-1"]);
}

#[tokio::test]
async fn groups_and_sse_see_a_scheduled_event_from_its_due_time() {
    let ws = workspace();
    let server = ws.serve(&[]);
    let client = client();
    let group = Member::new(&server, "jobs", "workers");
    assert!(group.receive("start=earliest&wait=0s").await.is_empty());
    let mut sse = Sse::connect(&server.stream_url("jobs"), None).await;

    // ?delay= for a plain JSON publish, with the id a retry would reuse.
    let published_at = Instant::now();
    let url = format!(
        "{}?type=test.event&delay=3s&id=job-7",
        server.events_url("jobs")
    );
    let answer: Value = client
        .post(&url)
        .json(&json!({"n": 7, "k": "x"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(answer["events"][0]["scheduled"].is_string(), "{answer}");
    // The retry is a duplicate of the scheduled one.
    let again: Value = client
        .post(&url)
        .json(&json!({"n": 7, "k": "x"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(again["events"][0]["duplicate"], true, "{again}");

    assert!(
        group.receive("wait=1s").await.is_empty(),
        "a consumer group got it early"
    );
    let deliveries = group.receive("wait=10s").await;
    assert_eq!(ids(&deliveries), ["job-7"]);
    assert!(published_at.elapsed() + MARGIN >= Duration::from_secs(3));
    let streamed = sse.take(1).await;
    assert_eq!(streamed[0].data["id"], "job-7");
    let more = tokio::time::timeout(Duration::from_secs(2), sse.next(Duration::from_secs(5))).await;
    assert!(more.is_err(), "delivered once: {more:?}");
}

#[tokio::test]
async fn bad_schedules_are_refused_naming_the_attribute() {
    let ws = workspace();
    let server = ws.serve(&[]);
    let client = client();
    let in_an_hour = rfc3339(std::time::SystemTime::now() + Duration::from_secs(3600));
    let cases = [
        ("plain", json!(in_an_hour), "does not take scheduled events"),
        ("jobs", json!("tomorrow"), "RFC 3339"),
        ("jobs", json!(5), "RFC 3339"),
        ("jobs", json!("2099-01-01T00:00:00Z"), "ahead"),
    ];
    for (topic, deliverat, says) in cases {
        let mut e = event("bad-1", 1, "a");
        e["deliverat"] = deliverat.clone();
        let (status, body) = publish(&client, &server.events_url(topic), &e).await;
        assert_eq!(status, 400, "{topic} {deliverat}: {body}");
        assert_eq!(body["error"]["code"], "invalid_schedule", "{body}");
        assert_eq!(body["error"]["attribute"], "deliverat", "{body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(says), "{message}");
    }
    let response = client
        .post(format!(
            "{}?type=test.event&delay=soon",
            server.events_url("jobs")
        ))
        .json(&json!({"n": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["parameter"], "delay", "{body}");
    // A time already past is published at once.
    let mut past = event("past-1", 1, "a");
    past["deliverat"] = json!("2020-01-01T00:00:00Z");
    let (status, body) = publish(&client, &server.events_url("plain"), &past).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["events"][0]["position"].is_string(), "{body}");
}

fn ids_of(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect()
}
