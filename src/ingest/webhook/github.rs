//! GitHub: `X-Hub-Signature-256: sha256=<hex>` over the raw body; the
//! delivery id is `X-GitHub-DeliveryFacts`. No timestamp is signed.

use axum::http::HeaderMap;

use super::{
    DefaultType, DeliveryFacts, Facts, Rejection, SecretForm, any_signature_matches, header,
};

const SIGNATURE: &str = "x-hub-signature-256";

/// The signature bytes of an `X-Hub-Signature-256` value.
pub fn parse_signature(value: &str) -> Option<Vec<u8>> {
    hex::decode(value.trim().strip_prefix("sha256=")?).ok()
}

/// What Switchyard needs to know of this scheme beyond `verify`.
pub(super) const FACTS: Facts = Facts {
    secret: SecretForm::Utf8,
    body_delivery_id: None,
    // `pull_request` + `.` + the body's `action`: `pull_request.opened`.
    default_type: DefaultType::HeaderDotJson("x-github-event", "/action"),
    challenge: None,
};

pub(super) fn verify(
    headers: &HeaderMap,
    body: &[u8],
    secrets: &[Vec<u8>],
) -> Result<DeliveryFacts, Rejection> {
    let signature = header(headers, SIGNATURE)?;
    let candidate = parse_signature(signature)
        .ok_or_else(|| Rejection::malformed_header(SIGNATURE, "expected sha256=<hex>"))?;
    if !any_signature_matches(secrets, &[body], &[candidate]) {
        return Err(Rejection::invalid_signature(SIGNATURE));
    }
    Ok(DeliveryFacts::from_header(headers, "x-github-delivery"))
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
            prop_assert_eq!(parse_signature(&format!("sha256={}", hex::encode(&sig))), Some(sig));
        }
    }
}
