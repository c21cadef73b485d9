//! `POST /v1/topics/{topic}/events`: structured, binary, batch and plain-JSON
//! publishes. The answer is 200 only after every event is durable.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use bytes::Bytes;
use serde::Deserialize;
use serde_json::Value;
use tracing::Instrument;

use super::{ApiError, ApiResult, AppState};
use crate::event::{CloudEvent, is_json_media_type, media_type_essence};

const STRUCTURED: &str = "application/cloudevents+json";
const BATCH: &str = "application/cloudevents-batch+json";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishQuery {
    /// The event type for a plain-JSON publish.
    #[serde(rename = "type")]
    ty: Option<String>,
    /// The subject for a plain-JSON publish.
    subject: Option<String>,
    /// The event id for a plain-JSON publish (default: a new UUIDv7). A
    /// client that may retry sets it: a second publish of one id within
    /// the topic's dedupe window stores nothing.
    id: Option<String>,
    /// Deliver the events this long from now (scheduled; the topic must
    /// have `schedule = true`).
    delay: Option<String>,
    /// Deliver the events at this RFC 3339 time (the same, as a time).
    deliver_at: Option<String>,
}

impl PublishQuery {
    /// The `deliverat` time the query asks for, if any.
    fn deliver_at(&self) -> ApiResult<Option<String>> {
        match (&self.delay, &self.deliver_at) {
            (Some(_), Some(_)) => Err(ApiError::bad_request(
                "invalid_query",
                "give ?delay= or ?deliver_at=, not both",
            )
            .with("parameter", "delay")),
            (None, Some(at)) => Ok(Some(at.clone())),
            (Some(delay), None) => {
                let delay = crate::problem::parse_duration(delay, "30s").map_err(|why| {
                    ApiError::bad_request("invalid_duration", format!("delay: {why}"))
                        .with("parameter", "delay")
                })?;
                let due = time::OffsetDateTime::now_utc() + delay;
                Ok(Some(
                    due.format(&time::format_description::well_known::Rfc3339)
                        .expect("a time formats as RFC 3339"),
                ))
            }
            (None, None) => Ok(None),
        }
    }
}

/// The request's content mode, decided from its headers.
enum Mode {
    Structured,
    Batch,
    Binary,
    PlainJson,
}

fn media_type(headers: &HeaderMap) -> ApiResult<Option<String>> {
    match headers.get(header::CONTENT_TYPE) {
        None => Ok(None),
        Some(value) => value.to_str().map(|v| Some(v.to_owned())).map_err(|_| {
            ApiError::bad_request("invalid_header", "Content-Type is not visible ASCII")
                .with("header", "content-type")
        }),
    }
}

fn mode(headers: &HeaderMap, content_type: Option<&str>) -> ApiResult<Mode> {
    if headers.contains_key("ce-specversion") {
        return Ok(Mode::Binary);
    }
    let Some(content_type) = content_type else {
        return Err(unsupported("the request has no Content-Type"));
    };
    match media_type_essence(content_type).as_str() {
        STRUCTURED => Ok(Mode::Structured),
        BATCH => Ok(Mode::Batch),
        _ if is_json_media_type(content_type) => Ok(Mode::PlainJson),
        other => Err(unsupported(format!(
            "Content-Type {other:?} is not accepted"
        ))),
    }
}

fn unsupported(reason: impl Into<String>) -> ApiError {
    let reason = reason.into();
    ApiError::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
        format!("{reason}: send {STRUCTURED}, {BATCH}, application/json with ?type=, or binary mode with ce-* headers"),
    )
    .with("header", "content-type")
}

pub(super) async fn read_body(body: Body, limit: usize) -> ApiResult<Bytes> {
    axum::body::to_bytes(body, limit).await.map_err(|err| {
        let too_large = std::error::Error::source(&err)
            .is_some_and(|source| source.is::<http_body_util::LengthLimitError>());
        if too_large {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("the request body is over the limit of {limit} bytes"),
            )
            .with("limit", limit)
        } else {
            ApiError::bad_request(
                "invalid_body",
                format!("could not read the request body: {err}"),
            )
        }
    })
}

