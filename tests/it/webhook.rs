//! Webhooks signed by the senders' own libraries (npm and PyPI): genuine ones
//! get in once; tampered, wrongly keyed, unsigned and out-of-time ones get a
//! 401 saying why.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use serde_json::{Value, json};

use crate::harness::*;

const HOOKS_TOML: &str = r#"
[[webhooks]]
source = "std"
scheme = "standard-webhooks"
secrets_env = ["T_STD_1", "T_STD_2"]

[[webhooks]]
source = "gh"
scheme = "github"
secrets_env = ["T_GH_1", "T_GH_2"]
subject = "/k"

[[webhooks]]
source = "stripe"
scheme = "stripe"
secrets_env = ["T_STRIPE_1", "T_STRIPE_2"]

[[webhooks]]
source = "slack"
scheme = "slack"
secrets_env = ["T_SLACK_1", "T_SLACK_2"]

[[webhooks]]
source = "shop"
scheme = "shopify"
secrets_env = ["T_SHOP_1", "T_SHOP_2"]

[[webhooks]]
source = "plain"
scheme = "hmac"
secrets_env = ["T_PLAIN_1", "T_PLAIN_2"]
header = "X-Signature"
prefix = "sha256="
timestamp_header = "X-Timestamp"
id_header = "X-Delivery-Id"
type = { json = "/type" }

[[webhooks]]
source = "unset"
scheme = "github"
secrets_env = ["T_NEVER_SET"]
"#;

/// Secrets: two per source, so rotation can be tested.
const SECRETS: [(&str, &str); 12] = [
    ("T_STD_1", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
    ("T_STD_2", "whsec_c2Vjb25kLXNlY3JldC1mb3Itcm90YXRpb24="),
    ("T_GH_1", "gh-secret-one"),
    ("T_GH_2", "gh-secret-two"),
    ("T_STRIPE_1", "whsec_stripe_one"),
    ("T_STRIPE_2", "whsec_stripe_two"),
    ("T_SLACK_1", "slack-signing-one"),
    ("T_SLACK_2", "slack-signing-two"),
    ("T_SHOP_1", "shop-secret-one"),
    ("T_SHOP_2", "shop-secret-two"),
    ("T_PLAIN_1", "plain-secret-one"),
    ("T_PLAIN_2", "plain-secret-two"),
];

fn secret(name: &str) -> &'static str {
    SECRETS.iter().find(|(k, _)| *k == name).unwrap().1
}

fn workspace() -> Workspace {
    let ws = Workspace::new();
    ws.topic("hooks", 2, HOOKS_TOML);
    ws
}

fn serve(ws: &Workspace) -> Server {
    ws.serve_with_env(&SECRETS)
}

