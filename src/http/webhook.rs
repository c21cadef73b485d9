//! `POST /v1/webhooks/{source}`: verify, type, dedupe, publish. 2xx only
//! after the event is durable; a redelivery answers 200 with the original id.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::publish::read_body;
use super::{ApiError, ApiResult, AppState};
use crate::ingest::webhook::{Admission, WebhookError};

pub async fn receive(
    State(state): State<Arc<AppState>>,
    Path(source): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let limit = state
        .webhooks
        .max_body_bytes(&source)
        .ok_or_else(|| unknown_source(&source))?;
    let body = read_body(body, limit).await?;
    // Detached from the connection: a sender that hangs up mid-append does
    // not cancel it halfway, so the event and its dedupe mark land together
    // and the sender's retry is answered as a duplicate.
    let outcome = super::detached(async move {
        let outcome = state.webhooks.receive(&source, headers, body).await;
        outcome.map_err(ApiError::from)
    })
    .await?;
    Ok(match outcome {
        Admission::Accepted(published) => axum::Json(json!({
            "id": published.id,
            "position": published.position,
            // Another process (or, after a restart, this one) may have
            // stored the delivery: the topic's dedupe window caught it.
            "duplicate": published.duplicate,
        }))
        .into_response(),
        Admission::Duplicate { id } => {
            axum::Json(json!({"id": id, "duplicate": true})).into_response()
        }
        Admission::Challenge(challenge) => {
            axum::Json(json!({"challenge": challenge})).into_response()
        }
    })
}

fn unknown_source(source: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "unknown_source",
        format!("no webhook source named {source:?}"),
    )
    .with("source", source)
}

impl From<WebhookError> for ApiError {
    fn from(err: WebhookError) -> Self {
        let message = err.to_string();
        match err {
            WebhookError::UnknownSource(source) => unknown_source(&source),
            WebhookError::NotConfigured => {
                ApiError::new(StatusCode::UNAUTHORIZED, "source_not_configured", message)
            }
            WebhookError::Rejected(rejection) => {
                let error = ApiError::new(StatusCode::UNAUTHORIZED, rejection.code, message);
                match rejection.header {
                    Some(header) => error.with("header", header),
                    None => error,
                }
            }
            WebhookError::NotJson(_) => ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                message,
            )
            .with("header", "content-type"),
            WebhookError::InvalidBody(_) => ApiError::bad_request("invalid_json", message),
            WebhookError::NoType(_) => ApiError::bad_request("missing_type", message),
            WebhookError::Ingest(err) => err.into(),
        }
    }
}
