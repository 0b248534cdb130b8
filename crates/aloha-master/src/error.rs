//! The REST API's error: a status and `{"error": "..."}` (plus, on a standby, where the
//! leader is). Shared by the routes (`http.rs`) and the event stream (`stream.rs`); every
//! [`MasterError`] is mapped to a status here, once.

use aloha_core::api::ErrorBody;
use aloha_core::SubmitError;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::master::MasterError;

/// An API error: a status and a message.
pub struct ApiError {
    status: StatusCode,
    body: ErrorBody,
}

impl ApiError {
    /// An error with `status` and `msg`.
    pub fn new(status: StatusCode, msg: impl Into<String>) -> Self {
        ApiError {
            status,
            body: ErrorBody {
                error: msg.into(),
                leader: None,
            },
        }
    }
}

impl ApiError {
    /// The status and the message.
    pub fn parts(&self) -> (StatusCode, &str) {
        (self.status, &self.body.error)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let unavailable = self.status == StatusCode::SERVICE_UNAVAILABLE;
        let mut r = (self.status, Json(self.body)).into_response();
        if unavailable {
            // Not the leader, or the store is down: worth asking again (another master, soon).
            r.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from_static("1"),
            );
        }
        r
    }
}

impl From<MasterError> for ApiError {
    fn from(e: MasterError) -> Self {
        let status = match &e {
            MasterError::Submit(
                SubmitError::UnknownKind { .. } | SubmitError::UnknownNamespace(_),
            ) => StatusCode::UNPROCESSABLE_ENTITY,
            MasterError::Submit(_) | MasterError::BadRequest(_) => StatusCode::BAD_REQUEST,
            MasterError::AppNotFound(_)
            | MasterError::AppExpired(_)
            | MasterError::ScheduleNotFound(_)
            | MasterError::WorkerNotFound(_)
            | MasterError::NamespaceNotFound(_) => StatusCode::NOT_FOUND,
            MasterError::Conflict(_) => StatusCode::CONFLICT,
            MasterError::Quota(_) => StatusCode::TOO_MANY_REQUESTS,
            MasterError::Forbidden(_) => StatusCode::FORBIDDEN,
            MasterError::NotLeader { leader } => {
                return ApiError {
                    status: StatusCode::SERVICE_UNAVAILABLE,
                    body: ErrorBody {
                        error: "not leader".into(),
                        leader: leader.clone(),
                    },
                }
            }
            MasterError::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
        };
        ApiError::new(status, e.to_string())
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        ApiError::new(r.status(), r.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, r.body_text())
    }
}

/// A handler's result.
pub type ApiResult<T> = Result<T, ApiError>;