/// How one scheme is exercised.
struct Case {
    source: &'static str,
    scheme: &'static str,
    signer: SignerLang,
    secrets: [&'static str; 2],
    /// The header that carries the signature.
    signature_header: &'static str,
    /// Whether a timestamp is signed (and so checked against the tolerance).
    timestamped: bool,
}

const CASES: [Case; 6] = [
    Case {
        source: "std",
        scheme: "standard-webhooks",
        signer: SignerLang::Node,
        secrets: ["T_STD_1", "T_STD_2"],
        signature_header: "webhook-signature",
        timestamped: true,
    },
    Case {
        source: "gh",
        scheme: "github",
        signer: SignerLang::Node,
        secrets: ["T_GH_1", "T_GH_2"],
        signature_header: "x-hub-signature-256",
        timestamped: false,
    },
    Case {
        source: "stripe",
        scheme: "stripe",
        signer: SignerLang::Node,
        secrets: ["T_STRIPE_1", "T_STRIPE_2"],
        signature_header: "stripe-signature",
        timestamped: true,
    },
    Case {
        source: "slack",
        scheme: "slack",
        signer: SignerLang::Python,
        secrets: ["T_SLACK_1", "T_SLACK_2"],
        signature_header: "x-slack-signature",
        timestamped: true,
    },
    Case {
        source: "shop",
        scheme: "shopify",
        signer: SignerLang::Python,
        secrets: ["T_SHOP_1", "T_SHOP_2"],
        signature_header: "x-shopify-hmac-sha256",
        timestamped: false,
    },
    Case {
        source: "plain",
        scheme: "hmac",
        signer: SignerLang::Python,
        secrets: ["T_PLAIN_1", "T_PLAIN_2"],
        signature_header: "x-signature",
        timestamped: true,
    },
];

/// A delivery: the body and the headers that carry its id and type, the way
/// each sender does it.
fn delivery(case: &Case, delivery_id: &str, n: u64) -> (String, Vec<(String, String)>) {
    let mut body = json!({"type": "test.event", "n": n, "k": format!("key-{n}")});
    let mut headers = vec![("content-type".to_owned(), "application/json".to_owned())];
    match case.scheme {
        "github" => {
            // Type = X-GitHub-Event + "." + the body's action.
            body["type"] = Value::Null;
            body["action"] = json!("event");
            headers.push(("x-github-event".into(), "test".into()));
            headers.push(("x-github-delivery".into(), delivery_id.into()));
        }
        "stripe" => body["id"] = json!(delivery_id),
        "slack" => body["event_id"] = json!(delivery_id),
        "shopify" => {
            headers.push(("x-shopify-topic".into(), "test.event".into()));
            headers.push(("x-shopify-webhook-id".into(), delivery_id.into()));
        }
        "hmac" => headers.push(("x-delivery-id".into(), delivery_id.into())),
        _ => {}
    }
    (body.to_string(), headers)
}

async fn send(
    server: &Server,
    source: &str,
    body: &str,
    headers: &[(String, String)],
) -> (u16, Value) {
    let mut request = client()
        .post(format!("{}/v1/webhooks/{source}", server.url))
        .body(body.to_owned());
    for (name, value) in headers {
        request = request.header(name, value);
    }
    let response = request.send().await.unwrap();
    (
        response.status().as_u16(),
        response.json().await.unwrap_or(Value::Null),
    )
}

/// Signs `body` with the case's library and returns all headers to send.
fn signed(
    signer: &mut Signer,
    case: &Case,
    secret_text: &str,
    body: &str,
    timestamp: i64,
    delivery_id: &str,
    extra: &[(String, String)],
) -> Vec<(String, String)> {
    let mut headers = extra.to_vec();
    headers.extend(signer.sign(&sign_request(
        case.scheme,
        secret_text,
        body,
        timestamp,
        delivery_id,
    )));
    headers
}

fn assert_rejected(status: u16, body: &Value, code: &str, what: &str) {
    assert_eq!(status, 401, "{what}: {body}");
    assert_eq!(body["error"]["code"], code, "{what}: {body}");
    let text = body.to_string();
    for (_, secret) in SECRETS {
        assert!(!text.contains(secret), "{what}: the answer echoes a secret");
    }
}

async fn check_scheme(case: &Case) {
    let ws = workspace();
    let server = serve(&ws);
    let mut signer = Signer::new(case.signer);
    let now = unix_now();
    let what = case.scheme;

    // Valid, with either of the two rotated secrets.
    let mut accepted = Vec::new();
    for (i, env) in case.secrets.iter().enumerate() {
        let id = format!("{}-ok-{i}", case.source);
        let (body, extra) = delivery(case, &id, i as u64);
        let headers = signed(&mut signer, case, secret(env), &body, now, &id, &extra);
        let (status, answer) = send(&server, case.source, &body, &headers).await;
        assert_eq!(status, 200, "{what} with {env}: {answer}");
        assert_eq!(answer["duplicate"], false);
        assert_eq!(
            answer["id"],
            id.as_str(),
            "{what}: the delivery id is the event id"
        );
        accepted.push((id, body, headers));
    }

    // Tampered body.
    let (body, extra) = delivery(case, "tampered", 7);
    let headers = signed(
        &mut signer,
        case,
        secret(case.secrets[0]),
        &body,
        now,
        "tampered",
        &extra,
    );
    let tampered = body.replace("\"n\":7", "\"n\":8");
    assert_ne!(tampered, body);
    let (status, answer) = send(&server, case.source, &tampered, &headers).await;
    assert_rejected(status, &answer, "invalid_signature", what);
    assert_eq!(answer["error"]["header"], case.signature_header);

    // Wrong secret (well-formed for the scheme).
    let wrong = if case.scheme == "standard-webhooks" {
        "whsec_d3JvbmctYnV0LXdlbGwtZm9ybWVk"
    } else {
        "wrong-secret"
    };
    let (body, extra) = delivery(case, "wrong", 9);
    let headers = signed(&mut signer, case, wrong, &body, now, "wrong", &extra);
    let (status, answer) = send(&server, case.source, &body, &headers).await;
    assert_rejected(status, &answer, "invalid_signature", what);

    // Missing signature header.
    let (body, extra) = delivery(case, "unsigned", 10);
    let headers: Vec<_> = signed(
        &mut signer,
        case,
        secret(case.secrets[0]),
        &body,
        now,
        "unsigned",
        &extra,
    )
    .into_iter()
    .filter(|(name, _)| name != case.signature_header)
    .collect();
    let (status, answer) = send(&server, case.source, &body, &headers).await;
    assert_rejected(status, &answer, "missing_header", what);
    assert_eq!(answer["error"]["header"], case.signature_header);

    // Stale and far-future timestamps.
    if case.timestamped {
        for (offset, code) in [(-600, "timestamp_too_old"), (600, "timestamp_in_future")] {
            let (body, extra) = delivery(case, "late", 11);
            let headers = signed(
                &mut signer,
                case,
                secret(case.secrets[0]),
                &body,
                now + offset,
                "late",
                &extra,
            );
            let (status, answer) = send(&server, case.source, &body, &headers).await;
            assert_rejected(status, &answer, code, what);
        }
    }

    // A redelivery is answered 200 with the original id and appends nothing,
    // before and after a restart.
    let (id, body, headers) = accepted[0].clone();
    let (status, answer) = send(&server, case.source, &body, &headers).await;
    assert_eq!(
        (status, &answer["duplicate"]),
        (200, &json!(true)),
        "{what}: {answer}"
    );
    assert_eq!(answer["id"], id.as_str());
    let server = server.restart();
    let (status, answer) = send(&server, case.source, &body, &headers).await;
    assert_eq!(
        (status, &answer["duplicate"]),
        (200, &json!(true)),
        "{what} after restart: {answer}"
    );

    let events = read_all(&client(), &server.events_url("hooks")).await;
    let ids: Vec<_> = events
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect();
    let expected: Vec<_> = accepted.iter().map(|(id, ..)| id.clone()).collect();
    assert_eq!(
        ids, expected,
        "{what}: exactly the genuine deliveries, once"
    );
    for event in &events {
        assert_eq!(event["source"], format!("/webhooks/{}", case.source));
        assert_eq!(event["type"], "test.event");
    }
    if case.scheme == "github" {
        assert_eq!(
            events[0]["subject"], "key-0",
            "subject from the configured pointer"
        );
    }
}

#[tokio::test]
async fn standard_webhooks() {
    check_scheme(&CASES[0]).await;
}

#[tokio::test]
async fn github() {
    check_scheme(&CASES[1]).await;
}

#[tokio::test]
async fn stripe() {
    check_scheme(&CASES[2]).await;
}

#[tokio::test]
async fn slack() {
    check_scheme(&CASES[3]).await;
}

#[tokio::test]
async fn shopify() {
    check_scheme(&CASES[4]).await;
}

#[tokio::test]
async fn generic_hmac() {
    check_scheme(&CASES[5]).await;
}

#[tokio::test]
async fn standard_webhooks_signed_by_python_too() {
    let ws = workspace();
    let server = serve(&ws);
    let mut signer = Signer::new(SignerLang::Python);
    let (body, extra) = delivery(&CASES[0], "py-1", 1);
    let headers = signed(
        &mut signer,
        &CASES[0],
        secret("T_STD_2"),
        &body,
        unix_now(),
        "py-1",
        &extra,
    );
    let (status, answer) = send(&server, "std", &body, &headers).await;
    assert_eq!(status, 200, "{answer}");
}

#[tokio::test]
async fn slack_url_verification_is_answered_with_the_challenge() {
    let ws = workspace();
    let server = serve(&ws);
    let mut signer = Signer::new(SignerLang::Python);
    let body = json!({"type": "url_verification", "challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"}).to_string();
    let mut headers = vec![("content-type".to_owned(), "application/json".to_owned())];
    headers.extend(signer.sign(&sign_request(
        "slack",
        secret("T_SLACK_1"),
        &body,
        unix_now(),
        "",
    )));
    let (status, answer) = send(&server, "slack", &body, &headers).await;
    assert_eq!(status, 200);
    assert_eq!(
        answer["challenge"],
        "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"
    );
    assert!(
        read_all(&client(), &server.events_url("hooks"))
            .await
            .is_empty()
    );
}

#[tokio::test]
async fn other_answers_name_the_problem() {
    let ws = workspace();
    let server = serve(&ws);
    let mut signer = Signer::new(SignerLang::Node);

    let (status, answer) = send(&server, "nope", "{}", &[]).await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (404, Some("unknown_source"))
    );

