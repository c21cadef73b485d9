//! Stripe: `Stripe-Signature: t=<unix>,v1=<hex>[,v1=<hex>…]`; HMAC-SHA256
//! over `t.body` keyed with the whole `whsec_…` secret as UTF-8. The delivery
//! id is the event's `id` in the body.

use std::time::Duration;

use axum::http::HeaderMap;

use super::{
    DefaultType, DeliveryFacts, Facts, Rejection, SecretForm, any_signature_matches,
    check_timestamp, header,
};

const SIGNATURE: &str = "stripe-signature";

/// The timestamp and the `v1` signatures of a `Stripe-Signature` value.
pub fn parse_header(value: &str) -> (Option<&str>, Vec<Vec<u8>>) {
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for item in value.split(',') {
        match item.trim().split_once('=') {
            Some(("t", t)) => timestamp = Some(t),
            Some(("v1", sig)) => signatures.extend(hex::decode(sig).ok()),
            _ => {}
        }
    }
    (timestamp, signatures)
}

/// What Switchyard needs to know of this scheme beyond `verify`.
pub(super) const FACTS: Facts = Facts {
    // Stripe signs with the whole `whsec_…` string as UTF-8.
    secret: SecretForm::Utf8,
    body_delivery_id: Some("/id"),
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
    let value = header(headers, SIGNATURE)?;
    let (timestamp, candidates) = parse_header(value);
    let timestamp =
        timestamp.ok_or_else(|| Rejection::malformed_header(SIGNATURE, "no t=<timestamp>"))?;
    if candidates.is_empty() {
        return Err(Rejection::malformed_header(
            SIGNATURE,
            "no v1=<hex> signature",
        ));
    }
    check_timestamp(SIGNATURE, timestamp, tolerance, now_s)?;
    if !any_signature_matches(secrets, &[timestamp.as_bytes(), b".", body], &candidates) {
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
            let _ = parse_header(&text);
        }

        #[test]
        fn header_round_trips(t in 0u32.., sigs in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 32), 1..3)) {
            let mut text = format!("t={t}");
            for sig in &sigs {
                text.push_str(&format!(",v1={}", hex::encode(sig)));
            }
            text.push_str(",v0=ignored");
            let t_text = t.to_string();
            let (timestamp, parsed) = parse_header(&text);
            prop_assert_eq!(timestamp, Some(t_text.as_str()));
            prop_assert_eq!(parsed, sigs);
        }
    }
}
