//! The bridge's configuration: one TOML file plus `ST2_MATRIX_<SECTION>__<KEY>` environment
//! overrides, parsed into typed values and validated before anything starts.
//!
//! Every key is documented in `config.example.toml`; a unit test parses that file so the two
//! cannot drift apart. Errors name the file, the key (and the environment variable when one set
//! it) and what to do, because a bridge that refuses to start with "invalid type" helps nobody.

use std::{
    collections::BTreeMap,
    fmt,
    net::SocketAddr,
    path::{Path, PathBuf},
    str::FromStr,
    time::Duration,
};

use ruma::{OwnedServerName, OwnedUserId, UserId};
use serde::{Deserialize, Deserializer, de};

use crate::{
    permissions::{PackFilter, UserRule},
    secret::Secret,
    telemetry::LogConfig,
};
use url::Url;

/// Prefix of the environment variables that override config keys.
pub const ENV_PREFIX: &str = "ST2_MATRIX_";

/// The whole configuration, as loaded from `config.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The homeserver the bridge is registered with.
    pub homeserver: HomeserverConfig,
    /// How the homeserver reaches the bridge, and who the bridge is.
    pub appservice: AppserviceConfig,
    /// Where state lives.
    #[serde(default)]
    pub database: DatabaseConfig,
    /// Chat-facing behaviour.
    #[serde(default)]
    pub bridge: BridgeConfig,
    /// The persisted outbound message queue.
    #[serde(default)]
    pub outbox: OutboxConfig,
    /// Logging.
    #[serde(default)]
    pub log: LogConfig,
    /// The StackStorm the bridge runs commands on. Without it the bridge still joins rooms
    /// and answers `ping`, and says StackStorm is not configured.
    #[serde(default)]
    pub stackstorm: Option<StackStormConfig>,
    /// Where the key that encrypts stored StackStorm tokens comes from.
    #[serde(default)]
    pub secrets: SecretsConfig,
    /// The result webhooks.
    #[serde(default)]
    pub webhook: WebhookConfig,
    /// Who may do what.
    #[serde(default)]
    pub permissions: PermissionsConfig,
    /// Pages served to people.
    #[serde(default)]
    pub web: WebConfig,
    /// End-to-end encryption: the bot's device, reading and answering in encrypted rooms.
    #[serde(default)]
    pub encryption: EncryptionConfig,
    /// StackStorm inquiries (`core.ask`) asked in rooms and answered there.
    #[serde(default)]
    pub inquiries: InquiriesConfig,
    /// Executions watched from the room: the ack edited as they move.
    #[serde(default)]
    pub live: LiveConfig,
    /// `[[approvals]]`: commands that wait for other people's approval before they run.
    #[serde(default)]
    pub approvals: Vec<ApprovalRule>,
    /// How results are posted.
    #[serde(default)]
    pub results: ResultsConfig,
    /// Directory of the config file; relative paths in the config are resolved against it.
    #[serde(skip)]
    pub base_dir: PathBuf,
}

/// `[live]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LiveConfig {
    /// Whether acks are edited as executions move (and commands get ✅/❌ at the end).
    #[serde(default = "defaults::yes")]
    pub enabled: bool,
    /// At most one edit per execution this often (the end is edited at once).
    #[serde(default = "defaults::live_edit_interval")]
    pub edit_interval: HumanDuration,
}

impl Default for LiveConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            edit_interval: defaults::live_edit_interval(),
        }
    }
}

/// `[inquiries]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InquiriesConfig {
    /// Whether the bridge posts inquiries at all.
    #[serde(default = "defaults::yes")]
    pub enabled: bool,
    /// How often pending inquiries are listed, besides the stream's prompt notice: the
    /// backstop for anything the stream missed.
    #[serde(default = "defaults::inquiry_poll")]
    pub poll_interval: HumanDuration,
    /// Where an inquiry goes that belongs to no command from a room and whose `route` is not a
    /// room the bot is in (room id or alias). Unset: the admin room.
    #[serde(default)]
    pub default_room: Option<String>,
    /// Whether a person with no linked StackStorm account may answer with the bridge's own
    /// credential (then StackStorm's `users` and RBAC see the bridge, not them).
    #[serde(default)]
    pub allow_bridge_credential: bool,
}

impl Default for InquiriesConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            poll_interval: defaults::inquiry_poll(),
            default_room: None,
            allow_bridge_credential: false,
        }
    }
}

/// `[results]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResultsConfig {
    /// A result longer than this (its Markdown, in bytes) is posted as a short summary plus
    /// the whole text as a file attachment, instead of as many messages.
    #[serde(default = "defaults::attach_over")]
    pub attach_over: ByteSize,
}

impl Default for ResultsConfig {
    fn default() -> Self {
        Self {
            attach_over: defaults::attach_over(),
        }
    }
}

/// `[homeserver]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HomeserverConfig {
    /// Base URL of the client-server API, e.g. `http://127.0.0.1:8008`.
    pub url: Url,
    /// The homeserver's server name (the part after `:` in user ids).
    pub server_name: OwnedServerName,
    /// Timeout of one request to the homeserver.
    #[serde(default = "defaults::hs_timeout")]
    pub timeout: HumanDuration,
    /// How long to keep retrying when the homeserver cannot be reached at start-up.
    #[serde(default = "defaults::startup_timeout")]
    pub startup_timeout: HumanDuration,
}

/// `[appservice]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppserviceConfig {
    /// The appservice id (must match `id` in the registration).
    #[serde(default = "defaults::as_id")]
    pub id: String,
    /// Address the bridge listens on for the homeserver (and health, metrics).
    #[serde(default = "defaults::bind")]
    pub bind: SocketAddr,
    /// URL the homeserver uses to reach the bridge; written into `registration.yaml`.
    #[serde(default = "defaults::as_url")]
    pub url: Url,
    /// Path of the registration file that holds the tokens.
    #[serde(default = "defaults::registration")]
    pub registration: PathBuf,
    /// Localpart of the bot user (`sender_localpart`).
    #[serde(default = "defaults::bot_localpart")]
    pub bot_localpart: String,
    /// Display name set on the bot at start.
    #[serde(default = "defaults::bot_displayname")]
    pub bot_displayname: String,
    /// Prefix of the bridge's exclusive user namespace.
    #[serde(default = "defaults::user_prefix")]
    pub user_prefix: String,
}

