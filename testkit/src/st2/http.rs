//! The HTTP face of the double: routes, the error shape, request ids, fault injection,
//! credential checks and the request record; plus st2auth's two endpoints.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::body::{Body, Bytes};
use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use base64::Engine as _;
use serde_json::{Value, json};

use super::state::{Shared, Token};
use super::{
    Credential, CredentialKind, CredentialPlace, RecordedRequest, aliases, control, executions,
    ids, inquiries, stream,
};

/// A StackStorm error response: a status and `{"faultstring": …}`.
#[derive(Debug)]
pub(crate) struct Fault {
    pub status: StatusCode,
    pub message: String,
}

impl Fault {
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Fault {
            status,
            message: message.into(),
        }
    }
    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Fault::new(StatusCode::BAD_REQUEST, message)
    }
    pub(crate) fn not_found(message: impl Into<String>) -> Self {
        Fault::new(StatusCode::NOT_FOUND, message)
    }
    pub(crate) fn forbidden(message: impl Into<String>) -> Self {
        Fault::new(StatusCode::FORBIDDEN, message)
    }
    /// st2 maps every unexpected exception to this exact text.
    pub(crate) fn internal() -> Self {
        Fault::new(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error")
    }
    /// The status's reason phrase as faultstring, for injected failures.
    pub(crate) fn status(code: u16) -> Self {
        let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        Fault::new(status, status.canonical_reason().unwrap_or("Error"))
    }
}

impl IntoResponse for Fault {
    fn into_response(self) -> Response {
        (self.status, Json(json!({ "faultstring": self.message }))).into_response()
    }
}

/// The authenticated caller, put into request extensions by [`authenticate`].
#[derive(Debug, Clone)]
pub(crate) struct Caller {
    pub user: String,
    pub credential: Credential,
}

/// What inner layers learned about a request, read back by [`front`] for the record.
#[derive(Debug, Default)]
pub(crate) struct NoteInner {
    pub credential: Option<Credential>,
    pub user: Option<String>,
    pub set_cookie: Option<String>,
}

/// Shared slot for [`NoteInner`].
#[derive(Debug, Clone, Default)]
pub(crate) struct Note(pub Arc<Mutex<NoteInner>>);

