//! The `[action]` table of a handler file: the keys every kind shares
//! (checked here) and each kind's own (checked by `http.rs`, `webhook.rs`).

use std::collections::BTreeMap;

use serde::Deserialize;

use super::http::HttpAction;
use super::webhook::WebhookAction;
use super::{ActionSpec, Common};
use crate::problem::{Piece, Problems};

/// What a request's body is (see [`BodyMode`]), unless the file says.
pub const DEFAULT_BODY: &str = "event";

/// The `[action]` table: the keys every kind shares, and each kind's own
/// (checked by the kind: `handler/action/<kind>.rs`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAction {
    pub(crate) kind: String,
    pub(crate) url: String,
    pub(crate) method: Option<String>,
    #[serde(default)]
    pub(crate) headers: BTreeMap<String, String>,
    pub(crate) auth: Option<RawAuth>,
    pub(crate) body: Option<String>,
    /// webhook: environment variables holding `whsec_…` signing secrets.
    #[serde(default)]
    pub(crate) secrets_env: Vec<String>,
    /// Response headers copied into result events.
    #[serde(default)]
    pub(crate) result_headers: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAuth {
    pub(crate) bearer_env: Option<String>,
    pub(crate) header: Option<String>,
    pub(crate) value_env: Option<String>,
}

/// How the request body is built from the event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyMode {
    /// The CloudEvent in structured mode (`application/cloudevents+json`).
    Event,
    /// The CloudEvent in binary mode: `ce-*` headers, body = data.
    Binary,
    /// Only the event's data.
    Data,
}

/// A piece of a URL template: text, or a value taken from the event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UrlPart {
    Literal(String),
    /// A JSON pointer into the event, e.g. `/id` or `/data/order_id`.
    Pointer(String),
}

fn parse_url(text: &str) -> Result<Vec<UrlPart>, String> {
    let parts = crate::problem::template(text)?
        .into_iter()
        .map(|piece| match piece {
            Piece::Literal(text) => Ok(UrlPart::Literal(text.to_owned())),
            Piece::Placeholder("") => Err("empty placeholder {}".to_owned()),
            Piece::Placeholder(name) if name.starts_with('/') => {
                Ok(UrlPart::Pointer(name.to_owned()))
            }
            Piece::Placeholder(name) => Ok(UrlPart::Pointer(format!("/{name}"))),
        })
        .collect::<Result<Vec<_>, String>>()?;
    match parts.first() {
        Some(UrlPart::Literal(head))
            if head.starts_with("http://") || head.starts_with("https://") =>
        {
            Ok(parts)
        }
        _ => Err(format!("{text:?} must start with http:// or https://")),
    }
}

/// Each action kind's name, and how its `[action]` table is resolved.
type ResolveAction = fn(&mut Problems, RawAction, Common) -> ActionSpec;
const ACTION_KINDS: [(&str, ResolveAction); 2] = [
    ("http", |c, raw, common| {
        ActionSpec::Http(HttpAction::resolve(c, raw, common))
    }),
    ("webhook", |c, raw, common| {
        ActionSpec::Webhook(WebhookAction::resolve(c, raw, common))
    }),
];

impl ActionSpec {
    /// Checks an `[action]` table: the keys every kind shares here, the
    /// kind's own in its file.
    pub(in crate::handler) fn resolve(c: &mut Problems, raw: RawAction) -> Option<ActionSpec> {
        let url = match parse_url(&raw.url) {
            Ok(url) => url,
            Err(reason) => {
                c.problem("action.url", reason);
                Vec::new()
            }
        };
        let body = c
            .one_of(
                "action.body",
                raw.body.as_deref().unwrap_or(DEFAULT_BODY),
                &[
                    ("event", BodyMode::Event),
                    ("binary", BodyMode::Binary),
                    ("data", BodyMode::Data),
                ],
            )
            .unwrap_or(BodyMode::Event);
        let headers: Vec<(String, String)> = raw
            .headers
            .iter()
            .map(|(name, value)| (name.clone(), value.clone()))
            .collect();
        for (name, _) in &headers {
            if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
                c.problem("action.headers", format!("{name:?} is not a header name"));
            }
        }
        let common = Common {
            url,
            headers,
            body,
            result_headers: raw
                .result_headers
                .iter()
                .map(|h| h.to_ascii_lowercase())
                .collect(),
        };
        let resolve = c.one_of("action.kind", &raw.kind, &ACTION_KINDS)?;
        Some(resolve(c, raw, common))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_templates() {
        assert_eq!(
            parse_url("http://h/orders/{data/order_id}?e={id}").unwrap(),
            [
                UrlPart::Literal("http://h/orders/".into()),
                UrlPart::Pointer("/data/order_id".into()),
                UrlPart::Literal("?e=".into()),
                UrlPart::Pointer("/id".into()),
            ]
        );
        assert!(parse_url("ftp://x").is_err());
        assert!(parse_url("http://x/{id").is_err());
    }
}
