//! The web console: a page of plain HTML, CSS and JavaScript compiled into
//! the binary (`GET /`, `/console/*`), which reads the same API every
//! client uses with the session cookie, and `GET /v1/overview`: what the
//! caller may do and the live numbers of what it may see.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::{ApiError, AppState};
use crate::auth::Access;

const INDEX_HTML: &str = include_str!("console/index.html");
const APP_JS: &str = include_str!("console/app.js");
const APP_CSS: &str = include_str!("console/app.css");

/// The page loads its own script and style only, talks to this origin
/// only, and may not be framed: whatever an event holds is shown as text,
/// and a script that got in anyway could send nothing elsewhere.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; form-action 'self'; base-uri 'none'; \
     frame-ancestors 'none'";

/// `GET /`: the console's page.
pub async fn index() -> Response {
    asset("text/html; charset=utf-8", INDEX_HTML)
}

/// `GET /console/{file}`: its script and style.
pub async fn file(Path(file): Path<String>) -> Response {
    match file.as_str() {
        "app.js" => asset("text/javascript; charset=utf-8", APP_JS),
        "app.css" => asset("text/css; charset=utf-8", APP_CSS),
        _ => ApiError::new(
            axum::http::StatusCode::NOT_FOUND,
            "not_found",
            format!("the console has no file {file:?}"),
        )
        .into_response(),
    }
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    // Revalidated each time: a new binary serves its own assets at once.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

/// `GET /v1/overview`: whether tokens are needed at all, what this one may
/// do, and per topic it may see, the events published and delivered over
/// SSE since this process started, the SSE streams open now and its size
/// in storage where the broker tells it; for an
/// admin also the webhook sources with their deliveries per outcome.
pub async fn overview(
    State(state): State<Arc<AppState>>,
    axum::Extension(access): axum::Extension<Access>,
) -> impl IntoResponse {
    let mut topics: Vec<Value> = Vec::new();
    for topic in state
        .topics
        .iter()
        .filter(|topic| topic.origin != crate::topic::Origin::Switchyard)
        .filter(|topic| access.sees_topic(&topic.name))
    {
        let counts = state.metrics.topic_counts(&topic.name);
        // What the broker can tell of its size (null when it cannot, or
        // cannot now: the page shows a dash).
        let stored_bytes = state.broker.stored_bytes(&topic.name).await.ok().flatten();
        topics.push(json!({
            "name": topic.name,
            "published": counts.published,
            "delivered": counts.delivered,
            "subscribers": counts.subscribers,
            "stored_bytes": stored_bytes,
            "handler": state.handlers.output_of(&topic.name),
            "may_subscribe": access.may_subscribe(&topic.name).is_ok(),
            "may_publish": access.may_publish(&topic.name).is_ok(),
        }));
    }
    let admin = access.may_admin().is_ok();
    let mut overview = json!({
        "auth": if state.verifier.is_some() { "token" } else { "none" },
        "admin": admin,
        "scopes": match &access {
            Access::Anyone => Value::Null,
            Access::Token(scopes) => json!(scopes),
        },
        "topics": topics,
    });
    if admin {
        let mut outcomes: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
        for (source, outcome, count) in state.metrics.webhook_counts() {
            outcomes.entry(source).or_default().insert(outcome, count);
        }
        let webhooks: Vec<Value> = state
            .topics
            .webhook_sources()
            .into_iter()
            .map(|source| {
                json!({
                    "source": source.name,
                    "topic": source.topic,
                    "scheme": source.scheme.name(),
                    "outcomes": outcomes.remove(&source.name).unwrap_or_default(),
                })
            })
            .collect();
        overview["webhooks"] = json!(webhooks);
    }
    axum::Json(overview)
}
