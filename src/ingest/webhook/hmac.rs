//! A plain HMAC-SHA256 header, for senders with no named scheme: the header,
//! hex or base64, an optional prefix (`sha256=`), an optional timestamp
//! header checked against the tolerance, and a signed-content template such
//! as `{timestamp}.{body}`.

use std::time::Duration;

use axum::http::HeaderMap;

use super::{
    DefaultType, DeliveryFacts, Facts, Rejection, SecretForm, any_signature_matches,
    check_timestamp, decode_base64, header,
};
use crate::topic::webhook::{Encoding, HmacOptions, Part};

/// The signature bytes of a header value under these options.
pub fn parse_signature(options: &HmacOptions, value: &str) -> Option<Vec<u8>> {
    let encoded = value.trim().strip_prefix(options.prefix.as_str())?;
    match options.encoding {
        Encoding::Hex => hex::decode(encoded).ok(),
        Encoding::Base64 => decode_base64(encoded),
    }
}

/// What Switchyard needs to know of this scheme beyond `verify` (the type
/// is usually configured: `type = { … }`).
pub(super) const FACTS: Facts = Facts {
    secret: SecretForm::Utf8,
    body_delivery_id: None,
    default_type: DefaultType::Json(&["/type"]),
    challenge: None,
};

pub(super) fn verify(
    options: &HmacOptions,
    headers: &HeaderMap,
    body: &[u8],
    secrets: &[Vec<u8>],
    tolerance: Duration,
    now_s: i64,
) -> Result<DeliveryFacts, Rejection> {
    let signature = header(headers, &options.header)?;
    let timestamp = match &options.timestamp_header {
        Some(name) => {
            let timestamp = header(headers, name)?;
            check_timestamp(name, timestamp, tolerance, now_s)?;
            Some(timestamp)
        }
        None => None,
    };
    let id = match &options.id_header {
        Some(name) => Some(header(headers, name)?),
        None => None,
    };
    let candidate = parse_signature(options, signature).ok_or_else(|| {
        Rejection::malformed_header(&options.header, "not the configured prefix and encoding")
    })?;
    let message: Vec<&[u8]> = options
        .signed_content
        .iter()
        .map(|part| match part {
            Part::Literal(text) => text.as_bytes(),
            Part::Timestamp => timestamp.unwrap_or_default().as_bytes(),
            Part::Id => id.unwrap_or_default().as_bytes(),
            Part::Body => body,
        })
        .collect();
    if !any_signature_matches(secrets, &message, &[candidate]) {
        return Err(Rejection::invalid_signature(&options.header));
    }
    Ok(DeliveryFacts {
        id: id.filter(|id| !id.is_empty()).map(str::to_owned),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn options(encoding: Encoding, prefix: &str) -> HmacOptions {
        HmacOptions {
            header: "x-signature".into(),
            encoding,
            prefix: prefix.into(),
            timestamp_header: None,
            id_header: None,
            signed_content: vec![Part::Body],
        }
    }

    proptest! {
        #[test]
        fn any_header_text_parses_without_panic(text in ".*", prefix in "[a-z0-9=]{0,8}") {
            let _ = parse_signature(&options(Encoding::Hex, &prefix), &text);
            let _ = parse_signature(&options(Encoding::Base64, &prefix), &text);
        }

        #[test]
        fn signatures_round_trip(sig in proptest::collection::vec(any::<u8>(), 32)) {
            use base64::Engine;
            let hex_value = format!("sha256={}", hex::encode(&sig));
            prop_assert_eq!(parse_signature(&options(Encoding::Hex, "sha256="), &hex_value), Some(sig.clone()));
            let b64 = base64::engine::general_purpose::STANDARD.encode(&sig);
            prop_assert_eq!(parse_signature(&options(Encoding::Base64, ""), &b64), Some(sig));
        }
    }
}
