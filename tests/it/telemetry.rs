//! OpenTelemetry: one trace from a producer through the bus to a target
//! and back. An OTLP/HTTP receiver (tests/otlp/receiver.py, decoding with
//! PyPI's opentelemetry-proto) gets the spans Switchyard exports when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` is set; the target (the sink) sees the
//! trace in its `traceparent` header, and the result event carries it on.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::handler::{handler, outcomes, workspace};
use crate::harness::{Signer, SignerLang, client, sign_request};
use crate::sink::Sink;

const RESULT: &str = "switchyard.handler.succeeded";
const DEAD: &str = "switchyard.handler.failed";
const WAIT: Duration = Duration::from_secs(60);

/// The producer's trace and its span (the parent of Switchyard's publish).
const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PRODUCER_SPAN: &str = "00f067aa0ba902b7";

/// The receiver, and the spans it has printed so far.
struct Receiver {
    child: Child,
    port: u16,
    spans: Arc<Mutex<Vec<Value>>>,
}

impl Receiver {
    fn start() -> Receiver {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/otlp");
        let python = dir.join(".venv/bin/python");
        assert!(
            python.exists(),
            "the OTLP receiver is not installed: run scripts/setup (tests/otlp/.venv)"
        );
        let mut child = Command::new(python)
            .arg(dir.join("receiver.py"))
            .stdout(Stdio::piped())
            .spawn()
            .expect("start tests/otlp/receiver.py");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let first = lines.next().unwrap().unwrap();
        let port = first
            .strip_prefix("port ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("the receiver said {first:?}"));
        let spans = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&spans);
        std::thread::spawn(move || {
            for line in lines {
                let Ok(line) = line else { break };
                if let Ok(span) = serde_json::from_str(&line) {
                    sink.lock().unwrap().push(span);
                }
            }
        });
        Receiver { child, port, spans }
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Waits until the spans of trace `trace` include every name in
    /// `names`; returns them all.
    async fn trace(&self, trace: &str, names: &[&str]) -> Vec<Value> {
        let started = Instant::now();
        loop {
            let spans: Vec<Value> = self
                .spans
                .lock()
                .unwrap()
                .iter()
                .filter(|s| s["trace_id"] == trace)
                .cloned()
                .collect();
            if names
                .iter()
                .all(|name| spans.iter().any(|s| s["name"] == *name))
            {
                return spans;
            }
            assert!(
                started.elapsed() < WAIT,
                "spans of {names:?} in trace {trace} never arrived; got {spans:#?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Receiver {
    /// Waits for a span that `wanted` picks.
    async fn find(&self, wanted: impl Fn(&Value) -> bool) -> Value {
        let started = Instant::now();
        loop {
            if let Some(span) = self.spans.lock().unwrap().iter().find(|s| wanted(s)) {
                return span.clone();
            }
            assert!(started.elapsed() < WAIT, "the span never arrived");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `00-<trace>-<span>-<flags>` → (trace, span).
fn ids(traceparent: &str) -> (&str, &str) {
    let parts: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(parts.len(), 4, "{traceparent}");
    (parts[1], parts[2])
}

fn one<'a>(spans: &'a [Value], name: &str) -> &'a Value {
    let found: Vec<&Value> = spans.iter().filter(|s| s["name"] == name).collect();
    assert_eq!(found.len(), 1, "one {name} span: {spans:#?}");
    found[0]
}

async fn publish_traced(url: &str, id: &str) -> Value {
    let response = client()
        .post(url)
        .header("content-type", "application/cloudevents+json")
        .header("traceparent", format!("00-{TRACE}-{PRODUCER_SPAN}-01"))
        .json(&json!({
            "specversion": "1.0", "id": id, "source": "/test",
            "type": "test.event", "data": {"n": 1, "k": "a"},
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

/// A publish carrying a `traceparent`, the handler's outbound call and the
/// result event are one trace: the receiver gets its spans (publish,
/// handler, attempt, call) linked parent to child; the target sees
/// the call's span in its `traceparent`; the result carries the handler's,
/// and so does a dead letter, whose JSON log line names trace and span.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_links_a_publish_the_outbound_call_and_the_result() {
    let receiver = Receiver::start();
    let sink = Sink::start().await;
    let ws = workspace();
    handler(&ws, "traced", &format!("{}/ok", sink.url), "", "");
    let refusing = Sink::start().await;
    handler(
        &ws,
        "refused",
        &format!("{}/status/400", refusing.url),
        "",
        "",
    );
    let endpoint = receiver.endpoint();
    let server = ws.serve_with(
        &["--log-format", "json"],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("OTEL_SERVICE_NAME", "switchyard-under-test"),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ],
    );
    publish_traced(&server.events_url("jobs"), "traced-1").await;

    let results = outcomes(&server, "results", RESULT, 1).await;
    let result_trace = results[0]["traceparent"].as_str().expect("a traceparent");
    assert_eq!(ids(result_trace).0, TRACE, "{}", results[0]);
    let calls = sink.received();
    assert_eq!(calls.len(), 1);
    let sent = calls[0].headers["traceparent"].to_str().unwrap();
    assert_eq!(ids(sent).0, TRACE, "the target sees the trace");

    let spans = receiver
        .trace(TRACE, &["publish", "handler", "attempt", "call"])
        .await;
    for span in &spans {
        assert_eq!(span["service"], "switchyard-under-test", "{span}");
    }
    let publish = one(&spans, "publish");
    assert_eq!(publish["parent_span_id"], PRODUCER_SPAN, "{publish}");
    assert_eq!(publish["kind"], 2, "server: {publish}");
    // The stored event carries the publish span; the handler continues it.
    let handler = spans
        .iter()
        .find(|s| s["name"] == "handler" && s["attributes"]["handler"] == "traced")
        .expect("the traced handler's span");
    assert_eq!(handler["parent_span_id"], publish["span_id"], "{handler}");
    let child_of = |name: &str, parent: &Value| {
        let found: Vec<&Value> = spans
            .iter()
            .filter(|s| s["name"] == name && s["parent_span_id"] == parent["span_id"])
            .collect();
        assert_eq!(found.len(), 1, "one {name} under {parent}: {spans:#?}");
        found[0].clone()
    };
    let attempt = child_of("attempt", handler);
    let call = child_of("call", &attempt);
    assert_eq!(call["kind"], 3, "client: {call}");
    assert_eq!(
        call["attributes"]["http.response.status_code"], 200,
        "{call}"
    );
    assert_eq!(
        ids(sent).1,
        call["span_id"],
        "the target's parent is the call"
    );
    assert_eq!(
        ids(result_trace).1,
        handler["span_id"],
        "the result continues from the handler's delivery"
    );

    // The other handler's target refuses: its dead letter is in the trace
    // too, and the JSON log line about it names the trace and its span.
    let dead = outcomes(&server, "dead", DEAD, 1).await;
    let dead_trace = dead[0]["traceparent"].as_str().expect("a traceparent");
    assert_eq!(ids(dead_trace).0, TRACE, "{}", dead[0]);
    let refused = receiver
        .find(|s| s["name"] == "handler" && s["attributes"]["handler"] == "refused")
        .await;
    assert_eq!(refused["trace_id"], TRACE, "{refused}");
    assert_eq!(refused["span_id"], ids(dead_trace).1, "{refused}");
    let log = server.log();
    let line = log
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|l| l["fields"]["message"] == "dead-lettering an event")
        .unwrap_or_else(|| panic!("no JSON log line about the dead letter: {log}"));
    assert_eq!(line["span"]["trace_id"], TRACE, "{line}");
    assert_eq!(line["span"]["span_id"], ids(dead_trace).1, "{line}");
}

/// A webhook delivery carrying a `traceparent` is one `webhook` span (a
/// server span, child of the sender's) with its steps `verify`, `dedupe`
/// and `append` as children; the stored event carries the delivery's span.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_delivery_is_a_span_with_verify_dedupe_and_append() {
    const HOOK_TRACE: &str = "0af7651916cd43dd8448eb211c80319c";
    const SECRET: &str = "a-github-webhook-secret";
    let receiver = Receiver::start();
    let ws = workspace();
    ws.topic(
        "hooks",
        1,
        "[[webhooks]]\nsource = \"gh\"\nscheme = \"github\"\nsecrets_env = [\"T_GH\"]\n",
    );
    let endpoint = receiver.endpoint();
    let server = ws.serve_with(
        &[],
        &[
            ("T_GH", SECRET),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ],
    );
    // Typed `test.event` by GitHub's rule: X-GitHub-Event "." action.
    let body = json!({"action": "event", "n": 1, "k": "a"}).to_string();
    let mut signer = Signer::new(SignerLang::Node);
    let signature = signer.sign(&sign_request("github", SECRET, &body, 0, "d-1"));
    let mut request = client()
        .post(format!("{}/v1/webhooks/gh", server.url))
        .header("content-type", "application/json")
        .header("x-github-event", "test")
        .header("x-github-delivery", "d-1")
        .header("traceparent", format!("00-{HOOK_TRACE}-{PRODUCER_SPAN}-01"));
    for (name, value) in signature {
        request = request.header(name, value);
    }
    let response = request.body(body).send().await.unwrap();
    assert_eq!(response.status(), 200, "{:?}", response.text().await);

    let spans = receiver
        .trace(HOOK_TRACE, &["webhook", "verify", "dedupe", "append"])
        .await;
    let webhook = one(&spans, "webhook");
    assert_eq!(webhook["parent_span_id"], PRODUCER_SPAN, "{webhook}");
    assert_eq!(webhook["kind"], 2, "server: {webhook}");
    for step in ["verify", "dedupe", "append"] {
        let span = one(&spans, step);
        assert_eq!(span["parent_span_id"], webhook["span_id"], "{step}: {span}");
    }
    let stored = crate::harness::read_all(&client(), &server.events_url("hooks")).await;
    assert_eq!(stored.len(), 1, "{stored:?}");
    let trace = stored[0]["traceparent"].as_str().expect("a traceparent");
    assert_eq!(
        ids(trace),
        (HOOK_TRACE, webhook["span_id"].as_str().unwrap())
    );
}

/// Without an exporter no span is built, and the request's `traceparent`
/// still travels: stored in the event as it came, sent on to the target.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_exporter_the_request_trace_is_carried_as_it_came() {
    let sink = Sink::start().await;
    let ws = workspace();
    handler(&ws, "plain", &format!("{}/ok", sink.url), "", "");
    let server = ws.serve(&[]);
    publish_traced(&server.events_url("jobs"), "plain-1").await;
    let results = outcomes(&server, "results", RESULT, 1).await;
    let expected = format!("00-{TRACE}-{PRODUCER_SPAN}-01");
    assert_eq!(
        results[0]["traceparent"],
        expected.as_str(),
        "{}",
        results[0]
    );
    let calls = sink.received();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].headers["traceparent"], expected.as_str());
    let stored = crate::harness::read_all(&client(), &server.events_url("jobs")).await;
    assert_eq!(stored[0]["traceparent"], expected.as_str(), "{}", stored[0]);
}
