//! The `http` action: a request to an API, with headers and auth from the
//! handler file, and the event (structured or binary mode) or its data as
//! the body.

use bytes::Bytes;
use serde_json::Value;

use super::Common;
use super::{RawAction, RawAuth};
use crate::problem::Problems;

#[derive(Debug, Clone)]
pub struct HttpAction {
    pub(super) common: Common,
    method: reqwest::Method,
    auth: Option<Auth>,
}

/// How the request authenticates, with the secret read from the
/// environment at load.
#[derive(Debug, Clone)]
enum Auth {
    Bearer(String),
    Header { name: String, value: String },
}

impl HttpAction {
    /// Checks the `http` keys of an `[action]` table.
    pub(crate) fn resolve(c: &mut Problems, raw: RawAction, common: Common) -> Self {
        let method = match raw
            .method
            .as_deref()
            .unwrap_or("POST")
            .parse::<reqwest::Method>()
        {
            Ok(method) => method,
            Err(_) => {
                c.problem(
                    "action.method",
                    format!("{:?} is not an HTTP method", raw.method),
                );
                reqwest::Method::POST
            }
        };
        if !raw.secrets_env.is_empty() {
            c.problem(
                "action.secrets_env",
                "only webhook actions sign; use auth for http",
            );
        }
        let auth = match raw.auth {
            None => None,
            Some(RawAuth {
                bearer_env: Some(env),
                header: None,
                value_env: None,
            }) => Some(Auth::Bearer(c.env("action.auth.bearer_env", &env))),
            Some(RawAuth {
                bearer_env: None,
                header: Some(name),
                value_env: Some(env),
            }) => Some(Auth::Header {
                name,
                value: c.env("action.auth.value_env", &env),
            }),
            Some(_) => {
                c.problem(
                    "action.auth",
                    "give { bearer_env = \"VAR\" } or { header = \"X-Api-Key\", value_env = \"VAR\" }",
                );
                None
            }
        };
        Self {
            common,
            method,
            auth,
        }
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
            .start(client, self.method.clone(), url, event, payload);
        let request = match &self.auth {
            Some(Auth::Bearer(token)) => request.bearer_auth(token),
            Some(Auth::Header { name, value }) => request.header(name, value),
            None => request,
        };
        request.body(body)
    }
}
