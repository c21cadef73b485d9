//! Webhook ingestion: only genuine webhooks get in, once, as typed events.
//!
//! A request is `Request<Unverified>` until its scheme's module checks the
//! signature over the raw bytes; only a `Request<Verified>` can become an
//! event. Each signature scheme is one file of the same shape: `verify`
//! (headers and raw body in, delivery facts or a rejection out) and `FACTS`
//! (how its secrets are written, where its delivery id and default type are,
//! an optional handshake). The dispatch over schemes (`verify`, `facts`)
//! matches exhaustively: a new scheme cannot leave one out.
//!
//! Deduplication: a scheme's delivery id becomes the event id, so "seen
//! before" means "an event with this source and id is in the log within the
//! window". The in-memory index is rebuilt from the log at start, which keeps
//! it exactly as durable as the events themselves.

mod dedupe;
mod github;
mod hmac;
mod shopify;
mod slack;
mod standard;
mod stripe;

use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::HeaderMap;
use base64::Engine;
use bytes::Bytes;
use serde_json::Value;
use tracing::{Instrument, info, warn};

use self::dedupe::Dedupe;
use super::{Ingest, IngestError, Published, Undeclared};
use crate::broker::Broker;
use crate::event::{CloudEvent, is_json_media_type};
use crate::metrics::Metrics;
use crate::topic::Topics;
use crate::topic::webhook::{Scheme, TypeRule, WebhookSpec};

/// Why a request was not let in. All of these answer 401: the sender's
/// signature, secret or clock is wrong, and retrying the same request will
/// not help.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub code: &'static str,
    pub reason: String,
    /// The header at fault, when one is.
    pub header: Option<String>,
}

impl Rejection {
    fn missing_header(name: &str) -> Self {
        Self {
            code: "missing_header",
            reason: format!("the {name} header is missing"),
            header: Some(name.to_owned()),
        }
    }

    fn malformed_header(name: &str, why: &str) -> Self {
        Self {
            code: "malformed_header",
            reason: format!("the {name} header is malformed: {why}"),
            header: Some(name.to_owned()),
        }
    }

    fn invalid_signature(name: &str) -> Self {
        Self {
            code: "invalid_signature",
            reason: format!("no signature in {name} matches the body with any configured secret"),
            header: Some(name.to_owned()),
        }
    }
}

/// DeliveryFacts facts a scheme read from a verified request.
#[derive(Debug, Default)]
pub(crate) struct DeliveryFacts {
    /// The sender's id for this delivery, stable across its retries.
    id: Option<String>,
}

impl DeliveryFacts {
    /// The delivery id a scheme sends in an (unsigned) header, if any.
    fn from_header(headers: &HeaderMap, name: &str) -> Self {
        Self {
            id: headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .filter(|id| !id.is_empty())
                .map(str::to_owned),
        }
    }
}

pub struct Unverified;
pub struct Verified;

/// A webhook request; only the scheme modules can make it `Verified`.
pub struct Request<State> {
    headers: HeaderMap,
    body: Bytes,
    delivery: DeliveryFacts,
    _state: PhantomData<State>,
}

impl Request<Unverified> {
    pub fn new(headers: HeaderMap, body: Bytes) -> Self {
        Self {
            headers,
            body,
            delivery: DeliveryFacts::default(),
            _state: PhantomData,
        }
    }

    /// Runs the source's scheme over the raw bytes.
    fn verify(self, endpoint: &Endpoint, now_s: i64) -> Result<Request<Verified>, Rejection> {
        let secrets = &endpoint.secrets;
        let tolerance = endpoint.spec.tolerance;
        let delivery = match &endpoint.spec.scheme {
            Scheme::StandardWebhooks => {
                standard::verify(&self.headers, &self.body, secrets, tolerance, now_s)
            }
            Scheme::Github => github::verify(&self.headers, &self.body, secrets),
            Scheme::Stripe => stripe::verify(&self.headers, &self.body, secrets, tolerance, now_s),
            Scheme::Slack => slack::verify(&self.headers, &self.body, secrets, tolerance, now_s),
            Scheme::Shopify => shopify::verify(&self.headers, &self.body, secrets),
            Scheme::Hmac(options) => hmac::verify(
                options,
                &self.headers,
                &self.body,
                secrets,
                tolerance,
                now_s,
            ),
        }?;
        Ok(Request {
            headers: self.headers,
            body: self.body,
            delivery,
            _state: PhantomData,
        })
    }
}

