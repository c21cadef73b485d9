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
        Err(refusal) => return refusal.into_response(),
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

/// A 401: the error code, the message, and the `WWW-Authenticate` challenge.
struct Unauthorized(&'static str, String, String);

impl IntoResponse for Unauthorized {
    fn into_response(self) -> Response {
        with_challenge(
            ApiError::new(StatusCode::UNAUTHORIZED, self.0, self.1),
            self.2,
        )
    }
}

fn authenticate(state: &AppState, need: Need, request: &Request) -> Result<Access, Unauthorized> {
    let open = need == Need::Open || (need == Need::Metrics && state.metrics_open);
    let Some(verifier) = state.verifier.as_ref().filter(|_| !open) else {
        return Ok(Access::Anyone);
    };
    let metadata = metadata_url(request);
    let Some(token) = auth::token_of(request.method(), request.headers(), request.uri().query())
    else {
        return Err(Unauthorized(
            "missing_token",
            format!(
                "this needs a bearer token: an Authorization: Bearer header (reads also take the {} cookie or the ?{}= parameter)",
                auth::COOKIE,
                auth::QUERY_PARAMETER
            ),
            format!("Bearer realm=\"{REALM}\", resource_metadata=\"{metadata}\""),
        ));
    };
    verifier.verify(&token).map(Access::Token).map_err(|err| {
        Unauthorized(
            "invalid_token",
            err.to_string(),
            format!(
                "Bearer realm=\"{REALM}\", error=\"invalid_token\", resource_metadata=\"{metadata}\""
            ),
        )
    })
}

/// The address this server was reached at (`X-Forwarded-Proto` names the
/// scheme behind a proxy that ends TLS).
fn base_url(request: &Request) -> String {
    let header = |name: &str| request.headers().get(name).and_then(|v| v.to_str().ok());
    let scheme = match header("x-forwarded-proto") {
        Some("https") => "https",
        _ => "http",
    };
    // HTTP/2 names the host in the URI, not in a header. Only a plain
    // host[:port] is repeated (it goes into a quoted challenge).
    let host = header("host")
        .or_else(|| request.uri().authority().map(|a| a.as_str()))
        .filter(|host| {
            host.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-.:[]_".contains(&b))
        })
        .unwrap_or("localhost");
    format!("{scheme}://{host}")
}

/// The protected-resource metadata (RFC 9728) of the resource `request`
/// is for: `/mcp` has its own (MCP clients look it up by their server's
/// path), every other route shares the server's.
fn metadata_url(request: &Request) -> String {
    let suffix = if request.uri().path().starts_with("/mcp") {
        "/mcp"
    } else {
        ""
    };
    format!(
        "{}/.well-known/oauth-protected-resource{suffix}",
        base_url(request)
    )
}

/// `GET /.well-known/oauth-protected-resource[/{resource}]`: RFC 9728
/// metadata naming the resource, the issuer whose tokens it takes (when
/// one is configured), how to present them and the scopes there are.
pub(super) async fn protected_resource(
    State(state): State<Arc<AppState>>,
    request: Request,
) -> Response {
    let path = request.uri().path();
    let resource = path
        .strip_prefix("/.well-known/oauth-protected-resource")
        .unwrap_or_default();
    // The server's own, and /mcp's: no other resource is described.
    if !matches!(resource, "" | "/mcp") {
        return ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_resource",
            format!(
                "no protected resource {resource:?}: there are \"\" (the HTTP API) and \"/mcp\""
            ),
        )
        .into_response();
    }
    let mut metadata = serde_json::json!({
        "resource": format!("{}{resource}", base_url(&request)),
        "resource_name": "Switchyard",
        "bearer_methods_supported": ["header"],
        "scopes_supported": ["publish", "subscribe", "consume", "admin", "metrics"],
    });
    if let Some(issuer) = state.verifier.as_ref().and_then(auth::Verifier::issuer) {
        metadata["authorization_servers"] = serde_json::json!([issuer]);
    }
    axum::Json(metadata).into_response()
}

impl From<Missing> for ApiError {
    /// 403 naming the scope, and the topic or group it was needed for.
    fn from(missing: Missing) -> Self {
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
        error
    }
}

pub(super) fn forbidden(missing: &Missing) -> Response {
    with_challenge(
        ApiError::from(missing.clone()),
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

/// `POST /v1/session`: turns the bearer token of the request into the
/// HttpOnly `switchyard_token` cookie, for browsers (EventSource cannot send
/// headers, and script never sees an HttpOnly cookie). The cookie lives as
/// long as the token.
pub(super) async fn sign_in(State(state): State<Arc<AppState>>, request: Request) -> Response {
    let Some(verifier) = state.verifier.as_ref() else {
        return ApiError::new(
            StatusCode::CONFLICT,
            "no_tokens",
            "this server takes no tokens (no key is configured): there is nothing to sign in with",
        )
        .into_response();
    };
    // The guard has verified it already.
    let token = auth::token_of(request.method(), request.headers(), request.uri().query())
        .unwrap_or_default();
    let max_age = verifier
        .expires_in(&token)
        .map(|seconds| format!("; Max-Age={seconds}"))
        .unwrap_or_default();
    let cookie = format!(
        "{}={token}; Path=/; HttpOnly; SameSite=Lax{max_age}",
        auth::COOKIE
    );
    session_answer(&cookie)
}

/// `DELETE /v1/session`: clears the cookie.
pub(super) async fn sign_out() -> Response {
    session_answer(&format!(
        "{}=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0",
        auth::COOKIE
    ))
}

fn session_answer(cookie: &str) -> Response {
    let mut response = StatusCode::NO_CONTENT.into_response();
    if let Ok(value) = HeaderValue::from_str(cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}
