//! The `http` action: a request to an API, with headers and auth from the
//! handler file, and the event (structured or binary mode) or its data as
//! the body.

use bytes::Bytes;
use serde_json::Value;

use super::body_of;
use crate::handler::config::{Auth, BodyMode};

#[allow(clippy::too_many_arguments)]
pub(super) fn request(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    headers: &[(String, String)],
    auth: Option<&Auth>,
    body: BodyMode,
    event: &Value,
    payload: &Bytes,
) -> reqwest::RequestBuilder {
    let (content_type, body, ce_headers) = body_of(body, event, payload);
    let mut request = client
        .request(method, url)
        .header(reqwest::header::CONTENT_TYPE, content_type);
    for (name, value) in headers.iter().chain(&ce_headers) {
        request = request.header(name, value);
    }
    request = match auth {
        Some(Auth::Bearer(token)) => request.bearer_auth(token),
        Some(Auth::Header { name, value }) => request.header(name, value),
        None => request,
    };
    request.body(body)
}
