//! Webhook definitions: the `[[webhooks]]` tables of a topic file,
//! validated into [`WebhookSpec`]. Plain configuration data: verification
//! itself lives in `ingest::webhook`.

use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use crate::problem::ConfigProblem;

pub const DEFAULT_TOLERANCE: Duration = Duration::from_secs(300);
pub const DEFAULT_DEDUPE_WINDOW: Duration = Duration::from_secs(24 * 3600);
pub const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024;

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
    max_body_bytes: Option<bytesize::ByteSize>,
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
            Self::Hmac(_) => "hmac",
        }
    }
}

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
        && name.len() <= 100
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

fn duration(
    text: Option<&str>,
    default: Duration,
    key: &str,
    problems: &mut Vec<(String, String)>,
) -> Duration {
    match text {
        None => default,
        Some(text) => crate::problem::duration(text, "5m").unwrap_or_else(|reason| {
            problems.push((key.to_owned(), reason));
            default
        }),
    }
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
    /// Validates one `[[webhooks]]` table of the topic in `file`.
    pub fn resolve(
        self,
        topic: &str,
        index: usize,
        file: &Path,
    ) -> Result<WebhookSpec, Vec<ConfigProblem>> {
        let mut problems: Vec<(String, String)> = Vec::new();
        let key = |k: &str| format!("webhooks[{index}].{k}");
        if !is_valid_webhook_name(&self.name) {
            problems.push((
                key("source"),
                format!(
                    "{:?} is not a webhook name: use a-z, 0-9, '-' and '_'",
                    self.name
                ),
            ));
        }
        if self.secrets_env.is_empty() {
            problems.push((
                key("secrets_env"),
                "name at least one environment variable holding the secret".into(),
            ));
        }
        let hmac_only = [
            ("header", self.header.is_some()),
            ("encoding", self.encoding.is_some()),
            ("prefix", self.prefix.is_some()),
            ("timestamp_header", self.timestamp_header.is_some()),
            ("signed_content", self.signed_content.is_some()),
            ("id_header", self.id_header.is_some()),
        ];
        let scheme = match self.scheme.as_str() {
            "standard-webhooks" => Some(Scheme::StandardWebhooks),
            "github" => Some(Scheme::Github),
            "stripe" => Some(Scheme::Stripe),
            "slack" => Some(Scheme::Slack),
            "shopify" => Some(Scheme::Shopify),
            "hmac" => self.hmac_options(&key, &mut problems).map(Scheme::Hmac),
            other => {
                problems.push((
                    key("scheme"),
                    format!("{other:?} is not one of standard-webhooks, github, stripe, slack, shopify, hmac"),
                ));
                None
            }
        };
        if self.scheme != "hmac" {
            for (name, given) in hmac_only {
                if given {
                    problems.push((key(name), "only the hmac scheme takes this option".into()));
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
                problems.push((
                    key("type"),
                    "give exactly one of { fixed = \"t\" }, { header = \"X-Name\" }, { json = \"/pointer\" }".into(),
                ));
                TypeRule::SchemeDefault
            }
        };
        if matches!(scheme, Some(Scheme::Hmac(_))) && type_rule == TypeRule::SchemeDefault {
            problems.push((
                key("type"),
                "the hmac scheme needs a type rule, e.g. type = { json = \"/type\" }".into(),
            ));
        }
        if let Some(subject) = &self.subject
            && !subject.starts_with('/')
        {
            problems.push((
                key("subject"),
                format!("{subject:?} is not a JSON pointer (it must start with /)"),
            ));
        }
        let tolerance = duration(
            self.tolerance.as_deref(),
            DEFAULT_TOLERANCE,
            &key("tolerance"),
            &mut problems,
        );
        let dedupe_window = duration(
            self.dedupe_window.as_deref(),
            DEFAULT_DEDUPE_WINDOW,
            &key("dedupe_window"),
            &mut problems,
        );
        let max_body_bytes = self
            .max_body_bytes
            .map_or(DEFAULT_MAX_BODY_BYTES, |b| b.as_u64() as usize);
        if max_body_bytes == 0 {
            problems.push((key("max_body_bytes"), "must be more than zero".into()));
        }
        match scheme {
            Some(scheme) if problems.is_empty() => Ok(WebhookSpec {
                name: self.name,
                topic: topic.to_owned(),
                scheme,
                secrets_env: self.secrets_env,
                tolerance,
                type_rule,
                type_prefix: self.type_prefix.unwrap_or_default(),
                subject: self.subject,
                dedupe_window,
                max_body_bytes,
                accept_undeclared_types: self.accept_undeclared_types,
                dedupe_body: self.dedupe_body,
            }),
            _ => Err(problems
                .into_iter()
                .map(|(key, reason)| ConfigProblem::new(file, key, reason))
                .collect()),
        }
    }

    fn hmac_options(
        &self,
        key: &dyn Fn(&str) -> String,
        problems: &mut Vec<(String, String)>,
    ) -> Option<HmacOptions> {
        let Some(header) = &self.header else {
            problems.push((
                key("header"),
                "the hmac scheme needs the signature header's name".into(),
            ));
            return None;
        };
        let encoding = match self.encoding.as_deref().unwrap_or("hex") {
            "hex" => Encoding::Hex,
            "base64" => Encoding::Base64,
            other => {
                problems.push((
                    key("encoding"),
                    format!("{other:?} is not \"hex\" or \"base64\""),
                ));
                return None;
            }
        };
        let default_template = if self.timestamp_header.is_some() {
            "{timestamp}.{body}"
        } else {
            "{body}"
        };
        let signed_content =
            match parse_template(self.signed_content.as_deref().unwrap_or(default_template)) {
                Ok(parts) => parts,
                Err(reason) => {
                    problems.push((key("signed_content"), reason));
                    return None;
                }
            };
        if signed_content.contains(&Part::Timestamp) && self.timestamp_header.is_none() {
            problems.push((
                key("signed_content"),
                "{timestamp} needs timestamp_header".into(),
            ));
        }
        if signed_content.contains(&Part::Id) && self.id_header.is_none() {
            problems.push((key("signed_content"), "{id} needs id_header".into()));
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
