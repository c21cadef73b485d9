//! Handler files (`handlers/*.toml`) parsed into raw structs, then validated
//! against the topics into [`HandlerSpec`] in one step. Nothing later
//! re-checks.

use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

pub use super::action::ActionSpec;
use super::action::RawAction;
pub use super::policy::breaker::BreakerSpec;
use super::policy::{breaker, retry};
/// The problems of one handler file, under the name the actions know.
use crate::problem::Problems;
use crate::problem::{ConfigProblem, files};
use crate::topic::Topics;

/// How long one call may take, unless the file says.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Calls in flight at once per handler, unless the file says.
pub const DEFAULT_MAX_CONCURRENCY: usize = 16;
/// Where a new consumer group starts, unless the file says.
pub const DEFAULT_START: &str = "latest";
/// Delivery order, unless the file says: none (`by_key`: one call at a
/// time per partition key).
pub const DEFAULT_ORDERED: &str = "none";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHandler {
    name: String,
    #[serde(default)]
    description: String,
    subscribe: RawSubscribe,
    action: RawAction,
    #[serde(default)]
    policy: RawPolicy,
    outputs: RawOutputs,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSubscribe {
    topic: String,
    #[serde(default)]
    types: Vec<String>,
    subject_prefix: Option<String>,
    /// A CEL expression over the event: only those it is true of.
    filter: Option<String>,
    group: Option<String>,
    /// Where a new consumer group starts: "latest" (default) or "earliest".
    start: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    timeout: Option<String>,
    max_attempts: Option<u32>,
    backoff_initial: Option<String>,
    backoff_max: Option<String>,
    rate_limit: Option<f64>,
    max_concurrency: Option<usize>,
    ordered: Option<String>,
    #[serde(default)]
    breaker: RawBreaker,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBreaker {
    consecutive_failures: Option<u32>,
    failure_rate: Option<f64>,
    window: Option<String>,
    min_calls: Option<u32>,
    open_for: Option<String>,
    half_open_probes: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOutputs {
    results: Option<String>,
    dead_letters: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PolicySpec {
    pub timeout: Duration,
    pub max_attempts: u32,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    pub rate_limit: Option<f64>,
    pub max_concurrency: usize,
    pub ordered_by_key: bool,
    pub breaker: BreakerSpec,
}

#[derive(Debug, Clone)]
pub struct HandlerSpec {
    pub name: String,
    pub description: String,
    pub topic: String,
    pub types: Vec<String>,
    pub subject_prefix: Option<String>,
    pub filter: Option<crate::event::Expr>,
    pub group: String,
    pub start_earliest: bool,
    pub action: ActionSpec,
    pub policy: PolicySpec,
    pub results: Option<String>,
    pub dead_letters: String,
}

impl HandlerSpec {
    /// The output topics, results first.
    pub fn outputs(&self) -> Vec<&str> {
        let mut outputs: Vec<&str> = self.results.iter().map(String::as_str).collect();
        if !outputs.contains(&self.dead_letters.as_str()) {
            outputs.push(&self.dead_letters);
        }
        outputs
    }

    /// The consumer group under which the outputs' cursors are kept.
    pub fn outputs_group(&self) -> String {
        format!("{}.outcomes", self.group)
    }

    /// Every (topic, consumer group) this handler commits cursors under.
    pub fn groups(&self) -> Vec<(String, String)> {
        let outputs_group = self.outputs_group();
        std::iter::once((self.topic.clone(), self.group.clone()))
            .chain(
                self.outputs()
                    .into_iter()
                    .map(|topic| (topic.to_owned(), outputs_group.clone())),
            )
            .collect()
    }
}

/// Loads every `*.toml` in `dir` (a missing directory means no handlers).
pub fn load(dir: &Path, topics: &Topics) -> Result<Vec<HandlerSpec>, Vec<ConfigProblem>> {
    let mut problems = Problems::new(dir);
    let mut specs: Vec<HandlerSpec> = Vec::new();
    for (file, raw) in files::read_dir(dir, "handlers", true, &mut problems) {
        match problems.take(resolve(&file, raw, topics)) {
            Some(spec) if specs.iter().any(|s| s.name == spec.name) => {
                problems.push(ConfigProblem::new(
                    &file,
                    "name",
                    format!("handler {:?} is declared twice", spec.name),
                ))
            }
            Some(spec) => specs.push(spec),
            None => {}
        }
    }
    problems.finish(specs)
}

/// Validates the handler read from `file` against the topics.
fn resolve(
    file: &Path,
    raw: RawHandler,
    topics: &Topics,
) -> Result<HandlerSpec, Vec<ConfigProblem>> {
    let mut c = Problems::new(file);
    let valid_name = !raw.name.is_empty()
        && raw.name.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_' || b == b'.'
        });
    if !valid_name {
        c.problem(
            "name",
            format!(
                "{:?} is not a handler name: use a-z, 0-9, '-', '_' and '.'",
                raw.name
            ),
        );
    }
    match topics.get(&raw.subscribe.topic) {
        None => c.problem(
            "subscribe.topic",
            format!("no topic named {:?}", raw.subscribe.topic),
        ),
        Some(topic) => {
            for ty in &raw.subscribe.types {
                if !topic.types.contains_key(ty) {
                    c.problem(
                        "subscribe.types",
                        format!("topic {:?} declares no type {ty:?}", topic.name),
                    );
                }
            }
            // A handler's group is its own: not one the topic shares.
            let group = raw.subscribe.group.as_deref().unwrap_or(&raw.name);
            if topic.groups.contains_key(group) {
                c.problem(
                    if raw.subscribe.group.is_some() {
                        "subscribe.group"
                    } else {
                        "name"
                    },
                    format!(
                        "consumer group {group:?} is declared in topic {:?}'s groups, for workers to share; name this handler's group otherwise",
                        topic.name
                    ),
                );
            }
        }
    }
    for (key, output) in [
        ("outputs.results", raw.outputs.results.as_ref()),
        ("outputs.dead_letters", Some(&raw.outputs.dead_letters)),
    ] {
        if let Some(output) = output
            && topics.get(output).is_none()
        {
            c.problem(key, format!("no topic named {output:?}"));
        }
    }
    let start_earliest = c
        .one_of(
            "subscribe.start",
            raw.subscribe.start.as_deref().unwrap_or(DEFAULT_START),
            &[("latest", false), ("earliest", true)],
        )
        .unwrap_or(false);
    let action = ActionSpec::resolve(&mut c, raw.action);
    let policy = resolve_policy(&mut c, raw.policy);
    let filter = match raw
        .subscribe
        .filter
        .as_deref()
        .map(crate::event::Expr::compile)
    {
        Some(Err(err)) => {
            c.problem("subscribe.filter", err.to_string());
            None
        }
        Some(Ok(expr)) => Some(expr),
        None => None,
    };
    c.finish(())?;
    Ok(HandlerSpec {
        group: raw.subscribe.group.unwrap_or_else(|| raw.name.clone()),
        name: raw.name,
        description: raw.description,
        topic: raw.subscribe.topic,
        types: raw.subscribe.types,
        subject_prefix: raw.subscribe.subject_prefix,
        filter,
        start_earliest,
        action: action.expect("no problems means an action"),
        policy,
        results: raw.outputs.results,
        dead_letters: raw.outputs.dead_letters,
    })
}

fn resolve_policy(c: &mut Problems, raw: RawPolicy) -> PolicySpec {
    let timeout = c.duration("policy.timeout", raw.timeout.as_deref(), DEFAULT_TIMEOUT);
    let backoff_initial = c.duration(
        "policy.backoff_initial",
        raw.backoff_initial.as_deref(),
        retry::DEFAULT_BACKOFF_INITIAL,
    );
    let backoff_max = c.duration(
        "policy.backoff_max",
        raw.backoff_max.as_deref(),
        retry::DEFAULT_BACKOFF_MAX,
    );
    let max_attempts = raw.max_attempts.unwrap_or(retry::DEFAULT_MAX_ATTEMPTS);
    if max_attempts == 0 {
        c.problem("policy.max_attempts", "must be at least 1");
    }
    let max_concurrency = raw.max_concurrency.unwrap_or(DEFAULT_MAX_CONCURRENCY);
    if max_concurrency == 0 {
        c.problem("policy.max_concurrency", "must be at least 1");
    }
    if let Some(rate) = raw.rate_limit
        && !(rate > 0.0 && rate.is_finite())
    {
        c.problem(
            "policy.rate_limit",
            format!("must be a positive number of events per second, got {rate}"),
        );
    }
    let ordered_by_key = c
        .one_of(
            "policy.ordered",
            raw.ordered.as_deref().unwrap_or(DEFAULT_ORDERED),
            &[("none", false), ("by_key", true)],
        )
        .unwrap_or(false);
    let b = raw.breaker;
    let failure_rate = b.failure_rate.unwrap_or(breaker::DEFAULT_FAILURE_RATE);
    if !(0.0..=1.0).contains(&failure_rate) || failure_rate == 0.0 {
        c.problem(
            "policy.breaker.failure_rate",
            format!("must be in (0, 1], got {failure_rate}"),
        );
    }
    let breaker = BreakerSpec {
        consecutive_failures: b
            .consecutive_failures
            .unwrap_or(breaker::DEFAULT_CONSECUTIVE_FAILURES)
            .max(1),
        failure_rate,
        window: c.duration(
            "policy.breaker.window",
            b.window.as_deref(),
            breaker::DEFAULT_WINDOW,
        ),
        min_calls: b.min_calls.unwrap_or(breaker::DEFAULT_MIN_CALLS).max(1),
        open_for: c.duration(
            "policy.breaker.open_for",
            b.open_for.as_deref(),
            breaker::DEFAULT_OPEN_FOR,
        ),
        half_open_probes: b
            .half_open_probes
            .unwrap_or(breaker::DEFAULT_HALF_OPEN_PROBES)
            .max(1),
    };
    PolicySpec {
        timeout,
        max_attempts: max_attempts.max(1),
        backoff_initial,
        backoff_max,
        rate_limit: raw.rate_limit,
        max_concurrency: max_concurrency.max(1),
        ordered_by_key,
        breaker,
    }
}
