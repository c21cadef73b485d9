//! "This topic has new events": `subscriptions/listen` (2026-07-28) and
//! `resources/subscribe` (2025-11-25) on `switchyard://topics/{topic}` send
//! `notifications/resources/updated` when the topic's head moves; the agent
//! then reads from its cursor. One mechanism for both revisions: a
//! [`HeadWatch`] on the topic's fan-out hub (which sees appends by every
//! process on the broker), coalesced so that a busy topic costs a listener
//! at most one notification per topic per [`COALESCE`], never one per event.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rmcp::ErrorData as McpError;
use rmcp::model::{ResourceUpdatedNotificationParam, SubscriptionFilter};
use rmcp::service::{Peer, RoleServer, SubscriptionContext};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::super::AppState;
use super::resources::ResourceUri;
use crate::fanout::HeadWatch;

/// The shortest time between two notifications of one resource.
const COALESCE: Duration = Duration::from_millis(100);
/// A 2025-11-25 session that has not made a request for this long after
/// a notification is taken as gone: its subscriptions end. (rmcp counts
/// the notifications themselves as the session's activity, so without
/// this a client killed without ending its session would be notified,
/// and kept, forever.) An agent reads after a notification, so a live one
/// never gets there.
const UNANSWERED: Duration = Duration::from_secs(300);

/// Tells each time the head moves, at most once per [`COALESCE`] (and
/// once at the start when `at_start`), until the hub goes or `notify`
/// answers `false` (the client is gone).
async fn follow<F, N>(mut watch: HeadWatch, at_start: bool, mut notify: N)
where
    N: FnMut() -> F,
    F: Future<Output = bool>,
{
    if at_start && !notify().await {
        return;
    }
    while watch.moved().await {
        if !notify().await {
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
/// server shuts down. Keep-alives are the transport's (SSE comments). The
/// acknowledgment went out before the watches exist, so each resource gets
/// one notification at the start: an event appended in between is not
/// left unannounced.
pub(super) async fn listen(state: &AppState, context: SubscriptionContext) -> Result<(), McpError> {
    let sink = context.sink().clone();
    let follows = context
        .accepted()
        .resource_subscriptions
        .iter()
        .flatten()
        .filter_map(|uri| {
            let watch = state.hubs.watch(&topic_of(state, uri)?)?;
            let sink = sink.clone();
            Some(follow(watch, true, move || {
                let (sink, uri) = (sink.clone(), uri.clone());
                async move { sink.notify_resource_updated(uri).await.is_ok() }
            }))
        });
    // With nothing to follow, the stream still stays open until cancelled
    // (a client that listens again whenever a stream ends must not spin).
    let follows = futures::future::join_all(follows);
    let follows = async move {
        follows.await;
        std::future::pending::<()>().await;
    };
    tokio::select! {
        _ = context.cancelled() => {}
        _ = state.shutdown.cancelled() => {}
        _ = follows => {}
    }
    Ok(())
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// When a legacy session last made a request, and since when it has left
/// a notification unanswered (0: none).
#[derive(Default)]
struct Activity {
    unanswered_since_ms: AtomicI64,
}

impl Activity {
    /// `false` when the session is taken as gone ([`UNANSWERED`]).
    fn before_notification(&self) -> bool {
        let now = now_ms();
        let since = self
            .unanswered_since_ms
            .compare_exchange(0, now, Ordering::Relaxed, Ordering::Relaxed)
            // Ok: this is the first one unanswered.
            .map_or_else(|since| since, |_| now);
        now - since <= UNANSWERED.as_millis() as i64
    }
}

/// A legacy session's `resources/subscribe` watches, by URI; all stop when
/// the session ends (this is dropped with it) or stops answering.
#[derive(Default)]
pub(super) struct Subscriptions {
    by_uri: Mutex<HashMap<String, CancellationToken>>,
    activity: Arc<Activity>,
}

impl Subscriptions {
    /// The session made a request.
    pub fn touch(&self) {
        self.activity
            .unanswered_since_ms
            .store(0, Ordering::Relaxed);
    }

    pub fn add(&self, state: &AppState, uri: &str, peer: Peer<RoleServer>) -> Result<(), McpError> {
        let Some(watch) = topic_of(state, uri).and_then(|topic| state.hubs.watch(&topic)) else {
            return Err(McpError::resource_not_found(
                format!(
                    "{uri:?} is not a topic: subscribe to switchyard://topics/{{topic}} (resources/list shows them)"
                ),
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
        let (uri, activity) = (uri.to_owned(), Arc::clone(&self.activity));
        // The watch exists before the subscribe is answered: no start
        // notification is needed.
        let notify = move || {
            let (peer, uri, activity) = (peer.clone(), uri.clone(), Arc::clone(&activity));
            async move {
                activity.before_notification()
                    && peer
                        .notify_resource_updated(ResourceUpdatedNotificationParam::new(uri))
                        .await
                        .is_ok()
            }
        };
        tokio::spawn(async move {
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = follow(watch, false, notify) => {}
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;

    /// A burst of moves is a few notifications, one per [`COALESCE`], and
    /// the last move is always told.
    #[tokio::test(start_paused = true)]
    async fn moves_are_coalesced() {
        let (sender, watch) = HeadWatch::channel();
        let told = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&told);
        let follower = tokio::spawn(follow(watch, false, move || {
            let counter = Arc::clone(&counter);
            async move {
                counter.fetch_add(1, Ordering::SeqCst);
                true
            }
        }));
        // 40 moves, 10 ms apart: 400 ms of them.
        for _ in 0..40 {
            sender();
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let count = told.load(Ordering::SeqCst);
        assert!(
            (4..=6).contains(&count),
            "{count} notifications for 40 moves in 400 ms"
        );
        follower.abort();
    }

    #[test]
    fn a_session_that_leaves_notifications_unanswered_is_gone() {
        let activity = Activity::default();
        assert!(activity.before_notification());
        let long_ago = now_ms() - UNANSWERED.as_millis() as i64 - 1;
        activity
            .unanswered_since_ms
            .store(long_ago, Ordering::Relaxed);
        assert!(!activity.before_notification());
    }
}
