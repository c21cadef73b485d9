//! Reading a topic: `GET /v1/topics/{topic}/events` (pages with a `next`
//! cursor) and `GET /v1/topics/{topic}/stream` (SSE with exact resume);
//! several topics: `GET /v1/stream?topics=…` (one SSE stream, one id).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use bytes::{BufMut, BytesMut};
use futures::StreamExt;
use serde::Deserialize;

use super::{ApiError, ApiResult, AppState};
use crate::cursor::{Cursor, StreamCursor};
use crate::event::Filter;
use crate::fanout::{Naming, SubscribeParams, Subscription};

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
    /// A CEL expression: only the events it is true of (a filtered page
    /// may hold fewer than `limit`, even none; `next` goes past them all).
    filter: Option<String>,
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
    let filter = filter(None, None, query.filter.as_deref())?;
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
    let passing = batch.events.iter().filter(|event| {
        filter.expr.is_none()
            || serde_json::from_slice::<serde_json::Value>(&event.payload)
                .is_ok_and(|json| filter.matches_event(&json))
    });
    for (i, event) in passing.enumerate() {
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
    /// A CEL expression over the event: only those it is true of.
    filter: Option<String>,
    /// `message`: events go out unnamed (`EventSource.onmessage` gets
    /// them all); `type` (the default): named by their event type;
    /// `topic`: named by their topic.
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
    let naming = naming(query.event.as_deref())?;
    let header_id = last_event_id(&headers)?;
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
    not_ahead(&state, &topic, &cursor).await?;
    let params = SubscribeParams {
        topic: topic.clone(),
        cursor,
        filter: filter(query.types, query.subject, query.filter.as_deref())?,
        heartbeat: state.heartbeat,
        naming,
        stream: None,
    };
    let subscription = subscribe(&state, params)?;
    let span = sse_span(&topic);
    Ok(event_stream(chunks(subscription, span)))
}

/// The span of one SSE connection (its delivery, from connect to close):
/// only when traces are exported, since it lives as long as the client.
fn sse_span(topics: &str) -> tracing::Span {
    match crate::telemetry::exporting() {
        true => tracing::info_span!("sse", otel.kind = "server", topics),
        false => tracing::Span::none(),
    }
}

/// Fails now, with a status, rather than inside the stream, when `cursor`
/// is past the topic's end.
async fn not_ahead(state: &AppState, topic: &str, cursor: &Cursor) -> ApiResult<()> {
    let latest = state.broker.latest(topic).await?;
    match (0..cursor.partitions()).find(|&p| cursor.next(p) > latest.next(p)) {
        Some(partition) => Err(crate::broker::BrokerError::CursorAhead {
            partition,
            end: latest.next(partition),
        }
        .into()),
        None => Ok(()),
    }
}

/// A subscription's SSE chunks.
fn chunks(
    subscription: Subscription,
    span: tracing::Span,
) -> impl futures::Stream<Item = Result<bytes::Bytes, std::convert::Infallible>> + Send {
    use tracing::Instrument;
    futures::stream::unfold(
        (subscription, span),
        |(mut subscription, span)| async move {
            subscription
                .next_chunk()
                .instrument(span.clone())
                .await
                .map(|chunk| (Ok(chunk), (subscription, span)))
        },
    )
}

fn subscribe(state: &Arc<AppState>, params: SubscribeParams) -> ApiResult<Subscription> {
    let topic = params.topic.clone();
    Subscription::new(
        params,
        &state.hubs,
        Arc::clone(&state.broker),
        Arc::clone(&state.metrics),
        state.shutdown.clone(),
    )
    .ok_or_else(|| ApiError::unknown_topic(&topic))
}

/// `?event=`: `message` sends events unnamed (`EventSource.onmessage`
/// gets them all), `type` (the default) names them by their type, `topic`
/// by their topic.
fn naming(event: Option<&str>) -> ApiResult<Naming> {
    match event {
        None | Some("type") => Ok(Naming::Type),
        Some("message") => Ok(Naming::Message),
        Some("topic") => Ok(Naming::Topic),
        Some(other) => Err(ApiError::bad_request(
            "invalid_query",
            format!(
                "event must be \"message\" (unnamed events, for EventSource.onmessage), \"type\" (named by event type, the default) or \"topic\" (named by topic), got {other:?}"
            ),
        )
        .with("parameter", "event")),
    }
}

/// The `Last-Event-ID` header a reconnecting client sends, if any.
fn last_event_id(headers: &HeaderMap) -> ApiResult<Option<&str>> {
    let id = match headers.get("last-event-id") {
        Some(value) => Some(value.to_str().map_err(|_| {
            ApiError::bad_request("invalid_cursor", "Last-Event-ID is not visible ASCII")
                .with("header", "last-event-id")
        })?),
        None => None,
    };
    Ok(id.filter(|id| !id.is_empty()))
}

