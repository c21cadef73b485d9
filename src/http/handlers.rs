//! `GET /v1/handlers` (status) and `POST /v1/handlers/{name}/replay`
//! (re-drive dead letters).

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use bytes::Bytes;
use serde_json::json;

use super::{ApiError, ApiResult, AppState};
use crate::handler::{ReplayError, ReplaySelection};

pub async fn status(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    axum::Json(state.handlers.status().await)
}

pub async fn replay(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult<impl IntoResponse> {
    let selection: ReplaySelection = if body.iter().all(u8::is_ascii_whitespace) {
        ReplaySelection::default()
    } else {
        serde_json::from_slice(&body).map_err(|err| {
            ApiError::bad_request(
                "invalid_json",
                format!("the replay selection is not valid: {err}"),
            )
        })?
    };
    let replay = state
        .handlers
        .replay(&name, selection)
        .await
        .map_err(|err| match err {
            ReplayError::UnknownHandler(_) => {
                ApiError::new(StatusCode::NOT_FOUND, "unknown_handler", err.to_string())
                    .with("handler", name.as_str())
            }
            ReplayError::BadCursor(parameter, _) => {
                ApiError::bad_request("invalid_cursor", err.to_string())
                    .with("parameter", parameter)
            }
            ReplayError::Broker(err) => err.into(),
        })?;
    Ok((
        StatusCode::ACCEPTED,
        axum::Json(json!({
            "replaying": replay.ids.len(),
            "ids": replay.ids,
            "skipped": replay.skipped,
        })),
    ))
}
