//! Handler workers against a real HTTP target (tests/it/sink.rs): retries,
//! Retry-After, timeouts, the breaker, rate limit, concurrency, per-key
//! order, dead letters and replay, signed webhooks, and a crash.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harness::*;
use crate::sink::{Sink, numbers_by_key};

/// A workspace with a `jobs` topic and the handler's output topics.
pub(crate) fn workspace() -> Workspace {
    let ws = Workspace::new();
    ws.topic("jobs", 3, "")
        .topic("results", 2, "")
        .topic("dead", 1, "");
    std::fs::create_dir_all(ws.path().join("handlers")).unwrap();
    ws
}

/// Writes handler `name` calling `url`; `action` and `policy` are extra
/// TOML lines for those tables. Unless `policy` sets up the breaker, it is
/// one that never opens: most tests are not about pausing.
pub(crate) fn handler(ws: &Workspace, name: &str, url: &str, action: &str, policy: &str) {
    let breaker = if policy.contains("[policy.breaker]") {
        ""
    } else {
        "[policy.breaker]\nconsecutive_failures = 1000\nmin_calls = 1000\n"
    };
    let policy = format!("{policy}\n{breaker}");
    let toml = format!(
        "name = \"{name}\"\n\
         [subscribe]\ntopic = \"jobs\"\nstart = \"earliest\"\n\
         [action]\nkind = \"http\"\nurl = \"{url}\"\n{action}\n\
         [policy]\nbackoff_initial = \"20ms\"\nbackoff_max = \"100ms\"\n{policy}\n\
         [outputs]\nresults = \"results\"\ndead_letters = \"dead\"\n"
    );
    std::fs::write(
        ws.path().join("handlers").join(format!("{name}.toml")),
        toml,
    )
    .unwrap();
}

