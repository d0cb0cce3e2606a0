//! A StackStorm double: st2auth, st2api and st2stream on one in-process axum server, answering
//! as StackStorm does (`shared/reference/st2-protocol.md` §0–§4): status codes, faultstrings,
//! headers, the SSE wire format. Tests drive it through [`St2Double`]'s control methods.
//!
//! ```no_run
//! # async fn demo() {
//! use st2_matrix_testkit::st2::{St2Double, St2Options};
//! use std::time::Duration;
//!
//! let st2 = St2Double::start(St2Options {
//!     heartbeat: Duration::from_millis(200),
//!     ..St2Options::default()
//! })
//! .await;
//! st2.add_user("bot", "pw");
//! st2.load_fixture_aliases();
//! // Point the bridge at st2.url() (it derives /api/v1, /auth/v1, /stream/v1) …
//! let exec = st2.last_execution().expect("the bridge ran a command");
//! assert_eq!(exec.user, "bot");
//! let outcome = st2.finish_execution(&exec.id, "succeeded", serde_json::json!({"stdout": "hi"}));
//! assert_eq!(outcome.event.as_deref(), Some("st2.announcement__matrix"));
//! # }
//! ```
//!
//! Defaults ([`St2Options::default`]): heartbeat 25 s (st2's), token TTL default and maximum
//! 86 400 s, page size 100, route `matrix` with an enabled `st2_matrix.notify_matrix` rule, RBAC on
//! (only users marked admin may list with `limit=-1`), web UI = the double's own URL.
//!
//! Humans in the loop (`inquiries.rs`): [`St2Double::add_ask_alias`] serves a workflow
//! ([`ASK_ACTION`]) that pauses on a `core.ask` child configured by
//! [`St2Double::set_ask_options`]; `/api/v1/inquiries` lists, shows and answers it with
//! st2's checks and texts (the schema check in `inquiry_schema.rs`), and the answer resumes
//! the workflow to its announced end. [`St2Double::start_ask_workflow`],
//! [`St2Double::timeout_inquiry`] and [`St2Double::answer_inquiry`] play what happens
//! outside chat. The stream filters by `events`, `action_refs` and `execution_ids` as st2's
//! listener does (`stream.rs`).
//!
//! Executions move as st2 moves them (`lifecycle.rs`): `requested` → `scheduled` →
//! `running` shortly after the 201 ([`St2Double::set_start_delay`], `None` to hold them for
//! [`St2Double::start_execution`]), then stay `running` until the test finishes them or
//! someone cancels. `control.rs` serves `POST`/`GET /executions`, `DELETE`/`PUT
//! /executions/{id}`, `re_run` and `output` with st2's texts; [`St2Double::control_requests`]
//! says who asked. `workflows.rs` runs st2's `examples.orquesta-sequential`
//! ([`WORKFLOW_ACTION`]) task by task ([`St2Double::advance_workflow`],
//! [`St2Double::set_workflow_step`]).
//!
//! What is simplified, and why:
//! - One listener serves all three services under `/auth/v1`, `/api/v1`, `/stream/v1`; st2's
//!   prefix-less and `/v1`-less variants are not served (the bridge derives the full paths).
//! - Commands are parsed by `st2_alias`, the bridge's port of st2's `ActionAliasFormatParser`,
//!   so a mismatch is st2's 400 and an invalid format st2's 500. `/actionalias/match` and
//!   `/aliasexecution/match_and_execute` are not served (the bridge matches locally).
//! - Templates render with minijinja set up as st2 sets up Jinja2 (see `template.rs`); an
//!   undefined attribute of a loop variable keeps minijinja's message. The default result
//!   template is a byte-exact hand port. JSON objects keep serde_json's sorted key order, where st2 keeps the
//!   action's insertion order, so multi-key results may list keys in another order.
//! - Only the endpoints a ChatOps bridge uses exist; actions exist unless marked missing,
//!   parameters are not cast against action schemas, `immutable_parameters` are injected as
//!   given (no `st2kv` rendering), `trace_context` is `{"id_": null, "trace_tag": null}`.
//! - The stream refusing connections (`set_stream_available(false)`) answers 503 with a JSON
//!   faultstring, standing in for the proxy's error while st2stream is down.
//! - [`St2Double::hold_alias_executions`] holds `POST /aliasexecution` before or after the
//!   execution is recorded, so a test can make the bridge die with a command in StackStorm's
//!   hands; nothing in StackStorm does this, it stands in for a slow API and a crash's timing.

mod aliases;
mod control;
mod executions;
mod http;
mod ids;
mod inquiries;
mod inquiry_schema;
mod lifecycle;
mod post_result;
mod python;
mod state;
mod stream;
mod template;
mod workflows;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use state::{ApiKey, Shared, Token};

pub use inquiries::ASK_ACTION;
pub use workflows::WORKFLOW_ACTION;