/// `[database]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    /// `sqlite://path` (relative to the config file) or `sqlite::memory:`.
    #[serde(default = "defaults::database_url")]
    pub url: String,
    /// Maximum pooled connections.
    #[serde(default = "defaults::max_connections")]
    pub max_connections: u32,
    /// SQLite `synchronous` mode: `normal` survives a crash of the bridge (kill -9), `full`
    /// also a power cut, at the price of an fsync per commit.
    #[serde(default)]
    pub synchronous: Synchronous,
}

/// SQLite durability level, see [`DatabaseConfig::synchronous`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Synchronous {
    /// WAL + `synchronous=NORMAL`: durable across process crashes.
    #[default]
    Normal,
    /// WAL + `synchronous=FULL`: durable across power loss.
    Full,
}

/// `[bridge]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BridgeConfig {
    /// What a command starts with, e.g. `!st2 ping`.
    #[serde(default = "defaults::command_prefix")]
    pub command_prefix: String,
    /// Who may invite the bot. Empty means "users of `homeserver.server_name`".
    #[serde(default)]
    pub invite_allow: Vec<UserRule>,
    /// Packs whose aliases rooms may use (`*` = every pack), unless the admin room gives a room
    /// its own list (`rooms packs`), which replaces this one for that room.
    #[serde(default = "defaults::packs")]
    pub packs: PackFilter,
    /// Help entries per message; longer help is split into pages.
    #[serde(default = "defaults::help_page_size")]
    pub help_page_size: usize,
    /// Bridge admins: they run the admin room's commands, and have every permission.
    #[serde(default)]
    pub admins: Vec<OwnedUserId>,
    /// The admin room (id or alias). Unset: the bot creates one on first start and invites
    /// the admins; it is remembered.
    #[serde(default)]
    pub admin_room: Option<String>,
    /// Only people who linked their own StackStorm account (`!st2 login`) may run commands.
    #[serde(default)]
    pub require_login: bool,
}

/// `[permissions]`: who may do what in rooms. Rooms add their own rules (admin room:
/// `rooms allow` / `rooms deny`), which come before these.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PermissionsConfig {
    /// Level of people no rule matches.
    #[serde(default = "defaults::default_level")]
    pub default: crate::permissions::Level,
    /// Rules for every room.
    #[serde(default)]
    pub rules: Vec<crate::permissions::Grant>,
}

impl Default for PermissionsConfig {
    fn default() -> Self {
        Self {
            default: defaults::default_level(),
            rules: Vec::new(),
        }
    }
}

/// `[[approvals]]`: the aliases whose commands run only once other people approved them.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalRule {
    /// Alias refs (`pack.name`) covered, globs allowed (`deploy.*`).
    pub aliases: Vec<crate::permissions::AliasGlob>,
    /// Who may approve: rules as in `[permissions]` (user ids, globs, `*:server`, `power>=N`).
    pub approvers: Vec<crate::permissions::Rule>,
    /// Distinct approvers needed (the requester never counts).
    #[serde(default = "defaults::approvals_required")]
    pub required: u32,
    /// How long a request waits before it expires (and the command does not run).
    #[serde(default = "defaults::approval_timeout")]
    pub timeout: HumanDuration,
}

impl ApprovalRule {
    /// What is wrong with the rule, if anything (`key` names it in the message).
    pub fn check(&self, key: &str) -> Result<(), String> {
        if self.aliases.is_empty() {
            return Err(format!(
                "{key}.aliases is empty, so the rule covers no command; list alias refs such as \"deploy.*\""
            ));
        }
        if self.approvers.is_empty() {
            return Err(format!(
                "{key}.approvers is empty, so nobody could approve; list rules such as \"power>=50\""
            ));
        }
        if self.required == 0 {
            return Err(format!(
                "{key}.required must be at least 1 (to run these commands without approval, remove the rule)"
            ));
        }
        let timeout = self.timeout.get();
        if timeout < Duration::from_secs(1) || timeout > Duration::from_secs(30 * 86_400) {
            return Err(format!(
                "{key}.timeout must be between 1s and 30d (e.g. \"30m\")"
            ));
        }
        Ok(())
    }
}

/// `[web]`: the pages the bridge serves to people (the StackStorm login page).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebConfig {
    /// The address people's browsers reach the bridge's listener at, e.g.
    /// `https://st2-matrix.example.org`. Without it `!st2 login` is off.
    #[serde(default)]
    pub public_url: Option<Url>,
}

/// `[stackstorm]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StackStormConfig {
    /// StackStorm's public base URL: the API is `url/api/v1`, auth `url/auth/v1`, the stream
    /// `url/stream/v1` (the stock nginx layout).
    pub url: Url,
    /// Overrides the API base (e.g. `http://st2api:9101/v1` without nginx).
    #[serde(default)]
    pub api_url: Option<Url>,
    /// Overrides the auth base (e.g. `http://st2auth:9100/v1`).
    #[serde(default)]
    pub auth_url: Option<Url>,
    /// Overrides the stream base (e.g. `http://st2stream:9102/v1`).
    #[serde(default)]
    pub stream_url: Option<Url>,
    /// The web UI, for execution links when StackStorm does not send `web_url`.
    #[serde(default)]
    pub webui_url: Option<Url>,
    /// Verify StackStorm's TLS certificate (turn off only for a test instance).
    #[serde(default = "defaults::yes")]
    pub verify_tls: bool,
    /// Extra CA certificate(s), PEM, trusted for StackStorm.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Timeout of one request to StackStorm.
    #[serde(default = "defaults::st2_timeout")]
    pub timeout: HumanDuration,
    /// Notification route: executions report back on `st2.announcement__<route>`.
    #[serde(default = "defaults::route")]
    pub route: String,
    /// How often the alias list is fetched again.
    #[serde(default = "defaults::refresh_interval")]
    pub refresh_interval: HumanDuration,
    /// API key (header `St2-Api-Key`): preferred, never expires.
    #[serde(default)]
    pub api_key: Option<Secret>,
    /// A token (header `X-Auth-Token`); it cannot be renewed, so it stops working at its expiry.
    #[serde(default)]
    pub token: Option<Secret>,
    /// With `password`: the bridge gets tokens itself and renews them before they expire.
    #[serde(default)]
    pub username: Option<String>,
    /// See `username`.
    #[serde(default)]
    pub password: Option<Secret>,
    /// Lifetime asked for tokens obtained with username and password (capped by StackStorm's
    /// `auth.token_ttl`; the bridge adapts when StackStorm says the maximum is lower).
    #[serde(default = "defaults::token_ttl")]
    pub token_ttl: HumanDuration,
    /// StackStorm's stream heartbeat (`stream.heartbeat`); a stream silent for twice this long
    /// is considered dead and reconnected.
    #[serde(default = "defaults::heartbeat")]
    pub heartbeat: HumanDuration,
    /// The rule that routes this bridge's notifications to `chatops.post_result`; checked at
    /// start and then every `notify_rule_recheck` (see `stackstorm/st2_matrix`).
    #[serde(default = "defaults::notify_rule")]
    pub notify_rule: String,
    /// How often the notify rule is checked again while the bridge runs, so a rule disabled
    /// (or fixed) meanwhile is reported in the admin room.
    #[serde(default = "defaults::notify_rule_recheck")]
    pub notify_rule_recheck: HumanDuration,
}