/// `?types=`, `?subject=` and `?filter=` (CEL, compiled once here).
fn filter(types: Option<String>, subject: Option<String>, expr: Option<&str>) -> ApiResult<Filter> {
    Ok(Filter {
        types: types.filter(|t| !t.is_empty()).map(|t| {
            t.split(',')
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect()
        }),
        subject_prefix: subject.filter(|s| !s.is_empty()),
        expr: expr
            .map(|text| compile_filter(text, "filter"))
            .transpose()?,
    })
}

/// A CEL expression, or a 400 naming where it goes wrong.
pub(super) fn compile_filter(text: &str, parameter: &str) -> ApiResult<crate::event::Expr> {
    crate::event::Expr::compile(text).map_err(|err| {
        ApiError::bad_request("invalid_filter", err.to_string())
            .with("parameter", parameter)
            .with("line", err.line)
            .with("column", err.column)
    })
}

/// An SSE response of `body`.
fn event_stream(
    body: impl futures::Stream<Item = Result<bytes::Bytes, std::convert::Infallible>> + Send + 'static,
) -> Response {
    let mut response = Body::from_stream(body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManyQuery {
    /// Topic names and patterns, comma-separated: `*` stands for one
    /// dot-separated part of a name, a trailing `>` for one or more.
    topics: Option<String>,
    from: Option<String>,
    last_event_id: Option<String>,
    types: Option<String>,
    subject: Option<String>,
    filter: Option<String>,
    event: Option<String>,
}

/// Whether `name` matches `pattern` (NATS subject wildcards over
/// dot-separated topic names).
fn matches_pattern(pattern: &str, name: &str) -> bool {
    let mut parts = name.split('.');
    for wanted in pattern.split('.') {
        match (wanted, parts.next()) {
            (">", Some(_)) => return true,
            ("*", Some(_)) => {}
            (wanted, Some(part)) if wanted == part => {}
            _ => return false,
        }
    }
    parts.next().is_none()
}

/// `GET /v1/stream?topics=orders,shop.>`: the events of several topics in
/// one SSE stream, each event's id the position of the whole set (a
/// [`StreamCursor`]), so `Last-Event-ID` resumes every topic exactly. A
/// topic the id does not name (it matched no pattern before, e.g. it was
/// created since) starts at its earliest event: all of it is new to the
/// client. Named topics must be readable (403 otherwise); patterns take
/// the matching topics the token may read.
pub async fn stream_many(
    State(state): State<Arc<AppState>>,
    axum::Extension(access): axum::Extension<crate::auth::Access>,
    query: Result<Query<ManyQuery>, QueryRejection>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let Query(query) = query.map_err(bad_query)?;
    let naming = naming(query.event.as_deref())?;
    let filter = filter(query.types, query.subject, query.filter.as_deref())?;
    let patterns: Vec<&str> = query
        .topics
        .as_deref()
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect();
    if patterns.is_empty() {
        return Err(ApiError::bad_request(
            "invalid_query",
            "topics is required: topic names or patterns, comma-separated (orders,shop.*,audit.>)",
        )
        .with("parameter", "topics"));
    }
    let mut topics: Vec<(String, usize)> = Vec::new();
    for pattern in &patterns {
        if pattern.contains(['*', '>']) {
            for topic in state.topics.iter() {
                if matches_pattern(pattern, &topic.name)
                    && access.may_subscribe(&topic.name).is_ok()
                {
                    topics.push((topic.name.clone(), topic.partitions));
                }
            }
        } else {
            let topic = state
                .topics
                .get(pattern)
                .ok_or_else(|| ApiError::unknown_topic(pattern))?;
            access.may_subscribe(pattern).map_err(ApiError::from)?;
            topics.push((topic.name.clone(), topic.partitions));
        }
    }
    topics.sort();
    topics.dedup();
    if topics.is_empty() {
        return Err(ApiError::new(
            axum::http::StatusCode::NOT_FOUND,
            "unknown_topic",
            format!(
                "no topic this token may read matches {}",
                patterns.join(",")
            ),
        )
        .with("parameter", "topics"));
    }
    // Where to start: Last-Event-ID (header, then ?last_event_id=), else
    // ?from= (earliest, latest or a time) for every topic.
    let resumed = match last_event_id(&headers)?
        .or(query.last_event_id.as_deref().filter(|id| !id.is_empty()))
    {
        Some(id) => Some(id.parse::<StreamCursor>().map_err(|err| {
            ApiError::bad_request(
                "invalid_cursor",
                format!("Last-Event-ID: {err}; a stream's id looks like orders:0.4,audit:7"),
            )
            .with("header", "last-event-id")
        })?),
        None => None,
    };
    let mut position = StreamCursor::default();
    for (topic, partitions) in &topics {
        let cursor = match &resumed {
            Some(resumed) => match resumed.get(topic) {
                Some(cursor) if cursor.partitions() == *partitions => cursor.clone(),
                Some(_) => {
                    return Err(ApiError::bad_request(
                        "invalid_cursor",
                        format!("Last-Event-ID: the cursor of {topic:?} does not fit its {partitions} partitions"),
                    )
                    .with("topic", topic.as_str()));
                }
                None => state.broker.earliest(topic).await?,
            },
            None => {
                resolve_from(
                    &state,
                    topic,
                    *partitions,
                    query.from.as_deref().unwrap_or("latest"),
                    "from",
                )
                .await?
            }
        };
        not_ahead(&state, topic, &cursor).await?;
        position.set(topic, &cursor);
    }
    let greeting = bytes::Bytes::from(format!(
        "retry: {}\nid: {position}\n\n",
        crate::fanout::RETRY_HINT_MS
    ));
    let mut many = Many {
        added: state.hubs.added(),
        state,
        access,
        patterns: patterns
            .iter()
            .filter(|p| p.contains(['*', '>']))
            .map(|p| (*p).to_owned())
            .collect(),
        joined: HashSet::new(),
        streams: futures::stream::SelectAll::new(),
        filter,
        naming,
        shared: Arc::new(std::sync::Mutex::new(position.clone())),
        span: sse_span(&patterns.join(",")),
    };
    for (i, (topic, _)) in topics.iter().enumerate() {
        let cursor = position
            .get(topic)
            .cloned()
            .unwrap_or_else(|| Cursor::start(0));
        // One heartbeat for the stream, not one per topic.
        many.join(topic, cursor, i == 0)?;
    }
    let merged = futures::stream::unfold(many, |mut many| async move {
        many.next().await.map(|chunk| (chunk, many))
    });
    let greeting = futures::stream::once(async move { Ok(greeting) });
    Ok(event_stream(greeting.chain(merged)))
}

type Chunk = Result<bytes::Bytes, std::convert::Infallible>;

/// One topic's chunks, then `None` when its subscription ends.
type TopicChunks = std::pin::Pin<Box<dyn futures::Stream<Item = Option<Chunk>> + Send>>;

/// A stream over several topics: their subscriptions merged, and topics
/// created later that match one of its patterns joined as they appear.
struct Many {
    state: Arc<AppState>,
    access: crate::auth::Access,
    /// The wildcard patterns (names given in full never change).
    patterns: Vec<String>,
    joined: HashSet<String>,
    streams: futures::stream::SelectAll<TopicChunks>,
    added: tokio::sync::watch::Receiver<u64>,
    filter: Filter,
    naming: Naming,
    shared: crate::fanout::SharedStreamCursor,
    span: tracing::Span,
}

impl Many {
    fn join(&mut self, topic: &str, cursor: Cursor, heartbeat: bool) -> ApiResult<()> {
        let params = SubscribeParams {
            topic: topic.to_owned(),
            cursor,
            filter: self.filter.clone(),
            heartbeat: if heartbeat {
                self.state.heartbeat
            } else {
                Duration::from_secs(24 * 3600)
            },
            naming: self.naming,
            stream: Some(Arc::clone(&self.shared)),
        };
        // Each topic's end (`None`) ends the whole stream: a topic that
        // lagged past retention closes it, as on a single topic.
        let chunks = chunks(subscribe(&self.state, params)?, self.span.clone())
            .map(Some)
            .chain(futures::stream::once(async { None }));
        self.streams.push(Box::pin(chunks));
        self.joined.insert(topic.to_owned());
        Ok(())
    }

    /// Joins the topics created since that match a pattern, from their
    /// earliest event (all of a new topic is new to the client).
    async fn join_created(&mut self) {
        for topic in self.state.topics.iter() {
            if self.joined.contains(&topic.name)
                || !self
                    .patterns
                    .iter()
                    .any(|p| matches_pattern(p, &topic.name))
                || self.access.may_subscribe(&topic.name).is_err()
            {
                continue;
            }
            let joined = match self.state.broker.earliest(&topic.name).await {
                Ok(cursor) => self.join(&topic.name, cursor, false),
                Err(err) => Err(err.into()),
            };
            if let Err(err) = joined {
                tracing::warn!(topic = %topic.name, error = ?err, "a new topic could not join a stream; it will be tried again when the next one appears");
            }
        }
    }

    async fn next(&mut self) -> Option<Chunk> {
        loop {
            tokio::select! {
                chunk = self.streams.next() => return chunk.flatten(),
                Ok(()) = self.added.changed(), if !self.patterns.is_empty() => {
                    self.join_created().await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::matches_pattern;

    #[test]
    fn topic_patterns() {
        for (pattern, name, expected) in [
            ("orders", "orders", true),
            ("orders", "orders.eu", false),
            ("orders.*", "orders.eu", true),
            ("orders.*", "orders", false),
            ("orders.*", "orders.eu.paris", false),
            ("orders.>", "orders.eu.paris", true),
            ("orders.>", "orders", false),
            ("*.eu", "orders.eu", true),
            ("*", "orders", true),
            (">", "a.b", true),
        ] {
            assert_eq!(matches_pattern(pattern, name), expected, "{pattern} {name}");
        }
    }
}