/// How the double starts. Everything here can also be changed later through [`St2Double`].
#[derive(Debug, Clone)]
pub struct St2Options {
    /// Idle time after which the stream sends a `\n` heartbeat (st2: `stream.heartbeat`, 25 s).
    pub heartbeat: Duration,
    /// TTL of tokens requested without `ttl` (st2: `auth.token_ttl`, 86 400 s).
    pub default_token_ttl: Duration,
    /// Largest `ttl` accepted; above it `POST /tokens` is a 400.
    pub max_token_ttl: Duration,
    /// `api.max_page_size`: largest `limit` a non-admin may ask for (100).
    pub max_page_size: usize,
    /// The bridge's notification route (`matrix`), the one [`St2Options::notify_rule`] serves.
    pub route: String,
    /// State of the route's notify rule (`st2_matrix.notify_<route>`) at start (enabled).
    pub notify_rule: RuleState,
    /// With RBAC off everyone is an admin and no execution is denied (st2's no-op backend).
    pub rbac: bool,
    /// Base of `execution.web_url`; `None` uses the double's own URL.
    pub webui_url: Option<String>,
}

impl Default for St2Options {
    fn default() -> Self {
        St2Options {
            heartbeat: Duration::from_secs(25),
            default_token_ttl: Duration::from_secs(86_400),
            max_token_ttl: Duration::from_secs(86_400),
            max_page_size: 100,
            route: "matrix".into(),
            notify_rule: RuleState::Enabled,
            rbac: true,
            webui_url: None,
        }
    }
}

/// What kind of credential a request carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialKind {
    /// A user token (`X-Auth-Token`, `?x-auth-token=`, `auth-token` cookie).
    Token,
    /// An API key (`St2-Api-Key`, `?st2-api-key=`).
    ApiKey,
    /// User name and password (HTTP Basic on `POST /auth/v1/tokens`).
    Password,
}

/// Where the credential was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialPlace {
    /// A request header (including `Authorization`).
    Header,
    /// The URL query string: ends up in proxy logs.
    Query,
    /// The `auth-token` cookie st2 sets (a bridge should not send it back).
    Cookie,
}

/// The credential st2 used for a request (the first present, in st2's order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    /// Token, API key or password.
    pub kind: CredentialKind,
    /// Header, query or cookie.
    pub place: CredentialPlace,
    /// The token or key itself; for passwords, the user name (never the password).
    pub value: String,
}

/// One request as the double saw it.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    /// `GET`, `POST`, …
    pub method: String,
    /// Path without query, e.g. `/api/v1/actionalias`.
    pub path: String,
    /// Raw query string, if any.
    pub query: Option<String>,
    /// The credential used, if one was presented (also when it was refused).
    pub credential: Option<Credential>,
    /// The st2 user it authenticated as; `None` when authentication failed or was not needed.
    pub user: Option<String>,
    /// Status code answered.
    pub status: u16,
    /// Request body as text, if any.
    pub body: Option<String>,
    /// The `X-Request-ID` answered.
    pub request_id: String,
}

impl RecordedRequest {
    /// Whether a token or API key appeared in the URL (whether or not it was the one used).
    pub fn credential_in_url(&self) -> bool {
        self.query.as_deref().is_some_and(|q| {
            q.split('&').filter_map(|kv| kv.split('=').next()).any(|k| {
                k.eq_ignore_ascii_case("x-auth-token") || k.eq_ignore_ascii_case("st2-api-key")
            })
        })
    }
}

/// An execution started through `POST /api/v1/aliasexecution`.
#[derive(Debug, Clone)]
pub struct RecordedExecution {
    /// The 24-hex execution id.
    pub id: String,
    /// The request body as sent (`name`, `format`, `command`, `user`, `source_channel`,
    /// `source_context`, `notification_route`, …).
    pub request: Value,
    /// The credential that created it.
    pub credential: Credential,
    /// The st2 user of that credential (`context.user`).
    pub user: String,
    /// The execution as `GET /api/v1/executions/{id}` returns it now.
    pub execution: Value,
    /// When it was requested.
    pub started_at: SystemTime,
}

/// Where [`St2Double::hold_alias_executions`] holds `POST /api/v1/aliasexecution`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AliasHold {
    /// Before anything is recorded: StackStorm has not received the command (as far as
    /// anyone can tell). A request whose client goes away here is dropped with its
    /// connection, so the execution never exists.
    BeforeRecording,
    /// After the execution is recorded (and started), before the 201 answer: StackStorm ran
    /// the command and its answer has not left.
    AfterRecording,
}

/// State of a route's notify rule (`st2_matrix.notify_<route>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuleState {
    /// Not installed: `GET /rules/{ref}` is a 404 and results are never announced.
    Absent,
    /// Installed but disabled: results are never announced.
    Disabled,
    /// Installed and enabled: results are announced.
    Enabled,
}