/// How the bridge authenticates to StackStorm: the first configured of API key, token,
/// username + password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum St2Credentials {
    /// `St2-Api-Key`.
    ApiKey(Secret),
    /// A fixed `X-Auth-Token`.
    Token(Secret),
    /// Tokens obtained from `/auth/v1/tokens` and renewed.
    Password {
        /// The StackStorm user.
        username: String,
        /// Its password.
        password: Secret,
    },
}

impl StackStormConfig {
    /// The credential to use, per the documented precedence.
    pub fn credentials(&self) -> Result<St2Credentials, String> {
        if let Some(key) = &self.api_key {
            return Ok(St2Credentials::ApiKey(key.clone()));
        }
        if let Some(token) = &self.token {
            return Ok(St2Credentials::Token(token.clone()));
        }
        match (&self.username, &self.password) {
            (Some(username), Some(password)) => Ok(St2Credentials::Password {
                username: username.clone(),
                password: password.clone(),
            }),
            (Some(_), None) => {
                Err("key `stackstorm.password` is missing (stackstorm.username is set)".into())
            }
            (None, Some(_)) => {
                Err("key `stackstorm.username` is missing (stackstorm.password is set)".into())
            }
            (None, None) => Err(
                "[stackstorm] needs a credential: set `api_key` (preferred), `token`, or \
                                 `username` and `password`"
                    .into(),
            ),
        }
    }

    /// Base URL of the API (`…/api/v1`).
    pub fn api_base(&self) -> Url {
        self.api_url
            .clone()
            .unwrap_or_else(|| join_base(&self.url, "api/v1"))
    }

    /// Base URL of auth (`…/auth/v1`).
    pub fn auth_base(&self) -> Url {
        self.auth_url
            .clone()
            .unwrap_or_else(|| join_base(&self.url, "auth/v1"))
    }

    /// Base URL of the stream (`…/stream/v1`).
    pub fn stream_base(&self) -> Url {
        self.stream_url
            .clone()
            .unwrap_or_else(|| join_base(&self.url, "stream/v1"))
    }

    /// Base of the web UI (for execution links).
    pub fn webui_base(&self) -> Url {
        self.webui_url.clone().unwrap_or_else(|| self.url.clone())
    }
}

/// `base` with `path` appended (whether or not `base` ends in `/`).
fn join_base(base: &Url, path: &str) -> Url {
    let mut url = base.clone();
    let joined = format!("{}/{path}", url.path().trim_end_matches('/'));
    url.set_path(&joined);
    url
}

/// `[webhook]`: results pushed over HTTP (errbot's `POST /chatops/message`, hubot's
/// `POST /hubot/st2`) on the bridge's own listener.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Shared secret, sent as `Authorization: Bearer <secret>`. Without it the endpoints are off.
    #[serde(default)]
    pub secret: Option<Secret>,
    /// Serve the endpoints without a secret (only behind something that authenticates).
    #[serde(default)]
    pub allow_unauthenticated: bool,
}

/// `[secrets]`: the 256-bit key that encrypts StackStorm tokens stored in the database. It is
/// never stored in the database itself.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretsConfig {
    /// The key, base64 (e.g. from the environment: `ST2_MATRIX_SECRETS__KEY`). Wins over
    /// `key_file`.
    #[serde(default)]
    pub key: Option<Secret>,
    /// A file holding the key; created (mode 0600) with a random key when missing.
    #[serde(default = "defaults::key_file")]
    pub key_file: PathBuf,
}

impl Default for SecretsConfig {
    fn default() -> Self {
        Self {
            key: None,
            key_file: defaults::key_file(),
        }
    }
}

/// `[encryption]`: the bot reads and answers in end-to-end encrypted rooms and direct chats.
///
/// Needs Synapse's `experimental_features` `msc2409_to_device_messages_enabled` and
/// `msc3202_transaction_extensions`, and `receive_ephemeral: true` + `org.matrix.msc3202: true`
/// in the registration (written by `generate-registration` while this is on).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EncryptionConfig {
    /// On by default: Element encrypts new private rooms and direct chats.
    #[serde(default = "defaults::yes")]
    pub enabled: bool,
    /// Directory of the crypto store (the bot device's keys and sessions, encrypted with a key
    /// derived from `[secrets]`). Relative to the config file.
    #[serde(default = "defaults::crypto_store")]
    pub store: PathBuf,
    /// How long an event whose room key has not arrived is retried before its sender is told
    /// the bot could not decrypt it. Keys often arrive just after their message.
    #[serde(default = "defaults::key_wait")]
    pub key_wait: HumanDuration,
    /// The bot device's display name, shown to people in Element's session list.
    #[serde(default = "defaults::device_displayname")]
    pub device_displayname: String,
}

impl Default for EncryptionConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            store: defaults::crypto_store(),
            key_wait: defaults::key_wait(),
            device_displayname: defaults::device_displayname(),
        }
    }
}

/// `[outbox]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutboxConfig {
    /// A message that could not be delivered for this long is marked failed (and logged).
    #[serde(default = "defaults::give_up_after")]
    pub give_up_after: HumanDuration,
    /// Longest wait between two attempts of a message.
    #[serde(default = "defaults::max_backoff")]
    pub max_backoff: HumanDuration,
    /// On shutdown, how long to keep sending what is queued.
    #[serde(default = "defaults::shutdown_drain")]
    pub shutdown_drain: HumanDuration,
}

mod defaults {
    use super::*;

