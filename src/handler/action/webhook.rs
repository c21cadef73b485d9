//! The `webhook` action: an outbound delivery signed per Standard Webhooks.
//! `webhook-id` is the event id (stable across retries, so receivers can
//! dedupe), `webhook-timestamp` the send time, and `webhook-signature` holds
//! one `v1,<base64>` entry per active secret, for rotation.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use bytes::Bytes;
use hmac::{KeyInit, Mac};
use serde_json::Value;

use super::Common;
use super::RawAction;
use crate::problem::Problems;

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

#[derive(Debug, Clone)]
pub struct WebhookAction {
    pub(super) common: Common,
    /// Decoded signing keys, one signature each (rotation).
    secrets: Vec<Vec<u8>>,
}

impl WebhookAction {
    /// Checks the `webhook` keys of an `[action]` table.
    pub(crate) fn resolve(c: &mut Problems, raw: RawAction, common: Common) -> Self {
        if raw.method.is_some() || raw.auth.is_some() {
            c.problem(
                "action",
                "webhook actions always POST and authenticate by signature",
            );
        }
        if raw.secrets_env.is_empty() {
            c.problem(
                "action.secrets_env",
                "name at least one environment variable holding a whsec_ secret",
            );
        }
        let mut secrets = Vec::new();
        for name in &raw.secrets_env {
            let text = c.env("action.secrets_env", name);
            if text.is_empty() {
                continue;
            }
            match base64::engine::general_purpose::STANDARD
                .decode(text.strip_prefix("whsec_").unwrap_or(&text))
            {
                Ok(key) => secrets.push(key),
                Err(_) => c.problem(
                    "action.secrets_env",
                    format!("{name} is not whsec_ followed by base64"),
                ),
            }
        }
        Self { common, secrets }
    }

    pub(super) fn request(
        &self,
        client: &reqwest::Client,
        url: &str,
        event: &Value,
        payload: &Bytes,
    ) -> reqwest::RequestBuilder {
        let (request, body) = self
            .common
            .start(client, reqwest::Method::POST, url, event, payload);
        let id = event.get("id").and_then(Value::as_str).unwrap_or_default();
        let timestamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let signature = signature(&self.secrets, id, timestamp, &body);
        request
            .header("webhook-id", id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(body)
    }
}
