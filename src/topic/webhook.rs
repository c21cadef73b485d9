//! Webhook definitions: the `[[webhooks]]` tables of a topic file,
//! validated into [`WebhookSpec`]. Plain configuration data: verification
//! itself lives in `ingest::webhook`.

use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use crate::problem::{ConfigProblem, Problems, Size};

/// How far a signed timestamp may be from now, either way.
pub const DEFAULT_TOLERANCE: Duration = Duration::from_secs(300);
/// How long a delivery id (and, with `dedupe_body`, a body) is remembered.
pub const DEFAULT_DEDUPE_WINDOW: Duration = Duration::from_secs(24 * 3600);
/// Largest webhook request body accepted.
pub const DEFAULT_MAX_BODY_BYTES: u64 = 1024 * 1024;
/// Longest webhook name (the URL segment).
pub const MAX_NAME_BYTES: usize = 100;
/// The `hmac` scheme's signature encoding when none is given.
pub const DEFAULT_HMAC_ENCODING: &str = "hex";
/// What the `hmac` scheme signs when no `signed_content` is given: the
/// timestamp and the body when the sender sends a timestamp, else the body.
pub const DEFAULT_SIGNED_CONTENT: (&str, &str) = ("{timestamp}.{body}", "{body}");

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWebhook {
    /// The webhook's name (the file key is `source`, for history).
    #[serde(rename = "source")]
    name: String,
    scheme: String,
    #[serde(default)]
    secrets_env: Vec<String>,
    tolerance: Option<String>,
    #[serde(rename = "type")]
    ty: Option<RawTypeRule>,
    type_prefix: Option<String>,
    subject: Option<String>,
    dedupe_window: Option<String>,
    max_body_bytes: Option<Size>,
    #[serde(default)]
    accept_undeclared_types: bool,
    /// Also dedupe on a hash of the signed body (for senders whose delivery
    /// id is not signed: GitHub, Shopify).
    #[serde(default)]
    dedupe_body: bool,
    // Options of the generic `hmac` scheme.
    header: Option<String>,
    encoding: Option<String>,
    prefix: Option<String>,
    timestamp_header: Option<String>,
    signed_content: Option<String>,
    id_header: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTypeRule {
    fixed: Option<String>,
    header: Option<String>,
    json: Option<String>,
}

/// How the signature is carried and computed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scheme {
    StandardWebhooks,
    Github,
    Stripe,
    Slack,
    Shopify,
    Hmac(HmacOptions),
}

impl Scheme {
    pub fn name(&self) -> &'static str {
        match self {
            Self::StandardWebhooks => "standard-webhooks",
            Self::Github => "github",
            Self::Stripe => "stripe",
            Self::Slack => "slack",
            Self::Shopify => "shopify",
            Self::Hmac(_) => HMAC,
        }
    }
}

/// The schemes that take no options of their own, and the name of the one
/// that does.
const FIXED_SCHEMES: [Scheme; 5] = [
    Scheme::StandardWebhooks,
    Scheme::Github,
    Scheme::Stripe,
    Scheme::Slack,
    Scheme::Shopify,
];
const HMAC: &str = "hmac";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Hex,
    Base64,
}

/// One piece of the generic scheme's signed content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    Literal(String),
    Timestamp,
    Id,
    Body,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HmacOptions {
    /// Lower-case name of the signature header.
    pub header: String,
    pub encoding: Encoding,
    /// Stripped from the header value before decoding, e.g. `sha256=`.
    pub prefix: String,
    pub timestamp_header: Option<String>,
    pub id_header: Option<String>,
    pub signed_content: Vec<Part>,
}

/// Where an event's type comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TypeRule {
    /// The scheme's own convention (GitHub: event header plus `.action`).
    SchemeDefault,
    Fixed(String),
    Header(String),
    Json(String),
}

