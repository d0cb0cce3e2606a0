//! Us → StackStorm: the API calls the bridge makes, with credentials kept alive.
//!
//! Errors are typed ([`Error`]) and each has a sentence meant for the person in the room:
//! a 401 means StackStorm rejected the bridge's credentials, a 403 or 400 carries StackStorm's own
//! `faultstring`, and a 5xx, timeout or refused connection says StackStorm is unavailable, with
//! the request id to grep its logs for. Nothing here ever makes the bridge exit.

pub mod auth;
pub mod stream;
pub mod types;

use std::{sync::Arc, time::Duration};

use reqwest::{Method, RequestBuilder, Response, StatusCode, header::HeaderMap};
use serde_json::Value;
use url::Url;

use crate::{config::StackStormConfig, crypto::SecretBox, secret::Secret, store::Store};
use auth::BotAuth;
use types::{AliasExecutionRequest, AliasExecutionResult, Execution, Inquiry, OneOrMany};

/// Aliases per page: StackStorm's `max_page_size` for non-admins.
const PAGE_SIZE: usize = 100;

/// Filters for [`St2Client::list_executions`], StackStorm's own (`GET /api/v1/executions`,
/// `SUPPORTED_EXECUTIONS_FILTERS` in st2's `actionexecutions.py`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecutionFilter {
    /// `action`: the action's ref (`action.ref`).
    pub action: Option<String>,
    /// `user`: the StackStorm user who started it (`context.user`).
    pub user: Option<String>,
    /// `timestamp_gt` (unix ms): started after this (`start_timestamp`, StackStorm's clock).
    pub started_after_ms: Option<i64>,
    /// `timestamp_lt` (unix ms): started before this.
    pub started_before_ms: Option<i64>,
}

/// Whether a failed request may have reached StackStorm (decides "was not run" vs "may have run").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Never sent: the connection could not be made.
    NotSent,
    /// Sent, but no (usable) answer came back: it may have been acted on.
    Unknown,
    /// StackStorm answered.
    Answered,
}

/// A failed StackStorm call.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No `[stackstorm]` section.
    #[error("StackStorm is not configured for this bridge")]
    NotConfigured,
    /// 401: the credential was refused.
    #[error("StackStorm rejected the bridge's credentials{}", request_id_suffix(.request_id))]
    Unauthorized {
        /// StackStorm's message (not shown to people: it may name a key hash).
        faultstring: String,
        /// `X-Request-ID`.
        request_id: Option<String>,
    },
    /// 403: RBAC said no.
    #[error("{faultstring}")]
    Forbidden {
        /// StackStorm's message.
        faultstring: String,
        /// `X-Request-ID`.
        request_id: Option<String>,
    },
    /// 400: StackStorm refused the request (e.g. the command does not fit the format).
    #[error("{faultstring}")]
    BadRequest {
        /// StackStorm's message.
        faultstring: String,
        /// `X-Request-ID`.
        request_id: Option<String>,
    },
    /// 404.
    #[error("{faultstring}")]
    NotFound {
        /// StackStorm's message.
        faultstring: String,
        /// `X-Request-ID`.
        request_id: Option<String>,
    },
    /// 5xx, timeout, or no connection.
    #[error("StackStorm is unavailable ({detail}{})", request_id_suffix(.request_id))]
    Unavailable {
        /// What happened.
        detail: String,
        /// `X-Request-ID`, when StackStorm answered.
        request_id: Option<String>,
        /// Whether the request may have been acted on.
        delivery: Delivery,
    },
    /// A 2xx answer that is not what StackStorm sends.
    #[error("StackStorm sent an unexpected answer: {0}")]
    Protocol(String),
}

fn request_id_suffix(request_id: &Option<String>) -> String {
    request_id
        .as_deref()
        .map(|id| format!("; request id {id}"))
        .unwrap_or_default()
}

impl Error {
    /// Whether retrying later could help.
    pub fn is_transient(&self) -> bool {
        matches!(self, Error::Unavailable { .. })
    }

    /// Whether the request may have reached StackStorm and been acted on.
    pub fn delivery(&self) -> Delivery {
        match self {
            Error::Unavailable { delivery, .. } => *delivery,
            Error::NotConfigured => Delivery::NotSent,
            Error::Protocol(_) => Delivery::Unknown,
            _ => Delivery::Answered,
        }
    }
}

/// A credential presented on a request: the bridge's own, or a person's (linked identity).
#[derive(Debug, Clone)]
pub enum Credential {
    /// `St2-Api-Key`.
    ApiKey(Secret),
    /// `X-Auth-Token`.
    Token(Secret),
}