/// What [`St2Double::finish_execution`] did.
#[derive(Debug, Clone)]
pub struct FinishOutcome {
    /// The execution after the update.
    pub execution: Value,
    /// The SSE event name announced, e.g. `st2.announcement__matrix`.
    pub event: Option<String>,
    /// The announcement payload (`channel`, `message`, `user`, `whisper`, `extra`, `context`).
    pub payload: Option<Value>,
    /// How many stream connections were listening when it was announced.
    pub delivered_to: usize,
    /// Why nothing was announced (missing route, absent/disabled rule, disabled output,
    /// template failure).
    pub skipped: Option<String>,
}

/// The `core.ask` task input of the asking workflow ([`ASK_ACTION`]): st2's inquirer
/// defaults unless set.
#[derive(Debug, Clone, PartialEq)]
pub struct AskOptions {
    /// The response schema as JSON text (text, so that its key order, which st2's
    /// validation messages print, survives); `None`: the inquirer's default, one required
    /// boolean `continue`.
    pub schema: Option<String>,
    /// Users allowed to answer; empty: anyone.
    pub users: Vec<String>,
    /// Roles allowed to answer (shown, never enforced: st2 ignores them with RBAC off).
    pub roles: Vec<String>,
    /// Free routing hint for notification rules (`""`); e.g. a room id or alias.
    pub route: String,
    /// Minutes before st2's garbage collector times the inquiry out (1440).
    pub ttl: i64,
}

impl Default for AskOptions {
    fn default() -> Self {
        AskOptions {
            schema: None,
            users: Vec::new(),
            roles: Vec::new(),
            route: String::new(),
            ttl: 1440,
        }
    }
}

impl AskOptions {
    /// Sets the schema from a JSON value (keys in serde_json's sorted order).
    pub fn schema(mut self, schema: &Value) -> Self {
        self.schema = Some(schema.to_string());
        self
    }

    /// Sets the schema from JSON text, keeping its key order.
    pub fn schema_json(mut self, text: &str) -> Self {
        self.schema = Some(text.to_owned());
        self
    }

    /// Restricts answers to these st2 users.
    pub fn users(mut self, users: &[&str]) -> Self {
        self.users = users.iter().map(|u| (*u).to_owned()).collect();
        self
    }

    /// Sets the route.
    pub fn route(mut self, route: &str) -> Self {
        self.route = route.to_owned();
        self
    }

    /// Sets the TTL in minutes.
    pub fn ttl(mut self, minutes: i64) -> Self {
        self.ttl = minutes;
        self
    }
}

/// Where an inquiry answer came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnswerVia {
    /// `PUT /api/v1/inquiries/{id}` (the bridge).
    Api,
    /// [`St2Double::answer_inquiry`]: the web UI or the CLI of someone else.
    Elsewhere,
}

/// An inquiry answer st2 accepted.
#[derive(Debug, Clone, PartialEq)]
pub struct InquiryAnswer {
    /// The inquiry (the `core.ask` execution) id.
    pub inquiry_id: String,
    /// The st2 user who answered (the owner of the token or API key used).
    pub user: String,
    /// The response as sent (st2 stores it without the schema's defaults).
    pub response: Value,
    /// Through the API or elsewhere.
    pub via: AnswerVia,
}

/// Why st2 refused an answer given through [`St2Double::answer_inquiry`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InquiryRefusal {
    /// The HTTP status the API would answer (400, 403, 404).
    pub status: u16,
    /// The faultstring.
    pub faultstring: String,
}

/// What [`St2Double::start_ask_workflow`] started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartedAsk {
    /// The workflow execution, now `paused`.
    pub workflow_id: String,
    /// The pending `core.ask` child: the inquiry id.
    pub inquiry_id: String,
}

/// What [`St2Double::advance_workflow`] did.
#[derive(Debug, Clone)]
pub enum WorkflowStep {
    /// The next task started and is `running`.
    TaskStarted {
        /// Its Orquesta task name (`task1`…).
        task: String,
        /// Its execution id.
        execution_id: String,
    },
    /// The workflow was `pausing` and is now `paused`.
    Paused,
    /// The workflow ended (`succeeded`, or `canceled` when it was `canceling`).
    Finished(FinishOutcome),
}

/// Which control request a [`ControlRequest`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlKind {
    /// `POST /api/v1/executions`.
    Create,
    /// `DELETE /api/v1/executions/{id}`.
    Cancel,
    /// `PUT /api/v1/executions/{id}`.
    Update,
    /// `POST /api/v1/executions/{id}/re_run`.
    ReRun,
}