    // A source whose secret is not set fails closed.
    let (status, answer) = send(&server, "unset", "{}", &[]).await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (401, Some("source_not_configured"))
    );

    // Genuine but not JSON; genuine but of an undeclared type; genuine but
    // failing the schema.
    let case = &CASES[1];
    let body = "not json".to_owned();
    let headers = signed(
        &mut signer,
        case,
        secret("T_GH_1"),
        &body,
        unix_now(),
        "x",
        &[],
    );
    let (status, answer) = send(&server, "gh", &body, &headers).await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (400, Some("invalid_json"))
    );

    let body = json!({"n": 1}).to_string();
    let mut headers = signed(
        &mut signer,
        case,
        secret("T_GH_1"),
        &body,
        unix_now(),
        "x",
        &[],
    );
    headers.push(("x-github-event".into(), "deployment".into()));
    let (status, answer) = send(&server, "gh", &body, &headers).await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (422, Some("unknown_event_type"))
    );

    let body = json!({"action": "event", "n": "not a number"}).to_string();
    let mut headers = signed(
        &mut signer,
        case,
        secret("T_GH_1"),
        &body,
        unix_now(),
        "x",
        &[],
    );
    headers.push(("x-github-event".into(), "test".into()));
    let (status, answer) = send(&server, "gh", &body, &headers).await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (422, Some("schema_violation"))
    );
    assert_eq!(answer["error"]["pointer"], "/data/n");

    // Over the body limit.
    let big = "x".repeat(2 * 1024 * 1024);
    let (status, answer) = send(&server, "gh", &big, &[]).await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (413, Some("payload_too_large"))
    );

    let metrics = client()
        .get(format!("{}/metrics", server.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("switchyard_webhooks_total{source=\"gh\",outcome=\"invalid_event\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("switchyard_webhooks_total{source=\"gh\",outcome=\"invalid_body\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics
            .contains("switchyard_webhooks_total{source=\"unset\",outcome=\"not_configured\"} 1"),
        "{metrics}"
    );
}

/// A signed request ready to send: body, headers, and what it is.
type Prepared = (String, Vec<(String, String)>, &'static str);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storm_of_webhooks_lets_in_exactly_the_genuine_unique_ones() {
    const TOTAL: usize = 10_000;
    const DUPLICATES: usize = TOTAL / 20;
    const FORGED: usize = TOTAL / 20;
    const UNIQUE: usize = TOTAL - DUPLICATES - FORGED;
    const SENDERS: usize = 50;

    let ws = workspace();
    let server = serve(&ws);
    let case = &CASES[0];
    let now = unix_now();

    // Sign everything first (one signer process, Python standardwebhooks).
    let mut signer = Signer::new(SignerLang::Python);
    let mut requests: Vec<Prepared> = Vec::with_capacity(TOTAL);

    for i in 0..UNIQUE {
        let id = format!("storm-{i}");
        let (body, extra) = delivery(case, &id, i as u64);
        let headers = signed(
            &mut signer,
            case,
            secret("T_STD_1"),
            &body,
            now,
            &id,
            &extra,
        );
        requests.push((body, headers, "genuine"));
    }
    for i in 0..DUPLICATES {
        let original = requests[i * 7 % UNIQUE].clone();
        requests.push((original.0, original.1, "duplicate"));
    }
    for i in 0..FORGED {
        let id = format!("forged-{i}");
        let (body, extra) = delivery(case, &id, i as u64);
        let headers = signed(
            &mut signer,
            case,
            "whsec_Zm9yZ2VkLXNlY3JldC1rZXk=",
            &body,
            now,
            &id,
            &extra,
        );
        requests.push((body, headers, "forged"));
    }
    // A fixed shuffle, so a duplicate may race its original.
    let mut order: Vec<usize> = (0..TOTAL).collect();
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    for i in (1..TOTAL).rev() {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        order.swap(i, (seed % (i as u64 + 1)) as usize);
    }
    let requests = Arc::new(requests);
    let order = Arc::new(order);
    let url = format!("{}/v1/webhooks/std", server.url);

    let mut senders = Vec::new();
    for sender in 0..SENDERS {
        let requests = Arc::clone(&requests);
        let order = Arc::clone(&order);
        let url = url.clone();
        senders.push(tokio::spawn(async move {
            let client = client();
            let mut answers = Vec::new();
            for &index in order.iter().skip(sender).step_by(SENDERS) {
                let (body, headers, kind) = &requests[index];
                let mut request = client.post(&url).body(body.clone());
                for (name, value) in headers {
                    request = request.header(name, value);
                }
                let response = request.send().await.unwrap();
                let status = response.status().as_u16();
                let answer: Value = response.json().await.unwrap();
                answers.push((*kind, status, answer["duplicate"] == json!(true)));
            }
            answers
        }));
    }
    let mut counts: HashMap<(&str, u16, bool), usize> = HashMap::new();
    for sender in senders {
        for answer in sender.await.unwrap() {
            *counts.entry(answer).or_default() += 1;
        }
    }
    let forged_rejected = counts.get(&("forged", 401, false)).copied().unwrap_or(0);
    assert_eq!(forged_rejected, FORGED, "{counts:?}");
    // Of each genuine delivery sent twice, exactly one attempt appended.
    let first_attempts: usize = [("genuine", 200, false), ("duplicate", 200, false)]
        .iter()
        .map(|k| counts.get(k).copied().unwrap_or(0))
        .sum();
    let repeat_attempts: usize = [("genuine", 200, true), ("duplicate", 200, true)]
        .iter()
        .map(|k| counts.get(k).copied().unwrap_or(0))
        .sum();
    assert_eq!(first_attempts, UNIQUE, "{counts:?}");
    assert_eq!(repeat_attempts, DUPLICATES, "{counts:?}");

    let events = read_all(&client(), &server.events_url("hooks")).await;
    let ids: HashSet<_> = events
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(events.len(), UNIQUE, "one event per genuine delivery");
    assert_eq!(
        ids,
        (0..UNIQUE)
            .map(|i| format!("storm-{i}"))
            .collect::<HashSet<_>>()
    );
}

#[tokio::test]
async fn a_sender_that_hangs_up_mid_append_is_stored_once_after_its_retry() {
    use std::io::Write;
    let ws = workspace();
    let server = serve(&ws);
    let case = &CASES[0];
    let mut signer = Signer::new(case.signer);
    for round in 0..10u64 {
        let delivery_id = format!("msg_hangup_{round}");
        let (body, extra) = delivery(case, &delivery_id, round);
        let headers = signed(
            &mut signer,
            case,
            secret(case.secrets[0]),
            &body,
            unix_now(),
            &delivery_id,
            &extra,
        );
        // Send the whole request, then hang up at once, before the answer.
        let mut raw = format!(
            "POST /v1/webhooks/{} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n",
            case.source,
            body.len()
        );
        for (name, value) in &headers {
            raw.push_str(&format!("{name}: {value}\r\n"));
        }
        raw.push_str("\r\n");
        raw.push_str(&body);
        let mut stream = std::net::TcpStream::connect(&server.addr).unwrap();
        stream.write_all(raw.as_bytes()).unwrap();
        drop(stream);
        // The sender retries the same delivery.
        let (status, answer) = send(&server, case.source, &body, &headers).await;
        assert_eq!(status, 200, "{answer}");
    }
    let events = read_all(&client(), &server.events_url("hooks")).await;
    let mut seen = HashMap::new();
    for event in &events {
        *seen
            .entry(event["id"].as_str().unwrap().to_owned())
            .or_insert(0) += 1;
    }
    assert_eq!(seen.len(), 10, "{seen:?}");
    assert!(seen.values().all(|&n| n == 1), "stored twice: {seen:?}");
}

/// The same headers with another (unsigned) GitHub delivery id.
fn with_delivery(headers: &[(String, String)], id: &str) -> Vec<(String, String)> {
    let mut headers: Vec<_> = headers
        .iter()
        .filter(|(name, _)| name != "x-github-delivery")
        .cloned()
        .collect();
    headers.push(("x-github-delivery".into(), id.into()));
    headers
}

#[tokio::test]
async fn a_github_delivery_replayed_under_a_new_id_gets_in_once_with_dedupe_body() {
    let ws = Workspace::new();
    let toml = format!(
        "{HOOKS_TOML}\n[[webhooks]]\nsource = \"ghd\"\nscheme = \"github\"\n\
         secrets_env = [\"T_GH_1\"]\ndedupe_body = true\n"
    );
    ws.topic("hooks", 2, &toml);
    let server = serve(&ws);
    let case = &CASES[1];
    let mut signer = Signer::new(case.signer);
    let (body, extra) = delivery(case, "d-original", 7);
    let now = unix_now();
    let headers = signed(
        &mut signer,
        case,
        secret("T_GH_1"),
        &body,
        now,
        "d-original",
        &extra,
    );
    let (status, first) = send(&server, "ghd", &body, &headers).await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["duplicate"], false);
    // The captured delivery, replayed with a new delivery id.
    let (status, again) = send(
        &server,
        "ghd",
        &body,
        &with_delivery(&headers, "d-forged-1"),
    )
    .await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["duplicate"], true, "{again}");
    // Remembered across a restart.
    let server = server.restart();
    let (status, again) = send(
        &server,
        "ghd",
        &body,
        &with_delivery(&headers, "d-forged-2"),
    )
    .await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["duplicate"], true, "{again}");
    let events = read_all(&client(), &server.events_url("hooks")).await;
    assert_eq!(events.len(), 1, "{events:?}");
    // Without dedupe_body (source gh) the same replay is a new delivery, as
    // README says.
    let (status, _) = send(&server, "gh", &body, &with_delivery(&headers, "d-a")).await;
    assert_eq!(status, 200);
    let (status, answer) = send(&server, "gh", &body, &with_delivery(&headers, "d-b")).await;
    assert_eq!(status, 200);
    assert_eq!(answer["duplicate"], false);
}