/// A header as text, or a rejection naming it.
/// A required header's value; an empty one counts as missing (an empty
/// delivery id would dedupe every delivery as one).
fn header<'a>(headers: &'a HeaderMap, name: &str) -> Result<&'a str, Rejection> {
    let value = headers
        .get(name)
        .filter(|value| !value.is_empty())
        .ok_or_else(|| Rejection::missing_header(name))?;
    value
        .to_str()
        .map_err(|_| Rejection::malformed_header(name, "not visible ASCII"))
}

/// Checks a Unix timestamp (seconds) against the tolerance, both ways.
fn check_timestamp(
    name: &str,
    text: &str,
    tolerance: Duration,
    now_s: i64,
) -> Result<(), Rejection> {
    let timestamp: i64 = text
        .trim()
        .parse()
        .map_err(|_| Rejection::malformed_header(name, "not a Unix timestamp in seconds"))?;
    let tolerance_s = tolerance.as_secs() as i64;
    let (code, reason) = if timestamp < now_s.saturating_sub(tolerance_s) {
        (
            "timestamp_too_old",
            format!("the {name} timestamp is more than {tolerance_s} s in the past"),
        )
    } else if timestamp > now_s.saturating_add(tolerance_s) {
        (
            "timestamp_in_future",
            format!("the {name} timestamp is more than {tolerance_s} s in the future"),
        )
    } else {
        return Ok(());
    };
    Err(Rejection {
        code,
        reason,
        header: Some(name.to_owned()),
    })
}

/// Whether any candidate signature is the HMAC-SHA256 of `message` under any
/// secret. Comparisons are constant-time (`verify_slice`).
fn any_signature_matches(secrets: &[Vec<u8>], message: &[&[u8]], candidates: &[Vec<u8>]) -> bool {
    use ::hmac::{KeyInit, Mac};
    type HmacSha256 = ::hmac::Hmac<sha2::Sha256>;
    secrets.iter().any(|secret| {
        let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC takes keys of any length");
        for part in message {
            mac.update(part);
        }
        candidates
            .iter()
            .any(|candidate| mac.clone().verify_slice(candidate).is_ok())
    })
}

fn decode_base64(text: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .ok()
}

/// What a scheme's file says of it beyond `verify`.
pub(super) struct Facts {
    /// How a secret's text becomes key bytes.
    secret: SecretForm,
    /// Where the delivery id sits in the body, for schemes that do not send
    /// it in a header (`verify` reads header ids).
    body_delivery_id: Option<&'static str>,
    /// The event type when the source configures none.
    default_type: DefaultType,
    /// A handshake answered instead of storing the request: the body in,
    /// the answer out.
    challenge: Option<fn(&Value) -> Option<String>>,
}

pub(super) enum SecretForm {
    /// The text's UTF-8 bytes.
    Utf8,
    /// `whsec_` followed by the base64 of the key.
    WhsecBase64,
}

pub(super) enum DefaultType {
    /// The first string at these JSON pointers.
    Json(&'static [&'static str]),
    /// A header's value.
    Header(&'static str),
    /// A header's value, then `.` and the string at a JSON pointer if any.
    HeaderDotJson(&'static str, &'static str),
}

impl DefaultType {
    fn describe_missing(&self) -> String {
        match self {
            Self::Json(pointers) => format!("the body has no string at {}", pointers.join(" or ")),
            Self::Header(name) | Self::HeaderDotJson(name, _) => {
                format!("the {name} header is missing")
            }
        }
    }
}

/// The facts of a scheme: the one place besides `verify` that names them all.
fn facts(scheme: &Scheme) -> &'static Facts {
    match scheme {
        Scheme::StandardWebhooks => &standard::FACTS,
        Scheme::Github => &github::FACTS,
        Scheme::Stripe => &stripe::FACTS,
        Scheme::Slack => &slack::FACTS,
        Scheme::Shopify => &shopify::FACTS,
        Scheme::Hmac(_) => &hmac::FACTS,
    }
}

/// A webhook source as configured, with its secrets resolved: what `/v1/webhooks/{name}` verifies against.
struct Endpoint {
    spec: WebhookSpec,
    secrets: Vec<Vec<u8>>,
    /// Why the source cannot verify anything, when it cannot.
    unconfigured: Option<String>,
}

/// Turns a secret's text into key bytes as its scheme wants them.
fn secret_bytes(scheme: &Scheme, text: &str) -> Result<Vec<u8>, String> {
    match facts(scheme).secret {
        SecretForm::WhsecBase64 => decode_base64(text.strip_prefix("whsec_").unwrap_or(text))
            .ok_or_else(|| "is not whsec_ followed by base64".to_owned()),
        SecretForm::Utf8 => Ok(text.as_bytes().to_vec()),
    }
}

