//! Shared consumer groups over HTTP (workers elsewhere consuming a topic as
//! a queue): `POST …/groups/{group}/receive`, `…/ack`, `…/nack`,
//! `…/extend`, and `GET …/groups/{group}` for status; and their admin:
//! `GET …/groups` (list with lag), `POST …/groups/{group}/reset`,
//! `DELETE …/groups/{group}`.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::{BufMut, Bytes, BytesMut};
use serde::Deserialize;
use serde_json::json;

use super::{ApiError, ApiResult, AppState};
use crate::group::{DEFAULT_MEMBER, Group, GroupError, Settled, Start, check_member};

/// Deliveries per receive when `max` is not given, and the most allowed.
const DEFAULT_MAX: usize = 10;
const MAX_MAX: usize = 1000;
const DEFAULT_LEASE: Duration = Duration::from_secs(30);
const LEASE_RANGE: (Duration, Duration) =
    (Duration::from_millis(100), Duration::from_secs(12 * 3600));
const MAX_WAIT: Duration = Duration::from_secs(30);
const MAX_NACK_DELAY: Duration = Duration::from_secs(12 * 3600);

impl From<GroupError> for ApiError {
    fn from(err: GroupError) -> Self {
        let message = err.to_string();
        match err {
            GroupError::Reserved { group, handler, .. } => {
                ApiError::new(StatusCode::CONFLICT, "group_in_use", message)
                    .with("group", group)
                    .with("handler", handler)
            }
            GroupError::BadReceipt(receipt) => {
                ApiError::bad_request("invalid_receipt", message).with("receipt", receipt)
            }
            GroupError::BadMember(member) => ApiError::bad_request("invalid_member", message)
                .with("parameter", "member")
                .with("member", member),
            GroupError::TooMany { topic, limit } => {
                ApiError::new(StatusCode::TOO_MANY_REQUESTS, "too_many_groups", message)
                    .with("topic", topic)
                    .with("limit", limit)
            }
            GroupError::FilterMismatch {
                group,
                fixed,
                given,
            } => ApiError::new(StatusCode::CONFLICT, "group_filter_mismatch", message)
                .with("group", group)
                .with("filter", fixed)
                .with("given", given),
            GroupError::Active {
                group, activity, ..
            } => ApiError::new(StatusCode::CONFLICT, "group_active", message)
                .with("group", group)
                .with("members", activity.members)
                .with("leased", activity.leased)
                .with("processes", activity.processes),
            GroupError::Unknown { group, .. } => {
                ApiError::new(StatusCode::NOT_FOUND, "unknown_group", message).with("group", group)
            }
            GroupError::Broker(err) => err.into(),
        }
    }
}

fn duration(
    parameter: &str,
    text: Option<&str>,
    default: Duration,
    range: (Duration, Duration),
) -> ApiResult<Duration> {
    let Some(text) = text else {
        return Ok(default);
    };
    let bad = |why: String| {
        ApiError::bad_request("invalid_duration", format!("{parameter}: {why}"))
            .with("parameter", parameter.to_owned())
    };
    let value = crate::problem::parse_duration(text, "30s").map_err(bad)?;
    if value < range.0 || value > range.1 {
        return Err(bad(format!(
            "{text:?} is outside {} ..= {}",
            crate::problem::format_duration(range.0),
            crate::problem::format_duration(range.1)
        )));
    }
    Ok(value)
}

fn known_topic(state: &AppState, topic: &str) -> ApiResult<()> {
    match state.topics.get(topic) {
        Some(_) => Ok(()),
        None => Err(ApiError::unknown_topic(topic)),
    }
}

async fn open(
    state: &AppState,
    topic: &str,
    group: &str,
    start: Start,
    filter: Option<crate::event::Expr>,
) -> ApiResult<Arc<Group>> {
    known_topic(state, topic)?;
    Ok(state.groups.open(topic, group, start, filter).await?)
}

