//! Everything the double remembers: users, keys, tokens, aliases, executions, switches, and
//! the record of requests. One `std::sync::Mutex` guards it: no handler awaits while holding
//! it, so a blocking mutex is simpler and cannot deadlock across `.await`.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use serde_json::Value;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use super::inquiry_schema::Py;
use super::{
    AliasHold, AskOptions, Credential, InquiryAnswer, RecordedExecution, RecordedRequest,
    RuleState, St2Options,
};

/// A st2 user.
#[derive(Debug, Default, Clone)]
pub(crate) struct User {
    pub password: Option<String>,
    pub admin: bool,
    pub execute_denied: bool,
}

/// An API key (st2 keeps only the hash; the double keeps the key to find it by value).
#[derive(Debug, Clone)]
pub(crate) struct ApiKey {
    pub key: String,
    pub user: String,
    pub enabled: bool,
}

/// An issued token.
#[derive(Debug, Clone)]
pub(crate) struct Token {
    pub user: String,
    pub expiry: SystemTime,
}

/// One event on the st2 message bus, as the stream service would forward it.
#[derive(Debug, Clone)]
pub(crate) struct BusEvent {
    /// SSE event name, e.g. `st2.announcement__matrix`.
    pub name: String,
    /// The `data:` line: compact JSON.
    pub data: String,
    /// What st2stream's `action_refs` filter reads: `action.ref` of an execution, `None`
    /// for announcements (so any `action_refs` filter drops them).
    pub action_ref: Option<String>,
    /// What the `execution_ids` filter reads: an execution's id, `None` for announcements.
    pub execution_id: Option<String>,
    /// An execution's status, for `end_event`/`end_execution_id`.
    pub status: Option<String>,
}

/// What the fault switches say about the next API/auth request.
#[derive(Debug, Default, Clone)]
pub(crate) struct Faults {
    pub always: Option<u16>,
    pub next: Vec<u16>,
    pub latency: Duration,
}

/// Mutable state behind the lock.
pub(crate) struct State {
    pub users: HashMap<String, User>,
    pub api_keys: Vec<ApiKey>,
    pub tokens: HashMap<String, Token>,
    pub default_ttl: Duration,
    pub max_ttl: Duration,
    pub max_page_size: i64,
    pub rbac: bool,
    pub aliases: Vec<Value>,
    pub executions: Vec<RecordedExecution>,
    pub notify_rules: HashMap<String, RuleState>,
    pub runners: HashMap<String, String>,
    pub missing_actions: HashSet<String>,
    pub requests: Vec<RecordedRequest>,
    pub faults: Faults,
    pub heartbeat: Duration,
    pub stream_available: bool,
    /// The `core.ask` input of [`super::inquiries::ASK_ACTION`] run from chat.
    pub ask: AskOptions,
    /// Each inquiry's schema with its key order, for st2's error text.
    pub inquiry_schemas: HashMap<String, Py>,
    /// Inquiries answered, oldest first.
    pub inquiry_answers: Vec<InquiryAnswer>,
    /// How long after its request an execution starts running; `None`: when the test says.
    pub start_delay: Option<Duration>,
    /// Interval between workflow steps; `None`: when the test says.
    pub workflow_step: Option<Duration>,
    /// Output chunks by execution id.
    pub outputs: HashMap<String, Vec<super::lifecycle::OutputChunk>>,
    /// Running workflows of [`super::workflows::WORKFLOW_ACTION`] by execution id.
    pub workflows: HashMap<String, super::workflows::WorkflowRun>,
    /// Where alias executions are held, if they are ([`super::St2Double::hold_alias_executions`]).
    pub alias_hold: Option<AliasHold>,
    /// Alias execution requests waiting at the hold now.
    pub held: usize,
}

