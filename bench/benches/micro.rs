//! Criterion micro-benchmarks of switchyard's hot paths, through the public
//! library API, each over a realistic 1 KiB input (`bench/README.md`,
//! "Micro-benchmarks"):
//!
//! - `event`: parsing a structured CloudEvent, and parsing plus JSON Schema
//!   validation against the `order.created` schema of `topics/orders`;
//! - `webhook_verify`: each signature scheme's verification of a 1 KiB body,
//!   beside a bare HMAC-SHA256 of the same body (the baseline);
//! - `log_append`: one 1 KiB event appended to the embedded log with
//!   `fsync = always` and `fsync = interval` (10 ms, the server's default).
//!
//! Run: `cargo bench -p switchyard-bench --all-features --bench micro` (in
//! bench/, `-p switchyard-bench` may go; about 1–2 minutes). Claims are
//! ratios between benchmarks of the same run.

use std::fs;
use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use base64::Engine;
use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use hmac::{KeyInit, Mac};
use serde_json::{Value, json};
use switchyard::broker::embedded::{EmbeddedConfig, FsyncPolicy};
use switchyard::broker::{Broker, BrokerConfig, Record};
use switchyard::event::CloudEvent;
use switchyard::ingest::Ingest;
use switchyard::ingest::webhook::{Admission, WebhookError, Webhooks};
use switchyard::metrics::Metrics;
use switchyard::topic::Topics;

type HmacSha256 = hmac::Hmac<sha2::Sha256>;
/// A signed request's headers: (lower-case name, value).
type SignedHeaders = Vec<(&'static str, String)>;

/// Every input is padded to this size.
const BODY_BYTES: usize = 1024;
/// The embedded server's default fsync period in interval mode.
const FSYNC_INTERVAL: Duration = Duration::from_millis(10);
/// Webhook requests prepared (outside the timed region) per timed chunk.
const CHUNK: u64 = 4096;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread runtime")
}

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_secs()
}

// ---------------------------------------------------------------------------
// event: parse, and parse + JSON Schema validation
// ---------------------------------------------------------------------------

/// An `order.created` event of `BODY_BYTES` as the publish endpoint receives
/// it (`application/cloudevents+json`): line items fill it to size.
fn order_event() -> Vec<u8> {
    let event = |items: usize, pad: usize| {
        let items: Vec<Value> = (0..items)
            .map(|i| json!({"sku": format!("SKU-{i:05}"), "quantity": i % 5 + 1}))
            .collect();
        serde_json::to_vec(&json!({
            "specversion": "1.0",
            "id": "0192f0c4-7c1e-7b3a-9a51-3f6c1d2e4b5a",
            "source": "/shop/checkout",
            "type": "order.created",
            "time": "2026-11-22T04:59:00.123Z",
            "subject": "order-1042",
            "datacontenttype": "application/json",
            "data": {
                "order_id": "order-1042",
                "amount": 129.95,
                "currency": "EUR",
                "note": "x".repeat(pad),
                "items": items,
            }
        }))
        .expect("JSON")
    };
    let mut items = 0;
    while event(items + 1, 0).len() <= BODY_BYTES {
        items += 1;
    }
    let pad = BODY_BYTES - event(items, 0).len();
    let body = event(items, pad);
    assert_eq!(body.len(), BODY_BYTES);
    body
}

/// The `orders` topic with the repository's real `order.created` schema.
fn orders_topics(dir: &Path) -> Topics {
    let repo_topics = Path::new(env!("CARGO_MANIFEST_DIR")).join("../topics");
    fs::create_dir_all(dir.join("orders")).expect("topic dir");
    fs::copy(
        repo_topics.join("orders/order.created.schema.json"),
        dir.join("orders/order.created.schema.json"),
    )
    .expect("copying topics/orders/order.created.schema.json");
    fs::write(
        dir.join("orders.toml"),
        "name = \"orders\"\npartitions = 4\nkey = \"/data/order_id\"\n\n\
         [types.\"order.created\"]\nschema = \"orders/order.created.schema.json\"\n",
    )
    .expect("topic file");
    Topics::load(dir).unwrap_or_else(|problems| panic!("topics: {problems:?}"))
}

fn parse(body: &[u8]) -> CloudEvent {
    // What `POST /v1/topics/{topic}/events` does with a structured body.
    let value: Value = serde_json::from_slice(body).expect("valid JSON");
    CloudEvent::from_json(value).expect("a valid CloudEvent")
}

fn event_benches(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    let topics = orders_topics(dir.path());
    let topic = topics.get("orders").expect("orders topic");
    let body = order_event();
    topic.validate(&parse(&body)).expect("the event is valid");

    let mut group = c.benchmark_group("event");
    group.bench_function("parse", |b| b.iter(|| parse(black_box(&body))));
    group.bench_function("parse_validate", |b| {
        b.iter(|| {
            let event = parse(black_box(&body));
            topic.validate(&event).expect("valid");
            event
        })
    });
    group.finish();
}