impl Endpoint {
    fn resolve(spec: WebhookSpec) -> Self {
        let mut secrets = Vec::new();
        let mut missing = Vec::new();
        for name in &spec.secrets_env {
            match std::env::var(name) {
                Ok(text) if !text.is_empty() => match secret_bytes(&spec.scheme, &text) {
                    Ok(bytes) => secrets.push(bytes),
                    Err(why) => {
                        warn!(source = %spec.name, env = %name, "the secret {why}; ignoring it")
                    }
                },
                _ => missing.push(name.clone()),
            }
        }
        let unconfigured = secrets.is_empty().then(|| {
            let message = format!("set {} to the signing secret", missing.join(" or "));
            warn!(source = %spec.name, "webhook source has no secret: it rejects every request; {message}");
            message
        });
        Self {
            spec,
            secrets,
            unconfigured,
        }
    }

    fn source_uri(&self) -> String {
        format!("/webhooks/{}", self.spec.name)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("no webhook source named {0:?}")]
    UnknownSource(String),
    #[error("this webhook source has no signing secret configured; see the server log")]
    NotConfigured,
    #[error("{}", .0.reason)]
    Rejected(Rejection),
    #[error("Content-Type {0:?} is not JSON")]
    NotJson(String),
    #[error("the body is not valid JSON: {0}")]
    InvalidBody(String),
    #[error("cannot tell the event type: {0}")]
    NoType(String),
    #[error(transparent)]
    Ingest(#[from] IngestError),
}

/// What a verified, well-formed webhook became.
#[derive(Debug)]
pub enum Admission {
    Accepted(Published),
    /// Seen within the dedupe window: nothing was appended.
    Duplicate {
        id: String,
    },
    /// Slack's `url_verification`: answer with the challenge.
    Challenge(String),
}

pub struct Webhooks {
    /// By source name; a reload replaces them.
    endpoints: std::sync::RwLock<HashMap<String, Arc<Endpoint>>>,
    dedupe: Dedupe,
    ingest: Arc<Ingest>,
    metrics: Arc<Metrics>,
}

fn now() -> (i64, i64) {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    (since_epoch.as_secs() as i64, since_epoch.as_millis() as i64)
}

impl Webhooks {
    pub fn new(topics: &Topics, ingest: Arc<Ingest>, metrics: Arc<Metrics>) -> Self {
        let endpoints = topics
            .webhook_sources()
            .into_iter()
            .map(|spec| (spec.name.clone(), Arc::new(Endpoint::resolve(spec))))
            .collect();
        Self {
            endpoints: std::sync::RwLock::new(endpoints),
            dedupe: Dedupe::default(),
            ingest,
            metrics,
        }
    }

    /// The body limit of a source, or `None` when there is no such source.
    pub fn max_body_bytes(&self, source: &str) -> Option<usize> {
        self.endpoint(source).map(|s| s.spec.max_body_bytes)
    }

    fn endpoint(&self, source: &str) -> Option<Arc<Endpoint>> {
        self.endpoints
            .read()
            .expect("endpoints lock poisoned")
            .get(source)
            .cloned()
    }

    /// Serves the webhook sources `topics` declare from now on (a reload);
    /// what each source has seen stays remembered.
    pub fn reload(&self, topics: &Topics) {
        let endpoints = topics
            .webhook_sources()
            .into_iter()
            .map(|spec| (spec.name.clone(), Arc::new(Endpoint::resolve(spec))))
            .collect();
        *self.endpoints.write().expect("endpoints lock poisoned") = endpoints;
    }

