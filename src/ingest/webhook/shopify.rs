//! Shopify: `X-Shopify-Hmac-Sha256` = base64 of HMAC-SHA256 over the raw
//! body; the delivery id is `X-Shopify-Webhook-Id`, the type
//! `X-Shopify-Topic`. No timestamp is signed.

use axum::http::HeaderMap;

use super::{
    DefaultType, DeliveryFacts, Facts, Rejection, SecretForm, any_signature_matches, decode_base64,
    header,
};

const SIGNATURE: &str = "x-shopify-hmac-sha256";

/// What Switchyard needs to know of this scheme beyond `verify`.
pub(super) const FACTS: Facts = Facts {
    secret: SecretForm::Utf8,
    body_delivery_id: None,
    default_type: DefaultType::Header("x-shopify-topic"),
    challenge: None,
};

pub(super) fn verify(
    headers: &HeaderMap,
    body: &[u8],
    secrets: &[Vec<u8>],
) -> Result<DeliveryFacts, Rejection> {
    let signature = header(headers, SIGNATURE)?;
    let candidate = decode_base64(signature)
        .ok_or_else(|| Rejection::malformed_header(SIGNATURE, "not base64"))?;
    if !any_signature_matches(secrets, &[body], &[candidate]) {
        return Err(Rejection::invalid_signature(SIGNATURE));
    }
    Ok(DeliveryFacts::from_header(headers, "x-shopify-webhook-id"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn any_header_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..128)) {
            let mut headers = HeaderMap::new();
            if let Ok(value) = axum::http::HeaderValue::from_bytes(&bytes) {
                headers.insert(SIGNATURE, value);
            }
            let _ = verify(&headers, b"{}", &[b"secret".to_vec()]);
        }
    }
}
