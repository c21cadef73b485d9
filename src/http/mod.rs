//! The HTTP API (v1): routes, shared state, and the small endpoints.
//! Handlers translate between HTTP and the core; they hold no policy.

mod console;
mod error;
mod events;
mod groups;
mod guard;
mod handlers;
mod mcp;
mod publish;
mod topics;
mod webhook;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use serde_json::json;
use tokio_util::sync::CancellationToken;

pub use self::error::{ApiError, ApiResult, CONTROL_BODY_LIMIT, ErrorCode};
use crate::auth::{Access, Need, Verifier};
use crate::broker::Broker;
use crate::fanout::Hubs;
use crate::group::Groups;
use crate::handler::Handlers;
use crate::ingest::Ingest;
use crate::ingest::webhook::Webhooks;
use crate::metrics::Metrics;
use crate::topic::Topics;

/// What every handler may use.
pub struct AppState {
    pub topics: Topics,
    pub catalog: Arc<crate::catalog::Catalog>,
    pub reloader: Arc<crate::reload::Reloader>,
    pub broker: Arc<Broker>,
    pub ingest: Arc<Ingest>,
    pub webhooks: Arc<Webhooks>,
    pub handlers: Handlers,
    pub groups: Arc<Groups>,
    pub hubs: Hubs,
    pub metrics: Arc<Metrics>,
    pub max_event_bytes: usize,
    pub max_batch_bytes: usize,
    pub heartbeat: Duration,
    pub shutdown: CancellationToken,
    /// Checks bearer tokens; `None`: no key configured, everyone may do anything.
    pub verifier: Option<Verifier>,
    /// `/metrics` without a token.
    pub metrics_open: bool,
    /// Origins allowed cross-origin access (CORS); none: no CORS at all.
    pub cors_origins: Vec<String>,
    /// The port this server listens on.
    pub port: u16,
}