    pub fn hs_timeout() -> HumanDuration {
        HumanDuration(Duration::from_secs(30))
    }
    pub fn startup_timeout() -> HumanDuration {
        HumanDuration(Duration::from_secs(60))
    }
    pub fn as_id() -> String {
        "st2-matrix".into()
    }
    pub fn bind() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 9000))
    }
    pub fn as_url() -> Url {
        Url::parse("http://127.0.0.1:9000").expect("constant URL parses")
    }
    pub fn registration() -> PathBuf {
        "registration.yaml".into()
    }
    pub fn bot_localpart() -> String {
        "st2bot".into()
    }
    pub fn bot_displayname() -> String {
        "StackStorm".into()
    }
    pub fn user_prefix() -> String {
        "st2_".into()
    }
    pub fn database_url() -> String {
        "sqlite://st2-matrix.db".into()
    }
    pub fn max_connections() -> u32 {
        4
    }
    pub fn command_prefix() -> String {
        "!st2".into()
    }
    pub fn give_up_after() -> HumanDuration {
        HumanDuration(Duration::from_secs(24 * 3600))
    }
    pub fn max_backoff() -> HumanDuration {
        HumanDuration(Duration::from_secs(60))
    }
    pub fn shutdown_drain() -> HumanDuration {
        HumanDuration(Duration::from_secs(5))
    }
    pub fn packs() -> PackFilter {
        PackFilter::all()
    }
    pub fn help_page_size() -> usize {
        40
    }
    pub fn yes() -> bool {
        true
    }
    pub fn st2_timeout() -> HumanDuration {
        HumanDuration(Duration::from_secs(10))
    }
    pub fn route() -> String {
        "matrix".into()
    }
    pub fn refresh_interval() -> HumanDuration {
        HumanDuration(Duration::from_secs(60))
    }
    pub fn token_ttl() -> HumanDuration {
        HumanDuration(Duration::from_secs(24 * 3600))
    }
    pub fn key_file() -> PathBuf {
        "st2-matrix.key".into()
    }
    pub fn crypto_store() -> PathBuf {
        "crypto-store".into()
    }
    pub fn live_edit_interval() -> HumanDuration {
        HumanDuration(Duration::from_secs(3))
    }
    pub fn inquiry_poll() -> HumanDuration {
        HumanDuration(Duration::from_secs(30))
    }
    pub fn key_wait() -> HumanDuration {
        HumanDuration(Duration::from_secs(30))
    }
    pub fn device_displayname() -> String {
        "st2-matrix bridge".into()
    }
    pub fn heartbeat() -> HumanDuration {
        HumanDuration(Duration::from_secs(25))
    }
    pub fn default_level() -> crate::permissions::Level {
        crate::permissions::Level::Run
    }
    pub fn notify_rule() -> String {
        "st2_matrix.notify_matrix".into()
    }
    pub fn attach_over() -> ByteSize {
        ByteSize(16 * 1024)
    }
    pub fn notify_rule_recheck() -> HumanDuration {
        HumanDuration(Duration::from_secs(600))
    }
    pub fn approvals_required() -> u32 {
        1
    }
    pub fn approval_timeout() -> HumanDuration {
        HumanDuration(Duration::from_secs(30 * 60))
    }
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            url: defaults::database_url(),
            max_connections: defaults::max_connections(),
            synchronous: Synchronous::default(),
        }
    }
}

impl Default for BridgeConfig {
    fn default() -> Self {
        Self {
            command_prefix: defaults::command_prefix(),
            invite_allow: Vec::new(),
            packs: defaults::packs(),
            help_page_size: defaults::help_page_size(),
            admins: Vec::new(),
            admin_room: None,
            require_login: false,
        }
    }
}

impl Default for OutboxConfig {
    fn default() -> Self {
        Self {
            give_up_after: defaults::give_up_after(),
            max_backoff: defaults::max_backoff(),
            shutdown_drain: defaults::shutdown_drain(),
        }
    }
}

/// Why a config could not be loaded. The message is meant for the operator, verbatim.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML.
    #[error("{path} is not valid TOML: {message}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// toml's message, with line and column.
        message: String,
    },
    /// A key has a bad value, is unknown, or is missing.
    #[error("{path}: {message}")]
    Key {
        /// The file.
        path: PathBuf,
        /// Which key and what is wrong with it.
        message: String,
    },
}

/// The dotted key a deserialisation error is about. toml tracks it while it deserialises a
/// table and shows it as the error's last line (`` in `a.b` ``); a unit test pins that form.
fn error_key(e: &toml::de::Error) -> Option<String> {
    let shown = e.to_string();
    let last = shown.trim_end().lines().last()?;
    let key = last.strip_prefix("in `")?.strip_suffix('`')?;
    (!key.is_empty()).then(|| key.to_owned())
}

