//! The `webhook` action: an outbound delivery signed per Standard Webhooks.
//! `webhook-id` is the event id (stable across retries, so receivers can
//! dedupe), `webhook-timestamp` the send time, and `webhook-signature` holds
//! one `v1,<base64>` entry per active secret, for rotation.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use bytes::Bytes;
use hmac::{KeyInit, Mac};
use serde_json::Value;

use super::body_of;
use crate::handler::config::BodyMode;

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// The `webhook-signature` value for a message under each secret.
pub fn signature(secrets: &[Vec<u8>], id: &str, timestamp: u64, body: &[u8]) -> String {
    secrets
        .iter()
        .map(|secret| {
            let mut mac =
                HmacSha256::new_from_slice(secret).expect("HMAC takes keys of any length");
            mac.update(id.as_bytes());
            mac.update(b".");
            mac.update(timestamp.to_string().as_bytes());
            mac.update(b".");
            mac.update(body);
            let tag = mac.finalize().into_bytes();
            format!(
                "v1,{}",
                base64::engine::general_purpose::STANDARD.encode(tag)
            )
        })
        .collect::<Vec<_>>()
        .join(" ")
}

pub(super) fn request(
    client: &reqwest::Client,
    url: &str,
    headers: &[(String, String)],
    secrets: &[Vec<u8>],
    body: BodyMode,
    event: &Value,
    payload: &Bytes,
) -> reqwest::RequestBuilder {
    let (content_type, body, ce_headers) = body_of(body, event, payload);
    let id = event.get("id").and_then(Value::as_str).unwrap_or_default();
    let timestamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut request = client
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, content_type)
        .header("webhook-id", id)
        .header("webhook-timestamp", timestamp.to_string())
        .header(
            "webhook-signature",
            signature(secrets, id, timestamp, &body),
        );
    for (name, value) in headers.iter().chain(&ce_headers) {
        request = request.header(name, value);
    }
    request.body(body)
}
