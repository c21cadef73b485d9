//! Reading a topic: `GET /v1/topics/{topic}/events` (pages with a `next`
//! cursor) and `GET /v1/topics/{topic}/stream` (SSE with exact resume).

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use bytes::{BufMut, BytesMut};
use serde::Deserialize;

use super::{ApiError, ApiResult, AppState};
use crate::cursor::Cursor;
use crate::event::Filter;
use crate::fanout::{SubscribeParams, Subscription};

/// Events in a page when `limit` is not given, and the most it may ask for.
const DEFAULT_PAGE_LIMIT: usize = 100;
const MAX_PAGE_LIMIT: usize = 1000;

/// Resolves `earliest`, `latest` or a cursor string for a topic.
pub(super) async fn resolve_from(
    state: &AppState,
    topic: &str,
    partitions: usize,
    from: &str,
    parameter: &str,
) -> ApiResult<Cursor> {
    match from {
        "earliest" => Ok(state.broker.earliest(topic).await?),
        "latest" => Ok(state.broker.latest(topic).await?),
        // A time (RFC 3339): the first event stored at or after it.
        text if text.contains(['T', 't']) && text.contains(':') => {
            let time = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
                .map_err(|err| {
                    ApiError::bad_request(
                        "invalid_cursor",
                        format!("{parameter}: {text:?} is not an RFC 3339 time like 2026-12-01T09:00:00Z ({err})"),
                    )
                    .with("parameter", parameter.to_owned())
                })?;
            let time_ms = (time.unix_timestamp_nanos() / 1_000_000) as i64;
            Ok(state.broker.position_at(topic, time_ms).await?)
        }
        text => Cursor::parse_for(text, partitions).map_err(|err| {
            ApiError::bad_request("invalid_cursor", format!("{parameter}: {err}"))
                .with("parameter", parameter.to_owned())
        }),
    }
}

pub(super) fn bad_query(err: QueryRejection) -> ApiError {
    ApiError::bad_request("invalid_query", err.body_text())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PageQuery {
    from: Option<String>,
    limit: Option<usize>,
}

pub async fn page(
    State(state): State<Arc<AppState>>,
    Path(topic): Path<String>,
    query: Result<Query<PageQuery>, QueryRejection>,
) -> ApiResult<Response> {
    let Some(partitions) = state.topics.get(&topic).map(|t| t.partitions) else {
        return Err(ApiError::unknown_topic(&topic));
    };
    let Query(query) = query.map_err(bad_query)?;
    let limit = query.limit.unwrap_or(DEFAULT_PAGE_LIMIT);
    if limit == 0 || limit > MAX_PAGE_LIMIT {
        return Err(ApiError::bad_request(
            "invalid_limit",
            format!("limit must be between 1 and {MAX_PAGE_LIMIT}, got {limit}"),
        )
        .with("parameter", "limit")
        .with("max", MAX_PAGE_LIMIT));
    }
    let from = resolve_from(
        &state,
        &topic,
        partitions,
        query.from.as_deref().unwrap_or("earliest"),
        "from",
    )
    .await?;
    let batch = state
        .broker
        .read_bounded(
            &topic,
            &from,
            None,
            limit,
            crate::broker::READER_BYTES,
            Duration::ZERO,
        )
        .await?;
    // The stored payloads are already CloudEvent JSON: splice them in.
    let mut body = BytesMut::with_capacity(
        batch
            .events
            .iter()
            .map(|e| e.payload.len() + 1)
            .sum::<usize>()
            + 64,
    );
    body.put_slice(b"{\"events\":[");
    for (i, event) in batch.events.iter().enumerate() {
        if i > 0 {
            body.put_u8(b',');
        }
        body.put_slice(&event.payload);
    }
    body.put_slice(format!("],\"next\":\"{}\"}}", batch.next).as_bytes());
    Ok(([(header::CONTENT_TYPE, "application/json")], body.freeze()).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamQuery {
    from: Option<String>,
    last_event_id: Option<String>,
    types: Option<String>,
    subject: Option<String>,
    /// `message`: events go out unnamed (`EventSource.onmessage` gets
    /// them all); `type` (the default): named by their event type.
    event: Option<String>,
}

pub async fn stream(
    State(state): State<Arc<AppState>>,
    Path(topic): Path<String>,
    query: Result<Query<StreamQuery>, QueryRejection>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let Some(partitions) = state.topics.get(&topic).map(|t| t.partitions) else {
        return Err(ApiError::unknown_topic(&topic));
    };
    let Query(query) = query.map_err(bad_query)?;
    let unnamed = match query.event.as_deref() {
        None | Some("type") => false,
        Some("message") => true,
        Some(other) => {
            return Err(ApiError::bad_request(
                "invalid_query",
                format!(
                    "event must be \"message\" (unnamed events, for EventSource.onmessage) or \"type\" (named by event type, the default), got {other:?}"
                ),
            )
            .with("parameter", "event"));
        }
    };
    let header_id = match headers.get("last-event-id") {
        Some(value) => Some(value.to_str().map_err(|_| {
            ApiError::bad_request("invalid_cursor", "Last-Event-ID is not visible ASCII")
                .with("header", "last-event-id")
        })?),
        None => None,
    }
    .filter(|id| !id.is_empty());
    // Precedence: the Last-Event-ID header (what reconnecting clients send),
    // then ?last_event_id=, then ?from= (default latest).
    let cursor = if let Some(id) = header_id {
        Cursor::parse_for(id, partitions).map_err(|err| {
            ApiError::bad_request("invalid_cursor", format!("Last-Event-ID: {err}"))
                .with("header", "last-event-id")
        })?
    } else if let Some(id) = query.last_event_id.as_deref().filter(|id| !id.is_empty()) {
        resolve_from(&state, &topic, partitions, id, "last_event_id").await?
    } else {
        resolve_from(
            &state,
            &topic,
            partitions,
            query.from.as_deref().unwrap_or("latest"),
            "from",
        )
        .await?
    };
    // Fail now, with a status, rather than inside the stream.
    let latest = state.broker.latest(&topic).await?;
    if let Some(partition) = (0..partitions).find(|&p| cursor.next(p) > latest.next(p)) {
        return Err(crate::broker::BrokerError::CursorAhead {
            partition,
            end: latest.next(partition),
        }
        .into());
    }
    let filter = Filter {
        types: query.types.filter(|t| !t.is_empty()).map(|t| {
            t.split(',')
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect()
        }),
        subject_prefix: query.subject.filter(|s| !s.is_empty()),
    };
    let params = SubscribeParams {
        topic: topic.clone(),
        cursor,
        filter,
        heartbeat: state.heartbeat,
        unnamed,
    };
    let subscription = Subscription::new(
        params,
        &state.hubs,
        Arc::clone(&state.broker),
        Arc::clone(&state.metrics),
        state.shutdown.clone(),
    )
    .ok_or_else(|| ApiError::unknown_topic(&topic))?;
    let body = futures::stream::unfold(subscription, |mut subscription| async move {
        subscription
            .next_chunk()
            .await
            .map(|chunk| (Ok::<_, std::convert::Infallible>(chunk), subscription))
    });
    let mut response = Body::from_stream(body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(response)
}
