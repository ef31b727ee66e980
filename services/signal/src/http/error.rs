//! The HTTP API's one error shape: a status and `{"error": message}`, and on S4's own
//! routes that refusal in S4's shape, `{"detail": message}`. Store failures are logged
//! here, once, and answered with a safe message (the store's own text stays in the
//! log).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::core::CoreError;

/// An API refusal.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self { status, message: message.into() }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }
}

impl From<CoreError> for ApiError {
    fn from(e: CoreError) -> Self {
        match e {
            CoreError::Unavailable(cause) => {
                tracing::warn!(error = %cause, "an API request failed: the store did not answer");
                Self::new(StatusCode::SERVICE_UNAVAILABLE, "signaling store unavailable; try again")
            }
            other => {
                tracing::error!(error = %other, "an API request failed");
                Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(json!({"error": self.message}))).into_response()
    }
}

/// A refusal on one of S4's routes (`/anonymous-signin`, `/create-room`,
/// `/delete-peers-and-room`), answered as S4 (FastAPI) did: `{"detail": message}`.
#[derive(Debug)]
pub struct S4Error(ApiError);

impl From<ApiError> for S4Error {
    fn from(e: ApiError) -> Self {
        S4Error(e)
    }
}

impl From<CoreError> for S4Error {
    fn from(e: CoreError) -> Self {
        S4Error(e.into())
    }
}

impl IntoResponse for S4Error {
    fn into_response(self) -> Response {
        let ApiError { status, message } = self.0;
        (status, Json(json!({"detail": message}))).into_response()
    }
}