/// A request that starts or steers an execution, as the double saw it.
#[derive(Debug, Clone)]
pub struct ControlRequest {
    /// Which one.
    pub kind: ControlKind,
    /// The execution it targets (`None` for [`ControlKind::Create`]).
    pub execution_id: Option<String>,
    /// The st2 user of the credential; `None` if authentication failed.
    pub user: Option<String>,
    /// Status answered.
    pub status: u16,
    /// The JSON body, if any.
    pub body: Option<Value>,
}

struct Running {
    cancel: CancellationToken,
    accept: JoinHandle<()>,
}

/// The running double. Dropping it stops the server.
pub struct St2Double {
    shared: Arc<Shared>,
    addr: SocketAddr,
    running: Mutex<Option<Running>>,
}

impl St2Double {
    /// Binds 127.0.0.1 on a free port and starts serving.
    pub async fn start(options: St2Options) -> St2Double {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0 for the StackStorm double");
        Self::start_on(listener, options)
    }

    /// Starts serving on a listener the caller bound: the `st2-double` binary takes its
    /// address from the command line, where tests want a free port.
    pub fn start_on(listener: TcpListener, options: St2Options) -> St2Double {
        let addr = listener
            .local_addr()
            .expect("local address of a bound listener");
        let shared = Arc::new(Shared::new(&options, format!("http://{addr}")));
        let double = St2Double {
            shared,
            addr,
            running: Mutex::new(None),
        };
        double.serve(listener);
        double
    }

    /// The public base URL, `http://127.0.0.1:PORT` (append `/api/v1`, `/auth/v1`, `/stream/v1`).
    pub fn url(&self) -> String {
        self.shared.base_url.clone()
    }

    /// `url()/api/v1`.
    pub fn api_url(&self) -> String {
        format!("{}/api/v1", self.shared.base_url)
    }

    /// `url()/auth/v1`.
    pub fn auth_url(&self) -> String {
        format!("{}/auth/v1", self.shared.base_url)
    }

    /// `url()/stream/v1`.
    pub fn stream_url(&self) -> String {
        format!("{}/stream/v1", self.shared.base_url)
    }

    /// The listening address (kept across [`St2Double::stop`] / [`St2Double::restart`]).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    // ----- users, keys, tokens ---------------------------------------------------------------

    /// Adds (or updates) a user who can get tokens with this password.
    pub fn add_user(&self, name: &str, password: &str) {
        self.shared
            .state()
            .users
            .entry(name.to_owned())
            .or_default()
            .password = Some(password.to_owned());
    }

    /// Makes a user an RBAC admin (may use `limit=-1` and limits above the page size).
    pub fn set_admin(&self, name: &str, admin: bool) {
        self.shared
            .state()
            .users
            .entry(name.to_owned())
            .or_default()
            .admin = admin;
    }

    /// Denies (or allows again) `action_execute` to a user: alias executions get a 403.
    pub fn deny_execute(&self, name: &str, denied: bool) {
        self.shared
            .state()
            .users
            .entry(name.to_owned())
            .or_default()
            .execute_denied = denied;
    }

    /// Creates an enabled API key owned by `user` and returns it.
    pub fn add_api_key(&self, user: &str) -> String {
        let key = ids::api_key();
        self.add_api_key_value(user, &key);
        key
    }

    /// Registers a given API key value for `user` (handy for fixed config files).
    pub fn add_api_key_value(&self, user: &str, key: &str) {
        let mut state = self.shared.state();
        state.users.entry(user.to_owned()).or_default();
        state.api_keys.retain(|k| k.key != key);
        state.api_keys.push(ApiKey {
            key: key.to_owned(),
            user: user.to_owned(),
            enabled: true,
        });
    }

    /// Enables or disables an API key (disabled: `Unauthorized - API key is disabled.`).
    pub fn set_api_key_enabled(&self, key: &str, enabled: bool) {
        for k in self
            .shared
            .state()
            .api_keys
            .iter_mut()
            .filter(|k| k.key == key)
        {
            k.enabled = enabled;
        }
    }

    /// Issues a token for `user` directly, as if it had logged in.
    pub fn issue_token(&self, user: &str, ttl: Duration) -> String {
        let token = ids::token();
        let mut state = self.shared.state();
        state.users.entry(user.to_owned()).or_default();
        state.tokens.insert(
            token.clone(),
            Token {
                user: user.to_owned(),
                expiry: SystemTime::now() + ttl,
            },
        );
        token
    }

    /// Makes a token expire now (`Unauthorized - Token has expired.` from then on).
    pub fn expire_token(&self, token: &str) {
        if let Some(t) = self.shared.state().tokens.get_mut(token) {
            t.expiry = SystemTime::now();
        }
    }

    /// Forgets a token (`Unauthorized` from then on, as for an unknown token).
    pub fn revoke_token(&self, token: &str) {
        self.shared.state().tokens.remove(token);
    }

