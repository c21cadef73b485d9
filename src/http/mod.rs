//! The HTTP API (v1): routes, shared state, and the small endpoints.
//! Handlers translate between HTTP and the core; they hold no policy.

mod error;
mod events;
mod groups;
mod handlers;
mod publish;
mod webhook;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;
use tokio_util::sync::CancellationToken;

pub use self::error::{ApiError, ApiResult, ErrorCode};
use crate::broker::Broker;
use crate::group::Groups;
use crate::handler::Handlers;
use crate::ingest::Ingest;
use crate::ingest::webhook::Webhooks;
use crate::metrics::Metrics;
use crate::stream::Hubs;
use crate::topic::Topics;

/// What every handler may use.
pub struct AppState {
    pub topics: Topics,
    pub broker: Arc<Broker>,
    pub ingest: Arc<Ingest>,
    pub webhooks: Webhooks,
    pub handlers: Handlers,
    pub groups: Groups,
    pub hubs: Hubs,
    pub metrics: Arc<Metrics>,
    pub max_event_bytes: usize,
    pub max_batch_bytes: usize,
    pub heartbeat: Duration,
    pub shutdown: CancellationToken,
}

pub fn router(state: Arc<AppState>) -> Router {
    let metrics = Arc::clone(&state.metrics);
    Router::new()
        .route(
            "/v1/topics/{topic}/events",
            get(events::page).post(publish::publish),
        )
        .route("/v1/topics/{topic}/stream", get(events::stream))
        .route("/v1/topics/{topic}/groups/{group}", get(groups::status))
        .route(
            "/v1/topics/{topic}/groups/{group}/receive",
            axum::routing::post(groups::receive),
        )
        .route(
            "/v1/topics/{topic}/groups/{group}/ack",
            axum::routing::post(groups::ack),
        )
        .route(
            "/v1/topics/{topic}/groups/{group}/nack",
            axum::routing::post(groups::nack),
        )
        .route("/v1/topics", get(list_topics))
        .route("/v1/handlers", get(handlers::status))
        .route(
            "/v1/handlers/{name}/replay",
            axum::routing::post(handlers::replay),
        )
        .route(
            "/v1/webhooks/{source}",
            axum::routing::post(webhook::receive),
        )
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(render_metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        // Publish enforces its own limits to answer with a JSON 413.
        .layer(DefaultBodyLimit::disable())
        .layer(axum::middleware::map_response(move |response: Response| {
            let metrics = Arc::clone(&metrics);
            async move {
                if let Some(ErrorCode(code)) = response.extensions().get::<ErrorCode>() {
                    metrics.error(code);
                }
                response
            }
        }))
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such endpoint; see GET /v1/topics and the README's API table",
    )
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this endpoint does not take that method",
    )
}

async fn healthz() -> impl IntoResponse {
    axum::Json(json!({"status": "ok"}))
}

async fn readyz(State(state): State<Arc<AppState>>) -> ApiResult<impl IntoResponse> {
    state.broker.health().await?;
    Ok(axum::Json(
        json!({"status": "ready", "broker": state.broker.kind()}),
    ))
}

async fn render_metrics(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
}

async fn list_topics(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    let topics: Vec<_> = state
        .topics
        .iter()
        .map(|topic| {
            let types: serde_json::Map<String, serde_json::Value> = topic
                .types
                .iter()
                .map(|(name, ty)| {
                    (
                        name.clone(),
                        json!({"description": ty.description, "schema": ty.schema}),
                    )
                })
                .collect();
            json!({
                "name": topic.name,
                "description": topic.description,
                "partitions": topic.partitions,
                "key": topic.key,
                "retention": {
                    "max_age_seconds": topic.retention.max_age.map(|d| d.as_secs()),
                    "max_bytes": topic.retention.max_bytes,
                },
                "types": types,
            })
        })
        .collect();
    axum::Json(json!({ "topics": topics }))
}