#[derive(Debug, Clone)]
pub struct WebhookSpec {
    /// The URL segment: `POST /v1/webhooks/<name>`.
    pub name: String,
    pub topic: String,
    pub scheme: Scheme,
    /// Environment variables holding the secrets; several during rotation.
    pub secrets_env: Vec<String>,
    pub tolerance: Duration,
    pub type_rule: TypeRule,
    pub type_prefix: String,
    /// JSON pointer into the body for the event's subject.
    pub subject: Option<String>,
    pub dedupe_window: Duration,
    pub max_body_bytes: usize,
    pub accept_undeclared_types: bool,
    /// A body seen within the window is a duplicate, whatever its delivery
    /// id says: a replay of a captured delivery under a new (unsigned) id
    /// gets in no more than once.
    pub dedupe_body: bool,
}

fn is_valid_webhook_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_BYTES
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

fn parse_template(text: &str) -> Result<Vec<Part>, String> {
    use crate::problem::Piece;
    let parts = crate::problem::template(text)?
        .into_iter()
        .map(|piece| match piece {
            Piece::Literal(text) => Ok(Part::Literal(text.to_owned())),
            Piece::Placeholder("timestamp") => Ok(Part::Timestamp),
            Piece::Placeholder("id") => Ok(Part::Id),
            Piece::Placeholder("body") => Ok(Part::Body),
            Piece::Placeholder(other) => Err(format!(
                "unknown placeholder {{{other}}}; use {{timestamp}}, {{id}} or {{body}}"
            )),
        })
        .collect::<Result<Vec<_>, String>>()?;
    if !parts.contains(&Part::Body) {
        return Err("the signed content must include {body}".into());
    }
    Ok(parts)
}

impl RawWebhook {
    /// Validates the `[[webhooks]]` table at `index` of the topic in `file`.
    pub fn resolve(
        self,
        topic: &str,
        index: usize,
        file: &Path,
    ) -> Result<WebhookSpec, Vec<ConfigProblem>> {
        let mut problems = Problems::new(file);
        let key = |k: &str| format!("webhooks[{index}].{k}");
        if !is_valid_webhook_name(&self.name) {
            problems.problem(
                &key("source"),
                format!(
                    "{:?} is not a webhook name: use a-z, 0-9, '-' and '_'",
                    self.name
                ),
            );
        }
        if self.secrets_env.is_empty() {
            problems.problem(
                &key("secrets_env"),
                "name at least one environment variable holding the secret",
            );
        }
        let hmac_only = [
            ("header", self.header.is_some()),
            ("encoding", self.encoding.is_some()),
            ("prefix", self.prefix.is_some()),
            ("timestamp_header", self.timestamp_header.is_some()),
            ("signed_content", self.signed_content.is_some()),
            ("id_header", self.id_header.is_some()),
        ];
        // `None`: the hmac scheme, whose options are checked below.
        let choices: Vec<(&str, Option<Scheme>)> = FIXED_SCHEMES
            .into_iter()
            .map(|scheme| (scheme.name(), Some(scheme)))
            .chain([(HMAC, None)])
            .collect();
        let scheme = match problems.one_of(&key("scheme"), &self.scheme, &choices) {
            Some(Some(scheme)) => Some(scheme),
            Some(None) => self.hmac_options(&key, &mut problems).map(Scheme::Hmac),
            None => None,
        };
        if self.scheme != HMAC {
            for (name, given) in hmac_only {
                if given {
                    problems.problem(&key(name), "only the hmac scheme takes this option");
                }
            }
        }
        let type_rule = match self.ty {
            None => TypeRule::SchemeDefault,
            Some(RawTypeRule {
                fixed: Some(t),
                header: None,
                json: None,
            }) => TypeRule::Fixed(t),
            Some(RawTypeRule {
                fixed: None,
                header: Some(h),
                json: None,
            }) => TypeRule::Header(h.to_ascii_lowercase()),
            Some(RawTypeRule {
                fixed: None,
                header: None,
                json: Some(p),
            }) if p.starts_with('/') => TypeRule::Json(p),
            Some(_) => {
                problems.problem(
                    &key("type"),
                    "give exactly one of { fixed = \"t\" }, { header = \"X-Name\" }, { json = \"/pointer\" }",
                );
                TypeRule::SchemeDefault
            }
        };
        if matches!(scheme, Some(Scheme::Hmac(_))) && type_rule == TypeRule::SchemeDefault {
            problems.problem(
                &key("type"),
                "the hmac scheme needs a type rule, e.g. type = { json = \"/type\" }",
            );
        }
        if let Some(subject) = &self.subject
            && !subject.starts_with('/')
        {
            problems.problem(
                &key("subject"),
                format!("{subject:?} is not a JSON pointer (it must start with /)"),
            );
        }
        let tolerance = problems.duration(
            &key("tolerance"),
            self.tolerance.as_deref(),
            DEFAULT_TOLERANCE,
        );
        let dedupe_window = problems.duration(
            &key("dedupe_window"),
            self.dedupe_window.as_deref(),
            DEFAULT_DEDUPE_WINDOW,
        );
        let max_body_bytes = self
            .max_body_bytes
            .map_or(DEFAULT_MAX_BODY_BYTES, |size| size.0);
        if max_body_bytes == 0 {
            problems.problem(&key("max_body_bytes"), "must be more than zero");
        }
        problems.finish(WebhookSpec {
            name: self.name,
            topic: topic.to_owned(),
            // Without a scheme a problem was reported, so this is not kept.
            scheme: scheme.unwrap_or(Scheme::StandardWebhooks),
            secrets_env: self.secrets_env,
            tolerance,
            type_rule,
            type_prefix: self.type_prefix.unwrap_or_default(),
            subject: self.subject,
            dedupe_window,
            max_body_bytes: max_body_bytes as usize,
            accept_undeclared_types: self.accept_undeclared_types,
            dedupe_body: self.dedupe_body,
        })
    }