pub fn router(state: Arc<AppState>) -> Router {
    let metrics = Arc::clone(&state.metrics);
    let cors_origins = state.cors_origins.clone();
    let guard = |need: Need| {
        axum::middleware::from_fn_with_state((Arc::clone(&state), need), guard::authorize)
    };
    let router = Router::new()
        .route(
            "/v1/topics/{topic}/events",
            get(events::page)
                .route_layer(guard(Need::Subscribe))
                .merge(post(publish::publish).route_layer(guard(Need::Publish))),
        )
        .route(
            "/v1/topics/{topic}/stream",
            get(events::stream).route_layer(guard(Need::Subscribe)),
        )
        // Several topics: each is checked inside (they are in the query).
        .route(
            "/v1/stream",
            get(events::stream_many).route_layer(guard(Need::Token)),
        )
        .route(
            "/v1/topics/{topic}/groups",
            get(groups::list).route_layer(guard(Need::Admin)),
        )
        .route(
            "/v1/topics/{topic}/groups/{group}",
            get(groups::status)
                .route_layer(guard(Need::Consume))
                .merge(delete(groups::delete).route_layer(guard(Need::Admin))),
        )
        .route(
            "/v1/topics/{topic}/groups/{group}/reset",
            post(groups::reset).route_layer(guard(Need::Admin)),
        )
        .route(
            "/v1/topics/{topic}/groups/{group}/receive",
            post(groups::receive).route_layer(guard(Need::Consume)),
        )
        .route(
            "/v1/topics/{topic}/groups/{group}/ack",
            post(groups::ack).route_layer(guard(Need::Consume)),
        )
        .route(
            "/v1/topics/{topic}/groups/{group}/nack",
            post(groups::nack).route_layer(guard(Need::Consume)),
        )
        .route(
            "/v1/topics/{topic}/groups/{group}/extend",
            post(groups::extend).route_layer(guard(Need::Consume)),
        )
        .route(
            "/v1/topics",
            get(list_topics).route_layer(guard(Need::Token)),
        )
        .route(
            "/v1/topics/{topic}",
            get(topics::get).route_layer(guard(Need::Subscribe)).merge(
                put(topics::put)
                    .delete(topics::delete)
                    .route_layer(guard(Need::Admin)),
            ),
        )
        .route(
            "/v1/asyncapi.json",
            get(asyncapi).route_layer(guard(Need::Token)),
        )
        .route(
            "/v1/session",
            post(guard::sign_in)
                .route_layer(guard(Need::Token))
                .delete(guard::sign_out),
        )
        .route(
            "/v1/handlers",
            get(handlers::status).route_layer(guard(Need::Admin)),
        )
        .route(
            "/v1/reload",
            post(topics::reload).route_layer(guard(Need::Admin)),
        )
        .route(
            "/v1/handlers/{name}/replay",
            post(handlers::replay).route_layer(guard(Need::Admin)),
        )
        // Webhooks authenticate by their sender's signature.
        .route("/v1/webhooks/{source}", post(webhook::receive))
        // Where OAuth-capable clients learn how to get a token (RFC 9728).
        .route(
            "/.well-known/oauth-protected-resource",
            get(guard::protected_resource),
        )
        .route(
            "/.well-known/oauth-protected-resource/{*resource}",
            get(guard::protected_resource),
        )
        // The console: its page and assets are open (they hold no data);
        // everything it shows comes from the API, with the session cookie.
        .route("/", get(console::index))
        .route("/console/{file}", get(console::file))
        .route(
            "/v1/overview",
            get(console::overview).route_layer(guard(Need::Token)),
        )
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route(
            "/metrics",
            get(render_metrics).route_layer(guard(Need::Metrics)),
        )
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        // Publish and webhooks read their bodies with their own limits (and
        // a JSON 413); everything else is small.
        .layer(DefaultBodyLimit::max(CONTROL_BODY_LIMIT))
        .layer(axum::middleware::map_response(error::json_rejections))
        .layer(axum::middleware::map_response(move |response: Response| {
            let metrics = Arc::clone(&metrics);
            async move {
                if let Some(ErrorCode(code)) = response.extensions().get::<ErrorCode>() {
                    metrics.error(code);
                }
                response
            }
        }))
        .with_state(Arc::clone(&state));
    // Agents (MCP): JSON-RPC answers its own errors, so /mcp stays outside
    // the JSON error rewriting; the guard in front of it is the same.
    let mcp = Router::new()
        .route_service("/mcp", mcp::service(&state))
        .route_layer(axum::middleware::from_fn_with_state(
            Arc::clone(&state),
            mcp::authorize,
        ))
        .route_layer(guard(Need::Token));
    with_cors(router.merge(mcp), cors_origins)
}

/// Cross-origin access for the listed origins only: tower-http answers
/// preflights and marks answers, and `only_listed_origins` takes every
/// CORS header off answers to any other origin. Nothing at all without
/// origins.
fn with_cors(router: Router, origins: Vec<String>) -> Router {
    use axum::http::{HeaderValue, Method};
    use tower_http::cors::{AllowHeaders, AllowOrigin, CorsLayer};
    if origins.is_empty() {
        return router;
    }
    let allowed: Vec<HeaderValue> = origins
        .iter()
        .filter_map(|origin| HeaderValue::from_str(origin).ok())
        .collect();
    let cors = CorsLayer::new()
        .allow_origin(AllowOrigin::list(allowed))
        .allow_credentials(true)
        .allow_methods([Method::GET, Method::POST, Method::DELETE, Method::OPTIONS])
        // Authorization, Content-Type, Last-Event-ID and the ce-* headers
        // of binary mode: whatever the preflight asks for.
        .allow_headers(AllowHeaders::mirror_request())
        .expose_headers([header::RETRY_AFTER, header::WWW_AUTHENTICATE])
        .max_age(Duration::from_secs(600));
    router
        .layer(cors)
        .layer(axum::middleware::from_fn_with_state(
            Arc::new(origins),
            only_listed_origins,
        ))
}

/// Runs `work` on its own task, so that it finishes even when the client
/// goes away and the request's future is dropped: an append is never cut
/// off between its parts.
async fn detached<T: Send + 'static>(
    work: impl std::future::Future<Output = ApiResult<T>> + Send + 'static,
) -> ApiResult<T> {
    tokio::spawn(work).await.unwrap_or_else(|err| {
        tracing::error!(error = %err, "a detached request task failed");
        Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the request failed inside the server; see its log",
        ))
    })
}