/// The group if this process serves it. Receipts of a group that is not
/// loaded (the server restarted since) hold no lease.
async fn loaded(state: &AppState, topic: &str, group: &str) -> ApiResult<Option<Arc<Group>>> {
    known_topic(state, topic)?;
    Ok(state.groups.loaded(topic, group).await)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiveQuery {
    /// Who receives (a worker's name): status lists leases under it.
    member: Option<String>,
    max: Option<usize>,
    lease: Option<String>,
    wait: Option<String>,
    start: Option<String>,
    /// A CEL expression, fixed when the receive creates the group: only
    /// the events it is true of are delivered.
    filter: Option<String>,
}

/// Leases up to `max` events: `{"deliveries": [{"receipt", "attempt", "event"}]}`.
pub async fn receive(
    State(state): State<Arc<AppState>>,
    Path((topic, group)): Path<(String, String)>,
    query: Result<Query<ReceiveQuery>, QueryRejection>,
) -> ApiResult<Response> {
    let Query(query) = query.map_err(super::events::bad_query)?;
    let max = query.max.unwrap_or(DEFAULT_MAX);
    if max == 0 || max > MAX_MAX {
        return Err(ApiError::bad_request(
            "invalid_max",
            format!("max must be between 1 and {MAX_MAX}, got {max}"),
        )
        .with("parameter", "max")
        .with("max", MAX_MAX));
    }
    let lease = duration("lease", query.lease.as_deref(), DEFAULT_LEASE, LEASE_RANGE)?;
    let wait = duration(
        "wait",
        query.wait.as_deref(),
        Duration::ZERO,
        (Duration::ZERO, MAX_WAIT),
    )?;
    let start = match query.start.as_deref() {
        None | Some("latest") => Start::Latest,
        Some("earliest") => Start::Earliest,
        Some(other) => {
            return Err(ApiError::bad_request(
                "invalid_start",
                format!("start must be \"earliest\" or \"latest\", got {other:?}"),
            )
            .with("parameter", "start"));
        }
    };
    let member = query.member.as_deref().unwrap_or(DEFAULT_MEMBER);
    check_member(member)?;
    let filter = query
        .filter
        .as_deref()
        .map(|text| super::events::compile_filter(text, "filter"))
        .transpose()?;
    let group = open(&state, &topic, &group, start, filter).await?;
    let deliveries = tokio::select! {
        deliveries = group.receive(member, max, lease, wait) => deliveries?,
        _ = state.shutdown.cancelled() => Vec::new(),
    };
    // The stored payloads are already CloudEvent JSON: splice them in.
    let mut body = BytesMut::with_capacity(
        deliveries
            .iter()
            .map(|d| d.payload.len() + 96)
            .sum::<usize>()
            + 32,
    );
    body.put_slice(b"{\"deliveries\":[");
    for (i, delivery) in deliveries.iter().enumerate() {
        if i > 0 {
            body.put_u8(b',');
        }
        body.put_slice(
            format!(
                "{{\"receipt\":\"{}\",\"attempt\":{},\"event\":",
                delivery.receipt, delivery.attempt
            )
            .as_bytes(),
        );
        body.put_slice(&delivery.payload);
        body.put_u8(b'}');
    }
    body.put_slice(b"]}");
    Ok(([(header::CONTENT_TYPE, "application/json")], body.freeze()).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SettleBody {
    receipts: Vec<String>,
    /// nack only: when the events are due again (default at once).
    delay: Option<String>,
    /// extend only: the new lease, from now (default 30s).
    lease: Option<String>,
}

fn settle_body(body: &Bytes) -> ApiResult<SettleBody> {
    let parsed: SettleBody = serde_json::from_slice(body).map_err(|err| {
        ApiError::bad_request(
            "invalid_json",
            format!("expected {{\"receipts\": [\"…\"]}}: {err}"),
        )
    })?;
    if parsed.receipts.is_empty() || parsed.receipts.len() > MAX_MAX {
        return Err(ApiError::bad_request(
            "invalid_receipts",
            format!(
                "receipts must hold 1 to {MAX_MAX} receipts, got {}",
                parsed.receipts.len()
            ),
        )
        .with("field", "receipts"));
    }
    Ok(parsed)
}

/// 200 when every receipt settled; 409 `receipt_elsewhere` naming the
/// process to use for receipts another process of the group handed out;
/// 409 `lease_expired` naming the ones whose lease had run out (the others
/// are settled all the same).
async fn settled(
    state: &AppState,
    topic: &str,
    group: &str,
    verb: &str,
    mut settled: Settled,
) -> ApiResult<axum::Json<serde_json::Map<String, serde_json::Value>>> {
    if !settled.elsewhere.is_empty() {
        // A broker that cannot tell who owns what (tansu): the leases are
        // simply not here.
        let ownership = crate::broker::membership::ownership(&state.broker, topic, group, None)
            .await
            .unwrap_or_else(|_| crate::broker::membership::Ownership {
                processes: Default::default(),
                this_process: String::new(),
                owned_here: None,
            });
        let owner_of = |partition: usize| {
            ownership
                .processes
                .iter()
                .find(|(process, owned)| {
                    **process != ownership.this_process && owned.contains(&partition)
                })
                .map(|(process, _)| process.clone())
        };
        let mut elsewhere: std::collections::BTreeMap<String, Vec<String>> = Default::default();
        for receipt in std::mem::take(&mut settled.elsewhere) {
            match crate::group::receipt_partition(&receipt).and_then(owner_of) {
                Some(process) => elsewhere.entry(process).or_default().push(receipt),
                // Nobody else has it: the lease is simply gone.
                None => settled.expired.push(receipt),
            }
        }
        if let Some((process, receipts)) = elsewhere.into_iter().next() {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "receipt_elsewhere",
                format!(
                    "{} of the receipts belong to partitions that Switchyard process {process:?} serves: settle them there (receipts are settled by the process that handed them out)",
                    receipts.len()
                ),
            )
            .with("process", process)
            .with("receipts", receipts)
            .with(verb, settled.settled));
        }
    }
    if settled.expired.is_empty() {
        let mut answer = serde_json::Map::new();
        answer.insert(verb.to_owned(), settled.settled.into());
        return Ok(axum::Json(answer));
    }
    Err(ApiError::new(
        StatusCode::CONFLICT,
        "lease_expired",
        format!(
            "{} of the receipts had lost their lease (the event is due again or leased to another consumer); the other {} are {verb}",
            settled.expired.len(),
            settled.settled
        ),
    )
    .with("expired", settled.expired)
    .with(verb, settled.settled))
}

/// Finishes events; answers once the group's cursor is committed.
pub async fn ack(
    State(state): State<Arc<AppState>>,
    Path((topic, group)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult<impl IntoResponse> {
    let body = settle_body(&body)?;
    only_field("ack", &body, None)?;
    let outcome = match loaded(&state, &topic, &group).await? {
        Some(group) => group.ack(&body.receipts).await?,
        None => Settled::elsewhere(body.receipts),
    };
    settled(&state, &topic, &group, "acked", outcome).await
}

/// Hands events back, due again after `delay`.
pub async fn nack(
    State(state): State<Arc<AppState>>,
    Path((topic, group)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult<impl IntoResponse> {
    let body = settle_body(&body)?;
    only_field("nack", &body, Some("delay"))?;
    let delay = duration(
        "delay",
        body.delay.as_deref(),
        Duration::ZERO,
        (Duration::ZERO, MAX_NACK_DELAY),
    )?;
    let outcome = match loaded(&state, &topic, &group).await? {
        Some(group) => group.nack(&body.receipts, delay)?,
        None => Settled::elsewhere(body.receipts),
    };
    settled(&state, &topic, &group, "nacked", outcome).await
}

/// Renews leases: the events stay with their member for `lease` from now.
pub async fn extend(
    State(state): State<Arc<AppState>>,
    Path((topic, group)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult<impl IntoResponse> {
    let body = settle_body(&body)?;
    only_field("extend", &body, Some("lease"))?;
    let lease = duration("lease", body.lease.as_deref(), DEFAULT_LEASE, LEASE_RANGE)?;
    let outcome = match loaded(&state, &topic, &group).await? {
        Some(group) => group.extend(&body.receipts, lease)?,
        None => Settled::elsewhere(body.receipts),
    };
    settled(&state, &topic, &group, "extended", outcome).await
}

/// Refuses the optional fields of a settle body that `verb` does not take
/// (`delay` is nack's, `lease` is extend's).
fn only_field(verb: &str, body: &SettleBody, allowed: Option<&str>) -> ApiResult<()> {
    for (field, given) in [
        ("delay", body.delay.is_some()),
        ("lease", body.lease.is_some()),
    ] {
        if given && allowed != Some(field) {
            let owner = if field == "delay" { "nack" } else { "extend" };
            return Err(ApiError::bad_request(
                "invalid_json",
                format!("{verb} takes no {field} ({owner} does)"),
            )
            .with("field", field));
        }
    }
    Ok(())
}

/// Where the group is: committed and read cursors, events outstanding and
/// leased, and each member's leases.
pub async fn status(
    State(state): State<Arc<AppState>>,
    Path((topic, group)): Path<(String, String)>,
) -> ApiResult<impl IntoResponse> {
    if let Some(loaded) = loaded(&state, &topic, &group).await? {
        return Ok(axum::Json(json!(loaded.status().await)));
    }
    match state.broker.committed(&topic, &group).await? {
        Some(cursor) => Ok(axum::Json(json!({
            "filter": state.groups.filter_of(&topic, &group).await,
            "committed": cursor.to_string(),
            "outstanding": 0,
            "leased": 0,
            "members": {},
        }))),
        None => Err(GroupError::Unknown { topic, group }.into()),
    }
}

/// Events counted at most per partition where offsets are not dense
/// (Redis stream ids), so that listing a far-behind group stays cheap.
const MAX_LAG_COUNT: u64 = 10_000;

/// Every group with a committed cursor on the topic: per partition its
/// committed offset, the latest and the lag (events between them not
/// settled yet), and who uses it now.
pub async fn list(
    State(state): State<Arc<AppState>>,
    Path(topic): Path<String>,
) -> ApiResult<impl IntoResponse> {
    known_topic(&state, &topic)?;
    let latest = state.broker.latest(&topic).await?;
    let mut groups = Vec::new();
    for name in state.broker.groups(&topic).await? {
        // Deleted meanwhile: not listed.
        let Some(committed) = state.broker.committed_places(&topic, &name).await? else {
            continue;
        };
        let mut partitions = Vec::new();
        let mut total = 0;
        for partition in 0..committed.partitions() {
            let place = committed.place(partition);
            let (lag, capped) = state
                .broker
                .lag(
                    &topic,
                    partition,
                    place,
                    latest.next(partition),
                    MAX_LAG_COUNT,
                )
                .await?;
            total += lag;
            let mut entry = json!({
                "partition": partition,
                "committed": place.next,
                "latest": latest.next(partition),
                "lag": lag,
            });
            if capped {
                entry["lag_at_least"] = json!(true);
            }
            partitions.push(entry);
        }
        let activity = state.groups.activity(&topic, &name).await?;
        let handler = state.groups.handler_of(&topic, &name);
        groups.push(json!({
            "name": name,
            "committed": committed.cursor().to_string(),
            "lag": total,
            "partitions": partitions,
            // A handler's group is in use while its handler is loaded.
            "active": activity.is_active() || handler.is_some(),
            "members": activity.members,
            "leased": activity.leased,
            "processes": activity.processes,
            "filter": state.groups.filter_of(&topic, &name).await,
            "handler": handler,
        }));
    }
    Ok(axum::Json(json!({ "topic": topic, "groups": groups })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResetBody {
    /// `earliest`, `latest`, an RFC 3339 time or a cursor.
    to: String,
}

/// Moves the group's committed cursor (`{"to": …}`), while nobody uses the
/// group; the next receive goes on from there.
pub async fn reset(
    State(state): State<Arc<AppState>>,
    Path((topic, group)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult<impl IntoResponse> {
    let Some(partitions) = state.topics.get(&topic).map(|t| t.partitions) else {
        return Err(ApiError::unknown_topic(&topic));
    };
    let body: ResetBody = serde_json::from_slice(&body).map_err(|err| {
        ApiError::bad_request(
            "invalid_json",
            format!("expected {{\"to\": \"earliest\" | \"latest\" | \"<RFC 3339 time>\" | \"<cursor>\"}}: {err}"),
        )
    })?;
    let cursor = super::events::resolve_from(&state, &topic, partitions, &body.to, "to").await?;
    // A cursor outside the retained log is refused as reads refuse it.
    state.broker.check(&topic, &cursor).await?;
    state.groups.replace(&topic, &group, Some(&cursor)).await?;
    Ok(axum::Json(json!({
        "group": group,
        "committed": cursor.to_string(),
    })))
}

/// Removes the group's committed cursor, while nobody uses the group; a
/// receive afterwards creates it afresh from its `start`.
pub async fn delete(
    State(state): State<Arc<AppState>>,
    Path((topic, group)): Path<(String, String)>,
) -> ApiResult<impl IntoResponse> {
    known_topic(&state, &topic)?;
    if !state.groups.replace(&topic, &group, None).await? {
        return Err(GroupError::Unknown { topic, group }.into());
    }
    Ok(axum::Json(json!({ "deleted": group })))
}