    /// Changes the default and maximum TTL of tokens issued by `POST /auth/v1/tokens`.
    pub fn set_token_ttls(&self, default: Duration, max: Duration) {
        let mut state = self.shared.state();
        state.default_ttl = default;
        state.max_ttl = max;
    }

    /// Tokens issued so far (by the endpoint or [`St2Double::issue_token`]) for `user`,
    /// with their expiry.
    pub fn tokens_of(&self, user: &str) -> Vec<(String, SystemTime)> {
        self.shared
            .state()
            .tokens
            .iter()
            .filter(|(_, t)| t.user == user)
            .map(|(k, t)| (k.clone(), t.expiry))
            .collect()
    }

    // ----- aliases ---------------------------------------------------------------------------

    /// The 24 real aliases of `fixtures/st2-aliases-real.json`, completed with `id`, `uid`, …
    pub fn fixture_aliases() -> Vec<Value> {
        let raw: Value = serde_json::from_str(include_str!("../../fixtures/st2-aliases-real.json"))
            .expect("the aliases fixture is valid JSON");
        raw.as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .map(aliases::normalise)
            .collect()
    }

    /// A minimal alias: `pack.name` running `action_ref` with plain string formats.
    pub fn simple_alias(pack: &str, name: &str, action_ref: &str, formats: &[&str]) -> Value {
        serde_json::json!({
            "name": name, "pack": pack, "action_ref": action_ref,
            "description": format!("{pack}.{name}"), "enabled": true, "formats": formats,
        })
    }

    /// Replaces all aliases (each completed with `id`, `uid`, `ref`, `enabled` if missing).
    pub fn set_aliases(&self, aliases: Vec<Value>) {
        self.shared.state().aliases = aliases.into_iter().map(aliases::normalise).collect();
    }

    /// Adds one alias, replacing one with the same ref.
    pub fn add_alias(&self, alias: Value) {
        let alias = aliases::normalise(alias);
        let mut state = self.shared.state();
        state.aliases.retain(|a| a.get("ref") != alias.get("ref"));
        state.aliases.push(alias);
    }

    /// Loads [`St2Double::fixture_aliases`], replacing all aliases.
    pub fn load_fixture_aliases(&self) {
        self.set_aliases(Self::fixture_aliases());
    }

    /// Removes the alias with this ref.
    pub fn remove_alias(&self, alias_ref: &str) {
        self.shared
            .state()
            .aliases
            .retain(|a| a.get("ref").and_then(Value::as_str) != Some(alias_ref));
    }

    /// Enables or disables the alias with this ref.
    pub fn set_alias_enabled(&self, alias_ref: &str, enabled: bool) {
        for a in self.shared.state().aliases.iter_mut() {
            if a.get("ref").and_then(Value::as_str) == Some(alias_ref) {
                a["enabled"] = Value::Bool(enabled);
            }
        }
    }

    /// The aliases as stored (in insertion order).
    pub fn aliases(&self) -> Vec<Value> {
        self.shared.state().aliases.clone()
    }

    // ----- actions and executions ------------------------------------------------------------

    /// Sets the runner of an action (it picks the branch of the default result template).
    /// Known: `core.local` local-shell-cmd, `core.remote` remote-shell-cmd, `core.http`
    /// http-request; anything else python-script.
    pub fn set_action_runner(&self, action_ref: &str, runner: &str) {
        self.shared
            .state()
            .runners
            .insert(action_ref.to_owned(), runner.to_owned());
    }

    /// Makes an action missing (alias executions of it get st2's 404), or present again.
    pub fn set_action_missing(&self, action_ref: &str, missing: bool) {
        let mut state = self.shared.state();
        if missing {
            state.missing_actions.insert(action_ref.to_owned());
        } else {
            state.missing_actions.remove(action_ref);
        }
    }

    /// All executions started so far, oldest first.
    pub fn executions(&self) -> Vec<RecordedExecution> {
        self.shared.state().executions.clone()
    }

    /// One execution by id.
    pub fn execution(&self, id: &str) -> Option<RecordedExecution> {
        self.shared
            .state()
            .executions
            .iter()
            .find(|e| e.id == id)
            .cloned()
    }

    /// The most recent top-level execution (workflow children such as `core.ask` are
    /// skipped: they are never what a command started).
    pub fn last_execution(&self) -> Option<RecordedExecution> {
        self.shared
            .state()
            .executions
            .iter()
            .rev()
            .find(|e| e.execution.get("parent").is_none())
            .cloned()
    }

    /// Finishes an execution: sets `status`, `result`, `end_timestamp`, `elapsed_seconds`,
    /// publishes `st2.execution__update`, and, like the route's notify rule (`st2_matrix.notify_<route>`) running
    /// `chatops.post_result`, announces the formatted result on
    /// `st2.announcement__<route>` unless the rule is absent or disabled, the alias disables
    /// result output, or its template fails. Panics on an unknown id (a test bug).
    pub fn finish_execution(&self, id: &str, status: &str, result: Value) -> FinishOutcome {
        executions::finish(&self.shared, id, status, result)
    }