impl State {
    pub(crate) fn new(options: &St2Options) -> Self {
        let mut notify_rules = HashMap::new();
        // Stock st2 ships `chatops.notify` (route hubot) and `chatops.notify-errbot`.
        notify_rules.insert("hubot".to_owned(), RuleState::Enabled);
        notify_rules.insert("errbot".to_owned(), RuleState::Enabled);
        notify_rules.insert(options.route.clone(), options.notify_rule);
        let runners = [
            ("core.local", "local-shell-cmd"),
            ("core.local_sudo", "local-shell-cmd"),
            ("core.remote", "remote-shell-cmd"),
            ("core.remote_sudo", "remote-shell-cmd"),
            ("core.http", "http-request"),
            ("core.noop", "noop"),
            ("core.echo", "local-shell-cmd"),
            ("core.ask", "inquirer"),
            (super::inquiries::ASK_ACTION, "orquesta"),
            (super::workflows::WORKFLOW_ACTION, "orquesta"),
        ]
        .into_iter()
        .map(|(a, r)| (a.to_owned(), r.to_owned()))
        .collect();
        State {
            users: HashMap::new(),
            api_keys: Vec::new(),
            tokens: HashMap::new(),
            default_ttl: options.default_token_ttl,
            max_ttl: options.max_token_ttl,
            max_page_size: options.max_page_size as i64,
            rbac: options.rbac,
            aliases: Vec::new(),
            executions: Vec::new(),
            notify_rules,
            runners,
            missing_actions: HashSet::new(),
            requests: Vec::new(),
            faults: Faults::default(),
            heartbeat: options.heartbeat,
            stream_available: true,
            ask: AskOptions::default(),
            inquiry_schemas: HashMap::new(),
            inquiry_answers: Vec::new(),
            start_delay: Some(Duration::from_millis(20)),
            workflow_step: None,
            outputs: HashMap::new(),
            workflows: HashMap::new(),
            alias_hold: None,
            held: 0,
        }
    }

    /// With RBAC off every user is an admin (st2's no-op RBAC backend says so).
    pub(crate) fn is_admin(&self, user: &str) -> bool {
        !self.rbac || self.users.get(user).is_some_and(|u| u.admin)
    }

    /// Runner of an action: configured, else a guess from the ref.
    pub(crate) fn runner_for(&self, action_ref: &str) -> String {
        self.runners
            .get(action_ref)
            .cloned()
            .unwrap_or_else(|| "python-script".to_owned())
    }

    /// The fault to inject into the next API/auth request, if any.
    pub(crate) fn take_fault(&mut self) -> Option<u16> {
        if !self.faults.next.is_empty() {
            return Some(self.faults.next.remove(0));
        }
        self.faults.always
    }
}

/// State shared by the server tasks and the test's handle.
pub(crate) struct Shared {
    state: Mutex<State>,
    /// The message bus: every stream connection subscribes.
    pub events: broadcast::Sender<BusEvent>,
    /// Public base URL, `http://127.0.0.1:PORT`.
    pub base_url: String,
    /// Base of `execution.web_url`.
    pub webui_url: String,
    /// Cancelled to cut every current stream connection; replaced by a fresh one after.
    pub stream_cut: Mutex<CancellationToken>,
    /// Open stream connections.
    pub subscribers: AtomicUsize,
    /// Bumped by every availability change, so a timed "down for" does not undo a later one.
    pub stream_generation: AtomicU64,
    /// The filters of the open stream connections, by connection number: what a published
    /// event reaches is counted through them.
    pub filters: Mutex<std::collections::HashMap<u64, super::stream::Filter>>,
    /// Numbers stream connections.
    pub next_connection: AtomicU64,
    /// Woken when the alias execution hold changes, so held requests look again.
    pub hold_changed: tokio::sync::Notify,
}

impl Shared {
    pub(crate) fn new(options: &St2Options, base_url: String) -> Self {
        let (events, _) = broadcast::channel(1024);
        let webui_url = options
            .webui_url
            .clone()
            .unwrap_or_else(|| base_url.clone())
            .trim_end_matches('/')
            .to_owned();
        Shared {
            state: Mutex::new(State::new(options)),
            events,
            base_url,
            webui_url,
            stream_cut: Mutex::new(CancellationToken::new()),
            subscribers: AtomicUsize::new(0),
            stream_generation: AtomicU64::new(0),
            filters: Mutex::new(Default::default()),
            next_connection: AtomicU64::new(0),
            hold_changed: tokio::sync::Notify::new(),
        }
    }

