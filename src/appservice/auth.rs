//! The `hs_token` check on every appservice route.
//!
//! Synapse sends `Authorization: Bearer <hs_token>`; conduwuit-family servers also add the
//! legacy `?access_token=`. Either is accepted; when both are present both must match. The
//! comparison is constant-time so the token cannot be guessed byte by byte from timings.

use std::sync::Arc;

use axum::{
    extract::{Request, State},
    middleware::Next,
    response::Response,
};

use super::error::ApiError;
use crate::state::AppState;

/// Rejects requests without the right `hs_token`: missing → 401 `M_MISSING_TOKEN`, wrong →
/// 403 `M_FORBIDDEN`.
pub async fn require_hs_token(
    State(bridge): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let header = request.headers().get(http::header::AUTHORIZATION).map(|v| {
        v.to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
    });
    let query = request.uri().query().and_then(access_token_param);
    let presented: Vec<&str> = match (header, query.as_deref()) {
        (None, None) => return Err(ApiError::MissingToken),
        // An Authorization header that is not a Bearer token is a wrong credential, not none.
        (Some(None), _) => return Err(ApiError::Forbidden),
        (Some(Some(h)), None) => vec![h],
        (None, Some(q)) => vec![q],
        (Some(Some(h)), Some(q)) => vec![h, q],
    };
    if presented.iter().all(|token| bridge.hs_token.matches(token)) {
        Ok(next.run(request).await)
    } else {
        tracing::warn!(path = %request.uri().path(), "rejected a request with a wrong hs_token");
        Err(ApiError::Forbidden)
    }
}

fn access_token_param(query: &str) -> Option<String> {
    url::form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "access_token")
        .map(|(_, v)| v.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_token_is_read_from_the_query() {
        assert_eq!(
            access_token_param("a=1&access_token=x%20y").as_deref(),
            Some("x y")
        );
        assert_eq!(access_token_param("a=1"), None);
    }
}