/// CORS headers go to the listed origins only: an answer to any other
/// origin (or to a request without one) carries none.
async fn only_listed_origins(
    State(origins): State<Arc<Vec<String>>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let listed = request
        .headers()
        .get(header::ORIGIN)
        .and_then(|origin| origin.to_str().ok())
        .is_some_and(|origin| origins.iter().any(|o| o == origin));
    let mut response = next.run(request).await;
    if !listed {
        let headers = response.headers_mut();
        let names: Vec<_> = headers
            .keys()
            .filter(|name| name.as_str().starts_with("access-control-"))
            .cloned()
            .collect();
        for name in names {
            headers.remove(name);
        }
    }
    response
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
    if let Err(err) = state.broker.health().await {
        // The operators' probe: it names the cause (a full disk, a refused
        // connection), which other answers keep in the log.
        let detail = err.detail();
        return Err(ApiError::from(err).with_message(detail));
    }
    Ok(axum::Json(
        json!({"status": "ready", "broker": state.broker.kind()}),
    ))
}

/// OpenMetrics for scrapers that ask for it, Prometheus text 0.0.4 otherwise.
async fn render_metrics(
    State(state): State<Arc<AppState>>,
    headers: axum::http::HeaderMap,
) -> impl IntoResponse {
    let openmetrics = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/openmetrics-text"));
    if openmetrics {
        (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            state.metrics.render(),
        )
    } else {
        (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            state.metrics.render_prometheus_text(),
        )
    }
}

async fn list_topics(
    State(state): State<Arc<AppState>>,
    axum::Extension(access): axum::Extension<Access>,
) -> impl IntoResponse {
    topics_json(&state, &access)
}

/// `GET /v1/asyncapi.json`: the AsyncAPI document of the topics this
/// caller sees, their webhook sources, and the handlers writing them.
async fn asyncapi(
    State(state): State<Arc<AppState>>,
    axum::Extension(access): axum::Extension<Access>,
    headers: axum::http::HeaderMap,
) -> impl IntoResponse {
    let topics: Vec<_> = state
        .topics
        .iter()
        .filter(|topic| topic.origin != crate::topic::Origin::Switchyard)
        .filter(|topic| access.sees_topic(&topic.name))
        .collect();
    let described = crate::asyncapi::Described {
        topics,
        handlers: state.handlers.specs(),
        host: headers
            .get(header::HOST)
            .and_then(|host| host.to_str().ok())
            .map(str::to_owned),
        secured: state.verifier.is_some(),
    };
    axum::Json(crate::asyncapi::document(&described))
}

/// The topics `access` may see (`GET /v1/topics`, MCP `list_topics`).
fn topics_json(state: &AppState, access: &Access) -> axum::Json<serde_json::Value> {
    let topics: Vec<_> = state
        .topics
        .iter()
        .filter(|topic| topic.origin != crate::topic::Origin::Switchyard)
        .filter(|topic| access.sees_topic(&topic.name))
        .map(|topic| topic_json(&topic))
        .collect();
    axum::Json(json!({ "topics": topics }))
}

/// One topic's description: partitions, key, retention, event types with
/// their JSON Schemas.
fn topic_json(topic: &crate::topic::Topic) -> serde_json::Value {
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
}

/// Clients may publish to `topic`: it exists and no handler writes there.
fn publishable(state: &AppState, topic: &str) -> ApiResult<()> {
    if state.topics.get(topic).is_none() {
        return Err(ApiError::unknown_topic(topic));
    }
    if topic == crate::topic::SCHEDULE_TOPIC {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "internal_topic",
            format!("topic {topic:?} holds scheduled events until they are due: publish to their own topic with a deliverat time or ?delay="),
        )
        .with("topic", topic));
    }
    if let Some(handler) = state.handlers.output_of(topic) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "handler_output",
            format!("topic {topic:?} holds the outcomes of handler {handler:?}: only the handler writes there"),
        )
        .with("topic", topic)
        .with("handler", handler.as_str()));
    }
    Ok(())
}