    /// Waits while alias executions are held at `at`, counted in [`State::held`] meanwhile
    /// (also when the request is dropped there: its client went away).
    pub(crate) async fn wait_at_hold(&self, at: AliasHold) {
        struct Held<'a>(&'a Shared);
        impl Drop for Held<'_> {
            fn drop(&mut self) {
                self.0.state().held -= 1;
            }
        }
        let mut counted: Option<Held<'_>> = None;
        loop {
            let changed = self.hold_changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            {
                let mut state = self.state();
                if state.alias_hold != Some(at) {
                    return;
                }
                if counted.is_none() {
                    state.held += 1;
                    counted = Some(Held(self));
                }
            }
            changed.await;
        }
    }

    /// Locks the state. A panic while locked (a failed assertion in a test callback) must not
    /// wedge the double for the rest of the test, so poisoning is ignored.
    pub(crate) fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Publishes on the bus; returns how many stream connections it reached (their filters
    /// let it through).
    pub(crate) fn publish(&self, name: String, data: &Value) -> usize {
        let event = BusEvent {
            name,
            data: data.to_string(),
            action_ref: None,
            execution_id: None,
            status: None,
        };
        self.send(event)
    }

    /// Sends `event` to every connection; returns how many of them its filters let it reach
    /// (the events another connection subscribed to are not "delivered" to this one).
    fn send(&self, event: BusEvent) -> usize {
        let reached = self
            .filters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .filter(|f| f.passes(&event))
            .count();
        // No receivers is not an error: like st2, an event nobody listens to is simply lost.
        match self.events.send(event) {
            Ok(_) => reached,
            Err(_) => 0,
        }
    }

    /// Publishes an execution event (`st2.execution__create`/`__update`) with the execution
    /// as `ActionExecutionAPI.from_model` makes it (falsy top-level fields dropped).
    pub(crate) fn publish_execution(&self, name: &str, execution: &Value) -> usize {
        let text = |k: &str| {
            execution
                .pointer(k)
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        let event = BusEvent {
            name: name.to_owned(),
            data: super::inquiries::api_view(execution).to_string(),
            action_ref: text("/action/ref"),
            execution_id: text("/id"),
            status: text("/status"),
        };
        self.send(event)
    }

    /// Cuts every open stream connection.
    pub(crate) fn cut_streams(&self) {
        let mut cut = self.stream_cut.lock().unwrap_or_else(|e| e.into_inner());
        cut.cancel();
        *cut = CancellationToken::new();
    }

    /// The token current connections watch.
    pub(crate) fn stream_cut_token(&self) -> CancellationToken {
        self.stream_cut
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Resolves a credential to its st2 user, or the 401 faultstring StackStorm would send.
    pub(crate) fn authenticate(&self, credential: &Credential) -> Result<String, String> {
        use super::CredentialKind;
        let state = self.state();
        match credential.kind {
            CredentialKind::Token => match state.tokens.get(&credential.value) {
                None => Err("Unauthorized".into()),
                Some(t) if t.expiry <= SystemTime::now() => {
                    Err("Unauthorized - Token has expired.".into())
                }
                Some(t) => Ok(t.user.clone()),
            },
            CredentialKind::ApiKey => {
                match state.api_keys.iter().find(|k| k.key == credential.value) {
                    None => Err(format!(
                        "Unauthorized - ApiKey with key_hash={} not found.",
                        super::ids::api_key_hash(&credential.value)
                    )),
                    Some(k) if !k.enabled => Err("Unauthorized - API key is disabled.".into()),
                    Some(k) => Ok(k.user.clone()),
                }
            }
            CredentialKind::Password => Err("Unauthorized".into()),
        }
    }
}
