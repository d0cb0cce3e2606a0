//! Errors of the appservice API, answered as Matrix error bodies built with ruma.

use axum::response::{IntoResponse, Response};
use http::StatusCode;
use ruma::api::{
    OutgoingResponse,
    error::{Error as MatrixError, ErrorBody, ErrorKind, StandardErrorBody},
};

/// An error answered to the homeserver.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No `hs_token` was presented.
    #[error("missing hs_token")]
    MissingToken,
    /// The presented `hs_token` is wrong.
    #[error("wrong hs_token")]
    Forbidden,
    /// The body is not JSON.
    #[error("body is not JSON: {0}")]
    NotJson(String),
    /// The body is JSON but not the expected shape.
    #[error("body is not a valid request: {0}")]
    BadJson(String),
    /// The queried user or alias does not exist.
    #[error("{0}")]
    NotFound(String),
    /// No such endpoint.
    #[error("unrecognized request")]
    Unrecognized,
    /// Known endpoint, wrong method.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// Our fault (e.g. the database failed): logged, answered 500 so the homeserver retries.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, kind, message) = match &self {
            ApiError::MissingToken => (
                StatusCode::UNAUTHORIZED,
                ErrorKind::MissingToken,
                "Missing access token".to_owned(),
            ),
            ApiError::Forbidden => (
                StatusCode::FORBIDDEN,
                ErrorKind::Forbidden,
                "Invalid hs_token".to_owned(),
            ),
            ApiError::NotJson(m) => (StatusCode::BAD_REQUEST, ErrorKind::NotJson, m.clone()),
            ApiError::BadJson(m) => (StatusCode::BAD_REQUEST, ErrorKind::BadJson, m.clone()),
            ApiError::NotFound(m) => (StatusCode::NOT_FOUND, ErrorKind::NotFound, m.clone()),
            ApiError::Unrecognized => (
                StatusCode::NOT_FOUND,
                ErrorKind::Unrecognized,
                "Unrecognized request".to_owned(),
            ),
            ApiError::MethodNotAllowed => (
                StatusCode::METHOD_NOT_ALLOWED,
                ErrorKind::Unrecognized,
                "Method not allowed".to_owned(),
            ),
            ApiError::Internal(e) => {
                tracing::error!(error.message = %e, error.cause_chain = ?e, "appservice request failed");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    ErrorKind::Unknown,
                    "Internal error, see the bridge's logs".to_owned(),
                )
            }
        };
        let error = MatrixError::new(
            status,
            ErrorBody::Standard(StandardErrorBody::new(kind, message)),
        );
        match error.try_into_http_response::<Vec<u8>>() {
            Ok(response) => response.map(axum::body::Body::from),
            Err(_) => status.into_response(),
        }
    }
}

/// Serialises a ruma response type into an axum response.
pub fn ruma_response<T: OutgoingResponse>(response: T) -> Response {
    match response.try_into_http_response::<Vec<u8>>() {
        Ok(response) => response.map(axum::body::Body::from),
        Err(e) => {
            ApiError::Internal(anyhow::anyhow!("cannot serialise response: {e}")).into_response()
        }
    }
}
