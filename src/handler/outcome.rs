//! What handling an event comes to, and the event that records it: a result
//! (on the results topic, if the handler has one) or a dead letter with the
//! reason and the attempt history. Pure: storing it is the worker's job.

use std::time::Duration;

use serde_json::{Value, json};

use super::action::CallResult;
use super::config::HandlerSpec;
use crate::event::{Attributes, CloudEvent, now_rfc3339};

pub const RESULT_TYPE: &str = "switchyard.handler.succeeded";
pub const DEAD_LETTER_TYPE: &str = "switchyard.handler.failed";
pub const BREAKER_TYPE: &str = "switchyard.handler.breaker";
/// Stored on the dead-letter topic when a replayed dead letter's event
/// reached its final outcome: replay does not send it again.
pub const RESOLVED_TYPE: &str = "switchyard.handler.resolved";

/// The `source` of every event a handler publishes.
pub fn source_of(handler: &str) -> String {
    format!("/handlers/{handler}")
}

/// An outcome event read back from the log (to find the outcomes stored
/// before a crash, to replay dead letters): only what those need.
#[derive(Debug, serde::Deserialize)]
pub struct Recorded {
    pub id: String,
    pub source: String,
    #[serde(rename = "type")]
    pub ty: String,
    #[serde(default)]
    pub data: RecordedData,
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
pub struct RecordedData {
    pub handler: Option<String>,
    /// The input event (a dead letter) or its summary (a result).
    pub event: Value,
    /// A resolution: the dead letter it resolves.
    pub dead_letter: Option<String>,
}

impl Recorded {
    /// A stored event, if it is an outcome at all.
    pub fn parse(payload: &[u8]) -> Option<Self> {
        Self::parse_any(payload).filter(|r| matches!(r.ty.as_str(), RESULT_TYPE | DEAD_LETTER_TYPE))
    }

    /// A stored event, if it is an outcome or a resolution.
    pub fn parse_any(payload: &[u8]) -> Option<Self> {
        serde_json::from_slice::<Self>(payload).ok().filter(|r| {
            matches!(
                r.ty.as_str(),
                RESULT_TYPE | DEAD_LETTER_TYPE | RESOLVED_TYPE
            )
        })
    }

    /// The dead letter of `handler` this resolves, if it is a resolution.
    pub fn resolves(&self, handler: &str) -> Option<&str> {
        (self.ty == RESOLVED_TYPE && self.data.handler.as_deref() == Some(handler))
            .then_some(self.data.dead_letter.as_deref())
            .flatten()
    }

    /// The input event's attributes.
    pub fn input(&self) -> Attributes {
        Attributes::of(&self.data.event)
    }

    /// A dead letter of `handler`.
    pub fn is_dead_letter_of(&self, handler: &str) -> bool {
        self.ty == DEAD_LETTER_TYPE && self.data.handler.as_deref() == Some(handler)
    }
}

/// What handling an event came to.
pub enum Outcome {
    Succeeded {
        status: u16,
        headers: serde_json::Map<String, Value>,
        body: Value,
        attempts: u32,
        duration: Duration,
    },
    Failed {
        reason: String,
        permanent: bool,
        attempts: Vec<Value>,
    },
}

impl Outcome {
    pub fn succeeded(&self) -> bool {
        matches!(self, Self::Succeeded { .. })
    }

    /// The topic and event that record this outcome of `input`; `None` for
    /// a success when the handler keeps no results.
    pub fn into_event<'a>(
        self,
        spec: &'a HandlerSpec,
        input: &Value,
        head: &Attributes,
    ) -> Option<(&'a str, CloudEvent)> {
        match self {
            Self::Succeeded {
                status,
                headers,
                body,
                attempts,
                duration,
            } => {
                let results = spec.results.as_deref()?;
                let data = json!({
                    "handler": spec.name,
                    "event": head.summary(),
                    "status": status,
                    "headers": headers,
                    "body": body,
                    "attempts": attempts,
                    "duration_ms": duration.as_secs_f64() * 1000.0,
                });
                Some((
                    results,
                    head.cause(source_of(&spec.name), RESULT_TYPE, data),
                ))
            }
            Self::Failed {
                reason,
                permanent,
                attempts,
            } => {
                let data = json!({
                    "handler": spec.name,
                    "reason": reason,
                    "permanent": permanent,
                    "attempts": attempts,
                    "event": input,
                });
                Some((
                    spec.dead_letters.as_str(),
                    head.cause(source_of(&spec.name), DEAD_LETTER_TYPE, data),
                ))
            }
        }
    }
}

/// One call's record in a dead letter's attempt history.
pub fn attempt_record(attempt: u32, result: &CallResult, duration: Duration) -> Value {
    let status = result.status();
    let error = match result {
        CallResult::Success { .. } => None,
        CallResult::Retryable { reason, .. } | CallResult::Permanent { reason, .. } => {
            Some(reason.clone())
        }
    };
    json!({
        "attempt": attempt,
        "at": now_rfc3339(),
        "status": status,
        "error": error,
        "duration_ms": duration.as_secs_f64() * 1000.0,
    })
}
