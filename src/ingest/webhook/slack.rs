//! Slack: `X-Slack-Signature: v0=<hex>` over `v0:<timestamp>:<body>`, with
//! `X-Slack-Request-Timestamp`. The delivery id is the body's `event_id`
//! (Events API); `url_verification` is answered with its challenge.

use std::time::Duration;

use axum::http::HeaderMap;

use super::{
    DefaultType, DeliveryFacts, Facts, Rejection, SecretForm, any_signature_matches,
    check_timestamp, header,
};

const SIGNATURE: &str = "x-slack-signature";
const TIMESTAMP: &str = "x-slack-request-timestamp";

/// The signature bytes of an `X-Slack-Signature` value.
pub fn parse_signature(value: &str) -> Option<Vec<u8>> {
    hex::decode(value.trim().strip_prefix("v0=")?).ok()
}

/// What Switchyard needs to know of this scheme beyond `verify`.
pub(super) const FACTS: Facts = Facts {
    secret: SecretForm::Utf8,
    body_delivery_id: Some("/event_id"),
    default_type: DefaultType::Json(&["/event/type", "/type"]),
    challenge: Some(url_verification),
};

/// Slack's `url_verification`: answered with its challenge, not stored.
fn url_verification(body: &serde_json::Value) -> Option<String> {
    (body.get("type")?.as_str()? == "url_verification").then(|| {
        body.get("challenge")
            .and_then(serde_json::Value::as_str)
            .unwrap_or_default()
            .to_owned()
    })
}

pub(super) fn verify(
    headers: &HeaderMap,
    body: &[u8],
    secrets: &[Vec<u8>],
    tolerance: Duration,
    now_s: i64,
) -> Result<DeliveryFacts, Rejection> {
    let signature = header(headers, SIGNATURE)?;
    let timestamp = header(headers, TIMESTAMP)?;
    check_timestamp(TIMESTAMP, timestamp, tolerance, now_s)?;
    let candidate = parse_signature(signature)
        .ok_or_else(|| Rejection::malformed_header(SIGNATURE, "expected v0=<hex>"))?;
    if !any_signature_matches(
        secrets,
        &[b"v0:", timestamp.as_bytes(), b":", body],
        &[candidate],
    ) {
        return Err(Rejection::invalid_signature(SIGNATURE));
    }
    Ok(DeliveryFacts::default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn any_header_text_parses_without_panic(text in ".*") {
            let _ = parse_signature(&text);
        }

        #[test]
        fn signature_round_trips(sig in proptest::collection::vec(any::<u8>(), 32)) {
            prop_assert_eq!(parse_signature(&format!("v0={}", hex::encode(&sig))), Some(sig));
        }
    }
}