    /// How long after its request an execution goes `scheduled` → `running` by itself
    /// (20 ms, as st2's scheduler and runner pick it up shortly after the API's 201);
    /// `None`: it stays `requested` until [`St2Double::start_execution`]. Either way nothing
    /// finishes it but the test ([`St2Double::finish_execution`]) or a cancel.
    pub fn set_start_delay(&self, delay: Option<Duration>) {
        self.shared.state().start_delay = delay;
    }

    /// Moves a `requested` (or `delayed`) execution to `scheduled`, then `running`, each an
    /// `st2.execution__update`; a [`WORKFLOW_ACTION`] also starts its first task, the asking
    /// workflow runs to its pending inquiry. Returns the execution. Panics otherwise.
    pub fn start_execution(&self, id: &str) -> Value {
        lifecycle::start(&self.shared, id)
            .unwrap_or_else(|e| panic!("St2Double::start_execution: {e}"))
    }

    /// Appends a chunk of output (`stdout`, `stderr`, `output`) to an execution: served by
    /// `GET /api/v1/executions/{id}/output` and published as
    /// `st2.execution.output__create` (`{id, execution_id, action_ref, runner_ref,
    /// timestamp, output_type, data}`; not in st2stream's default `events`). Returns how
    /// many stream connections were listening.
    pub fn append_output(&self, id: &str, output_type: &str, data: &str) -> usize {
        lifecycle::append_output(&self.shared, id, output_type, data)
    }

    /// The alias for [`WORKFLOW_ACTION`] (st2's `examples.orquesta-sequential`, three
    /// `core.echo` tasks): `examples.orquesta_sequential`, format `greet {{name=Lakshmi}}`.
    pub fn workflow_alias() -> Value {
        serde_json::json!({
            "name": "orquesta_sequential", "pack": "examples", "action_ref": WORKFLOW_ACTION,
            "description": "A basic sequential workflow.",
            "enabled": true, "formats": ["greet {{name=Lakshmi}}"],
        })
    }

    /// Adds [`St2Double::workflow_alias`].
    pub fn add_workflow_alias(&self) {
        self.add_alias(Self::workflow_alias());
    }

    /// Interval at which running [`WORKFLOW_ACTION`] workflows started from now on move by
    /// themselves (one [`St2Double::advance_workflow`] per interval); `None` (the default):
    /// only when the test advances them.
    pub fn set_workflow_step(&self, every: Option<Duration>) {
        self.shared.state().workflow_step = every;
    }

    /// One step of a [`WORKFLOW_ACTION`] workflow: a `requested` one starts (first task
    /// running); otherwise the running task succeeds (its stdout appended as output first)
    /// and the next starts, or the workflow ends `succeeded` with `{"output": {"greeting":
    /// …}}` and is announced like any chat execution. A `canceling` workflow ends `canceled`
    /// after its running task, a `pausing` one `paused`. Panics on a finished or paused
    /// workflow, or another action.
    pub fn advance_workflow(&self, id: &str) -> WorkflowStep {
        workflows::advance(&self.shared, id)
            .unwrap_or_else(|e| panic!("St2Double::advance_workflow: {e}"))
    }

    /// Advances a workflow until it ends; returns how it ended. Panics if it pauses.
    pub fn finish_workflow(&self, id: &str) -> FinishOutcome {
        loop {
            match self.advance_workflow(id) {
                WorkflowStep::Finished(outcome) => return outcome,
                WorkflowStep::Paused => panic!("St2Double::finish_workflow: {id} paused"),
                WorkflowStep::TaskStarted { .. } => {}
            }
        }
    }

    /// The task executions of a workflow, oldest first.
    pub fn workflow_tasks(&self, id: &str) -> Vec<RecordedExecution> {
        self.shared
            .state()
            .executions
            .iter()
            .filter(|e| e.execution["parent"] == id)
            .cloned()
            .collect()
    }

    /// Every request that started or steered an execution over the API (`POST
    /// /executions`, `DELETE`/`PUT /executions/{id}`, `POST /executions/{id}/re_run`),
    /// refused ones included, with the st2 user of its credential.
    pub fn control_requests(&self) -> Vec<ControlRequest> {
        self.requests_to("/api/v1/executions")
            .into_iter()
            .filter_map(|r| {
                let rest = r.path.trim_start_matches("/api/v1/executions");
                let parts: Vec<&str> = rest.split('/').filter(|p| !p.is_empty()).collect();
                let (kind, id) = match (r.method.as_str(), parts.as_slice()) {
                    ("POST", []) => (ControlKind::Create, None),
                    ("DELETE", [id]) => (ControlKind::Cancel, Some(*id)),
                    ("PUT", [id]) => (ControlKind::Update, Some(*id)),
                    ("POST", [id, "re_run"]) => (ControlKind::ReRun, Some(*id)),
                    _ => return None,
                };
                Some(ControlRequest {
                    kind,
                    execution_id: id.map(str::to_owned),
                    user: r.user.clone(),
                    status: r.status,
                    body: r.body.as_deref().and_then(|b| serde_json::from_str(b).ok()),
                })
            })
            .collect()
    }