// ---------------------------------------------------------------------------
// webhook_verify: each scheme against a bare HMAC-SHA256
// ---------------------------------------------------------------------------

/// The secret every source is configured with, as the sender holds it.
const SECRET: &[u8] = b"bench-secret-0123456789abcdef0123456789";

fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let mut mac = HmacSha256::new_from_slice(key).expect("any key length");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().to_vec()
}

/// One source per scheme on a `hooks` topic; the secret's environment
/// variable, and the signed request (headers) for `body`.
struct Scheme {
    name: &'static str,
    /// The `[[webhooks]]` table's scheme-specific lines.
    toml: &'static str,
    /// Signs (body, delivery id, timestamp) into the request's headers.
    sign: fn(&[u8], &str, &str) -> SignedHeaders,
}

const SCHEMES: [Scheme; 6] = [
    Scheme {
        name: "standard-webhooks",
        toml: "scheme = \"standard-webhooks\"\n",
        sign: |body, id, ts| {
            let b64 = base64::engine::general_purpose::STANDARD;
            let signature = hmac_sha256(SECRET, &[id.as_bytes(), b".", ts.as_bytes(), b".", body]);
            vec![
                ("webhook-id", id.to_owned()),
                ("webhook-timestamp", ts.to_owned()),
                ("webhook-signature", format!("v1,{}", b64.encode(signature))),
            ]
        },
    },
    Scheme {
        name: "github",
        toml: "scheme = \"github\"\n",
        sign: |body, id, _| {
            let signature = hmac_sha256(SECRET, &[body]);
            vec![
                ("x-github-event", "push".to_owned()),
                ("x-github-delivery", id.to_owned()),
                (
                    "x-hub-signature-256",
                    format!("sha256={}", hex::encode(signature)),
                ),
            ]
        },
    },
    Scheme {
        name: "stripe",
        toml: "scheme = \"stripe\"\n",
        sign: |body, _, ts| {
            let signature = hmac_sha256(SECRET, &[ts.as_bytes(), b".", body]);
            vec![(
                "stripe-signature",
                format!("t={ts},v1={}", hex::encode(signature)),
            )]
        },
    },
    Scheme {
        name: "slack",
        toml: "scheme = \"slack\"\n",
        sign: |body, _, ts| {
            let signature = hmac_sha256(SECRET, &[b"v0:", ts.as_bytes(), b":", body]);
            vec![
                ("x-slack-request-timestamp", ts.to_owned()),
                (
                    "x-slack-signature",
                    format!("v0={}", hex::encode(signature)),
                ),
            ]
        },
    },
    Scheme {
        name: "shopify",
        toml: "scheme = \"shopify\"\n",
        sign: |body, id, _| {
            let b64 = base64::engine::general_purpose::STANDARD;
            let signature = hmac_sha256(SECRET, &[body]);
            vec![
                ("x-shopify-topic", "orders/create".to_owned()),
                ("x-shopify-webhook-id", id.to_owned()),
                ("x-shopify-hmac-sha256", b64.encode(signature)),
            ]
        },
    },
    Scheme {
        name: "hmac",
        toml: "scheme = \"hmac\"\nheader = \"X-Signature\"\nprefix = \"sha256=\"\n\
               timestamp_header = \"X-Timestamp\"\nid_header = \"X-Delivery\"\n",
        sign: |body, id, ts| {
            // The default signed content with a timestamp header: "{timestamp}.{body}".
            let signature = hmac_sha256(SECRET, &[ts.as_bytes(), b".", body]);
            vec![
                ("x-delivery", id.to_owned()),
                ("x-timestamp", ts.to_owned()),
                ("x-signature", format!("sha256={}", hex::encode(signature))),
            ]
        },
    },
];

fn secret_env(scheme: &str) -> String {
    format!(
        "SWITCHYARD_MICRO_{}_SECRET",
        scheme.replace('-', "_").to_uppercase()
    )
}

/// A 1 KiB JSON webhook body, as a provider would send.
fn webhook_body() -> Bytes {
    let body = |pad: usize| {
        format!(
            r#"{{"type":"order.created","id":"evt_1042","created":1795000000,"data":{{"object":{{"order_id":"order-1042","amount":12995,"currency":"eur","note":"{}"}}}}}}"#,
            "x".repeat(pad)
        )
    };
    let pad = BODY_BYTES - body(0).len();
    let body = body(pad);
    assert_eq!(body.len(), BODY_BYTES);
    Bytes::from(body)
}