async fn publish_jobs(server: &Server, count: u64, keys: u64) -> Vec<String> {
    let client = client();
    let mut ids = Vec::new();
    for n in 0..count {
        let id = format!("job-{n}");
        let (status, body) = publish(
            &client,
            &server.events_url("jobs"),
            &event(&id, n, &format!("key-{}", n % keys)),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        ids.push(id);
    }
    ids
}

/// Waits until `topic` holds at least `count` events of `ty`; returns them.
pub(crate) async fn outcomes(server: &Server, topic: &str, ty: &str, count: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let events: Vec<Value> = read_all(&client(), &server.events_url(topic))
            .await
            .into_iter()
            .filter(|e| e["type"] == ty)
            .collect();
        if events.len() >= count {
            return events;
        }
        assert!(
            Instant::now() < deadline,
            "{topic} has {} of {count} {ty} events",
            events.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until `count` events have a result (by causation id); returns
/// the results.
pub(crate) async fn outcomes_for_all(
    server: &Server,
    count: usize,
    within: Duration,
) -> Vec<Value> {
    let deadline = Instant::now() + within;
    loop {
        let results = outcomes(server, "results", RESULT, 0).await;
        if causations(&results).len() == count {
            return results;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {count} events have an outcome; log:\n{}",
            causations(&results).len(),
            server
                .log()
                .lines()
                .filter(|l| l.contains("partitions") || l.contains("WARN") || l.contains("ERROR"))
                .collect::<Vec<_>>()
                .join("\n")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub(crate) const RESULT: &str = "switchyard.handler.succeeded";
const FAILED: &str = "switchyard.handler.failed";
const BREAKER: &str = "switchyard.handler.breaker";

pub(crate) fn causations(events: &[Value]) -> HashSet<String> {
    events
        .iter()
        .map(|e| e["causationid"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn retries_until_success_and_results_carry_causation_ids() {
    let sink = Sink::start().await;
    let ws = workspace();
    handler(
        &ws,
        "flaky",
        &format!("{}/flaky/2", sink.url),
        "result_headers = [\"x-request-id\"]",
        "max_attempts = 5",
    );
    let server = ws.serve(&[]);
    let ids = publish_jobs(&server, 4, 4).await;

    let results = outcomes(&server, "results", RESULT, 4).await;
    assert_eq!(causations(&results), ids.iter().cloned().collect());
    for result in &results {
        assert_eq!(
            result["data"]["attempts"], 3,
            "two 503s, then success: {result}"
        );
        assert_eq!(result["data"]["status"], 200);
        assert_eq!(result["data"]["body"], json!({"ok": true}));
        assert_eq!(result["data"]["headers"]["x-request-id"], "sink-1");
        assert_eq!(result["correlationid"], result["causationid"]);
        assert_eq!(result["source"], "/handlers/flaky");
    }
    assert_eq!(sink.received().len(), 12);
    // The structured CloudEvent was the body.
    assert_eq!(
        sink.received()[0].headers["content-type"],
        "application/cloudevents+json"
    );
    assert!(
        read_all(&client(), &server.events_url("dead"))
            .await
            .is_empty()
    );
}

#[tokio::test]
async fn no_retry_on_400_and_dead_letters_hold_the_reason_and_history() {
    let sink = Sink::start().await;
    let ws = workspace();
    handler(
        &ws,
        "bad-request",
        &format!("{}/status/400", sink.url),
        "",
        "max_attempts = 5",
    );
    let server = ws.serve(&[]);
    let ids = publish_jobs(&server, 2, 2).await;
    let dead = outcomes(&server, "dead", FAILED, 2).await;
    assert_eq!(causations(&dead), ids.iter().cloned().collect());
    for letter in &dead {
        assert_eq!(letter["data"]["permanent"], true);
        assert_eq!(
            letter["data"]["attempts"].as_array().unwrap().len(),
            1,
            "no retry on 400"
        );
        assert_eq!(letter["data"]["attempts"][0]["status"], 400);
        assert!(letter["data"]["reason"].as_str().unwrap().contains("400"));
        assert_eq!(
            letter["data"]["event"]["type"], "test.event",
            "the original event is kept"
        );
    }
    assert_eq!(sink.received().len(), 2);
}

#[tokio::test]
async fn exhausted_retries_and_timeouts_are_dead_lettered() {
    let sink = Sink::start().await;
    let ws = workspace();
    handler(
        &ws,
        "down",
        &format!("{}/status/500", sink.url),
        "",
        "max_attempts = 3",
    );
    let server = ws.serve(&[]);
    publish_jobs(&server, 2, 2).await;
    let dead = outcomes(&server, "dead", FAILED, 2).await;
    for letter in &dead {
        assert_eq!(letter["data"]["permanent"], false);
        let attempts = letter["data"]["attempts"].as_array().unwrap();
        assert_eq!(attempts.len(), 3);
        assert!(attempts.iter().all(|a| a["status"] == 500));
        assert!(
            letter["data"]["reason"]
                .as_str()
                .unwrap()
                .starts_with("gave up after 3 attempts")
        );
    }
    assert_eq!(sink.received().len(), 6);
    drop(server);

    let sink = Sink::start().await;
    let ws = workspace();
    handler(
        &ws,
        "hangs",
        &format!("{}/hang", sink.url),
        "",
        "max_attempts = 2\ntimeout = \"300ms\"",
    );
    let server = ws.serve(&[]);
    publish_jobs(&server, 1, 1).await;
    let dead = outcomes(&server, "dead", FAILED, 1).await;
    let attempts = dead[0]["data"]["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2);
    assert!(
        attempts[0]["error"]
            .as_str()
            .unwrap()
            .contains("no answer within"),
        "{}",
        dead[0]
    );
}

#[tokio::test]
async fn retry_after_is_honoured() {
    let sink = Sink::start().await;
    let ws = workspace();
    handler(
        &ws,
        "polite",
        &format!("{}/retry-after", sink.url),
        "",
        "max_attempts = 3",
    );
    let server = ws.serve(&[]);
    publish_jobs(&server, 1, 1).await;
    let results = outcomes(&server, "results", RESULT, 1).await;
    assert_eq!(results[0]["data"]["attempts"], 2);
    let received = sink.received();
    let waited = received[1].at - received[0].at;
    assert!(
        waited >= Duration::from_millis(950),
        "retried after {waited:?}, the server asked for 1 s"
    );
}

#[tokio::test]
async fn breaker_opens_half_opens_and_closes() {
    let sink = Sink::start().await;
    let ws = workspace();
    handler(
        &ws,
        "guarded",
        &format!("{}/fail-first/3", sink.url),
        "",
        "max_attempts = 6\nmax_concurrency = 1\n[policy.breaker]\nconsecutive_failures = 3\nopen_for = \"1s\"\nhalf_open_probes = 1",
    );
    let server = ws.serve(&[]);
    let ids = publish_jobs(&server, 1, 1).await;
    let results = outcomes(&server, "results", RESULT, 1).await;
    assert_eq!(causations(&results), ids.into_iter().collect());
    assert_eq!(results[0]["data"]["attempts"], 4);
    let received = sink.received();
    assert_eq!(received.len(), 4);
    let paused = received[3].at - received[2].at;
    assert!(
        paused >= Duration::from_millis(950),
        "the open breaker held calls for {paused:?}"
    );

    let transitions: Vec<(String, String)> = outcomes(&server, "results", BREAKER, 3)
        .await
        .iter()
        .map(|e| {
            (
                e["data"]["from"].as_str().unwrap().to_owned(),
                e["data"]["to"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let expected = [
        ("closed", "open"),
        ("open", "half_open"),
        ("half_open", "closed"),
    ];
    assert_eq!(
        transitions,
        expected.map(|(a, b)| (a.to_owned(), b.to_owned()))
    );

    // The handler commits its place just after the outcome is stored:
    // its lag reaches 0 a moment after the result shows.
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        let status: Value = client()
            .get(format!("{}/v1/handlers", server.url))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if status["handlers"][0]["lag"] == 0 || Instant::now() > deadline {
            break status;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let guarded = &status["handlers"][0];
    assert_eq!(guarded["name"], "guarded");
    assert_eq!(
        guarded["breakers"]
            .as_object()
            .unwrap()
            .values()
            .next()
            .unwrap(),
        "closed"
    );
    assert_eq!(guarded["lag"], 0);
    assert_eq!(guarded["health"], "healthy");
    let metrics = client()
        .get(format!("{}/metrics", server.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(
            "switchyard_handler_breaker_transitions_total{handler=\"guarded\",outcome=\"open\"} 1"
        ),
        "{metrics}"
    );
}

#[tokio::test]
async fn rate_limit_is_held() {
    let sink = Sink::start().await;
    let ws = workspace();
    handler(
        &ws,
        "paced",
        &format!("{}/ok", sink.url),
        "",
        "rate_limit = 20.0\nmax_concurrency = 8",
    );
    let server = ws.serve(&[]);
    publish_jobs(&server, 30, 30).await;
    let received = sink.wait_for(30).await;
    let span = received[29].at - received[0].at;
    let rate = 29.0 / span.as_secs_f64();
    assert!(rate <= 22.0, "{rate:.1} calls/s against a limit of 20");
    assert!(rate >= 10.0, "{rate:.1} calls/s: far below the limit of 20");
}

#[tokio::test]
async fn concurrency_cap_is_never_exceeded() {
    let sink = Sink::start().await;
    let ws = workspace();
    handler(
        &ws,
        "capped",
        &format!("{}/slow/150", sink.url),
        "",
        "max_concurrency = 3",
    );
    let server = ws.serve(&[]);
    publish_jobs(&server, 12, 12).await;
    outcomes(&server, "results", RESULT, 12).await;
    let max = sink.state.max_concurrent.load(Ordering::SeqCst);
    assert!(max <= 3, "{max} calls at once against a cap of 3");
    assert!(max >= 2, "calls ran one at a time ({max})");
}

#[tokio::test]
async fn per_key_order_holds_under_parallelism() {
    let sink = Sink::start().await;
    let ws = workspace();
    handler(
        &ws,
        "ordered",
        &format!("{}/slow/20", sink.url),
        "",
        "max_concurrency = 8\nordered = \"by_key\"",
    );
    let server = ws.serve(&[]);
    publish_jobs(&server, 40, 4).await;
    let received = sink.wait_for(40).await;
    let by_key = numbers_by_key(&received);
    for (key, ns) in &by_key {
        assert!(ns.windows(2).all(|w| w[0] < w[1]), "{key}: {ns:?}");
    }
    assert!(
        sink.state.max_concurrent.load(Ordering::SeqCst) >= 2,
        "different keys ran in parallel"
    );
}

#[tokio::test]
async fn replay_redrives_dead_letters() {
    let sink = Sink::start().await;
    sink.state.failing.store(true, Ordering::SeqCst);
    let ws = workspace();
    handler(
        &ws,
        "replayed",
        &format!("{}/toggle", sink.url),
        "",
        "max_attempts = 2",
    );
    let server = ws.serve(&[]);
    let ids = publish_jobs(&server, 3, 3).await;
    let dead = outcomes(&server, "dead", FAILED, 3).await;
    assert_eq!(causations(&dead), ids.iter().cloned().collect());

    sink.state.failing.store(false, Ordering::SeqCst);
    let calls_while_failing = sink.received().len();
    let one = dead[0]["id"].as_str().unwrap();
    let response = client()
        .post(format!("{}/v1/handlers/replayed/replay", server.url))
        .json(&json!({"ids": [one]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["replaying"], 1);
    let results = outcomes(&server, "results", RESULT, 1).await;
    assert_eq!(results[0]["causationid"], dead[0]["causationid"]);

    // The CLI re-drives the rest (all of the handler's dead letters).
    let out = std::process::Command::new(BIN)
        .args(["replay", "replayed", "--url", &server.url])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The rest only: the first is resolved (its replay reached a result).
    let results = outcomes(&server, "results", RESULT, 3).await;
    assert_eq!(causations(&results), ids.iter().cloned().collect());

    // Replayed again, nothing is sent: every dead letter is resolved, and
    // an id that is no dead letter of this handler is named.
    let resolved = outcomes(&server, "dead", "switchyard.handler.resolved", 3).await;
    assert_eq!(resolved.len(), 3, "{resolved:?}");
    let response = client()
        .post(format!("{}/v1/handlers/replayed/replay", server.url))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["replaying"], 0, "{body}");
    assert_eq!(body["skipped"].as_array().unwrap().len(), 3, "{body}");
    let response = client()
        .post(format!("{}/v1/handlers/replayed/replay", server.url))
        .json(&json!({"ids": ["no-such-letter"]}))
        .send()
        .await
        .unwrap();
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["replaying"], 0, "{body}");
    assert_eq!(body["skipped"][0]["id"], "no-such-letter", "{body}");
    // One success per event in all, and one call to the target per
    // replayed event.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let results = outcomes(&server, "results", RESULT, 3).await;
    assert_eq!(results.len(), 3, "{results:?}");
    let replayed_calls = sink.received().len() - calls_while_failing;
    assert_eq!(replayed_calls, 3);

    let response = client()
        .post(format!("{}/v1/handlers/nope/replay", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
}

#[tokio::test]
async fn outbound_webhooks_verify_with_the_standard_webhooks_library() {
    let sink = Sink::start().await;
    let ws = workspace();
    let url = format!("{}/ok", sink.url);
    let toml = format!(
        "name = \"outbound\"\n[subscribe]\ntopic = \"jobs\"\nstart = \"earliest\"\n\
         [action]\nkind = \"webhook\"\nurl = \"{url}\"\nsecrets_env = [\"OUT_SECRET\", \"OUT_SECRET_NEXT\"]\n\
         [outputs]\nresults = \"results\"\ndead_letters = \"dead\"\n"
    );
    std::fs::write(ws.path().join("handlers/outbound.toml"), toml).unwrap();
    let secrets = [
        ("OUT_SECRET", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
        (
            "OUT_SECRET_NEXT",
            "whsec_c2Vjb25kLXNlY3JldC1mb3Itcm90YXRpb24=",
        ),
    ];
    let server = ws.serve_with_env(&secrets);
    let ids = publish_jobs(&server, 2, 2).await;
    let received = sink.wait_for(2).await;
    for request in &received {
        let headers: serde_json::Map<String, Value> = request
            .headers
            .iter()
            .map(|(k, v)| (k.as_str().to_owned(), Value::from(v.to_str().unwrap())))
            .collect();
        assert!(ids.contains(&headers["webhook-id"].as_str().unwrap().to_owned()));
        // Each rotated secret verifies on its own.
        for (_, secret) in secrets {
            let verdict =
                verify_standard_webhook(secret, &headers, &String::from_utf8_lossy(&request.body));
            assert_eq!(verdict, "ok", "with {secret}");
        }
        let verdict = verify_standard_webhook(
            "whsec_d3JvbmctYnV0LXdlbGwtZm9ybWVk",
            &headers,
            &String::from_utf8_lossy(&request.body),
        );
        assert_ne!(verdict, "ok", "a wrong secret must not verify");
    }
}

/// Verifies with the Python standardwebhooks library (tests/signers/verify.py).
fn verify_standard_webhook(
    secret: &str,
    headers: &serde_json::Map<String, Value>,
    body: &str,
) -> String {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/signers");
    let python = dir.join(".venv/bin/python");
    assert!(
        python.exists(),
        "run scripts/test: it installs the signing libraries"
    );
    let input = json!({"secret": secret, "headers": headers, "body": body}).to_string();
    let mut child = std::process::Command::new(python)
        .arg(dir.join("verify.py"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_with_calls_in_flight_still_gives_each_event_exactly_one_outcome() {
    const EVENTS: usize = 30;
    let sink = Sink::start().await;
    let ws = workspace();
    handler(
        &ws,
        "survivor",
        &format!("{}/slow/200", sink.url),
        "",
        "max_concurrency = 4",
    );
    let server = ws.serve(&[]);
    let ids = publish_jobs(&server, EVENTS as u64, EVENTS as u64).await;
    sink.wait_for(10).await;
    let server = server.restart(); // SIGKILL with calls in flight, then start again
    let results = outcomes_for_all(&server, EVENTS, Duration::from_secs(60)).await;
    // Let any redelivery that was going to happen happen, then count again.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let results = {
        let again = outcomes(&server, "results", RESULT, results.len()).await;
        assert!(
            read_all(&client(), &server.events_url("dead"))
                .await
                .is_empty()
        );
        again
    };
    assert_eq!(
        results.len(),
        EVENTS,
        "exactly one outcome per event: {:?}",
        {
            let mut counts: HashMap<String, usize> = HashMap::new();
            for c in results
                .iter()
                .map(|r| r["causationid"].as_str().unwrap().to_owned())
            {
                *counts.entry(c).or_default() += 1;
            }
            counts
                .into_iter()
                .filter(|(_, n)| *n > 1)
                .collect::<Vec<_>>()
        }
    );
    let seen: HashSet<String> = sink.received().iter().map(|r| r.event_id()).collect();
    assert_eq!(
        seen,
        ids.into_iter().collect::<HashSet<_>>(),
        "the target saw every event at least once"
    );
}

#[tokio::test]
async fn outcomes_too_large_to_store_are_stored_truncated_not_retried_forever() {
    let ws = workspace();
    let sink = Sink::start().await;
    // A target that answers 3 MB, and one that refuses (400) an event
    // just under the event size limit, whose dead letter would be over it.
    handler(&ws, "chatty", &format!("{}/big/3000000", sink.url), "", "");
    let server = ws.serve(&[]);
    let (status, _) = publish(
        &client(),
        &server.events_url("jobs"),
        &event("small", 1, "a"),
    )
    .await;
    assert_eq!(status, 200);
    let results = outcomes(&server, "results", RESULT, 1).await;
    let body = &results[0]["data"]["body"];
    assert_eq!(body["truncated"], true, "{body}");
    assert!(body["prefix"].as_str().unwrap().len() <= 64 * 1024);
    drop(server);

    let ws = workspace();
    handler(&ws, "refusing", &format!("{}/status/400", sink.url), "", "");
    let server = ws.serve(&[]);
    let mut big = event("big", 2, "b");
    // Just under 1 MiB as an event; its dead letter (the event plus the
    // reason and history) is over.
    big["data"]["pad"] = json!("p".repeat(1024 * 1024 - 400));
    let (status, body) = publish(&client(), &server.events_url("jobs"), &big).await;
    assert_eq!(status, 200, "{body}");
    let dead = outcomes(&server, "dead", FAILED, 1).await;
    let data = &dead[0]["data"];
    assert!(
        data["truncated"]["reason"]
            .as_str()
            .unwrap()
            .contains("limit"),
        "{data}"
    );
    assert_eq!(data["event"]["id"], "big");
    assert!(
        data["event"].get("data").is_none(),
        "the bulky source was left out"
    );
    // A truncated dead letter no longer holds a valid event: replay skips
    // it and says why, rather than send the target a stub.
    let replay: Value = client()
        .post(format!("{}/v1/handlers/refusing/replay", server.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(replay["replaying"], 0, "{replay}");
    assert_eq!(replay["skipped"][0]["id"], dead[0]["id"], "{replay}");
    // The handler moved on: its lag is back to zero.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = get_json(&format!("{}/v1/handlers", server.url)).await;
        let handler = &status["handlers"][0];
        if handler["lag"] == 0 && handler["in_flight"] == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "handler stuck: {status}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn credentials_in_target_urls_never_reach_status_dead_letters_or_logs() {
    let ws = workspace();
    // Nothing listens on port 9: every call fails, and the error names the URL.
    handler(
        &ws,
        "leaky",
        "http://svc-user:pa55word@127.0.0.1:9/hook?api_key=k3y-s3cret",
        "",
        "max_attempts = 2",
    );
    let server = ws.serve(&[]);
    let (status, _) = publish(&client(), &server.events_url("jobs"), &event("j", 1, "a")).await;
    assert_eq!(status, 200);
    let dead = outcomes(&server, "dead", FAILED, 1).await;
    let reason = dead[0]["data"]["reason"].as_str().unwrap();
    assert!(reason.contains("127.0.0.1:9/hook"), "{reason}");
    let status = get_json(&format!("{}/v1/handlers", server.url)).await;
    let log = server.log();
    for secret in ["pa55word", "k3y-s3cret"] {
        assert!(
            !dead[0].to_string().contains(secret),
            "dead letter: {}",
            dead[0]
        );
        assert!(!status.to_string().contains(secret), "status: {status}");
        assert!(!log.contains(secret), "log: {log}");
    }
}