    /// Rebuilds the dedupe index from the events in the log that are still
    /// inside their source's window.
    pub async fn recover(&self, broker: &Broker) -> Result<(), crate::broker::BrokerError> {
        let (_, now_ms) = now();
        let endpoints: Vec<Arc<Endpoint>> = self
            .endpoints
            .read()
            .expect("endpoints lock poisoned")
            .values()
            .cloned()
            .collect();
        let mut by_topic: HashMap<&str, Vec<&Endpoint>> = HashMap::new();
        for endpoint in &endpoints {
            by_topic
                .entry(endpoint.spec.topic.as_str())
                .or_default()
                .push(endpoint);
        }
        for (topic, endpoints) in by_topic {
            let windows: HashMap<String, (String, i64)> = endpoints
                .iter()
                .map(|s| {
                    (
                        s.source_uri(),
                        (s.spec.name.clone(), s.spec.dedupe_window.as_millis() as i64),
                    )
                })
                .collect();
            let from = broker.earliest(topic).await?;
            let mut remembered = 0usize;
            broker
                .scan(topic, from, None, |stored| {
                    #[derive(serde::Deserialize)]
                    struct Head {
                        id: String,
                        source: String,
                        bodydigest: Option<String>,
                    }
                    let Ok(head) = serde_json::from_slice::<Head>(&stored.payload) else {
                        return;
                    };
                    if let Some((name, window_ms)) = windows.get(&head.source)
                        && stored.timestamp_ms + window_ms > now_ms
                    {
                        let expires_ms = stored.timestamp_ms + window_ms;
                        self.dedupe.remember(name, &head.id, expires_ms);
                        if let Some(digest) = &head.bodydigest {
                            self.dedupe.remember(&body_key(name), digest, expires_ms);
                        }
                        remembered += 1;
                    }
                })
                .await?;
            if remembered > 0 {
                info!(
                    topic,
                    deliveries = remembered,
                    "webhook dedupe index rebuilt from the log"
                );
            }
        }
        Ok(())
    }

    /// Verifies, types, dedupes and publishes one webhook delivery.
    pub async fn receive(
        &self,
        name: &str,
        headers: HeaderMap,
        body: Bytes,
    ) -> Result<Admission, WebhookError> {
        let endpoint = self
            .endpoint(name)
            .ok_or_else(|| WebhookError::UnknownSource(name.to_owned()))?;
        self.metrics.webhook(name, "received");
        let span = tracing::info_span!(
            "webhook",
            otel.kind = "server",
            source = name,
            trace_id = tracing::field::Empty,
            span_id = tracing::field::Empty,
        );
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        crate::telemetry::continue_trace(&span, header("traceparent"), header("tracestate"));
        crate::telemetry::record_ids(&span);
        let result = self
            .receive_from(&endpoint, headers, body)
            .instrument(span)
            .await;
        let outcome = match &result {
            Ok(Admission::Accepted(published)) if published.duplicate => "duplicate",
            Ok(Admission::Accepted(_)) => "accepted",
            Ok(Admission::Duplicate { .. }) => "duplicate",
            Ok(Admission::Challenge(_)) => "challenge",
            Err(WebhookError::Rejected(rejection)) => rejection.code,
            Err(WebhookError::NotConfigured) => "not_configured",
            Err(WebhookError::NotJson(_) | WebhookError::InvalidBody(_)) => "invalid_body",
            Err(WebhookError::NoType(_)) => "no_type",
            Err(WebhookError::Ingest(IngestError::Broker(_))) => "broker_unavailable",
            Err(WebhookError::Ingest(_)) => "invalid_event",
            Err(WebhookError::UnknownSource(_)) => "unknown_source",
        };
        self.metrics.webhook(name, outcome);
        result
    }