impl Config {
    /// Reads `path`, applies `ST2_MATRIX_*` overrides from the process environment, and
    /// validates the result.
    pub fn load(path: &Path) -> Result<Config, Error> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, path, std::env::vars())
    }

    /// Parses config text; `env` supplies the overrides (tests pass their own).
    pub fn parse(
        text: &str,
        path: &Path,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, Error> {
        let mut table: toml::Table = text.parse().map_err(|e: toml::de::Error| Error::Syntax {
            path: path.to_owned(),
            message: e.to_string().trim_end().to_owned(),
        })?;
        let key_error = |message: String| Error::Key {
            path: path.to_owned(),
            message,
        };

        // Remember which dotted key each variable set, so an error can name the variable.
        let mut overridden = BTreeMap::new();
        for (name, value) in env {
            let Some(rest) = name.strip_prefix(ENV_PREFIX) else {
                continue;
            };
            let keys: Vec<String> = rest.split("__").map(str::to_ascii_lowercase).collect();
            if keys.len() < 2 || keys.iter().any(String::is_empty) {
                return Err(key_error(format!(
                    "environment variable {name} does not name a key: use \
                     {ENV_PREFIX}<SECTION>__<KEY>, e.g. {ENV_PREFIX}HOMESERVER__URL"
                )));
            }
            set_dotted(&mut table, &keys, env_value(&value))
                .map_err(|m| key_error(format!("environment variable {name}: {m}")))?;
            overridden.insert(keys.join("."), name);
        }

        let mut config: Config =
            toml::Value::Table(table)
                .try_into()
                .map_err(|e: toml::de::Error| {
                    let inner = e.message().trim_end();
                    match error_key(&e) {
                        Some(key) => {
                            let source = overridden
                                .get(&key)
                                .map(|var| format!(" (set by environment variable {var})"))
                                .unwrap_or_default();
                            key_error(format!("key `{key}`{source}: {inner}"))
                        }
                        None => key_error(inner.to_owned()),
                    }
                })?;
        config.base_dir = path.parent().map(Path::to_owned).unwrap_or_default();
        config.validate().map_err(key_error)?;
        Ok(config)
    }

    /// Checks what serde cannot: identifiers, URL schemes, patterns.
    fn validate(&self) -> Result<(), String> {
        let hs = &self.homeserver.url;
        if !matches!(hs.scheme(), "http" | "https") {
            return Err(format!("key `homeserver.url`: {hs} is not an http(s) URL"));
        }
        let as_url = &self.appservice.url;
        if !matches!(as_url.scheme(), "http" | "https") {
            return Err(format!(
                "key `appservice.url`: {as_url} is not an http(s) URL"
            ));
        }
        if self.appservice.id.trim().is_empty() {
            return Err("key `appservice.id` must not be empty".into());
        }
        if self.appservice.bot_displayname.trim().is_empty() {
            return Err("key `appservice.bot_displayname` must not be empty".into());
        }
        let bot = &self.appservice.bot_localpart;
        if bot.is_empty() || !bot.chars().all(is_localpart_char) {
            return Err(format!(
                "key `appservice.bot_localpart`: {bot:?} must be non-empty and use only \
                 a-z, 0-9, '.', '_', '=', '-' and '/'"
            ));
        }
        self.bot_user_id()
            .map_err(|e| format!("key `appservice.bot_localpart`: {e}"))?;
        let prefix = &self.appservice.user_prefix;
        if prefix.is_empty() || !prefix.chars().all(is_localpart_char) {
            return Err(format!(
                "key `appservice.user_prefix`: {prefix:?} must be non-empty and use only \
                 a-z, 0-9, '.', '_', '=', '-' and '/'"
            ));
        }
        if self.appservice.bot_localpart.starts_with(prefix.as_str()) {
            return Err(format!(
                "key `appservice.bot_localpart`: the bot {:?} must not start with \
                 `appservice.user_prefix` {prefix:?}: the bridge ignores users of its own \
                 namespace, so it would ignore its own bot",
                self.appservice.bot_localpart
            ));
        }
        let cp = &self.bridge.command_prefix;
        if cp.is_empty() || cp.chars().any(char::is_whitespace) {
            return Err(format!(
                "key `bridge.command_prefix`: {cp:?} must be non-empty and contain no spaces"
            ));
        }
        if !self.database.url.starts_with("sqlite:") {
            return Err(format!(
                "key `database.url`: {:?} is not supported; use sqlite://<path>",
                self.database.url
            ));
        }
        if self.database.max_connections == 0 {
            return Err("key `database.max_connections` must be at least 1".into());
        }
        if let Some(st2) = &self.stackstorm
            && st2.notify_rule_recheck.get() < Duration::from_millis(100)
        {
            return Err(
                "key `stackstorm.notify_rule_recheck` must be at least 100ms (e.g. \"10m\")".into(),
            );
        }
        crate::telemetry::parse_filter(&self.log.filter)
            .map_err(|e| format!("key `log.filter`: {e}"))?;
        if let Some(secret) = &self.webhook.secret
            && secret.expose().len() < 16
        {
            return Err(
                "key `webhook.secret` must be at least 16 characters (e.g. `openssl rand -hex 32`)"
                    .into(),
            );
        }
        if let Some(room) = &self.bridge.admin_room
            && ruma::RoomOrAliasId::parse(room).is_err()
        {
            return Err(format!(
                "key `bridge.rooms.admin_room`: {room:?} is not a room id (!…) or alias (#…:server)"
            ));
        }
        if let Some(room) = &self.inquiries.default_room
            && ruma::RoomOrAliasId::parse(room).is_err()
        {
            return Err(format!(
                "key `inquiries.default_room`: {room:?} is not a room id (!…) or alias (#…:server)"
            ));
        }
        let edits = self.live.edit_interval.get();
        if edits < Duration::from_millis(100) || edits > Duration::from_secs(3600) {
            return Err(
                "key `live.edit_interval` must be between 100ms and 1h (e.g. \"3s\")".into(),
            );
        }
        let poll = self.inquiries.poll_interval.get();
        if poll < Duration::from_secs(1) || poll > Duration::from_secs(86_400) {
            return Err(
                "key `inquiries.poll_interval` must be between 1s and 24h (e.g. \"30s\")".into(),
            );
        }
        if let Some(url) = &self.web.public_url
            && !matches!(url.scheme(), "http" | "https")
        {
            return Err(format!("key `web.public_url`: {url} is not an http(s) URL"));
        }
        if self.bridge.require_login && self.web.public_url.is_none() {
            return Err("key `bridge.require_login` needs `web.public_url`: people must be able to reach the login page".into());
        }
        if self.encryption.enabled {
            let wait = self.encryption.key_wait.get();
            if wait < Duration::from_millis(100) || wait > Duration::from_secs(3600) {
                return Err(
                    "key `encryption.key_wait` must be between 100ms and 1h (e.g. \"30s\")".into(),
                );
            }
            if self.encryption.device_displayname.trim().is_empty() {
                return Err("key `encryption.device_displayname` must not be empty".into());
            }
        }
        for (i, rule) in self.approvals.iter().enumerate() {
            rule.check(&format!("key `approvals[{i}]`"))?;
        }
        // The summary posted with an attachment is about 1 KiB: a smaller threshold would
        // attach results that are shorter than their own summary.
        if self.results.attach_over.bytes() < 1024 {
            return Err(format!(
                "key `results.attach_over` must be at least 1KiB (it is {} bytes)",
                self.results.attach_over.bytes()
            ));
        }
        if self.bridge.help_page_size == 0 {
            return Err("key `bridge.help_page_size` must be at least 1".into());
        }
        if let Some(st2) = &self.stackstorm {
            st2.credentials()?;
            for (key, url) in [
                ("url", Some(&st2.url)),
                ("api_url", st2.api_url.as_ref()),
                ("auth_url", st2.auth_url.as_ref()),
                ("stream_url", st2.stream_url.as_ref()),
                ("webui_url", st2.webui_url.as_ref()),
            ] {
                if let Some(url) = url
                    && !matches!(url.scheme(), "http" | "https")
                {
                    return Err(format!(
                        "key `stackstorm.{key}`: {url} is not an http(s) URL"
                    ));
                }
            }
            if st2.route.is_empty()
                || !st2
                    .route
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                return Err(format!(
                    "key `stackstorm.route`: {:?} must be non-empty and use only letters, digits, '_' and '-'",
                    st2.route
                ));
            }
            if st2.refresh_interval.get() < Duration::from_secs(1) {
                return Err("key `stackstorm.refresh_interval` must be at least 1s".into());
            }
            if st2.heartbeat.get() < Duration::from_millis(100) {
                return Err("key `stackstorm.heartbeat` must be at least 100ms".into());
            }
            if st2.token_ttl.get() < Duration::from_secs(1) {
                return Err("key `stackstorm.token_ttl` must be at least 1s".into());
            }
        }
        Ok(())
    }

    /// The bot's full user id.
    pub fn bot_user_id(&self) -> Result<OwnedUserId, ruma::IdParseError> {
        UserId::parse(format!(
            "@{}:{}",
            self.appservice.bot_localpart, self.homeserver.server_name
        ))
    }

    /// The effective invite rules: the configured ones, or "local users" when none are set.
    pub fn invite_rules(&self) -> Vec<UserRule> {
        if self.bridge.invite_allow.is_empty() {
            vec![UserRule::Glob(format!(
                "@*:{}",
                self.homeserver.server_name
            ))]
        } else {
            self.bridge.invite_allow.clone()
        }
    }

    /// `path` resolved against the config file's directory.
    pub fn resolve(&self, path: &Path) -> PathBuf {
        if path.is_absolute() {
            path.to_owned()
        } else {
            self.base_dir.join(path)
        }
    }

    /// The database URL with a relative SQLite path resolved against the config directory.
    pub fn database_url(&self) -> String {
        let url = &self.database.url;
        match url.strip_prefix("sqlite://") {
            Some(rest) if !rest.is_empty() && !Path::new(rest).is_absolute() => {
                let (file, query) = rest
                    .split_once('?')
                    .map_or((rest, None), |(f, q)| (f, Some(q)));
                let resolved = self.resolve(Path::new(file));
                match query {
                    Some(q) => format!("sqlite://{}?{q}", resolved.display()),
                    None => format!("sqlite://{}", resolved.display()),
                }
            }
            _ => url.clone(),
        }
    }
}