fn parse_json(bytes: &[u8]) -> ApiResult<Value> {
    serde_json::from_slice(bytes).map_err(|err| {
        ApiError::bad_request("invalid_json", format!("the body is not valid JSON: {err}"))
            .with("line", err.line())
            .with("column", err.column())
    })
}

pub async fn publish(
    State(state): State<Arc<AppState>>,
    Path(topic): Path<String>,
    query: Result<Query<PublishQuery>, QueryRejection>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<impl IntoResponse> {
    super::publishable(&state, &topic)?;
    let Query(query) =
        query.map_err(|err| ApiError::bad_request("invalid_query", err.body_text()))?;
    let deliver_at = query.deliver_at()?;
    let content_type = media_type(&headers)?;
    let mode = mode(&headers, content_type.as_deref())?;
    let limit = match mode {
        Mode::Batch => state.max_batch_bytes,
        _ => state.max_event_bytes,
    };
    let bytes = read_body(body, limit).await?;
    let mut events = match mode {
        Mode::Structured => vec![CloudEvent::from_json(parse_json(&bytes)?)?],
        Mode::Batch => CloudEvent::batch_from_json(parse_json(&bytes)?)?,
        Mode::Binary => {
            let ce_headers = headers
                .iter()
                .filter(|(name, _)| name.as_str().starts_with("ce-"))
                .map(|(name, value)| (name.as_str(), value.as_bytes()));
            vec![CloudEvent::from_binary(
                ce_headers,
                content_type.as_deref(),
                &bytes,
            )?]
        }
        Mode::PlainJson => {
            let Some(ty) = query.ty else {
                return Err(ApiError::bad_request(
                    "missing_type",
                    "a plain JSON publish needs the event type as ?type=, or send a CloudEvent as application/cloudevents+json",
                )
                .with("parameter", "type"));
            };
            if ty.is_empty() {
                return Err(
                    ApiError::bad_request("missing_type", "?type= must not be empty")
                        .with("parameter", "type"),
                );
            }
            let mut event = CloudEvent::wrap(format!("/topics/{topic}"), ty, parse_json(&bytes)?);
            event.subject = query.subject.filter(|s| !s.is_empty());
            if let Some(id) = query.id {
                if id.is_empty() {
                    return Err(
                        ApiError::bad_request("invalid_id", "?id= must not be empty")
                            .with("parameter", "id"),
                    );
                }
                event.id = id;
            }
            vec![event]
        }
    };
    // Scheduled: every event without a due time of its own gets this one.
    if let Some(due) = deliver_at {
        for event in &mut events {
            event
                .extensions
                .entry(crate::ingest::DELIVER_AT.to_owned())
                .or_insert_with(|| Value::String(due.clone()));
        }
    }
    // The request's trace (W3C `traceparent`): the parent of this publish,
    // whose context the events carry; without an exporter, the events
    // carry the request's own.
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let span = tracing::info_span!(
        "publish",
        otel.kind = "server",
        topic = %topic,
        events = events.len(),
        trace_id = tracing::field::Empty,
        span_id = tracing::field::Empty,
    );
    crate::telemetry::continue_trace(&span, header("traceparent"), header("tracestate"));
    crate::telemetry::record_ids(&span);
    if !crate::telemetry::exporting()
        && let Some(traceparent) = header("traceparent")
        && crate::telemetry::is_traceparent(traceparent)
    {
        for event in &mut events {
            crate::telemetry::inherit(event, traceparent, header("tracestate"));
        }
    }
    // Detached from the connection: a client that hangs up mid-append does
    // not leave part of a batch behind.
    let ingest = Arc::clone(&state.ingest);
    let published = super::detached(
        async move { ingest.publish(&topic, events).await.map_err(ApiError::from) }
            .instrument(span),
    )
    .await?;
    Ok(axum::Json(serde_json::json!({ "events": published })))
}