impl Note {
    pub(crate) fn with<R>(&self, f: impl FnOnce(&mut NoteInner) -> R) -> R {
        f(&mut self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// All routes of the three services on one listener.
pub(crate) fn router(shared: Arc<Shared>) -> Router {
    let api = Router::new()
        .route("/api/v1/actionalias", get(aliases::list))
        .route("/api/v1/actionalias/help", get(aliases::help))
        .route("/api/v1/actionalias/{ref_or_id}", get(aliases::get_one))
        .route("/api/v1/aliasexecution", post(executions::create))
        .route(
            "/api/v1/executions",
            get(control::list).post(control::create),
        )
        .route(
            "/api/v1/executions/{id}",
            get(executions::get_one)
                .put(control::put)
                .delete(control::cancel),
        )
        .route("/api/v1/executions/{id}/output", get(control::output))
        .route("/api/v1/executions/{id}/re_run", post(control::re_run))
        .route("/api/v1/inquiries", get(inquiries::list))
        .route(
            "/api/v1/inquiries/{id}",
            get(inquiries::get_one).put(inquiries::put),
        )
        .route("/api/v1/rules/{ref_or_id}", get(executions::get_rule))
        .route("/api/v1/user", get(current_user))
        .route("/stream/v1/stream", get(stream::stream))
        .route_layer(middleware::from_fn_with_state(shared.clone(), authenticate));
    Router::new()
        .route("/auth/v1/tokens", post(create_token))
        .route("/auth/v1/tokens/validate", post(validate_token))
        .merge(api)
        // st2's router answers an unknown path or method with the same 404.
        .fallback(not_found)
        .method_not_allowed_fallback(not_found)
        .layer(middleware::from_fn_with_state(shared.clone(), front))
        .with_state(shared)
}

/// `GET /api/v1/user` (st2 ≥ 2.6): who the credential authenticates as.
async fn current_user(
    State(shared): State<Arc<Shared>>,
    Extension(caller): Extension<Caller>,
) -> Json<serde_json::Value> {
    let state = shared.state();
    let method = match caller.credential.kind {
        crate::st2::CredentialKind::ApiKey => "api_key",
        _ => "authentication token",
    };
    Json(serde_json::json!({
        "username": caller.user,
        "authentication": {"method": method, "location": "header"},
        "rbac": {"enabled": state.rbac, "roles": if state.is_admin(&caller.user) { vec!["admin"] } else { vec![] }, "is_admin": state.is_admin(&caller.user)},
    }))
}

async fn not_found() -> Fault {
    Fault::not_found("The resource could not be found.")
}

/// Outermost layer: latency, injected failures, `X-Request-ID`, `Set-Cookie`, the record.
async fn front(State(shared): State<Arc<Shared>>, req: Request, next: Next) -> Response {
    let request_id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map_or_else(ids::request_id, str::to_owned);
    let method = req.method().to_string();
    let path = req.uri().path().to_owned();
    let query = req.uri().query().map(str::to_owned);
    let faultable = path.starts_with("/api/") || path.starts_with("/auth/");
    let (latency, fault) = {
        let mut state = shared.state();
        let fault = if faultable { state.take_fault() } else { None };
        (state.faults.latency, fault)
    };
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let note = Note::default();
    let (parts, body) = req.into_parts();
    // Bodies here are small JSON documents; 1 MiB is far above anything a test sends.
    let bytes = axum::body::to_bytes(body, 1 << 20)
        .await
        .unwrap_or_default();
    let body_text = (!bytes.is_empty()).then(|| String::from_utf8_lossy(&bytes).into_owned());
    let mut response = match fault {
        Some(code) => Fault::status(code).into_response(),
        None => {
            let mut req = Request::from_parts(parts, Body::from(bytes));
            req.extensions_mut().insert(note.clone());
            next.run(req).await
        }
    };
    let (credential, user, cookie) =
        note.with(|n| (n.credential.take(), n.user.take(), n.set_cookie.take()));
    let headers = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        headers.insert("x-request-id", v);
    }
    if let Some(Ok(v)) = cookie.map(|c| HeaderValue::from_str(&c)) {
        headers.append(header::SET_COOKIE, v);
    }
    shared.state().requests.push(RecordedRequest {
        method,
        path,
        query,
        credential,
        user,
        status: response.status().as_u16(),
        body: body_text,
        request_id,
    });
    response
}

/// Finds the credential st2 would use: the first present of header token, header key, query
/// token, query key, cookie token.
fn find_credential(headers: &HeaderMap, query: &HashMap<String, String>) -> Option<Credential> {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
    };
    let param = |name: &str| query.get(name).filter(|v| !v.is_empty()).cloned();
    let cookie = || {
        headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|kv| kv.trim().split_once('='))
            .find(|(k, v)| *k == "auth-token" && !v.is_empty())
            .map(|(_, v)| v.to_owned())
    };
    let make = |kind, place, value| Credential { kind, place, value };
    use CredentialKind::{ApiKey, Token};
    use CredentialPlace::{Cookie, Header, Query as InQuery};
    header("x-auth-token")
        .map(|v| make(Token, Header, v))
        .or_else(|| header("st2-api-key").map(|v| make(ApiKey, Header, v)))
        .or_else(|| param("x-auth-token").map(|v| make(Token, InQuery, v)))
        .or_else(|| param("st2-api-key").map(|v| make(ApiKey, InQuery, v)))
        .or_else(|| cookie().map(|v| make(Token, Cookie, v)))
}

/// Route layer for API and stream routes: 401 unless a valid credential is present.
async fn authenticate(State(shared): State<Arc<Shared>>, mut req: Request, next: Next) -> Response {
    let query: HashMap<String, String> = Query::try_from_uri(req.uri())
        .map(|q| q.0)
        .unwrap_or_default();
    let note = req.extensions().get::<Note>().cloned().unwrap_or_default();
    let Some(credential) = find_credential(req.headers(), &query) else {
        return Fault::new(
            StatusCode::UNAUTHORIZED,
            "Unauthorized - One of Token or API key required.",
        )
        .into_response();
    };
    let user = match shared.authenticate(&credential) {
        Ok(user) => user,
        Err(message) => {
            note.with(|n| n.credential = Some(credential));
            return Fault::new(StatusCode::UNAUTHORIZED, message).into_response();
        }
    };
    // st2 sets the `auth-token` cookie for tokens that came by header or query.
    if credential.kind == CredentialKind::Token && credential.place != CredentialPlace::Cookie {
        let expiry = shared
            .state()
            .tokens
            .get(&credential.value)
            .map(|t| t.expiry);
        if let Some(expiry) = expiry {
            let max_age = expiry
                .duration_since(SystemTime::now())
                .unwrap_or_default()
                .as_secs();
            let cookie = format!(
                "auth-token={}; expires={}; HttpOnly; Max-Age={max_age}; Path=/",
                credential.value,
                ids::cookie_date(expiry)
            );
            note.with(|n| n.set_cookie = Some(cookie));
        }
    }
    note.with(|n| {
        n.credential = Some(credential.clone());
        n.user = Some(user.clone());
    });
    req.extensions_mut().insert(Caller { user, credential });
    next.run(req).await
}

