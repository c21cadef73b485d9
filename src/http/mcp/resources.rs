//! Resources: `switchyard://topics` (the topics this caller sees), and
//! templates for one topic (with its head cursor), one event, one group.
//! Every answer is JSON, private to the token that asked, and fresh for a
//! short while only (heads move).

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use rmcp::ErrorData as McpError;
use rmcp::model::{CacheScope, ReadResourceResult, Resource, ResourceContents, ResourceTemplate};
use serde_json::{Value, json};

use super::super::{ApiError, ApiResult, AppState};
use super::Want;
use crate::auth::Access;
use crate::event::Attributes;

const SCHEME: &str = "switchyard://topics";
const JSON: &str = "application/json";
/// The most events `get_event` (and an event resource) looks through.
const MAX_SEARCH: usize = 100_000;
/// Events are immutable: their answers keep longer than a head's.
const EVENT_TTL_MS: u64 = 60_000;
/// Event searches running at once, in the whole process.
static SEARCHES: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(2);

/// A resource address.
#[derive(Debug, PartialEq)]
pub(super) enum ResourceUri {
    Topics,
    Topic(String),
    Event { topic: String, id: String },
    Group { topic: String, group: String },
}

impl ResourceUri {
    pub fn parse(uri: &str) -> Option<Self> {
        let rest = uri.strip_prefix(SCHEME)?;
        if rest.is_empty() {
            return Some(Self::Topics);
        }
        let rest = rest.strip_prefix('/')?;
        let (topic, rest) = match rest.split_once('/') {
            Some((topic, rest)) => (topic, Some(rest)),
            None => (rest, None),
        };
        if topic.is_empty() {
            return None;
        }
        let topic = topic.to_owned();
        match rest.map(|rest| rest.split_once('/')) {
            None => Some(Self::Topic(topic)),
            Some(Some(("events", id))) if !id.is_empty() => Some(Self::Event {
                topic,
                id: id.to_owned(),
            }),
            Some(Some(("groups", group))) if !group.is_empty() && !group.contains('/') => {
                Some(Self::Group {
                    topic,
                    group: group.to_owned(),
                })
            }
            _ => None,
        }
    }

    /// The scope reading it takes.
    pub fn want(self) -> Option<Want> {
        match self {
            Self::Topics => None,
            Self::Topic(topic) | Self::Event { topic, .. } => Some(Want::Subscribe(topic)),
            Self::Group { topic, group } => Some(Want::Consume(topic, group)),
        }
    }
}

pub(super) fn topic_uri(topic: &str) -> String {
    format!("{SCHEME}/{topic}")
}

/// The topics list and each topic the caller sees.
pub(super) fn list(state: &AppState, access: &Access) -> Vec<Resource> {
    let mut resources = vec![
        Resource::new(SCHEME, "topics")
            .with_title("Topics")
            .with_description("The topics, their event types and JSON Schemas.")
            .with_mime_type(JSON),
    ];
    resources.extend(
        state
            .topics
            .iter()
            .filter(|topic| access.sees_topic(&topic.name))
            .map(|topic| {
                let description = if topic.description.is_empty() {
                    format!(
                        "Topic {}: its types, partitions and head cursor.",
                        topic.name
                    )
                } else {
                    topic.description.clone()
                };
                Resource::new(topic_uri(&topic.name), topic.name.clone())
                    .with_description(description)
                    .with_mime_type(JSON)
            }),
    );
    resources
}

pub(super) fn templates() -> Vec<ResourceTemplate> {
    let template = |uri: String, name: &str, description: &str| {
        ResourceTemplate::new(uri, name)
            .with_description(description)
            .with_mime_type(JSON)
    };
    vec![
        template(
            format!("{SCHEME}/{{topic}}"),
            "topic",
            "A topic: partitions, retention, event types with their JSON Schemas, and `head`, the cursor after its newest event. Subscribe to hear when it moves.",
        ),
        template(
            format!("{SCHEME}/{{topic}}/events/{{id}}"),
            "event",
            "One event by its id (searched among the topic's oldest 100000 retained events; the get_event tool searches further).",
        ),
        template(
            format!("{SCHEME}/{{topic}}/groups/{{group}}"),
            "group",
            "A consumer group: committed cursor, events outstanding and leased, members.",
        ),
    ]
}

