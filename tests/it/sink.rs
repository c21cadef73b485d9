//! A scriptable HTTP target for handler tests: a real axum server on a
//! loopback port that records every request and answers as told by its path.
//!
//! - `/ok` — 200 with a JSON body and an `x-request-id` header
//! - `/status/{code}` — always that status
//! - `/flaky/{n}` — 503 for the first `n` requests of each event, then 200
//! - `/fail-first/{n}` — 503 for the first `n` requests overall, then 200
//! - `/retry-after` — 429 + `Retry-After: 1` on an event's first request
//! - `/hang` — never answers in time
//! - `/slow/{ms}` — answers 200 after `ms` milliseconds
//! - `/toggle` — 500 while `failing` is set, else 200
//! - `/big/{bytes}` — 200 with a JSON body of about that many bytes

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use bytes::Bytes;
use serde_json::{Value, json};

/// The `n` of each call's event data, per its key `k`, in arrival order.
pub fn numbers_by_key(received: &[Received]) -> HashMap<String, Vec<u64>> {
    let mut by_key: HashMap<String, Vec<u64>> = HashMap::new();
    for request in received {
        let data = &request.json()["data"];
        by_key
            .entry(data["k"].as_str().unwrap().to_owned())
            .or_default()
            .push(data["n"].as_u64().unwrap());
    }
    by_key
}

/// One request the sink received.
#[derive(Debug, Clone)]
pub struct Received {
    pub at: Instant,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Received {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    /// The source event's id: from the structured body, or webhook-id.
    pub fn event_id(&self) -> String {
        if let Some(id) = self.headers.get("webhook-id") {
            return id.to_str().unwrap().to_owned();
        }
        if let Some(id) = self.headers.get("ce-id") {
            return id.to_str().unwrap().to_owned();
        }
        self.json()["id"].as_str().unwrap_or_default().to_owned()
    }
}

#[derive(Default)]
pub struct SinkState {
    pub received: Mutex<Vec<Received>>,
    pub failing: AtomicBool,
    concurrent: AtomicUsize,
    pub max_concurrent: AtomicUsize,
    per_event: Mutex<HashMap<String, usize>>,
    total: AtomicUsize,
}

pub struct Sink {
    pub url: String,
    pub state: Arc<SinkState>,
    _server: tokio::task::JoinHandle<()>,
}

impl Sink {
    pub async fn start() -> Sink {
        let state = Arc::new(SinkState::default());
        let app = Router::new()
            .route("/{*path}", post(handle))
            .with_state(Arc::clone(&state));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Sink {
            url,
            state,
            _server: server,
        }
    }

    pub fn received(&self) -> Vec<Received> {
        self.state.received.lock().unwrap().clone()
    }

    /// Waits until at least `count` requests arrived.
    pub async fn wait_for(&self, count: usize) -> Vec<Received> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let received = self.received();
            if received.len() >= count {
                return received;
            }
            assert!(
                Instant::now() < deadline,
                "the sink got {} of {count} requests",
                received.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

async fn handle(
    State(state): State<Arc<SinkState>>,
    Path(path): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let received = Received {
        at: Instant::now(),
        headers,
        body,
    };
    let event_id = received.event_id();
    state.received.lock().unwrap().push(received);
    let nth_for_event = {
        let mut per_event = state.per_event.lock().unwrap();
        let count = per_event.entry(event_id).or_default();
        *count += 1;
        *count
    };
    let nth_overall = state.total.fetch_add(1, Ordering::SeqCst) + 1;
    let now = state.concurrent.fetch_add(1, Ordering::SeqCst) + 1;
    state.max_concurrent.fetch_max(now, Ordering::SeqCst);
    let response = answer(&state, &path, nth_for_event, nth_overall).await;
    state.concurrent.fetch_sub(1, Ordering::SeqCst);
    response
}

async fn answer(
    state: &SinkState,
    path: &str,
    nth_for_event: usize,
    nth_overall: usize,
) -> Response {
    let ok = || {
        (
            StatusCode::OK,
            [("x-request-id", "sink-1")],
            axum::Json(json!({"ok": true})),
        )
            .into_response()
    };
    let segments: Vec<&str> = path.split('/').collect();
    match segments.as_slice() {
        ["ok"] => ok(),
        ["status", code] => StatusCode::from_u16(code.parse().unwrap())
            .unwrap()
            .into_response(),
        ["flaky", n] if nth_for_event <= n.parse().unwrap() => {
            StatusCode::SERVICE_UNAVAILABLE.into_response()
        }
        ["flaky", _] => ok(),
        ["fail-first", n] if nth_overall <= n.parse().unwrap() => {
            StatusCode::SERVICE_UNAVAILABLE.into_response()
        }
        ["fail-first", _] => ok(),
        ["retry-after"] if nth_for_event == 1 => {
            (StatusCode::TOO_MANY_REQUESTS, [("retry-after", "1")]).into_response()
        }
        ["retry-after"] => ok(),
        ["hang"] => {
            tokio::time::sleep(Duration::from_secs(60)).await;
            ok()
        }
        ["slow", ms] => {
            tokio::time::sleep(Duration::from_millis(ms.parse().unwrap())).await;
            ok()
        }
        ["toggle"] if state.failing.load(Ordering::SeqCst) => {
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
        ["toggle"] => ok(),
        ["big", bytes] => (
            StatusCode::OK,
            [("content-type", "application/json")],
            format!("{{\"pad\":\"{}\"}}", "b".repeat(bytes.parse().unwrap())),
        )
            .into_response(),
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}