/// Parses a JSON body, with st2's message when it is not JSON.
pub(crate) fn parse_body(bytes: &Bytes) -> Result<Option<Value>, Fault> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    serde_json::from_slice(bytes)
        .map(Some)
        .map_err(|e| Fault::bad_request(format!("Failed to parse request body: {e}")))
}

/// `POST /auth/v1/tokens`: Basic credentials in, a token out.
async fn create_token(
    State(shared): State<Arc<Shared>>,
    Extension(note): Extension<Note>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Fault> {
    // The body schema is checked by st2's router before the handler authenticates.
    let ttl = match parse_body(&body)? {
        None => None,
        Some(Value::Object(map)) => match map.get("ttl") {
            None => None,
            Some(Value::Number(n)) if n.is_i64() || n.is_u64() => {
                let ttl = n.as_i64().unwrap_or(i64::MAX);
                if ttl < 1 {
                    return Err(Fault::bad_request(format!(
                        "{ttl} is less than the minimum of 1"
                    )));
                }
                Some(ttl as u64)
            }
            Some(other) => {
                return Err(Fault::bad_request(format!(
                    "{} is not of type 'integer'",
                    super::python::py_repr(other)
                )));
            }
        },
        Some(other) => {
            return Err(Fault::bad_request(format!(
                "{} is not of type 'object'",
                super::python::py_repr(&other)
            )));
        }
    };
    let invalid = || Fault::new(StatusCode::UNAUTHORIZED, "Invalid or missing credentials");
    let basic = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("basic"))
        .and_then(|(_, b64)| {
            base64::engine::general_purpose::STANDARD
                .decode(b64.trim())
                .ok()
        })
        .and_then(|raw| String::from_utf8(raw).ok())
        .ok_or_else(invalid)?;
    let (username, password) = basic.split_once(':').ok_or_else(invalid)?;
    note.with(|n| {
        n.credential = Some(Credential {
            kind: CredentialKind::Password,
            place: CredentialPlace::Header,
            value: username.to_owned(),
        });
    });
    let mut state = shared.state();
    let known = state
        .users
        .get(username)
        .and_then(|u| u.password.as_deref())
        .is_some_and(|p| p == password);
    if !known {
        return Err(invalid());
    }
    note.with(|n| n.user = Some(username.to_owned()));
    let max = state.max_ttl.as_secs();
    let ttl = match ttl {
        Some(t) if t > max => {
            return Err(Fault::bad_request(format!(
                "TTL specified {t} is greater than max allowed {max}."
            )));
        }
        Some(t) => Duration::from_secs(t),
        None => state.default_ttl,
    };
    let token = ids::token();
    let expiry = SystemTime::now() + ttl;
    state.tokens.insert(
        token.clone(),
        Token {
            user: username.to_owned(),
            expiry,
        },
    );
    drop(state);
    let body = json!({
        "user": username, "token": token, "expiry": ids::iso8601(expiry),
        "id": ids::object_id(), "metadata": {},
    });
    let mut response = (StatusCode::CREATED, Json(body)).into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("{}/api", shared.base_url)) {
        response.headers_mut().insert("x-api-url", v);
    }
    Ok(response)
}

/// `POST /auth/v1/tokens/validate`: `{"valid": bool}`.
async fn validate_token(
    State(shared): State<Arc<Shared>>,
    body: Bytes,
) -> Result<Json<Value>, Fault> {
    let token = parse_body(&body)?
        .as_ref()
        .and_then(|b| b.get("token"))
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
        .ok_or_else(|| Fault::bad_request("Token is not provided."))?;
    let state = shared.state();
    let valid = state
        .tokens
        .get(&token)
        .is_some_and(|t| t.expiry > SystemTime::now());
    Ok(Json(json!({ "valid": valid })))
}

/// Reads an integer query parameter with st2's validation message.
pub(crate) fn int_param(query: &HashMap<String, String>, name: &str) -> Result<Option<i64>, Fault> {
    let Some(raw) = query.get(name) else {
        return Ok(None);
    };
    let digits = raw.strip_prefix('-').unwrap_or(raw);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Fault::bad_request(format!(
            "Parameter \"{name}\" is not of type integer"
        )));
    }
    raw.parse::<i64>()
        .map(Some)
        .map_err(|_| Fault::bad_request(format!("Parameter \"{name}\" is not of type integer")))
}