pub(super) async fn read(
    state: &Arc<AppState>,
    access: &Access,
    uri: &str,
) -> Result<ReadResourceResult, McpError> {
    let Some(parsed) = ResourceUri::parse(uri) else {
        return Err(McpError::resource_not_found(
            format!(
                "no resource {uri:?}: Switchyard's resources are {SCHEME} and {SCHEME}/{{topic}}, …/events/{{id}}, …/groups/{{group}}"
            ),
            Some(json!({ "uri": uri })),
        ));
    };
    let (response, ttl_ms) = match parsed {
        ResourceUri::Topics => (
            super::super::topics_json(state, access).into_response(),
            super::RESOURCE_TTL_MS,
        ),
        ResourceUri::Topic(topic) => (
            describe(state, &topic).await.map(Json).into_response(),
            super::RESOURCE_TTL_MS,
        ),
        ResourceUri::Event { topic, id } => (
            find_event(state, &topic, &id, None)
                .await
                .map(Json)
                .into_response(),
            EVENT_TTL_MS,
        ),
        ResourceUri::Group { topic, group } => (
            super::super::groups::status(State(Arc::clone(state)), Path((topic, group)))
                .await
                .into_response(),
            super::RESOURCE_TTL_MS,
        ),
    };
    let status = response.status();
    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap_or_default();
    let mut answer: Value = serde_json::from_slice(&body).unwrap_or_default();
    if !status.is_success() {
        // The HTTP API's error as a JSON-RPC error: an unknown topic, event
        // or group is the spec's "resource not found"; the data is the
        // API's body.
        answer["uri"] = uri.into();
        let message = answer["error"]["message"]
            .as_str()
            .unwrap_or("the resource could not be read")
            .to_owned();
        return Err(if status == StatusCode::NOT_FOUND {
            McpError::resource_not_found(message, Some(answer))
        } else {
            McpError::invalid_params(message, Some(answer))
        });
    }
    let contents = ResourceContents::text(answer.to_string(), uri).with_mime_type(JSON);
    Ok(ReadResourceResult::new(vec![contents])
        .with_ttl_ms(ttl_ms)
        .with_cache_scope(CacheScope::Private))
}

/// One topic's description with its head cursor.
pub(super) async fn describe(state: &AppState, topic: &str) -> ApiResult<Value> {
    let found = state
        .topics
        .get(topic)
        .ok_or_else(|| ApiError::unknown_topic(topic))?;
    let mut described = super::super::topic_json(&found);
    described["head"] = state.broker.latest(topic).await?.to_string().into();
    Ok(described)
}

/// The event `id` of `topic`, searched from `after` (default: the oldest
/// retained) through at most [`MAX_SEARCH`] events.
pub(super) async fn find_event(
    state: &AppState,
    topic: &str,
    id: &str,
    after: Option<&str>,
) -> ApiResult<Value> {
    let partitions = state
        .topics
        .get(topic)
        .map(|t| t.partitions)
        .ok_or_else(|| ApiError::unknown_topic(topic))?;
    let mut cursor = super::super::events::resolve_from(
        state,
        topic,
        partitions,
        after.unwrap_or("earliest"),
        "after",
    )
    .await?;
    // A few searches at a time: each may read and scan 100,000 events.
    let _searching = SEARCHES
        .acquire()
        .await
        .map_err(|_| ApiError::bad_request("internal", "searches closed"))?;
    let quoted = serde_json::to_string(id).unwrap_or_default();
    let finder = memchr::memmem::Finder::new(quoted.as_bytes());
    let mut searched = 0;
    while searched < MAX_SEARCH {
        let batch = state
            .broker
            .read_bounded(
                topic,
                &cursor,
                None,
                (MAX_SEARCH - searched).min(1000),
                crate::broker::READER_BYTES,
                Duration::ZERO,
            )
            .await?;
        if batch.events.is_empty() {
            return Err(not_found(topic, id, &cursor, true));
        }
        searched += batch.events.len();
        for event in &batch.events {
            cursor.advance(event.partition, event.offset);
            // Most events are not it: look for the id, as a JSON string,
            // before parsing.
            if finder.find(&event.payload).is_none() {
                continue;
            }
            let Ok(value) = serde_json::from_slice::<Value>(&event.payload) else {
                continue;
            };
            if Attributes::of(&value).id == id {
                return Ok(json!({ "event": value, "position": cursor.to_string() }));
            }
        }
        cursor = batch.next;
    }
    Err(not_found(topic, id, &cursor, false))
}

fn not_found(
    topic: &str,
    id: &str,
    searched_to: &crate::cursor::Cursor,
    complete: bool,
) -> ApiError {
    let message = if complete {
        format!("topic {topic:?} holds no event {id:?} (searched to its end)")
    } else {
        format!(
            "no event {id:?} among the {MAX_SEARCH} events searched; call again with after = searched_to to go on"
        )
    };
    ApiError::new(StatusCode::NOT_FOUND, "unknown_event", message)
        .with("topic", topic)
        .with("id", id)
        .with("searched_to", searched_to.to_string())
        .with("complete", complete)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_addresses() {
        let parse = ResourceUri::parse;
        assert_eq!(parse("switchyard://topics"), Some(ResourceUri::Topics));
        assert_eq!(
            parse("switchyard://topics/orders"),
            Some(ResourceUri::Topic("orders".into()))
        );
        assert_eq!(
            parse("switchyard://topics/orders/events/a/b"),
            Some(ResourceUri::Event {
                topic: "orders".into(),
                id: "a/b".into()
            })
        );
        assert_eq!(
            parse("switchyard://topics/orders/groups/billing"),
            Some(ResourceUri::Group {
                topic: "orders".into(),
                group: "billing".into()
            })
        );
        for bad in [
            "switchyard://topicsx",
            "switchyard://topics/",
            "switchyard://topics/orders/",
            "switchyard://topics/orders/events/",
            "switchyard://topics/orders/groups/a/b",
            "switchyard://topics/orders/other/x",
            "https://topics/orders",
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }
}