    fn hmac_options(
        &self,
        key: &dyn Fn(&str) -> String,
        problems: &mut Problems,
    ) -> Option<HmacOptions> {
        let Some(header) = &self.header else {
            problems.problem(
                &key("header"),
                "the hmac scheme needs the signature header's name",
            );
            return None;
        };
        let encoding = problems.one_of(
            &key("encoding"),
            self.encoding.as_deref().unwrap_or(DEFAULT_HMAC_ENCODING),
            &[("hex", Encoding::Hex), ("base64", Encoding::Base64)],
        )?;
        let (with_timestamp, body_only) = DEFAULT_SIGNED_CONTENT;
        let default_template = if self.timestamp_header.is_some() {
            with_timestamp
        } else {
            body_only
        };
        let signed_content =
            match parse_template(self.signed_content.as_deref().unwrap_or(default_template)) {
                Ok(parts) => parts,
                Err(reason) => {
                    problems.problem(&key("signed_content"), reason);
                    return None;
                }
            };
        if signed_content.contains(&Part::Timestamp) && self.timestamp_header.is_none() {
            problems.problem(&key("signed_content"), "{timestamp} needs timestamp_header");
        }
        if signed_content.contains(&Part::Id) && self.id_header.is_none() {
            problems.problem(&key("signed_content"), "{id} needs id_header");
        }
        Some(HmacOptions {
            header: header.to_ascii_lowercase(),
            encoding,
            prefix: self.prefix.clone().unwrap_or_default(),
            timestamp_header: self
                .timestamp_header
                .as_ref()
                .map(|h| h.to_ascii_lowercase()),
            id_header: self.id_header.as_ref().map(|h| h.to_ascii_lowercase()),
            signed_content,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates() {
        assert_eq!(
            parse_template("v0:{timestamp}:{body}").unwrap(),
            [
                Part::Literal("v0:".into()),
                Part::Timestamp,
                Part::Literal(":".into()),
                Part::Body
            ]
        );
        assert!(parse_template("{timestamp}").is_err());
        assert!(parse_template("{body").is_err());
        assert!(parse_template("{nope}{body}").is_err());
    }
}