fn webhook_benches(c: &mut Criterion) {
    let rt = runtime();
    let dir = tempfile::tempdir().expect("temp dir");
    let topics_dir = dir.path().join("topics");
    fs::create_dir_all(&topics_dir).expect("topics dir");
    fs::write(
        topics_dir.join("bench.event.schema.json"),
        r#"{"type":"object"}"#,
    )
    .expect("schema");
    let mut toml = "name = \"hooks\"\npartitions = 1\n\n[types.\"bench.event\"]\n\
                    schema = \"bench.event.schema.json\"\n"
        .to_owned();
    for scheme in &SCHEMES {
        let env = secret_env(scheme.name);
        // Standard Webhooks secrets are `whsec_` + base64 of the key; the
        // others are the key's text.
        let secret = if scheme.name == "standard-webhooks" {
            format!(
                "whsec_{}",
                base64::engine::general_purpose::STANDARD.encode(SECRET)
            )
        } else {
            String::from_utf8(SECRET.to_vec()).expect("ASCII")
        };
        // SAFETY: set before anything else runs on another thread of this
        // process (criterion runs benchmarks on this thread).
        unsafe { std::env::set_var(&env, secret) };
        toml.push_str(&format!(
            "\n[[webhooks]]\nsource = \"{}\"\n{}secrets_env = [\"{env}\"]\n\
             tolerance = \"1h\"\ntype = {{ fixed = \"bench.event\" }}\n",
            scheme.name, scheme.toml
        ));
    }
    fs::write(topics_dir.join("hooks.toml"), toml).expect("topic file");
    let topics = Topics::load(&topics_dir).unwrap_or_else(|problems| panic!("{problems:?}"));
    let webhooks = rt.block_on(async {
        let config = BrokerConfig::Embedded(EmbeddedConfig {
            data_dir: dir.path().join("data"),
            fsync: FsyncPolicy::Always,
        });
        let broker = Arc::new(Broker::open(&config, &topics).await.expect("broker"));
        let metrics = Arc::new(Metrics::default());
        let ingest = Arc::new(Ingest::new(
            Topics::load(&topics_dir).expect("topics"),
            broker,
            Arc::clone(&metrics),
            1024 * 1024,
        ));
        Webhooks::new(&topics, ingest, metrics)
    });

    let body = webhook_body();
    let ts = now_s().to_string();
    let mut group = c.benchmark_group("webhook_verify");
    group.bench_function("hmac_sha256_baseline", |b| {
        b.iter(|| hmac_sha256(black_box(SECRET), &[black_box(&body)]))
    });
    for scheme in &SCHEMES {
        let mut headers = HeaderMap::new();
        for (name, value) in (scheme.sign)(&body, "msg_2Lh4bench0001", &ts) {
            headers.insert(
                HeaderName::from_static(name),
                HeaderValue::from_str(&value).expect("header value"),
            );
        }
        // A correctly signed request whose Content-Type is not JSON: the
        // public entry point verifies the signature over the raw bytes,
        // then refuses the body before parsing it, so what is timed is the
        // verification (plus the entry point's bookkeeping).
        headers.insert("content-type", HeaderValue::from_static("text/plain"));
        let check = rt.block_on(webhooks.receive(scheme.name, headers.clone(), body.clone()));
        assert!(
            matches!(check, Err(WebhookError::NotJson(_))),
            "{}: expected a verified request refused as not JSON, got {:?}",
            scheme.name,
            check.map(|o| matches!(o, Admission::Accepted(_)))
        );
        group.bench_function(scheme.name, |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let mut timed = Duration::ZERO;
                    let mut left = iters;
                    while left > 0 {
                        let n = left.min(CHUNK);
                        left -= n;
                        let requests: Vec<HeaderMap> = (0..n).map(|_| headers.clone()).collect();
                        let start = Instant::now();
                        for request in requests {
                            let outcome = webhooks.receive(scheme.name, request, body.clone());
                            let _ = black_box(outcome.await);
                        }
                        timed += start.elapsed();
                    }
                    timed
                })
            })
        });
    }
    group.finish();
}

// ---------------------------------------------------------------------------
// log_append: fsync always against interval
// ---------------------------------------------------------------------------

fn append_benches(c: &mut Criterion) {
    let rt = runtime();
    let payload = Bytes::from(order_event());
    let mut group = c.benchmark_group("log_append");
    for (name, fsync) in [
        ("fsync_always", FsyncPolicy::Always),
        ("fsync_interval_10ms", FsyncPolicy::Interval(FSYNC_INTERVAL)),
    ] {
        let dir = tempfile::tempdir().expect("temp dir");
        let topics_dir = dir.path().join("topics");
        let topics = orders_topics(&topics_dir);
        let config = BrokerConfig::Embedded(EmbeddedConfig {
            data_dir: dir.path().join("data"),
            fsync,
        });
        let broker = rt.block_on(Broker::open(&config, &topics)).expect("broker");
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let start = Instant::now();
                    for _ in 0..iters {
                        let record = Record {
                            partition: 0,
                            key: None,
                            identity: String::new(),
                            payload: payload.clone(),
                        };
                        let appended = broker.append("orders", vec![record]).await;
                        black_box(appended.expect("append"));
                    }
                    start.elapsed()
                })
            })
        });
        rt.block_on(broker.close());
    }
    group.finish();
}

criterion_group! {
    name = micro;
    // Small samples keep the whole run to a minute or two; the ratios, not
    // the absolute times, are what bench/RESULTS.md claims.
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = event_benches, webhook_benches, append_benches
}
criterion_main!(micro);
