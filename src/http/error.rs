//! One error type for every HTTP answer that is not a success: a status, a
//! stable code and a message that names the problem, as JSON.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use crate::broker::BrokerError;
use crate::event::EventError;
use crate::ingest::IngestError;
use crate::topic::TopicError;

/// Largest body of a request that is not a publish or a webhook (ack, nack,
/// replay selections): they are small JSON documents. The HTTP stack
/// refuses larger ones, and [`json_rejections`] names the limit.
pub const CONTROL_BODY_LIMIT: usize = 64 * 1024;

/// Seconds a client should wait before retrying a 503.
const RETRY_AFTER_SECONDS: u64 = 1;

#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    details: Map<String, Value>,
}

/// Marks a response with its error code, for the errors metric.
#[derive(Clone, Copy, Debug)]
pub struct ErrorCode(pub &'static str);

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            details: Map::new(),
        }
    }

    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.details.insert(key.to_owned(), value.into());
        self
    }

    pub fn with_message(mut self, message: impl Into<String>) -> Self {
        self.message = message.into();
        self
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn unknown_topic(topic: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "unknown_topic",
            format!("no topic named {topic:?}"),
        )
        .with("topic", topic)
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut error = Map::new();
        error.insert("code".into(), self.code.into());
        error.insert("message".into(), self.message.into());
        error.extend(self.details);
        let mut response = (self.status, axum::Json(json!({ "error": error }))).into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECONDS));
        }
        response.extensions_mut().insert(ErrorCode(self.code));
        response
    }
}

impl From<EventError> for ApiError {
    fn from(err: EventError) -> Self {
        Self::bad_request("invalid_event", err.to_string()).with("attribute", err.attribute)
    }
}

impl From<BrokerError> for ApiError {
    fn from(err: BrokerError) -> Self {
        let message = err.to_string();
        match &err {
            BrokerError::UnknownTopic(topic) => Self::unknown_topic(topic),
            BrokerError::CursorExpired { partition, oldest } => {
                Self::new(StatusCode::GONE, "cursor_expired", message)
                    .with("partition", *partition)
                    .with("oldest", oldest.to_string())
            }
            BrokerError::CursorAhead { partition, end } => {
                Self::bad_request("cursor_ahead", message)
                    .with("partition", *partition)
                    .with("end", *end)
            }
            BrokerError::BadCursor(_) => Self::bad_request("invalid_cursor", message),
            BrokerError::BadGroup(_) => Self::bad_request("invalid_group", message),
            BrokerError::Unavailable { .. } => {
                // Clients get `what`; the backend's own error stays in the log.
                tracing::warn!(error = %err.detail(), "broker unavailable");
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "broker_unavailable",
                    message,
                )
            }
            BrokerError::Internal(_) => {
                tracing::error!(error = %message, "a bug: the broker contract was broken");
                Self::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal_error",
                    "the server hit a bug; see its log",
                )
            }
            BrokerError::Corrupt(_) => {
                tracing::error!(error = %message, "corrupt data in the log");
                Self::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "corrupt_log",
                    "stored data failed its checksum; see the server log",
                )
            }
        }
    }
}

impl From<IngestError> for ApiError {
    fn from(err: IngestError) -> Self {
        let message = err.to_string();
        match err {
            IngestError::UnknownTopic(topic) => Self::unknown_topic(&topic),
            IngestError::TooLarge { index, size, limit } => {
                Self::new(StatusCode::PAYLOAD_TOO_LARGE, "event_too_large", message)
                    .with("index", index)
                    .with("size", size)
                    .with("limit", limit)
            }
            IngestError::Topic { index, source } => {
                let status = StatusCode::UNPROCESSABLE_ENTITY;
                match source {
                    TopicError::UnknownType { ty, accepted, .. } => {
                        Self::new(status, "unknown_event_type", message)
                            .with("index", index)
                            .with("type", ty)
                            .with("accepted", accepted)
                    }
                    TopicError::SchemaViolation {
                        ty,
                        pointer,
                        keyword,
                        ..
                    } => Self::new(status, "schema_violation", message)
                        .with("index", index)
                        .with("type", ty)
                        .with("pointer", pointer)
                        .with("keyword", keyword),
                    TopicError::DataNotJson { ty } => Self::new(status, "data_not_json", message)
                        .with("index", index)
                        .with("type", ty),
                }
            }
            IngestError::Invalid { index, source } => Self::bad_request("invalid_event", message)
                .with("index", index)
                .with("attribute", source.attribute),
            IngestError::Schedule { index, .. } => Self::bad_request("invalid_schedule", message)
                .with("index", index)
                .with("attribute", crate::ingest::DELIVER_AT),
            IngestError::Broker(err) => err.into(),
        }
    }
}

/// Gives every error answer that did not come from [`ApiError`] (the HTTP
/// stack's own rejections: a body over the limit, a path that is not UTF-8,
/// a query that does not parse) the same JSON form.
pub(super) async fn json_rejections(response: Response) -> Response {
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error())
        || response.extensions().get::<ErrorCode>().is_some()
    {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 4096)
        .await
        .map(|bytes| String::from_utf8_lossy(&bytes).trim().to_owned())
        .unwrap_or_default();
    let message = if text.is_empty() {
        status.canonical_reason().unwrap_or("error").to_owned()
    } else {
        text
    };
    let error = match status {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::new(
            status,
            "payload_too_large",
            format!(
                "the request body is over the limit of {} bytes",
                CONTROL_BODY_LIMIT
            ),
        )
        .with("limit", CONTROL_BODY_LIMIT),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => {
            ApiError::new(status, "unsupported_media_type", message)
        }
        StatusCode::BAD_REQUEST => ApiError::new(status, "bad_request", message),
        _ => ApiError::new(status, "error", message),
    };
    let mut answer = error.into_response();
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            answer.headers_mut().append(name, value.clone());
        }
    }
    answer
}
