//! Standard Webhooks (and Svix, which it grew from): `webhook-id`,
//! `webhook-timestamp`, `webhook-signature` = space-separated `v1,<base64>`
//! entries; HMAC-SHA256 over `id.timestamp.body`; the key is the base64 after
//! `whsec_`.

use std::time::Duration;

use axum::http::HeaderMap;

use super::{
    DefaultType, DeliveryFacts, Facts, Rejection, SecretForm, any_signature_matches,
    check_timestamp, decode_base64, header,
};

/// The header names: the standard's, and Svix's older ones.
const NAMES: [[&str; 3]; 2] = [
    ["webhook-id", "webhook-timestamp", "webhook-signature"],
    ["svix-id", "svix-timestamp", "svix-signature"],
];

/// The `v1` signatures in a signature header; other versions are skipped.
pub fn parse_signatures(value: &str) -> Vec<Vec<u8>> {
    value
        .split_ascii_whitespace()
        .filter_map(|entry| entry.strip_prefix("v1,"))
        .filter_map(decode_base64)
        .collect()
}

/// What Switchyard needs to know of this scheme beyond `verify`.
pub(super) const FACTS: Facts = Facts {
    secret: SecretForm::WhsecBase64,
    body_delivery_id: None,
    default_type: DefaultType::Json(&["/type"]),
    challenge: None,
};

pub(super) fn verify(
    headers: &HeaderMap,
    body: &[u8],
    secrets: &[Vec<u8>],
    tolerance: Duration,
    now_s: i64,
) -> Result<DeliveryFacts, Rejection> {
    let [id_name, timestamp_name, signature_name] = NAMES
        .into_iter()
        .find(|[id, ..]| headers.contains_key(*id))
        .unwrap_or(NAMES[0]);
    let id = header(headers, id_name)?;
    let timestamp = header(headers, timestamp_name)?;
    let signature = header(headers, signature_name)?;
    check_timestamp(timestamp_name, timestamp, tolerance, now_s)?;
    let candidates = parse_signatures(signature);
    if candidates.is_empty() {
        return Err(Rejection::malformed_header(
            signature_name,
            "no v1,<base64> entry",
        ));
    }
    let message = [id.as_bytes(), b".", timestamp.as_bytes(), b".", body];
    if !any_signature_matches(secrets, &message, &candidates) {
        return Err(Rejection::invalid_signature(signature_name));
    }
    Ok(DeliveryFacts {
        id: Some(id.to_owned()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn any_header_text_parses_without_panic(text in ".*") {
            let _ = parse_signatures(&text);
        }

        #[test]
        fn signatures_round_trip(sigs in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 32), 1..4)) {
            use base64::Engine;
            let text = sigs
                .iter()
                .map(|s| format!("v1,{}", base64::engine::general_purpose::STANDARD.encode(s)))
                .collect::<Vec<_>>()
                .join(" ");
            prop_assert_eq!(parse_signatures(&format!("v2,abc {text}")), sigs);
        }
    }
}