    // ----- inquiries -------------------------------------------------------------------------

    /// The alias that runs the asking workflow [`ASK_ACTION`] (see `inquiries.rs` for the
    /// workflow): `examples.orquesta_ask_chatops`, format `ask {{question=Continue?}}`.
    pub fn ask_alias() -> Value {
        serde_json::json!({
            "name": "orquesta_ask_chatops", "pack": "examples", "action_ref": ASK_ACTION,
            "description": "Ask a question in chat and wait for the answer (core.ask).",
            "enabled": true, "formats": ["ask {{question=Continue?}}"],
        })
    }

    /// Adds [`St2Double::ask_alias`].
    pub fn add_ask_alias(&self) {
        self.add_alias(Self::ask_alias());
    }

    /// The `core.ask` input of asking workflows started from chat from now on.
    pub fn set_ask_options(&self, options: AskOptions) {
        self.shared.state().ask = options;
    }

    /// Starts the asking workflow as if from a rule or the web UI: no alias, no chatops
    /// context, no notify (so no result announcement). Returns once the workflow is `paused`
    /// and its `core.ask` child `pending`, every status change published on the stream.
    pub fn start_ask_workflow(&self, user: &str, options: AskOptions) -> StartedAsk {
        let workflow_id = inquiries::create_unchatted(&self.shared, user);
        let inquiry_id = inquiries::run_until_pending(&self.shared, &workflow_id, &options);
        StartedAsk {
            workflow_id,
            inquiry_id,
        }
    }

    /// Ids of the pending inquiries, oldest first (what `GET /api/v1/inquiries` lists).
    pub fn pending_inquiries(&self) -> Vec<String> {
        self.shared
            .state()
            .executions
            .iter()
            .filter(|e| {
                e.execution["status"] == "pending"
                    && e.execution.pointer("/runner/name") == Some(&Value::from("inquirer"))
            })
            .map(|e| e.id.clone())
            .collect()
    }

    /// Times a pending inquiry out as st2's garbage collector does past the TTL: the child
    /// `timed_out`, the workflow resumed and `failed` (announced if it came from chat).
    /// Panics unless the inquiry is pending.
    pub fn timeout_inquiry(&self, inquiry_id: &str) -> FinishOutcome {
        inquiries::time_out(&self.shared, inquiry_id)
    }

    /// Answers an inquiry elsewhere (web UI, CLI) as `user`, with the API's checks: `Err`
    /// carries the status and faultstring the API would answer. On success the workflow runs
    /// to its end; the outcome is the workflow's.
    pub fn answer_inquiry(
        &self,
        inquiry_id: &str,
        user: &str,
        response: Value,
    ) -> Result<FinishOutcome, InquiryRefusal> {
        inquiries::answer_elsewhere(&self.shared, inquiry_id, user, &response)
    }

    /// Answers st2 accepted, oldest first, with the st2 user and the way they came.
    pub fn inquiry_answers(&self) -> Vec<InquiryAnswer> {
        self.shared.state().inquiry_answers.clone()
    }

    /// Every `PUT /api/v1/inquiries/{id}` received, refused ones included (`status`,
    /// `body`, and in `user` the st2 user of the credential).
    pub fn inquiry_puts(&self) -> Vec<RecordedRequest> {
        self.requests_to("/api/v1/inquiries/")
            .into_iter()
            .filter(|r| r.method == "PUT")
            .collect()
    }

    /// Publishes any payload as `st2.announcement__<route>` (what `chatops.post_message`
    /// does); returns how many stream connections were listening. Nobody listening: lost.
    pub fn announce(&self, route: &str, payload: Value) -> usize {
        executions::announce(&self.shared, route, payload)
    }

    /// Installs, disables or removes the notify rule of a route (`st2_matrix.notify_<route>`;
    /// `hubot` is stock `chatops.notify`, announcing on route `chatops`).
    pub fn set_notify_rule(&self, route: &str, state: RuleState) {
        self.shared
            .state()
            .notify_rules
            .insert(route.to_owned(), state);
    }

    // ----- stream ----------------------------------------------------------------------------

    /// Changes the heartbeat interval for connections made from now on.
    pub fn set_heartbeat(&self, every: Duration) {
        self.shared.state().heartbeat = every;
    }

    /// Drops every open stream connection mid-stream.
    pub fn cut_streams(&self) {
        self.shared.cut_streams();
    }

