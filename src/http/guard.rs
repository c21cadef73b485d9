//! The authorization step in front of every route: the router names what a
//! route needs ([`Need`]); this finds the request's token, verifies it, and
//! answers 401 (no or bad token) or 403 (the scope is missing) in JSON, with
//! `WWW-Authenticate` as RFC 6750 asks.

use std::sync::Arc;

use axum::extract::{RawPathParams, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::{ApiError, AppState};
use crate::auth::{self, Access, Missing, Need};

const REALM: &str = "switchyard";

pub(super) async fn authorize(
    State((state, need)): State<(Arc<AppState>, Need)>,
    params: Result<RawPathParams, axum::extract::rejection::RawPathParamsRejection>,
    mut request: Request,
    next: Next,
) -> Response {
    let access = match authenticate(&state, need, &request) {
        Ok(access) => access,
        Err(response) => return response,
    };
    let params = match params {
        Ok(params) => params,
        Err(err) => {
            return ApiError::bad_request("invalid_path", err.body_text()).into_response();
        }
    };
    let param = |name: &str| {
        params
            .iter()
            .find(|(key, _)| *key == name)
            .map_or("", |(_, value)| value)
    };
    let allowed = match need {
        Need::Open | Need::Token => Ok(()),
        Need::Publish => access.may_publish(param("topic")),
        Need::Subscribe => access.may_subscribe(param("topic")),
        Need::Consume => access.may_consume(param("topic"), param("group")),
        Need::Admin | Need::Metrics => access.may_admin(),
    };
    if let Err(missing) = allowed {
        return forbidden(&missing);
    }
    request.extensions_mut().insert(access);
    strip_token_parameter(&mut request);
    next.run(request).await
}

/// Takes `access_token` out of the query, so that routes see only their own
/// parameters and the token goes no further.
fn strip_token_parameter(request: &mut Request) {
    let Some(query) = request.uri().query() else {
        return;
    };
    let prefix = format!("{}=", auth::QUERY_PARAMETER);
    if !query.split('&').any(|pair| pair.starts_with(&prefix)) {
        return;
    }
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| !pair.starts_with(&prefix))
        .collect();
    let path = request.uri().path();
    let path_and_query = if kept.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{}", kept.join("&"))
    };
    let mut parts = request.uri().clone().into_parts();
    if let Ok(value) = path_and_query.parse() {
        parts.path_and_query = Some(value);
        if let Ok(uri) = axum::http::Uri::from_parts(parts) {
            *request.uri_mut() = uri;
        }
    }
}

fn authenticate(state: &AppState, need: Need, request: &Request) -> Result<Access, Response> {
    let open = need == Need::Open || (need == Need::Metrics && state.metrics_open);
    let Some(verifier) = state.verifier.as_ref().filter(|_| !open) else {
        return Ok(Access::Anyone);
    };
    let Some(token) = auth::token_of(request.headers(), request.uri().query()) else {
        return Err(unauthorized(
            "missing_token",
            format!(
                "this needs a bearer token: an Authorization: Bearer header, the {} cookie, or the ?{}= parameter",
                auth::COOKIE,
                auth::QUERY_PARAMETER
            ),
            format!("Bearer realm=\"{REALM}\""),
        ));
    };
    verifier.verify(&token).map(Access::Token).map_err(|err| {
        unauthorized(
            "invalid_token",
            err.to_string(),
            format!("Bearer realm=\"{REALM}\", error=\"invalid_token\""),
        )
    })
}

fn unauthorized(code: &'static str, message: String, challenge: String) -> Response {
    with_challenge(
        ApiError::new(StatusCode::UNAUTHORIZED, code, message),
        challenge,
    )
}

fn forbidden(missing: &Missing) -> Response {
    let mut error = ApiError::new(StatusCode::FORBIDDEN, "forbidden", missing.to_string())
        .with("scope", missing.scope);
    if let Some(name) = &missing.name {
        let key = if missing.scope == "consume" {
            "group"
        } else {
            "topic"
        };
        error = error.with(key, name.as_str());
    }
    with_challenge(
        error,
        format!(
            "Bearer realm=\"{REALM}\", error=\"insufficient_scope\", scope=\"{}\"",
            missing.scope
        ),
    )
}

fn with_challenge(error: ApiError, challenge: String) -> Response {
    let mut response = error.into_response();
    if let Ok(value) = HeaderValue::from_str(&challenge) {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, value);
    }
    response
}