    async fn receive_from(
        &self,
        endpoint: &Endpoint,
        headers: HeaderMap,
        body: Bytes,
    ) -> Result<Admission, WebhookError> {
        if endpoint.unconfigured.is_some() {
            return Err(WebhookError::NotConfigured);
        }
        let (now_s, now_ms) = now();
        let request = tracing::info_span!("verify")
            .in_scope(|| Request::new(headers, body).verify(endpoint, now_s))
            .map_err(WebhookError::Rejected)?;
        // Only now is the body looked at.
        if let Some(content_type) = request
            .headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            && !is_json_media_type(content_type)
        {
            return Err(WebhookError::NotJson(content_type.to_owned()));
        }
        let data: Value = serde_json::from_slice(&request.body)
            .map_err(|e| WebhookError::InvalidBody(e.to_string()))?;
        let facts = facts(&endpoint.spec.scheme);
        if let Some(answer) = facts.challenge.and_then(|challenge| challenge(&data)) {
            return Ok(Admission::Challenge(answer));
        }
        let delivery_id = request.delivery.id.clone().or_else(|| {
            facts
                .body_delivery_id
                .and_then(|pointer| data.pointer(pointer))
                .and_then(Value::as_str)
                .filter(|id| !id.is_empty())
                .map(str::to_owned)
        });
        let mut event = to_event(endpoint, &request, data, delivery_id.clone())?;
        // The signed body's digest: a dedupe key of its own, and kept on the
        // event so that a restart remembers it.
        let body_slot = match endpoint.spec.dedupe_body {
            true => {
                let digest = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&request.body));
                event
                    .extensions
                    .insert(BODY_DIGEST.into(), Value::String(digest.clone()));
                let slot = self
                    .dedupe
                    .lock(&body_key(&endpoint.spec.name), &digest)
                    .instrument(tracing::info_span!("dedupe"))
                    .await;
                if let Some(expires_ms) = *slot
                    && expires_ms > now_ms
                {
                    return Ok(Admission::Duplicate {
                        id: delivery_id.unwrap_or(digest),
                    });
                }
                Some(slot)
            }
            false => None,
        };
        let expires_ms = now_ms + endpoint.spec.dedupe_window.as_millis() as i64;
        let undeclared = if endpoint.spec.accept_undeclared_types {
            Undeclared::Accept
        } else {
            Undeclared::Refuse
        };
        // The event joins the delivery's trace (not its `append` step's).
        if let Some(trace) = crate::telemetry::traceparent(&tracing::Span::current()) {
            crate::telemetry::inherit(&mut event, &trace, None);
        }
        let append = || tracing::info_span!("append", topic = %endpoint.spec.topic);
        let Some(delivery_id) = delivery_id else {
            let published = self
                .ingest
                .publish_checked(&endpoint.spec.topic, vec![event], undeclared)
                .instrument(append())
                .await?;
            if let Some(mut body_slot) = body_slot {
                *body_slot = Some(expires_ms);
            }
            return Ok(Admission::Accepted(first(published)));
        };
        // One delivery id at a time: a concurrent redelivery waits for the
        // first attempt and then sees its outcome.
        let mut seen = self
            .dedupe
            .lock(&endpoint.spec.name, &delivery_id)
            .instrument(tracing::info_span!("dedupe"))
            .await;
        if let Some(expires_ms) = *seen
            && expires_ms > now_ms
        {
            return Ok(Admission::Duplicate { id: delivery_id });
        }
        let published = self
            .ingest
            .publish_checked(&endpoint.spec.topic, vec![event], undeclared)
            .instrument(append())
            .await?;
        *seen = Some(expires_ms);
        if let Some(mut body_slot) = body_slot {
            *body_slot = Some(expires_ms);
        }
        Ok(Admission::Accepted(first(published)))
    }
}

/// The extension attribute holding the SHA-256 of a webhook's signed body
/// (endpoints with `dedupe_body`).
pub const BODY_DIGEST: &str = "bodydigest";

/// The dedupe namespace of a source's body digests (a NUL cannot be in a
/// source name).
fn body_key(source: &str) -> String {
    format!("{source}\0body")
}

fn first(mut published: Vec<Published>) -> Published {
    published.pop().expect("one event in, one position out")
}

fn to_event(
    endpoint: &Endpoint,
    request: &Request<Verified>,
    data: Value,
    delivery_id: Option<String>,
) -> Result<CloudEvent, WebhookError> {
    let spec = &endpoint.spec;
    let header_text = |name: &str| {
        request
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let json_text = |pointer: &str| {
        data.pointer(pointer)
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    let ty = match &spec.type_rule {
        TypeRule::Fixed(ty) => Some(ty.clone()),
        TypeRule::Header(name) => header_text(name),
        TypeRule::Json(pointer) => json_text(pointer),
        TypeRule::SchemeDefault => match &facts(&spec.scheme).default_type {
            DefaultType::Json(pointers) => pointers.iter().find_map(|p| json_text(p)),
            DefaultType::Header(name) => header_text(name),
            DefaultType::HeaderDotJson(name, pointer) => {
                header_text(name).map(|head| match json_text(pointer) {
                    Some(tail) => format!("{head}.{tail}"),
                    None => head,
                })
            }
        },
    }
    .filter(|ty| !ty.is_empty())
    .ok_or_else(|| WebhookError::NoType(type_rule_description(spec)))?;
    let subject = spec
        .subject
        .as_deref()
        .and_then(|pointer| match data.pointer(pointer) {
            Some(Value::String(s)) => Some(s.clone()),
            Some(Value::Number(n)) => Some(n.to_string()),
            _ => None,
        });
    let mut event = CloudEvent::wrap(
        endpoint.source_uri(),
        format!("{}{ty}", spec.type_prefix),
        data,
    );
    if let Some(id) = delivery_id {
        event.id = id;
    }
    event.subject = subject;
    Ok(event)
}

fn type_rule_description(spec: &WebhookSpec) -> String {
    match &spec.type_rule {
        TypeRule::Header(name) => format!("the {name} header is missing"),
        TypeRule::Json(pointer) => format!("the body has no string at {pointer}"),
        TypeRule::Fixed(_) => "the fixed type is empty".into(),
        TypeRule::SchemeDefault => facts(&spec.scheme).default_type.describe_missing(),
    }
}