/// The value of an override: TOML when it parses as a TOML value (so `["a", "b"]`, `true` and
/// `10` work), else the raw text as a string (so `http://x` needs no quoting).
fn env_value(raw: &str) -> toml::Value {
    let parsed: Result<toml::Table, _> = format!("v = {raw}").parse();
    match parsed {
        Ok(mut t) if t.len() == 1 => t
            .remove("v")
            .unwrap_or_else(|| toml::Value::String(raw.into())),
        _ => toml::Value::String(raw.to_owned()),
    }
}

fn set_dotted(table: &mut toml::Table, keys: &[String], value: toml::Value) -> Result<(), String> {
    let (last, parents) = keys.split_last().expect("caller checked at least two keys");
    let mut current = table;
    for key in parents {
        let entry = current
            .entry(key.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        current = entry
            .as_table_mut()
            .ok_or_else(|| format!("`{key}` is not a section"))?;
    }
    current.insert(last.clone(), value);
    Ok(())
}

fn is_localpart_char(c: char) -> bool {
    matches!(c, 'a'..='z' | '0'..='9' | '.' | '_' | '=' | '-' | '/')
}

/// A duration written as `500ms`, `30s`, `10m`, `1h`, `2d` (or a bare number of seconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl HumanDuration {
    /// The wrapped duration.
    pub fn get(self) -> Duration {
        self.0
    }
}

