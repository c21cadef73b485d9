//! "This topic has new events": `subscriptions/listen` (2026-07-28) and
//! `resources/subscribe` (2025-11-25) on `switchyard://topics/{topic}` send
//! `notifications/resources/updated` when the topic's head moves; the agent
//! then reads from its cursor. One mechanism for both revisions: a
//! [`HeadWatch`] on the topic's fan-out hub (which sees appends by every
//! process on the broker), coalesced so that a busy topic costs a listener
//! at most one notification per [`COALESCE`], never one per event.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use rmcp::ErrorData as McpError;
use rmcp::model::{ResourceUpdatedNotificationParam, SubscriptionFilter};
use rmcp::service::{Peer, RoleServer, SubscriptionContext, SubscriptionSink};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::super::AppState;
use super::resources::ResourceUri;
use crate::fanout::HeadWatch;

/// The shortest time between two notifications of one resource.
const COALESCE: Duration = Duration::from_millis(100);

/// Where notifications go.
enum Target {
    /// A `subscriptions/listen` stream.
    Listen(SubscriptionSink),
    /// A legacy session's standalone stream.
    Session(Peer<RoleServer>),
}

impl Target {
    /// `false` once the client is gone.
    async fn updated(&self, uri: &str) -> bool {
        match self {
            Self::Listen(sink) => sink.notify_resource_updated(uri).await.is_ok(),
            Self::Session(peer) => peer
                .notify_resource_updated(ResourceUpdatedNotificationParam::new(uri))
                .await
                .is_ok(),
        }
    }
}

/// Tells `target` each time `uri`'s head moves, at most once per
/// [`COALESCE`], until the hub or the client goes.
async fn follow(mut watch: HeadWatch, target: &Target, uri: &str) {
    while watch.moved().await {
        if !target.updated(uri).await {
            return;
        }
        tokio::time::sleep(COALESCE).await;
    }
}

/// The topic a subscribable URI names, if the topic exists.
fn topic_of(state: &AppState, uri: &str) -> Option<String> {
    match ResourceUri::parse(uri)? {
        ResourceUri::Topic(topic) if state.topics.get(&topic).is_some() => Some(topic),
        _ => None,
    }
}

/// What a `subscriptions/listen` gets: the existing topics among the
/// resources it asks for (the acknowledgment tells the client which).
pub(super) fn accepted(state: &AppState, requested: &SubscriptionFilter) -> SubscriptionFilter {
    let mut uris: Vec<String> = requested
        .resource_subscriptions
        .iter()
        .flatten()
        .filter(|uri| topic_of(state, uri).is_some())
        .cloned()
        .collect();
    uris.sort();
    uris.dedup();
    SubscriptionFilter::builder()
        .resource_subscriptions(uris)
        .build()
}

/// Serves one `subscriptions/listen` until the client cancels it or the
/// server shuts down. Keep-alives are the transport's (SSE comments).
pub(super) async fn listen(state: &AppState, context: SubscriptionContext) -> Result<(), McpError> {
    let target = Target::Listen(context.sink().clone());
    let follows = context
        .accepted()
        .resource_subscriptions
        .iter()
        .flatten()
        .filter_map(|uri| {
            let watch = state.hubs.watch(&topic_of(state, uri)?)?;
            Some(follow(watch, &target, uri))
        });
    let follows = futures::future::join_all(follows);
    tokio::select! {
        _ = context.cancelled() => {}
        _ = state.shutdown.cancelled() => {}
        _ = follows => {}
    }
    Ok(())
}

/// A legacy session's `resources/subscribe` watches, by URI; all stop when
/// the session ends (this is dropped with it).
#[derive(Default)]
pub(super) struct Subscriptions {
    by_uri: Mutex<HashMap<String, CancellationToken>>,
}

impl Subscriptions {
    pub fn add(&self, state: &AppState, uri: &str, peer: Peer<RoleServer>) -> Result<(), McpError> {
        let Some(topic) = topic_of(state, uri) else {
            return Err(McpError::resource_not_found(
                format!(
                    "{uri:?} is not a topic: subscribe to switchyard://topics/{{topic}} (resources/list shows them)"
                ),
                Some(json!({ "uri": uri })),
            ));
        };
        let Some(watch) = state.hubs.watch(&topic) else {
            return Err(McpError::resource_not_found(
                format!("no topic named {topic:?}"),
                Some(json!({ "uri": uri })),
            ));
        };
        let stop = state.shutdown.child_token();
        let replaced = self
            .by_uri
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(uri.to_owned(), stop.clone());
        if let Some(replaced) = replaced {
            replaced.cancel();
        }
        let (uri, target) = (uri.to_owned(), Target::Session(peer));
        tokio::spawn(async move {
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = follow(watch, &target, &uri) => {}
            }
        });
        Ok(())
    }

    pub fn remove(&self, uri: &str) {
        let removed = self
            .by_uri
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(uri);
        if let Some(removed) = removed {
            removed.cancel();
        }
    }
}

impl Drop for Subscriptions {
    fn drop(&mut self) {
        let by_uri = self
            .by_uri
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner);
        for stop in by_uri.values() {
            stop.cancel();
        }
    }
}
