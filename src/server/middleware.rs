//! What wraps every route: HTTP basic auth (`--api-auth`, compared in constant time) and one
//! structured log line per request, with the response counted for `/metrics`.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use subtle::ConstantTimeEq;

use super::error::ApiError;
use super::routes::AppState;
use super::worker::log_event;

/// `user:password` as `--api-auth` gave it.
#[derive(Clone)]
pub struct Credentials(pub Arc<str>);

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Credentials(…)")
    }
}

impl Credentials {
    /// Whether an `Authorization` header carries these credentials. The comparison takes the
    /// same time wherever the bytes differ (only the length can be told apart).
    pub fn admit(&self, header: Option<&str>) -> bool {
        let Some(encoded) = header.and_then(|h| h.strip_prefix("Basic ")) else {
            return false;
        };
        let Ok(given) = base64::engine::general_purpose::STANDARD.decode(encoded.trim()) else {
            return false;
        };
        given.ct_eq(self.0.as_bytes()).into()
    }
}

/// Refuse a request without the right basic-auth credentials (401 with a `WWW-Authenticate`
/// challenge, as A1111 answers).
pub async fn require_auth(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    if let Some(credentials) = &state.credentials {
        let header = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        if !credentials.admit(header) {
            return ApiError::unauthorized().into_response();
        }
    }
    next.run(request).await
}

/// Log each request as one JSON line (method, path, status, milliseconds) and count it.
pub async fn log_requests(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let method = request.method().to_string();
    let path = request.uri().path().to_string();
    let response = next.run(request).await;
    let status = response.status().as_u16();
    state.metrics.count_response(status);
    log_event(&format!(
        r#""method":"{method}","path":{},"status":{status},"ms":{:.1}"#,
        serde_json::Value::from(path),
        started.elapsed().as_secs_f64() * 1000.0
    ));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_credentials_are_admitted() {
        let credentials = Credentials("user:pa:ss".into());
        let basic = |text: &str| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(text)
            )
        };
        assert!(credentials.admit(Some(&basic("user:pa:ss"))));
        for wrong in ["user:pa:sS", "user:pa:ss ", "user:", "", "user:pa:s"] {
            assert!(!credentials.admit(Some(&basic(wrong))), "{wrong}");
        }
        assert!(!credentials.admit(None));
        assert!(!credentials.admit(Some("Bearer x")));
        assert!(!credentials.admit(Some("Basic !!!")));
    }
}