impl FromStr for HumanDuration {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (number, unit) = s.split_at(split);
        let n: u64 = number.parse().map_err(|_| {
            format!("{s:?} is not a duration like \"500ms\", \"30s\", \"10m\" or \"1h\"")
        })?;
        let millis = match unit.trim() {
            "ms" => n,
            "" | "s" => n.saturating_mul(1000),
            "m" => n.saturating_mul(60_000),
            "h" => n.saturating_mul(3_600_000),
            "d" => n.saturating_mul(86_400_000),
            other => {
                return Err(format!(
                    "{s:?}: unknown unit {other:?} (use ms, s, m, h or d)"
                ));
            }
        };
        Ok(HumanDuration(Duration::from_millis(millis)))
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = HumanDuration;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a duration such as \"30s\" or a number of seconds")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<HumanDuration, E> {
                u64::try_from(v)
                    .map(|s| HumanDuration(Duration::from_secs(s)))
                    .map_err(|_| E::custom("a duration cannot be negative"))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<HumanDuration, E> {
                Ok(HumanDuration(Duration::from_secs(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<HumanDuration, E> {
                v.parse().map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// A size written as `16KiB`, `1MiB`, `500B` (or a bare number of bytes). `KB`/`MB` are
/// accepted as the binary units too, since that is what people mean by them for text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl ByteSize {
    /// The size in bytes.
    pub fn bytes(self) -> u64 {
        self.0
    }
}

impl FromStr for ByteSize {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (number, unit) = s.split_at(split);
        let n: u64 = number
            .parse()
            .map_err(|_| format!("{s:?} is not a size like \"16KiB\", \"1MiB\" or \"4096\""))?;
        let scale: u64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "k" | "kb" | "kib" => 1024,
            "m" | "mb" | "mib" => 1024 * 1024,
            other => {
                return Err(format!("{s:?}: unknown unit {other:?} (use B, KiB or MiB)"));
            }
        };
        n.checked_mul(scale)
            .map(ByteSize)
            .ok_or_else(|| format!("{s:?} is too large"))
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = ByteSize;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a size such as \"16KiB\" or a number of bytes")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ByteSize, E> {
                u64::try_from(v)
                    .map(ByteSize)
                    .map_err(|_| E::custom("a size cannot be negative"))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ByteSize, E> {
                Ok(ByteSize(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ByteSize, E> {
                v.parse().map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
        [homeserver]
        url = "http://127.0.0.1:8008"
        server_name = "example.org"
        [appservice]
    "#;

    fn parse(text: &str, env: &[(&str, &str)]) -> Result<Config, Error> {
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        Config::parse(text, Path::new("/etc/st2-matrix/config.toml"), env)
    }

    #[test]
    fn example_config_parses_and_validates() {
        let text = include_str!("../config.example.toml");
        let config = parse(text, &[]).expect("config.example.toml must stay valid");
        assert_eq!(config.appservice.bot_localpart, "st2bot");
        assert_eq!(config.bridge.command_prefix, "!st2");
        assert!(
            config.bridge.admins.is_empty(),
            "a copied example must not make a placeholder user admin"
        );
    }

    #[test]
    fn defaults_fill_everything_but_the_homeserver() {
        let config = parse(MINIMAL, &[]).unwrap();
        assert_eq!(config.appservice.id, "st2-matrix");
        assert_eq!(config.appservice.user_prefix, "st2_");
        assert_eq!(config.database.url, "sqlite://st2-matrix.db");
        assert_eq!(
            config.database_url(),
            "sqlite:///etc/st2-matrix/st2-matrix.db"
        );
        assert_eq!(
            config.resolve(Path::new("registration.yaml")),
            Path::new("/etc/st2-matrix/registration.yaml")
        );
        assert_eq!(
            config.invite_rules(),
            vec![UserRule::Glob("@*:example.org".into())]
        );
        assert_eq!(config.bot_user_id().unwrap(), "@st2bot:example.org");
    }

    #[test]
    fn environment_overrides_a_key_and_adds_an_array() {
        let config = parse(
            MINIMAL,
            &[
                ("ST2_MATRIX_HOMESERVER__URL", "https://matrix.example.org"),
                (
                    "ST2_MATRIX_BRIDGE__INVITE_ALLOW",
                    r#"["@alice:example.org", "ops.example.org"]"#,
                ),
                ("ST2_MATRIX_OUTBOX__GIVE_UP_AFTER", "2h"),
                ("UNRELATED", "x"),
            ],
        )
        .unwrap();
        assert_eq!(
            config.homeserver.url.as_str(),
            "https://matrix.example.org/"
        );
        assert_eq!(config.bridge.invite_allow.len(), 2);
        assert_eq!(config.outbox.give_up_after.get(), Duration::from_secs(7200));
    }

    #[test]
    fn bad_value_names_the_key_and_the_variable() {
        let err = parse(MINIMAL, &[("ST2_MATRIX_HOMESERVER__URL", "not a url")]).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains(
                "key `homeserver.url` (set by environment variable ST2_MATRIX_HOMESERVER__URL):"
            ),
            "{msg}"
        );
        assert!(msg.contains("config.toml"), "{msg}");
        // From the file, a wrong type: the whole dotted key, and toml's own words once.
        let err = parse(&format!("{MINIMAL}\n[bridge]\ncommand_prefix = 5"), &[]);
        let msg = err.unwrap_err().to_string();
        assert!(
            msg.contains("key `bridge.command_prefix`: invalid type"),
            "{msg}"
        );
        assert!(!msg.contains("\nin `"), "{msg}");
    }

    #[test]
    fn unknown_key_is_refused_with_its_name() {
        let err = parse(&format!("{MINIMAL}\nbot_localpert = \"x\""), &[]).unwrap_err();
        assert!(err.to_string().contains("bot_localpert"), "{err}");
        assert!(err.to_string().contains("key `"), "{err}");
    }

    #[test]
    fn missing_section_is_reported() {
        let err = parse("[appservice]\n", &[]).unwrap_err();
        assert!(err.to_string().contains("homeserver"), "{err}");
    }

    #[test]
    fn syntax_error_shows_the_line() {
        let err = parse("[homeserver\nurl = 1", &[]).unwrap_err();
        assert!(matches!(err, Error::Syntax { .. }), "{err}");
        assert!(err.to_string().contains("line 1"), "{err}");
    }

    #[test]
    fn malformed_environment_variable_is_refused() {
        let err = parse(MINIMAL, &[("ST2_MATRIX_URL", "x")]).unwrap_err();
        assert!(err.to_string().contains("ST2_MATRIX_URL"), "{err}");
    }

    #[test]
    fn bot_inside_its_own_namespace_is_refused() {
        let err = parse(&format!("{MINIMAL}\nbot_localpart = \"st2_bot\""), &[]).unwrap_err();
        assert!(err.to_string().contains("user_prefix"), "{err}");
    }

    #[test]
    fn invalid_localpart_and_prefix_are_refused() {
        assert!(parse(&format!("{MINIMAL}\nbot_localpart = \"Bot Name\""), &[]).is_err());
        assert!(parse(&format!("{MINIMAL}\nuser_prefix = \"\""), &[]).is_err());
        let err = parse(
            &format!("{MINIMAL}\n[bridge]\ncommand_prefix = \"!st 2\""),
            &[],
        )
        .unwrap_err();
        assert!(err.to_string().contains("command_prefix"), "{err}");
    }

    #[test]
    fn durations_parse_in_every_unit() {
        for (s, ms) in [
            ("500ms", 500),
            ("30s", 30_000),
            ("30", 30_000),
            ("10m", 600_000),
            ("1h", 3_600_000),
            ("2d", 172_800_000),
        ] {
            assert_eq!(
                s.parse::<HumanDuration>().unwrap().get(),
                Duration::from_millis(ms),
                "{s}"
            );
        }
        assert!("10 parsecs".parse::<HumanDuration>().is_err());
        assert!("s".parse::<HumanDuration>().is_err());
    }

    #[test]
    fn attach_over_takes_sizes_and_bytes_and_refuses_nonsense() {
        let attach_over = |text: &str, env: &[(&str, &str)]| {
            parse(&format!("{MINIMAL}\n[results]\n{text}"), env)
                .map(|c| c.results.attach_over.bytes())
        };
        assert_eq!(attach_over("", &[]).unwrap(), 16 * 1024);
        assert_eq!(attach_over("attach_over = \"64KiB\"", &[]).unwrap(), 65_536);
        assert_eq!(
            attach_over("attach_over = \"2 MiB\"", &[]).unwrap(),
            2 << 20
        );
        assert_eq!(attach_over("attach_over = 5000", &[]).unwrap(), 5000);
        assert_eq!(
            attach_over("", &[("ST2_MATRIX_RESULTS__ATTACH_OVER", "32KiB")]).unwrap(),
            32 * 1024
        );
        let err = attach_over("attach_over = \"16 furlongs\"", &[]).unwrap_err();
        assert!(err.to_string().contains("attach_over"), "{err}");
        assert!(err.to_string().contains("unknown unit"), "{err}");
        let err = attach_over("attach_over = 100", &[]).unwrap_err();
        assert!(err.to_string().contains("at least 1KiB"), "{err}");
        assert!(attach_over("attach_over = -1", &[]).is_err());
    }

    #[test]
    fn user_rules_cover_ids_globs_and_servers() {
        let alice = UserId::parse("@alice:example.org").unwrap();
        let bob = UserId::parse("@bob:other.org").unwrap();
        let rule = |s: &str| s.parse::<UserRule>().unwrap();
        assert!(rule("@alice:example.org").matches(&alice));
        assert!(!rule("@alice:example.org").matches(&bob));
        assert!(rule("*:example.org").matches(&alice));
        assert!(!rule("*:example.org").matches(&bob));
        assert!(rule("example.org").matches(&alice));
        assert!(rule("@al*:example.org").matches(&alice));
        assert!(rule("*").matches(&bob));
        assert!("@not valid".parse::<UserRule>().is_err());
        assert!("".parse::<UserRule>().is_err());
    }

    #[test]
    fn approval_rules_parse_with_defaults() {
        let text = format!(
            "{MINIMAL}\n[[approvals]]\naliases = [\"deploy.*\"]\napprovers = [\"power>=50\", \"@carol:example.org\"]\n\
             [[approvals]]\naliases = [\"ops.restart\"]\napprovers = [\"*:example.org\"]\nrequired = 2\ntimeout = \"2h\"\n"
        );
        let config = parse(&text, &[]).unwrap();
        let [first, second] = &config.approvals[..] else {
            panic!("two rules expected")
        };
        assert!(first.aliases[0].matches("deploy.web"));
        assert_eq!(first.approvers.len(), 2);
        assert_eq!(
            (first.required, first.timeout.get()),
            (1, Duration::from_secs(1800))
        );
        assert_eq!(
            (second.required, second.timeout.get()),
            (2, Duration::from_secs(7200))
        );
        assert!(parse(MINIMAL, &[]).unwrap().approvals.is_empty());
    }

    #[test]
    fn bad_approval_rules_are_refused_with_what_to_write() {
        let err = |rule: &str| {
            parse(&format!("{MINIMAL}\n[[approvals]]\n{rule}\n"), &[])
                .unwrap_err()
                .to_string()
        };
        let e = err("aliases = [\"deploy web\"]\napprovers = [\"power>=50\"]");
        assert!(
            e.contains("approvals") && e.contains("deploy web") && e.contains("pack.name"),
            "{e}"
        );
        let e = err("aliases = [\"deploy.*\"]\napprovers = [\"power>=lots\"]");
        assert!(e.contains("power>=N"), "{e}");
        let e = err("aliases = [\"deploy.*\"]\napprovers = [\"@not valid\"]");
        assert!(e.contains("@not valid"), "{e}");
        let e = err("aliases = [\"deploy.*\"]\napprovers = [\"power>=50\"]\nrequired = 0");
        assert!(
            e.contains("approvals[0]`.required must be at least 1"),
            "{e}"
        );
        let e = err(
            "aliases = [\"deploy.*\"]\napprovers = [\"power>=50\"]\ntimeout = \"30 fortnights\"",
        );
        assert!(e.contains("timeout") && e.contains("unknown unit"), "{e}");
        let e = err("aliases = [\"deploy.*\"]\napprovers = [\"power>=50\"]\ntimeout = \"0s\"");
        assert!(e.contains("between 1s and 30d"), "{e}");
        let e = err("aliases = []\napprovers = [\"power>=50\"]");
        assert!(e.contains("covers no command"), "{e}");
        let e = err("aliases = [\"deploy.*\"]\napprovers = []");
        assert!(e.contains("nobody could approve"), "{e}");
        let e = err("aliases = [\"deploy.*\"]");
        assert!(e.contains("approvers"), "{e}");
        let e = err("aliases = [\"deploy.*\"]\napprovers = [\"power>=50\"]\napprover = 1");
        assert!(e.contains("approver"), "{e}");
    }

    #[test]
    fn stackstorm_credentials_follow_the_documented_precedence() {
        let st2 = |extra: &str| {
            parse(
                &format!("{MINIMAL}\n[stackstorm]\nurl = \"https://st2.example.org/\"\n{extra}"),
                &[],
            )
        };
        let config =
            st2("api_key = \"k\"\ntoken = \"t\"\nusername = \"u\"\npassword = \"p\"").unwrap();
        let creds = config.stackstorm.as_ref().unwrap().credentials().unwrap();
        assert!(matches!(creds, St2Credentials::ApiKey(k) if k.expose() == "k"));
        let config = st2("token = \"t\"\nusername = \"u\"\npassword = \"p\"").unwrap();
        assert!(matches!(
            config.stackstorm.unwrap().credentials().unwrap(),
            St2Credentials::Token(_)
        ));
        let config = st2("username = \"u\"\npassword = \"p\"").unwrap();
        assert!(matches!(
            config.stackstorm.unwrap().credentials().unwrap(),
            St2Credentials::Password { .. }
        ));
        let err = st2("username = \"u\"").unwrap_err();
        assert!(err.to_string().contains("stackstorm.password"), "{err}");
        let err = st2("").unwrap_err();
        assert!(err.to_string().contains("api_key"), "{err}");
    }

    #[test]
    fn stackstorm_urls_derive_from_the_public_base() {
        let config = parse(
            &format!("{MINIMAL}\n[stackstorm]\nurl = \"https://st2.example.org/\"\napi_key = \"k\"\nstream_url = \"http://st2stream:9102/v1\""),
            &[],
        )
        .unwrap();
        let st2 = config.stackstorm.unwrap();
        assert_eq!(st2.api_base().as_str(), "https://st2.example.org/api/v1");
        assert_eq!(st2.auth_base().as_str(), "https://st2.example.org/auth/v1");
        assert_eq!(st2.stream_base().as_str(), "http://st2stream:9102/v1");
        assert_eq!(st2.route, "matrix");
    }

    #[test]
    fn a_numeric_secret_from_the_environment_is_a_string() {
        let config = parse(
            &format!("{MINIMAL}\n[stackstorm]\nurl = \"https://st2.example.org\""),
            &[("ST2_MATRIX_STACKSTORM__API_KEY", "123456")],
        )
        .unwrap();
        let creds = config.stackstorm.unwrap().credentials().unwrap();
        assert!(matches!(creds, St2Credentials::ApiKey(k) if k.expose() == "123456"));
    }

    #[test]
    fn pack_filters_parse_and_allow() {
        let filter: PackFilter = "ops, packs,ops".parse().unwrap();
        assert_eq!(filter.packs(), ["ops", "packs"]);
        assert!(filter.allows("ops") && !filter.allows("core"));
        assert_eq!("ops,*".parse::<PackFilter>().unwrap(), PackFilter::all());
        assert!(PackFilter::all().allows("anything"));
        assert!("".parse::<PackFilter>().is_err());
        assert!("no spaces please".parse::<PackFilter>().is_err());
        let err = parse(&format!("{MINIMAL}\n[bridge]\npacks = []"), &[]).unwrap_err();
        assert!(err.to_string().contains("bridge.packs"), "{err}");
    }
}
