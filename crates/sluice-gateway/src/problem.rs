//! One error response for every surface: RFC 9457 `application/problem+json` with the
//! stable code, `Retry-After` where it applies, and the request id so a user can quote it.

use axum::{
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use sluice_core::Error;

/// An error on its way to the client. `show_traceback` is decided by the caller's role
/// (editors of the workspace see Python tracebacks; viewers and BI tools do not).
#[derive(Debug)]
pub struct ApiError {
    pub error: Error,
    pub show_traceback: bool,
}

impl ApiError {
    pub fn for_editor(error: Error, editor: bool) -> Self {
        ApiError {
            error,
            show_traceback: editor,
        }
    }
}

impl From<Error> for ApiError {
    fn from(error: Error) -> Self {
        ApiError {
            error,
            show_traceback: false,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        problem_response(&self.error, self.show_traceback)
    }
}

pub fn problem_response(error: &Error, show_traceback: bool) -> Response {
    let status = StatusCode::from_u16(error.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if status.is_server_error() {
        tracing::warn!(code = %error.code, "{}", error.message);
    }
    let body = error.problem(show_traceback, None).to_string();
    let mut res = (status, body).into_response();
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    if let Some(secs) = error.retry_after {
        h.insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    if status == StatusCode::UNAUTHORIZED {
        // Excel, Tableau and Qlik only send Basic credentials after this challenge.
        h.insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"sluice\", charset=\"UTF-8\""),
        );
    }
    res
}
