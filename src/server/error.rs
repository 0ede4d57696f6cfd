//! Errors as A1111 answers them: `{"error", "detail", "body", "errors"}` with the HTTP status
//! A1111 uses (404 for an unknown sampler, model or missing init image, 422 for a body that does
//! not fit the schema, 401 without the right credentials, 503 when the queue is full).

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sd_core::Error;
use serde_json::json;

/// One failed request: the status and what to tell the client.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    /// A1111's `error` field: the kind of failure.
    pub kind: &'static str,
    pub detail: String,
}

impl ApiError {
    pub fn new(status: StatusCode, kind: &'static str, detail: impl Into<String>) -> Self {
        Self {
            status,
            kind,
            detail: detail.into(),
        }
    }

    /// 404, as A1111 answers an unknown sampler, model or a missing init image.
    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "HTTPException", detail)
    }

    /// 422: the body does not fit the schema (wrong type, value out of range, unknown option).
    pub fn unprocessable(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "RequestValidationError",
            detail,
        )
    }

    /// 503: the queue is full or the server is stopping; the client may retry later.
    pub fn busy(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            detail,
        )
    }

    pub fn internal(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "InternalError", detail)
    }

    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "HTTPException",
            "Incorrect username or password",
        )
    }
}

impl From<Error> for ApiError {
    /// A library error: what the client asked for is wrong (422, 404 for unknown names), or the
    /// server failed (500).
    fn from(error: Error) -> Self {
        let detail = error.to_string();
        match error {
            Error::UnknownScheduler { .. } => {
                Self::not_found(format!("Sampler not found: {detail}"))
            }
            Error::InvalidArgument { .. } | Error::Shape { .. } => Self::unprocessable(detail),
            _ => Self::internal(detail),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({
            "error": self.kind,
            "detail": self.detail,
            "body": "",
            "errors": self.detail,
        });
        let mut response = (self.status, axum::Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"sd serve\""),
            );
        }
        response
    }
}