impl Credential {
    fn apply(&self, request: RequestBuilder) -> RequestBuilder {
        // Headers, never the query string: query strings end up in proxy logs.
        match self {
            Credential::ApiKey(key) => request.header("St2-Api-Key", key.expose()),
            Credential::Token(token) => request.header("X-Auth-Token", token.expose()),
        }
    }
}

/// Client for one StackStorm. Cheap to clone.
#[derive(Debug, Clone)]
pub struct St2Client {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    http: reqwest::Client,
    /// For the stream: no whole-request timeout (a stream lives for hours); liveness is
    /// judged by heartbeats instead.
    stream_http: reqwest::Client,
    api: Url,
    stream: Url,
    webui: Url,
    route: String,
    auth: BotAuth,
    auth_base: Url,
    /// Lifetime asked for people's tokens; lowered to StackStorm's maximum when it says so.
    user_ttl_secs: std::sync::atomic::AtomicU64,
}

impl St2Client {
    /// A client for the StackStorm in `config`; stored tokens are sealed with `secrets`.
    pub fn new(
        config: &StackStormConfig,
        base_dir: &std::path::Path,
        store: Store,
        secrets: Arc<SecretBox>,
    ) -> anyhow::Result<Self> {
        crate::tls::install_crypto_provider();
        if !config.verify_tls {
            tracing::warn!(
                "stackstorm.verify_tls is false: StackStorm's certificate is not checked"
            );
        }
        let mut certs = Vec::new();
        if let Some(ca_file) = &config.ca_file {
            let path = if ca_file.is_absolute() {
                ca_file.clone()
            } else {
                base_dir.join(ca_file)
            };
            let pem = std::fs::read(&path)
                .map_err(|e| anyhow::anyhow!("stackstorm.ca_file {}: {e}", path.display()))?;
            certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                anyhow::anyhow!(
                    "stackstorm.ca_file {}: not PEM certificates: {e}",
                    path.display()
                )
            })?;
        }
        // Two clients with the same TLS settings: one for API calls (whole-request timeout), one
        // for the stream, which lives for hours and whose liveness is judged by heartbeats.
        let build = |timeout: Option<Duration>| {
            let mut builder = reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(5).min(config.timeout.get()))
                .user_agent(concat!("st2-matrix/", env!("CARGO_PKG_VERSION")))
                // StackStorm sets an auth-token cookie when a token is sent; never echo it back,
                // and never follow a redirect with credentials.
                .redirect(reqwest::redirect::Policy::none())
                .tls_danger_accept_invalid_certs(!config.verify_tls);
            if let Some(timeout) = timeout {
                builder = builder.timeout(timeout);
            }
            for cert in &certs {
                builder = builder.add_root_certificate(cert.clone());
            }
            builder.build()
        };
        let http = build(Some(config.timeout.get()))?;
        let stream_http = build(None)?;
        let credentials = config.credentials().map_err(anyhow::Error::msg)?;
        let auth = BotAuth::new(
            credentials,
            config.auth_base(),
            config.token_ttl.get(),
            store,
            secrets,
        );
        Ok(Self {
            inner: Arc::new(Inner {
                http,
                stream_http,
                api: config.api_base(),
                stream: config.stream_base(),
                webui: config.webui_base(),
                route: config.route.clone(),
                auth,
                auth_base: config.auth_base(),
                user_ttl_secs: std::sync::atomic::AtomicU64::new(
                    config.token_ttl.get().as_secs().max(1),
                ),
            }),
        })
    }

    /// The notification route executions report back on.
    pub fn route(&self) -> &str {
        &self.inner.route
    }

    /// The bridge's own authentication (kind, token expiry, renewal).
    pub fn auth(&self) -> &BotAuth {
        &self.inner.auth
    }

    /// The HTTP client.
    pub fn http(&self) -> &reqwest::Client {
        &self.inner.http
    }

    /// Opens the stream for `subscription` (`GET …/stream?events=…[&action_refs=…]`),
    /// credentials in headers. A 401 with renewable credentials renews once and retries.
    pub async fn open_stream(
        &self,
        subscription: &stream::Subscription,
    ) -> Result<Response, Error> {
        let mut url = self.inner.stream.clone();
        let path = format!("{}/stream", url.path().trim_end_matches('/'));
        url.set_path(&path);
        {
            let mut query = url.query_pairs_mut();
            query.append_pair("events", &subscription.events.join(","));
            if !subscription.action_refs.is_empty() {
                query.append_pair("action_refs", &subscription.action_refs.join(","));
            }
        }
        let mut retried = false;
        loop {
            let credential = self.inner.auth.credential(&self.inner.http).await?;
            let request = credential
                .apply(self.inner.stream_http.get(url.clone()))
                .header("Accept", "text/event-stream");
            let response = request.send().await.map_err(transport_error)?;
            if response.status() == StatusCode::UNAUTHORIZED
                && !retried
                && let Credential::Token(token) = &credential
                && self
                    .inner
                    .auth
                    .renew_after_rejection(&self.inner.http, token)
                    .await?
            {
                retried = true;
                continue;
            }
            return check(response).await;
        }
    }

    /// Link to an execution: StackStorm's `web_url` when it sent one, else the web UI's
    /// history page.
    pub fn execution_link(&self, execution: &Execution) -> String {
        execution.web_url.clone().unwrap_or_else(|| {
            format!(
                "{}/#/history/{}/general",
                self.inner.webui.as_str().trim_end_matches('/'),
                execution.id
            )
        })
    }

    fn api_url(&self, path: &str) -> Url {
        let mut url = self.inner.api.clone();
        let joined = format!(
            "{}/{}",
            url.path().trim_end_matches('/'),
            path.trim_start_matches('/')
        );
        url.set_path(&joined);
        url
    }

    /// Sends an API request with `credential` (a person's), or the bridge's own. With the
    /// bridge's password credential, a 401 renews the token once and retries.
    async fn send(
        &self,
        method: Method,
        url: Url,
        body: Option<&Value>,
        credential: Option<&Credential>,
    ) -> Result<Response, Error> {
        let mut retried = false;
        loop {
            let used = match credential {
                Some(c) => c.clone(),
                None => self.inner.auth.credential(&self.inner.http).await?,
            };
            let mut request = used.apply(self.inner.http.request(method.clone(), url.clone()));
            if let Some(body) = body {
                request = request.json(body);
            }
            tracing::debug!(method = %method, path = url.path(), "StackStorm request");
            let response = request.send().await.map_err(transport_error)?;
            tracing::debug!(status = response.status().as_u16(), "StackStorm answered");
            if response.status() == StatusCode::UNAUTHORIZED
                && credential.is_none()
                && !retried
                && let Credential::Token(token) = &used
                && self
                    .inner
                    .auth
                    .renew_after_rejection(&self.inner.http, token)
                    .await?
            {
                retried = true;
                continue;
            }
            return check(response).await;
        }
    }

    /// Every alias, paged (`limit=100`, `offset`, until `X-Total-Count`), as StackStorm returns
    /// them (JSON objects), disabled ones included.
    pub async fn list_aliases(&self) -> Result<Vec<Box<serde_json::value::RawValue>>, Error> {
        let mut all = Vec::new();
        loop {
            let mut url = self.api_url("actionalias");
            url.query_pairs_mut()
                .append_pair("limit", &PAGE_SIZE.to_string())
                .append_pair("offset", &all.len().to_string());
            let response = self.send(Method::GET, url, None, None).await?;
            let total =
                header(response.headers(), "x-total-count").and_then(|v| v.parse::<usize>().ok());
            // Raw JSON per alias: the caller parses each into its own small type, instead of a
            // `Value` tree per alias (heavy with ten thousand of them).
            let text = response
                .text()
                .await
                .map_err(|e| Error::Protocol(format!("alias list: {e}")))?;
            let page: Vec<Box<serde_json::value::RawValue>> = serde_json::from_str(&text)
                .map_err(|e| Error::Protocol(format!("alias list: {e}")))?;
            let received = page.len();
            all.extend(page);
            let done = match total {
                Some(total) => all.len() >= total,
                None => received < PAGE_SIZE,
            };
            if done || received == 0 {
                return Ok(all);
            }
        }
    }

    /// The executions that match `filter` and `keep` (given each execution's JSON), every
    /// page of them (`limit=100` and `offset` until `X-Total-Count`), read with the bridge's
    /// credential. Without their `result` (`exclude_attributes`): a listing is for finding
    /// executions, and results can be large. Only those `keep` accepts are kept.
    pub async fn list_executions(
        &self,
        filter: &ExecutionFilter,
        mut keep: impl FnMut(&Value) -> bool,
    ) -> Result<Vec<Execution>, Error> {
        let mut kept = Vec::new();
        let mut offset = 0usize;
        loop {
            let mut url = self.api_url("executions");
            {
                let mut query = url.query_pairs_mut();
                query
                    .append_pair("limit", &PAGE_SIZE.to_string())
                    .append_pair("offset", &offset.to_string())
                    .append_pair("exclude_attributes", "result,trigger_instance");
                if let Some(action) = &filter.action {
                    query.append_pair("action", action);
                }
                if let Some(user) = &filter.user {
                    query.append_pair("user", user);
                }
                if let Some(after) = filter.started_after_ms {
                    query.append_pair("timestamp_gt", &types::format_timestamp_ms(after));
                }
                if let Some(before) = filter.started_before_ms {
                    query.append_pair("timestamp_lt", &types::format_timestamp_ms(before));
                }
            }
            let response = self.send(Method::GET, url, None, None).await?;
            let total =
                header(response.headers(), "x-total-count").and_then(|v| v.parse::<usize>().ok());
            let page: Vec<Value> = read_json(response, "execution list").await?;
            let received = page.len();
            offset += received;
            for execution in page.into_iter().filter(|e| keep(e)) {
                kept.push(
                    serde_json::from_value(execution)
                        .map_err(|e| Error::Protocol(format!("execution list: {e}")))?,
                );
            }
            let done = match total {
                Some(total) => offset >= total,
                None => received < PAGE_SIZE,
            };
            if done || received == 0 {
                return Ok(kept);
            }
        }
    }

    /// Starts an alias execution. Several results for a `match_multiple` format.
    pub async fn execute_alias(
        &self,
        request: &AliasExecutionRequest,
        credential: Option<&Credential>,
    ) -> Result<Vec<AliasExecutionResult>, Error> {
        let body = serde_json::to_value(request).map_err(|e| Error::Protocol(e.to_string()))?;
        let response = self
            .send(
                Method::POST,
                self.api_url("aliasexecution"),
                Some(&body),
                credential,
            )
            .await?;
        let results: OneOrMany<AliasExecutionResult> =
            read_json(response, "alias execution").await?;
        Ok(results.into_vec())
    }

    /// A token for a person's StackStorm username and password (their own identity).
    pub async fn issue_token(
        &self,
        username: &str,
        password: &Secret,
    ) -> Result<(auth::Issued, String), Error> {
        auth::request_token(
            &self.inner.http,
            &self.inner.auth_base,
            username,
            password,
            &self.inner.user_ttl_secs,
        )
        .await
    }

    /// The StackStorm user a credential authenticates as (`GET /api/v1/user`).
    pub async fn current_user(&self, credential: &Credential) -> Result<String, Error> {
        let response = self
            .send(Method::GET, self.api_url("user"), None, Some(credential))
            .await?;
        let body: Value = read_json(response, "user").await?;
        body.get("username")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| Error::Protocol("user: no username".into()))
    }

    /// One execution, read with the bridge's credential.
    pub async fn execution(&self, id: &str) -> Result<Execution, Error> {
        self.execution_as(id, None).await
    }

    /// One execution, read with `credential` (a person's, so RBAC applies) or the bridge's.
    pub async fn execution_as(
        &self,
        id: &str,
        credential: Option<&Credential>,
    ) -> Result<Execution, Error> {
        let response = self
            .send(
                Method::GET,
                self.api_url(&format!("executions/{id}")),
                None,
                credential,
            )
            .await?;
        read_json(response, "execution").await
    }

    /// An execution's output so far (`GET /executions/{id}/output`, stdout and stderr).
    pub async fn execution_output(
        &self,
        id: &str,
        credential: Option<&Credential>,
    ) -> Result<String, Error> {
        let mut url = self.api_url(&format!("executions/{id}/output"));
        url.query_pairs_mut().append_pair("output_type", "all");
        let response = self.send(Method::GET, url, None, credential).await?;
        response
            .text()
            .await
            .map_err(|e| Error::Protocol(format!("execution output: {e}")))
    }

    /// Asks StackStorm to cancel an execution (`DELETE /executions/{id}`). StackStorm answers
    /// 200 even when it cannot (a finished execution): then `Err(BadRequest)` carries its
    /// `faultstring`.
    pub async fn cancel_execution(
        &self,
        id: &str,
        credential: Option<&Credential>,
    ) -> Result<Execution, Error> {
        let response = self
            .send(
                Method::DELETE,
                self.api_url(&format!("executions/{id}")),
                None,
                credential,
            )
            .await?;
        let body: Value = read_json(response, "cancel").await?;
        if let Some(fault) = body.get("faultstring").and_then(Value::as_str) {
            return Err(Error::BadRequest {
                faultstring: fault.to_owned(),
                request_id: None,
            });
        }
        serde_json::from_value(body).map_err(|e| Error::Protocol(format!("cancel: {e}")))
    }

    /// Starts an action (`POST /executions`), e.g. a re-run with changed parameters; `notify`
    /// routes its result to the room like an alias execution's.
    pub async fn create_execution(
        &self,
        body: &Value,
        credential: Option<&Credential>,
    ) -> Result<Execution, Error> {
        let response = self
            .send(
                Method::POST,
                self.api_url("executions"),
                Some(body),
                credential,
            )
            .await?;
        read_json(response, "execution").await
    }

    /// The pending inquiries, at most `limit` (StackStorm's inquiry list has no offset).
    pub async fn inquiries(&self, limit: usize) -> Result<Vec<Inquiry>, Error> {
        let mut url = self.api_url("inquiries");
        url.query_pairs_mut()
            .append_pair("limit", &limit.to_string());
        let response = self.send(Method::GET, url, None, None).await?;
        read_json(response, "inquiry list").await
    }

    /// One inquiry. StackStorm answers 400 when it is no longer pending (timed out, already
    /// answered) and 404 when it does not exist.
    pub async fn inquiry(&self, id: &str) -> Result<Inquiry, Error> {
        let response = self
            .send(
                Method::GET,
                self.api_url(&format!("inquiries/{id}")),
                None,
                None,
            )
            .await?;
        read_json(response, "inquiry").await
    }

    /// Responds to an inquiry with `credential` (the answering person's, so StackStorm's
    /// `users`, roles and RBAC apply to them), or the bridge's own with `None`.
    pub async fn respond_inquiry(
        &self,
        id: &str,
        response: &Value,
        credential: Option<&Credential>,
    ) -> Result<(), Error> {
        let body = serde_json::json!({"id": id, "response": response});
        self.send(
            Method::PUT,
            self.api_url(&format!("inquiries/{id}")),
            Some(&body),
            credential,
        )
        .await?;
        Ok(())
    }

    /// A rule by reference, or `None` when it does not exist.
    pub async fn rule(&self, reference: &str) -> Result<Option<Value>, Error> {
        match self
            .send(
                Method::GET,
                self.api_url(&format!("rules/{reference}")),
                None,
                None,
            )
            .await
        {
            Ok(response) => response
                .json()
                .await
                .map(Some)
                .map_err(|e| Error::Protocol(format!("rule: {e}"))),
            Err(Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// The body of `response` as `T`; `what` names the call in the error.
async fn read_json<T: serde::de::DeserializeOwned>(
    response: Response,
    what: &str,
) -> Result<T, Error> {
    response
        .json()
        .await
        .map_err(|e| Error::Protocol(format!("{what}: {e}")))
}

fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// A transport error, classified by whether the request can have reached StackStorm.
fn transport_error(e: reqwest::Error) -> Error {
    let delivery = if e.is_connect() {
        Delivery::NotSent
    } else {
        Delivery::Unknown
    };
    let detail = if e.is_timeout() {
        "no answer in time".to_owned()
    } else if e.is_connect() {
        "cannot connect".to_owned()
    } else {
        let mut text = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(cause) = source {
            text = format!("{text}: {cause}");
            source = cause.source();
        }
        text
    };
    Error::Unavailable {
        detail,
        request_id: None,
        delivery,
    }
}

/// Maps a non-2xx answer to an [`Error`] with StackStorm's `faultstring`.
async fn check(response: Response) -> Result<Response, Error> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let request_id = header(response.headers(), "x-request-id");
    let text = response.text().await.unwrap_or_default();
    let faultstring = serde_json::from_str::<Value>(&text)
        .ok()
        .and_then(|v| {
            v.get("faultstring")
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
        .unwrap_or_else(|| {
            if text.is_empty() {
                status.to_string()
            } else {
                text.chars().take(300).collect()
            }
        });
    Err(match status {
        StatusCode::UNAUTHORIZED => Error::Unauthorized {
            faultstring,
            request_id,
        },
        StatusCode::FORBIDDEN => Error::Forbidden {
            faultstring,
            request_id,
        },
        StatusCode::NOT_FOUND => Error::NotFound {
            faultstring,
            request_id,
        },
        s if s.is_server_error() => Error::Unavailable {
            detail: format!("HTTP {}", s.as_u16()),
            request_id,
            delivery: Delivery::Answered,
        },
        _ => Error::BadRequest {
            faultstring,
            request_id,
        },
    })
}
