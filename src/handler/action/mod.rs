//! Handler actions: turn an event into an outbound request, make the call,
//! and classify what came back. One file per action kind, same shape:
//! `request(...)` builds the request.

mod config;
pub mod http;
pub mod webhook;

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::{Map, Value};

pub use self::config::{BodyMode, DEFAULT_BODY, RawAction, RawAuth, UrlPart};
use super::policy::retry::{is_retryable_status, parse_retry_after};

/// Characters left as they are in URL values: RFC 3986 unreserved.
const URL_VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Largest response body kept in a result event.
const MAX_RESULT_BODY_BYTES: usize = 64 * 1024;

/// A response body read up to a limit.
enum Capped {
    Whole(Bytes),
    /// Longer than the limit: its first bytes; the rest was not read.
    Truncated(Bytes),
}

/// Reads at most `limit` bytes of a response body, so that a target's
/// answer costs at most that much memory however large it is.
async fn read_capped(mut response: reqwest::Response, limit: usize) -> reqwest::Result<Capped> {
    let mut out = bytes::BytesMut::new();
    while let Some(chunk) = response.chunk().await? {
        let room = limit - out.len();
        if chunk.len() > room {
            out.extend_from_slice(&chunk[..room]);
            return Ok(Capped::Truncated(out.freeze()));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(Capped::Whole(out.freeze()))
}

/// A request ready to send, and the target its breaker is keyed by.
pub struct Prepared {
    pub target: String,
    pub request: reqwest::RequestBuilder,
}

/// What one call came to.
#[derive(Debug, Clone)]
pub enum CallResult {
    Success {
        status: u16,
        headers: Map<String, Value>,
        body: Value,
    },
    Retryable {
        reason: String,
        status: Option<u16>,
        retry_after: Option<Duration>,
    },
    Permanent {
        reason: String,
        status: Option<u16>,
    },
}

impl CallResult {
    /// The target's answer status, when it answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Success { status, .. } => Some(*status),
            Self::Retryable { status, .. } | Self::Permanent { status, .. } => *status,
        }
    }
}

/// What a handler does with each event: one variant per kind, each
/// resolved from its `[action]` table and turned into a request in its own
/// file (`http.rs`, `webhook.rs`). A new kind is a file, a variant and the
/// arms the compiler asks for.
#[derive(Debug, Clone)]
pub enum ActionSpec {
    Http(http::HttpAction),
    Webhook(webhook::WebhookAction),
}

/// What every kind of action has: where it goes, extra headers, what the
/// body is, and which answer headers to keep in result events.
#[derive(Debug, Clone)]
pub struct Common {
    pub url: Vec<UrlPart>,
    pub headers: Vec<(String, String)>,
    pub body: BodyMode,
    pub result_headers: Vec<String>,
}

impl Common {
    /// A request to `url` with what every kind sends: the content type, the
    /// configured headers and, in binary mode, the `ce-*` headers; and the
    /// body, for the kind to sign or send as it is.
    fn start(
        &self,
        client: &reqwest::Client,
        method: reqwest::Method,
        url: &str,
        event: &Value,
        payload: &Bytes,
    ) -> (reqwest::RequestBuilder, Bytes) {
        let (content_type, body, ce_headers) = body_of(self.body, event, payload);
        let mut request = client
            .request(method, url)
            .header(reqwest::header::CONTENT_TYPE, content_type);
        for (name, value) in self.headers.iter().chain(&ce_headers) {
            request = request.header(name, value);
        }
        (request, body)
    }
}

impl ActionSpec {
    fn common(&self) -> &Common {
        match self {
            Self::Http(action) => &action.common,
            Self::Webhook(action) => &action.common,
        }
    }

    /// Answer headers copied into result events.
    pub fn result_headers(&self) -> &[String] {
        &self.common().result_headers
    }

    /// Builds the request for `event` (its JSON and its stored bytes). An
    /// error here is permanent: the event cannot be turned into a request.
    pub fn prepare(
        &self,
        client: &reqwest::Client,
        event: &Value,
        payload: &Bytes,
    ) -> Result<Prepared, String> {
        let url = render_url(&self.common().url, event)?;
        let request = match self {
            Self::Http(action) => action.request(client, &url, event, payload),
            Self::Webhook(action) => action.request(client, &url, event, payload),
        };
        let parsed =
            reqwest::Url::parse(&url).map_err(|err| format!("{url:?} is not a URL: {err}"))?;
        let target = format!(
            "{}:{}",
            parsed.host_str().unwrap_or_default(),
            parsed.port_or_known_default().unwrap_or_default()
        );
        Ok(Prepared { target, request })
    }
}

