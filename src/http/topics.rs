//! One topic over HTTP: `GET /v1/topics/{topic}` describes it;
//! `PUT` defines or redefines a topic at run time and `DELETE` removes one
//! defined so (admin scope; see `crate::catalog`).

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::{ApiError, ApiResult, AppState};
use crate::catalog::CatalogError;
use crate::reload::ReloadError;
use crate::topic::Origin;

/// The largest topic definition taken (schemas inline).
const MAX_DEFINITION_BYTES: usize = 1 << 20;

impl From<CatalogError> for ApiError {
    fn from(err: CatalogError) -> Self {
        let message = err.to_string();
        match err {
            CatalogError::Invalid(problems) => {
                let problems: Vec<Value> = problems
                    .iter()
                    .map(|p| json!({"key": p.key, "reason": p.reason}))
                    .collect();
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_topic", message)
                    .with("problems", problems)
            }
            CatalogError::ReadOnly(topic) => {
                ApiError::new(StatusCode::CONFLICT, "topic_read_only", message).with("topic", topic)
            }
            CatalogError::PartitionsFixed { name, existing, .. } => {
                ApiError::new(StatusCode::CONFLICT, "partitions_fixed", message)
                    .with("topic", name)
                    .with("partitions", existing)
            }
            CatalogError::Unknown(topic) => ApiError::unknown_topic(&topic),
            CatalogError::Broker(err) => err.into(),
            CatalogError::Ingest(err) => err.into(),
        }
    }
}

fn described(topic: &crate::topic::Topic) -> Value {
    let mut described = super::topic_json(topic);
    described["origin"] = json!(topic.origin);
    described
}

pub async fn get(
    State(state): State<Arc<AppState>>,
    Path(topic): Path<String>,
) -> ApiResult<Response> {
    let found = state
        .topics
        .get(&topic)
        .ok_or_else(|| ApiError::unknown_topic(&topic))?;
    Ok(axum::Json(described(&found)).into_response())
}

pub async fn put(
    State(state): State<Arc<AppState>>,
    Path(topic): Path<String>,
    body: Body,
) -> ApiResult<Response> {
    let bytes = super::publish::read_body(body, MAX_DEFINITION_BYTES).await?;
    let definition: Value = serde_json::from_slice(&bytes).map_err(|err| {
        ApiError::bad_request("invalid_json", format!("the body is not valid JSON: {err}"))
            .with("line", err.line())
            .with("column", err.column())
    })?;
    let catalog = Arc::clone(&state.catalog);
    // Detached: a client that hangs up does not leave a topic half made.
    let (created, defined) = super::detached(async move {
        catalog
            .define(&topic, definition)
            .await
            .map_err(ApiError::from)
    })
    .await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, axum::Json(described(&defined))).into_response())
}

pub async fn delete(
    State(state): State<Arc<AppState>>,
    Path(topic): Path<String>,
) -> ApiResult<Response> {
    let in_use: Vec<String> = state
        .handlers
        .specs()
        .iter()
        .filter(|spec| spec.topic == topic || spec.outputs().contains(&topic.as_str()))
        .map(|spec| spec.name.clone())
        .collect();
    if let Some(found) = state.topics.get(&topic)
        && found.origin == Origin::Api
        && !in_use.is_empty()
    {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "topic_in_use",
            format!(
                "handlers use topic {topic:?} ({}): remove them first",
                in_use.join(", ")
            ),
        )
        .with("topic", topic)
        .with("handlers", in_use));
    }
    let catalog = Arc::clone(&state.catalog);
    super::detached(async move { catalog.delete(&topic).await.map_err(ApiError::from) }).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `POST /v1/reload`: what `SIGHUP` does, answered: what changed, or 422
/// `invalid_config` with every problem (nothing changed).
pub async fn reload(State(state): State<Arc<AppState>>) -> ApiResult<Response> {
    let reloader = Arc::clone(&state.reloader);
    let reloaded = super::detached(async move {
        reloader.reload_and_log().await.map_err(|err| {
            let message = err.to_string();
            match err {
                ReloadError::Invalid(problems) => {
                    let problems: Vec<Value> = problems
                        .iter()
                        .map(|p| json!({"file": p.file.display().to_string(), "key": p.key, "reason": p.reason, "text": p.to_string()}))
                        .collect();
                    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_config", message)
                        .with("problems", problems)
                }
                ReloadError::Broker(err) => err.into(),
            }
        })
    })
    .await?;
    Ok(axum::Json(json!({ "reloaded": reloaded })).into_response())
}