    /// `false`: cuts open stream connections and refuses new ones (503) until set back.
    pub fn set_stream_available(&self, available: bool) {
        self.shared.stream_generation.fetch_add(1, Ordering::SeqCst);
        self.shared.state().stream_available = available;
        if !available {
            self.shared.cut_streams();
        }
    }

    /// The stream goes down now and comes back by itself after `duration`.
    pub fn stream_down_for(&self, duration: Duration) {
        self.set_stream_available(false);
        let generation = self.shared.stream_generation.load(Ordering::SeqCst);
        let shared = self.shared.clone();
        tokio::spawn(async move {
            tokio::time::sleep(duration).await;
            // A later availability change by the test wins over this timer.
            if shared.stream_generation.load(Ordering::SeqCst) == generation {
                shared.state().stream_available = true;
            }
        });
    }

    /// How many stream connections are open now.
    pub fn stream_subscribers(&self) -> usize {
        self.shared.subscribers.load(Ordering::SeqCst)
    }

    // ----- fault injection -------------------------------------------------------------------

    /// Every API and auth request answers this status (e.g. 500, 503) with a faultstring of
    /// its reason phrase (`{"faultstring": "Internal Server Error"}`); `None` to stop.
    pub fn set_failure(&self, status: Option<u16>) {
        self.shared.state().faults.always = status;
    }

    /// The next `count` API/auth requests answer `status`, then normal service resumes.
    pub fn fail_next(&self, count: usize, status: u16) {
        self.shared
            .state()
            .faults
            .next
            .extend(std::iter::repeat_n(status, count));
    }

    /// Delay before every request is handled.
    pub fn set_latency(&self, latency: Duration) {
        self.shared.state().faults.latency = latency;
    }

    /// Holds every `POST /api/v1/aliasexecution` at `at` until the hold changes (`None`
    /// releases them): a test makes the bridge die with a command in StackStorm's hands,
    /// before StackStorm records it or before its answer leaves. Other requests are served.
    pub fn hold_alias_executions(&self, at: Option<AliasHold>) {
        self.shared.state().alias_hold = at;
        self.shared.hold_changed.notify_waiters();
    }

    /// Alias execution requests waiting at the hold now (a request whose client went away is
    /// no longer counted).
    pub fn held_alias_executions(&self) -> usize {
        self.shared.state().held
    }

    /// Stops the whole server: the port refuses connections and open connections (streams
    /// included) are dropped. State is kept for [`St2Double::restart`].
    pub async fn stop(&self) {
        let running = self
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(running) = running {
            running.cancel.cancel();
            // Waiting for the accept loop guarantees the listener is closed on return.
            let _ = running.accept.await;
        }
    }

    /// Starts serving again on the same port, with the same state.
    pub async fn restart(&self) {
        if self.is_running() {
            return;
        }
        let listener = TcpListener::bind(self.addr)
            .await
            .expect("re-bind the StackStorm double's port");
        self.serve(listener);
    }

    /// Whether the server is accepting connections.
    pub fn is_running(&self) -> bool {
        self.running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
    }

    // ----- records ---------------------------------------------------------------------------

    /// Every request received so far, oldest first.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.state().requests.clone()
    }

    /// Requests whose path starts with `prefix`, e.g. `/api/v1/aliasexecution`.
    pub fn requests_to(&self, prefix: &str) -> Vec<RecordedRequest> {
        self.shared
            .state()
            .requests
            .iter()
            .filter(|r| r.path.starts_with(prefix))
            .cloned()
            .collect()
    }

    /// Forgets recorded requests.
    pub fn clear_requests(&self) {
        self.shared.state().requests.clear();
    }

    /// Runs the accept loop. Our own loop instead of `axum::serve`, so that stopping can drop
    /// every connection at once (a dead server, not a graceful shutdown).
    fn serve(&self, listener: TcpListener) {
        let cancel = CancellationToken::new();
        let app = http::router(self.shared.clone());
        let stop = cancel.clone();
        let accept = tokio::spawn(async move {
            loop {
                let (socket, _) = tokio::select! {
                    _ = stop.cancelled() => break,
                    accepted = listener.accept() => match accepted {
                        Ok(pair) => pair,
                        // Transient accept errors (e.g. too many files) must not end the loop.
                        Err(_) => continue,
                    },
                };
                let service = TowerToHyperService::new(app.clone());
                let stop = stop.clone();
                tokio::spawn(async move {
                    let conn = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(socket), service);
                    tokio::select! {
                        _ = conn => {}
                        _ = stop.cancelled() => {}
                    }
                });
            }
        });
        *self.running.lock().unwrap_or_else(|e| e.into_inner()) = Some(Running { cancel, accept });
    }
}

impl Drop for St2Double {
    fn drop(&mut self) {
        if let Some(running) = self
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            running.cancel.cancel();
        }
    }
}