/// Fills a URL template from the event; a missing value is an error.
fn render_url(parts: &[UrlPart], event: &Value) -> Result<String, String> {
    let mut url = String::new();
    for part in parts {
        match part {
            UrlPart::Literal(text) => url.push_str(text),
            UrlPart::Pointer(pointer) => {
                let value = match event.pointer(pointer) {
                    Some(Value::String(s)) => s.clone(),
                    Some(Value::Number(n)) => n.to_string(),
                    Some(Value::Bool(b)) => b.to_string(),
                    _ => {
                        return Err(format!(
                            "the URL template needs {pointer}, which the event does not have"
                        ));
                    }
                };
                url.extend(utf8_percent_encode(&value, URL_VALUE));
            }
        }
    }
    Ok(url)
}

/// The body and content type for a body mode; binary mode also returns the
/// `ce-*` headers.
fn body_of(
    mode: BodyMode,
    event: &Value,
    payload: &Bytes,
) -> (String, Bytes, Vec<(String, String)>) {
    match mode {
        BodyMode::Event => (
            "application/cloudevents+json".into(),
            payload.clone(),
            Vec::new(),
        ),
        BodyMode::Data | BodyMode::Binary => {
            let binary = crate::event::to_binary(event);
            let content_type = binary
                .content_type
                .unwrap_or_else(|| "application/json".to_owned());
            // No data: a JSON null, as before.
            let body = Bytes::from(binary.data.unwrap_or_else(|| b"null".to_vec()));
            let headers = match mode {
                BodyMode::Binary => binary
                    .attributes
                    .iter()
                    .map(|(name, text)| {
                        (
                            format!("ce-{name}"),
                            utf8_percent_encode(text, URL_VALUE).to_string(),
                        )
                    })
                    .collect(),
                _ => Vec::new(),
            };
            (content_type, body, headers)
        }
    }
}

/// Sends the request (bounded by `timeout`) and classifies the answer.
pub async fn call(prepared: Prepared, timeout: Duration, keep_headers: &[String]) -> CallResult {
    let response = match prepared.request.timeout(timeout).send().await {
        Ok(response) => response,
        Err(err) if err.is_timeout() => {
            return CallResult::Retryable {
                reason: format!("no answer within {timeout:?}"),
                status: None,
                retry_after: None,
            };
        }
        Err(err) => {
            return CallResult::Retryable {
                reason: format!("request failed: {}", describe(err)),
                status: None,
                retry_after: None,
            };
        }
    };
    let status = response.status().as_u16();
    if response.status().is_success() {
        let headers: Map<String, Value> = keep_headers
            .iter()
            .filter_map(|name| {
                let value = response.headers().get(name)?.to_str().ok()?;
                Some((name.clone(), Value::String(value.to_owned())))
            })
            .collect();
        let is_json = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(crate::event::is_json_media_type);
        let bytes =
            match tokio::time::timeout(timeout, read_capped(response, MAX_RESULT_BODY_BYTES)).await
            {
                Ok(Ok(bytes)) => bytes,
                Ok(Err(err)) => {
                    return CallResult::Retryable {
                        reason: format!("reading the response failed: {}", describe(err)),
                        status: Some(status),
                        retry_after: None,
                    };
                }
                Err(_) => {
                    return CallResult::Retryable {
                        reason: format!("the response body did not arrive within {timeout:?}"),
                        status: Some(status),
                        retry_after: None,
                    };
                }
            };
        let body = match bytes {
            Capped::Whole(bytes) if bytes.is_empty() => Value::Null,
            Capped::Whole(bytes) if is_json => serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned())),
            Capped::Whole(bytes) => Value::String(String::from_utf8_lossy(&bytes).into_owned()),
            Capped::Truncated(prefix) => serde_json::json!({
                "truncated": true,
                "limit": MAX_RESULT_BODY_BYTES,
                "prefix": String::from_utf8_lossy(&prefix),
            }),
        };
        return CallResult::Success {
            status,
            headers,
            body,
        };
    }
    let retry_after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| parse_retry_after(v, SystemTime::now()));
    let reason = format!("the target answered {status}");
    if is_retryable_status(status) {
        CallResult::Retryable {
            reason,
            status: Some(status),
            retry_after,
        }
    } else {
        CallResult::Permanent {
            reason,
            status: Some(status),
        }
    }
}

/// A request error, its URL stripped of what may be secret: credentials
/// and the query (API keys ride in both) never reach the log, the handler
/// status or a dead letter.
fn describe(err: reqwest::Error) -> String {
    let url = err.url().map(redacted);
    let text = crate::error_chain(&err.without_url());
    match url {
        Some(url) => format!("{text} ({url})"),
        None => text,
    }
}

fn redacted(url: &reqwest::Url) -> String {
    let mut shown = format!("{}://{}", url.scheme(), url.host_str().unwrap_or(""));
    if let Some(port) = url.port() {
        shown.push_str(&format!(":{port}"));
    }
    shown.push_str(url.path());
    if url.query().is_some() {
        shown.push_str("?…");
    }
    shown
}
