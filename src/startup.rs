//! Wiring: [`App::build`] checks the homeserver and prepares everything; [`App::run_until_stopped`]
//! serves and runs the workers until the shutdown future resolves, then stops in order (intake
//! first, then the workers, then a bounded outbox drain).

use std::{
    collections::HashSet,
    future::Future,
    sync::{Arc, RwLock},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use axum::Router;
use ruma::api::appservice::Registration;
use tokio::{net::TcpListener, sync::Notify};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    access::{Access, PowerCache},
    addressing::{Addressing, Classifier},
    aliases::{self, AliasCache},
    appservice,
    bridge::{Bridge, RoomDirectory},
    config::Config,
    crypto::SecretBox,
    dispatch,
    matrix::{
        self, MatrixClient,
        outbox::{Outbox, Policy, Sender},
    },
    ops,
    registration::UserNamespace,
    results, retry,
    room_settings::RoomSettings,
    secret::Secret,
    st2::{St2Client, stream::StreamStatus},
    state::AppState,
    store::{self, Store},
    telemetry,
};

/// How often finished work older than [`RETENTION`] is purged.
const PURGE_EVERY: Duration = Duration::from_secs(3600);
/// How long finished inbox events, sent messages and transaction keys are kept. Synapse
/// re-sends a transaction within minutes; a week is far beyond any re-send.
const RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

/// A built bridge, ready to run.
pub struct App {
    bridge: Arc<AppState>,
    listener: TcpListener,
    port: u16,
}

impl App {
    /// Opens the database, checks the homeserver (reachable, accepts the `as_token`, knows us as
    /// the bot), registers the bot and sets its display name. Every failure here names what is
    /// wrong and what to check.
    pub async fn build(
        config: Config,
        registration: Registration,
        listener: TcpListener,
    ) -> anyhow::Result<App> {
        let port = listener
            .local_addr()
            .context("reading the listener's address")?
            .port();
        let store = Store::connect(
            &config.database_url(),
            config.database.max_connections,
            config.database.synchronous,
        )
        .await
        .with_context(|| format!("opening the database {}", config.database.url))?;
        let bot = config.bot_user_id().context("building the bot's user id")?;
        let namespace =
            UserNamespace::from_registration(&registration).map_err(anyhow::Error::msg)?;
        let matrix = MatrixClient::new(
            &config.homeserver.url,
            Secret::new(registration.as_token.clone()),
            bot.clone(),
            config.homeserver.timeout.get(),
        )?;
        check_homeserver(&config, &matrix).await?;

        let encrypted_noticed: HashSet<String> = store::rooms::encryption_noticed_ids(&store)
            .await?
            .into_iter()
            .collect();
        let direct_rooms: HashSet<String> = store::rooms::direct_ids(&store)
            .await?
            .into_iter()
            .collect();

        let secrets = Arc::new(SecretBox::load_or_create(&config)?);
        let e2ee = if config.encryption.enabled {
            let e2ee = crate::e2ee::Encryption::start(&config, matrix.clone(), &store, &secrets)
                .await
                .context("setting up end-to-end encryption ([encryption] enabled)")?;
            e2ee.load_rooms(
                store::rooms::encrypted_ids(&store).await?,
                store::rooms::all_ids(&store).await?,
            );
            let path = config.resolve(&config.appservice.registration);
            match crate::registration::missing_for_encryption(&path) {
                Ok(missing) if !missing.is_empty() => tracing::warn!(
                    registration = %path.display(),
                    "the registration lacks {}: the homeserver will not send room keys, so the bot \
                     cannot read encrypted rooms; run `st2-matrix check-config`",
                    missing.join(" and ")
                ),
                _ => {}
            }
            Some(e2ee)
        } else {
            None
        };
        let st2 = match &config.stackstorm {
            Some(st2_config) => Some(
                St2Client::new(st2_config, &config.base_dir, store.clone(), secrets.clone())
                    .context("setting up the StackStorm client")?,
            ),
            None => {
                tracing::warn!(
                    "no [stackstorm] section: the bridge answers ping and help, but cannot run commands"
                );
                None
            }
        };
        if let Some(st2) = &st2 {
            // Before any worker asks for a credential: otherwise the first one logs in again
            // instead of reusing the token a previous run stored.
            st2.auth().load_persisted().await;
        }
        // The stored alias list, before serving: help and matching work from the first
        // command after a restart, even while StackStorm is down.
        let room_settings = RoomSettings::load(&store)
            .await
            .context("loading room settings")?;
        let mut filters = room_settings.filters_in_use();
        filters.push(config.bridge.packs.clone());
        let aliases = Arc::new(AliasCache::default());
        let loaded = aliases::load_stored(&aliases, &store, filters)
            .await
            .context("loading the cached aliases")?;
        if loaded > 0 {
            tracing::info!(aliases = loaded, "loaded the cached aliases");
        }

        let addressing = Addressing {
            prefix: config.bridge.command_prefix.clone(),
            bot: bot.clone(),
            displayname: config.appservice.bot_displayname.clone(),
        };
        let classifier = Classifier {
            bot: bot.clone(),
            namespace,
            addressing: addressing.clone(),
        };
        let core = Arc::new(Bridge {
            outbox: Outbox::new(store.clone()),
            store,
            matrix,
            bot,
            hs_token: Secret::new(registration.hs_token),
            st2,
            secrets,
            e2ee,
            rooms: RoomDirectory::new(encrypted_noticed, direct_rooms),
            started_at: Instant::now(),
            config,
        });
        let live = Arc::new(crate::live::Live::new(core.config.live.edit_interval.get()));
        live.load(&core)
            .await
            .context("loading the executions whose end was not seen yet")?;
        let bridge = Arc::new(AppState {
            live,
            core,
            classifier,
            addressing,
            inbox_wake: Arc::new(Notify::new()),
            approvals_wake: Arc::new(Notify::new()),
            recover: Arc::new(Notify::new()),
            stopping: CancellationToken::new(),
            aliases,
            access: Access {
                settings: room_settings,
                power: PowerCache::default(),
            },
            stream: Arc::new(StreamStatus::default()),
            notify_rule: RwLock::new(None),
        });
        Ok(App {
            bridge,
            listener,
            port,
        })
    }

    /// The port the bridge listens on (useful when bound to port 0).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The shared state, for tests that inspect or drive it.
    pub fn bridge(&self) -> Arc<AppState> {
        self.bridge.clone()
    }

    /// Serves and works until `shutdown` resolves.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let App {
            bridge, listener, ..
        } = self;
        // The bridge's own token: handlers that wait give way to shutdown through it.
        let stop = bridge.stopping.clone();
        let workers = TaskTracker::new();

        let app = router(bridge.clone());
        let server_stop = stop.clone();
        let server = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move { server_stop.cancelled().await })
                .await
        });

        workers.spawn(dispatch::run_inbox(bridge.clone(), stop.clone()));
        workers.spawn(crate::approvals::run_expiry(bridge.clone(), stop.clone()));
        let policy = Policy {
            give_up_after: bridge.config.outbox.give_up_after.get(),
            max_backoff: bridge.config.outbox.max_backoff.get(),
            shutdown_drain: bridge.config.outbox.shutdown_drain.get(),
        };
        let mut sender = Sender::new(bridge.outbox.clone(), bridge.matrix.clone(), policy);
        if let Some(e2ee) = &bridge.e2ee {
            sender = sender.with_encryption(Arc::new(e2ee.clone()));
            workers.spawn(e2ee.clone().run_pump(stop.clone()));
        }
        workers.spawn(sender.run(stop.clone()));
        workers.spawn(purge_periodically(bridge.store.clone(), stop.clone()));
        workers.spawn(ping_homeserver(bridge.clone(), stop.clone()));
        {
            let bridge = bridge.clone();
            // The admin room first (it may be created now): the notify-rule check reports there
            // when it finds a problem, so it must know the room.
            let stop = stop.clone();
            workers.spawn(async move {
                setup_admin_room(&bridge).await;
                check_notify_rule_periodically(bridge, stop).await;
            });
        }
        if let (Some(st2), Some(st2_config)) = (&bridge.st2, &bridge.config.stackstorm) {
            let (client, renew_stop) = (st2.clone(), stop.clone());
            workers.spawn(async move {
                client.auth().check_at_start(client.http()).await;
                client
                    .auth()
                    .run_renewal(client.http().clone(), renew_stop)
                    .await;
            });
            // The reader only reads; the consumer delivers and recovers. A bounded channel
            // between them: a slow delivery slows reading, it never loses an announcement.
            let (events, received) = tokio::sync::mpsc::channel(256);
            workers.spawn(crate::st2::stream::run(
                st2.clone(),
                st2_config.clone(),
                crate::st2::stream::Subscription::announcements(&st2_config.route),
                bridge.stream.clone(),
                events,
                stop.clone(),
            ));
            if bridge.config.inquiries.enabled || bridge.config.live.enabled {
                // A connection of its own: its filter differs from the announcements'.
                let (events, received) = tokio::sync::mpsc::channel(256);
                workers.spawn(crate::st2::stream::run(
                    st2.clone(),
                    st2_config.clone(),
                    crate::st2::stream::Subscription::executions(),
                    Arc::new(crate::st2::stream::StreamStatus::default()),
                    events,
                    stop.clone(),
                ));
                workers.spawn(crate::watch::run(bridge.clone(), received, stop.clone()));
            }
            workers.spawn(results::stream::consume(
                bridge.core.clone(),
                received,
                bridge.recover.clone(),
                workers.clone(),
                stop.clone(),
            ));

            workers.spawn(aliases::run_refresh(
                bridge.aliases.clone(),
                bridge.store.clone(),
                st2.clone(),
                bridge.config.bridge.packs.clone(),
                st2_config.refresh_interval.get(),
                stop.clone(),
            ));
        }
        tracing::info!(bind = %bridge.config.appservice.bind, bot = %bridge.bot, version = env!("CARGO_PKG_VERSION"), "st2-matrix running");

        shutdown.await;
        tracing::info!(
            "shutting down: no new transactions; finishing work in hand and draining the outbox"
        );
        stop.cancel();
        match server.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error.message = %e, "HTTP server failed"),
            Err(e) => tracing::error!(error.message = %e, "HTTP server task panicked"),
        }
        workers.close();
        workers.wait().await;
        bridge.store.close().await;
        tracing::info!("stopped");
        Ok(())
    }
}

/// Every HTTP route the bridge serves: the appservice API, the result webhooks (when enabled)
/// and the operations endpoints.
pub fn router(bridge: Arc<AppState>) -> Router {
    let webhooks = crate::webhook::router(bridge.core.clone()).unwrap_or_default();
    let login = crate::web::router(bridge.core.clone()).unwrap_or_default();
    Router::new()
        .merge(appservice::router(bridge.clone()))
        .merge(webhooks)
        .merge(login)
        .merge(ops::router(bridge, telemetry::metrics()))
        .fallback(appservice::unrecognized)
        .method_not_allowed_fallback(appservice::method_not_allowed)
}

/// The start-up checks, in the order that gives the most useful error first.
async fn check_homeserver(config: &Config, matrix: &MatrixClient) -> anyhow::Result<()> {
    let url = &config.homeserver.url;
    let deadline = Instant::now() + config.homeserver.startup_timeout.get();
    let mut backoff = retry::Backoff::new(Duration::from_millis(500), Duration::from_secs(10));
    loop {
        let wait = backoff.next_delay();
        match matrix.versions().await {
            Ok(_) => break,
            Err(e) if e.is_transient() && Instant::now() + wait < deadline => {
                tracing::warn!(homeserver = %url, error.message = %e, "homeserver not reachable yet; retrying");
                tokio::time::sleep(wait).await;
            }
            Err(e) => bail!("cannot reach the homeserver at {url} (homeserver.url): {e}"),
        }
    }
    match matrix.whoami().await {
        Ok(user) if user == matrix.bot() => {}
        Ok(user) => bail!(
            "the homeserver says the as_token belongs to {user}, but the bot is {}: check \
             appservice.bot_localpart and homeserver.server_name against the registration's sender_localpart",
            matrix.bot()
        ),
        Err(matrix::Error::Api { errcode, .. })
            if errcode == "M_UNKNOWN_TOKEN" || errcode == "M_MISSING_TOKEN" =>
        {
            bail!(
                "the homeserver at {url} does not accept the as_token from {}: add the registration file to the \
             homeserver's app_service_config_files and restart the homeserver",
                config.appservice.registration.display()
            )
        }
        Err(e) => bail!("checking the as_token with the homeserver at {url} failed: {e}"),
    }
    matrix
        .register_bot()
        .await
        .with_context(|| format!("registering the bot user {}", matrix.bot()))?;
    if let Err(e) = matrix
        .set_displayname(&config.appservice.bot_displayname)
        .await
    {
        tracing::warn!(error.message = %e, "could not set the bot's display name");
    }
    Ok(())
}

/// Asks the homeserver to ping us: proves it can reach `appservice.url`, and makes Synapse
/// retry transactions it queued while we were down at once instead of after its backoff.
async fn ping_homeserver(bridge: Arc<AppState>, stop: CancellationToken) {
    let id = &bridge.config.appservice.id;
    for attempt in 1..=5u32 {
        match bridge.matrix.ping(id).await {
            Ok(rtt) => {
                tracing::info!(
                    round_trip_ms = rtt.as_millis() as u64,
                    "homeserver ping ok: it can reach the bridge"
                );
                return;
            }
            Err(e) => {
                tracing::error!(
                    attempt, error.message = %e,
                    "homeserver ping failed: the homeserver cannot reach the bridge at {} (appservice.url); \
                     check that address from the homeserver's host",
                    bridge.config.appservice.url
                );
                let wait = retry::delay(Duration::from_secs(2), Duration::from_secs(64), attempt);
                if !retry::sleep_unless_stopped(wait, &stop).await {
                    return;
                }
            }
        }
    }
}

/// Finds the admin room: `[bridge].admin_room` (joined), else the one created on an earlier
/// start, else a new private room with the admins invited (remembered in the store).
async fn setup_admin_room(bridge: &AppState) {
    let result: anyhow::Result<Option<ruma::OwnedRoomId>> = async {
        if let Some(configured) = &bridge.config.bridge.admin_room {
            let room = ruma::RoomOrAliasId::parse(configured)?;
            let id = bridge
                .matrix
                .join_by_id_or_alias(&room)
                .await
                .with_context(|| format!("joining the admin room {configured} (bridge.rooms.admin_room): invite the bot into it"))?;
            store::rooms::joined(&bridge.store, id.as_str(), None, false).await?;
            return Ok(Some(id));
        }
        if let Some(stored) = store::settings::meta(&bridge.store, "admin_room").await? {
            let id = ruma::RoomId::parse(stored)?;
            if store::rooms::get(&bridge.store, id.as_str()).await?.is_some() {
                return Ok(Some(id));
            }
            tracing::warn!(room_id = %id, "the bot is no longer in the admin room it created; creating a new one");
        }
        let admins = &bridge.config.bridge.admins;
        if admins.is_empty() {
            tracing::warn!("no [bridge].admins: there is no admin room; set admins to configure the bridge from Matrix");
            return Ok(None);
        }
        let encrypted = bridge.e2ee.is_some();
        let id = bridge.matrix.create_private_room("StackStorm bridge admin", admins, encrypted).await.context("creating the admin room")?;
        store::rooms::joined(&bridge.store, id.as_str(), None, false).await?;
        if let Some(e2ee) = &bridge.e2ee {
            e2ee.record_encrypted(&bridge.store, &id).await?;
        }
        store::settings::set_meta(&bridge.store, "admin_room", id.as_str()).await?;
        let welcome = format!(
            "This is the admin room of st2-matrix {}. Type `help` for the commands (the `{}` prefix is optional here).",
            env!("CARGO_PKG_VERSION"),
            bridge.config.bridge.command_prefix
        );
        bridge.outbox.send(&id, &crate::matrix::render::notice_markdown(&welcome)).await?;
        tracing::info!(room_id = %id, "created the admin room and invited the admins");
        Ok(Some(id))
    }
    .await;
    match result {
        Ok(Some(id)) => {
            tracing::info!(room_id = %id, "admin room ready");
            *bridge
                .rooms
                .admin_room
                .write()
                .unwrap_or_else(|e| e.into_inner()) = Some(id);
        }
        Ok(None) => {}
        Err(e) => tracing::error!(error.message = %e, error.cause_chain = ?e, "no admin room"),
    }
}

/// The `meta` key remembering what was last posted in the admin room about the notify rule.
const NOTIFY_RULE_POSTED: &str = "notify_rule_posted";

/// Checks the notify rule at start, then every `[stackstorm] notify_rule_recheck`.
async fn check_notify_rule_periodically(bridge: Arc<AppState>, stop: CancellationToken) {
    let Some(config) = &bridge.config.stackstorm else {
        return;
    };
    let every = config.notify_rule_recheck.get();
    loop {
        check_notify_rule(bridge.clone()).await;
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
    }
}

/// Warns when the rule that routes this bridge's notifications to `chatops.post_result` is
/// missing or disabled: commands would run, but their results would never arrive. Logs when
/// the state differs from the last check, and says it in the admin room (when there is one)
/// unless it already said the same there.
async fn check_notify_rule(bridge: Arc<AppState>) {
    let (Some(st2), Some(config)) = (&bridge.st2, &bridge.config.stackstorm) else {
        return;
    };
    let rule = &config.notify_rule;
    let (state, error) = match st2.rule(rule).await {
        Ok(Some(value))
            if value.get("enabled").and_then(serde_json::Value::as_bool) == Some(false) =>
        {
            ("disabled", None)
        }
        Ok(Some(_)) => ("enabled", None),
        Ok(None) => ("missing", None),
        Err(e) => ("unknown", Some(e)),
    };
    let previous = bridge
        .notify_rule
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    if previous.as_deref() != Some(state) {
        match (state, error) {
            ("disabled", _) => {
                tracing::warn!(rule = %rule, "the StackStorm rule {rule} is disabled: results of commands will never arrive; enable it (st2 rule enable {rule})");
            }
            ("missing", _) => {
                tracing::warn!(rule = %rule, "the StackStorm rule {rule} does not exist: results of commands will never arrive; install the pack in stackstorm/st2_matrix (see its README)");
            }
            (_, Some(e)) => {
                tracing::warn!(rule = %rule, error.message = %e, "could not check the StackStorm notify rule");
            }
            _ => tracing::info!(rule = %rule, "StackStorm notify rule found"),
        }
    }
    let admin_room = bridge
        .rooms
        .admin_room
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    if let Some(room) = admin_room
        && let Err(e) = post_notify_rule_state(&bridge, &room, rule, state).await
    {
        tracing::error!(room_id = %room, error.message = %e, error.cause_chain = ?e, "could not report the notify rule in the admin room");
    }
    *bridge
        .notify_rule
        .write()
        .unwrap_or_else(|e| e.into_inner()) = Some(state.to_owned());
}

/// Posts the notify rule's `state` in the admin room when it differs from what was last posted
/// there. The notice and the memory of it commit together: a crash in between neither loses
/// the notice nor repeats it.
async fn post_notify_rule_state(
    bridge: &AppState,
    room: &ruma::RoomId,
    rule: &str,
    state: &str,
) -> anyhow::Result<()> {
    let last = store::settings::meta(&bridge.store, NOTIFY_RULE_POSTED)
        .await
        .context("reading what was last said about the notify rule")?;
    let Some((record, text)) = notify_rule_notice(rule, state, room, last.as_deref()) else {
        return Ok(());
    };
    let mut tx = bridge.store.begin().await?;
    bridge
        .outbox
        .queue_in(
            &mut tx,
            room,
            &crate::matrix::render::notice_markdown(&text),
        )
        .await?;
    store::settings::set_meta_in(&mut tx, NOTIFY_RULE_POSTED, &record).await?;
    tx.commit().await?;
    bridge.outbox.wake();
    tracing::info!(room_id = %room, rule = %rule, state, "reported the notify rule in the admin room");
    Ok(())
}

/// What to post in the admin `room` about the notify `rule` found in `state`, given the record
/// of the last post (`None`: never posted). Returns the new record and the notice, or `None`
/// when there is nothing new to say: the rule is fine and no problem was reported, the same
/// problem was already reported in this room, or the check could not tell.
///
/// A record is `<state> <rule> <room>` (none of them has spaces): another rule or a new admin
/// room is told again.
fn notify_rule_notice(
    rule: &str,
    state: &str,
    room: &ruma::RoomId,
    last: Option<&str>,
) -> Option<(String, String)> {
    let record = format!("{state} {rule} {room}");
    if last == Some(record.as_str()) {
        return None;
    }
    let text = match state {
        "missing" => format!(
            "⚠️ The StackStorm rule `{rule}` (`[stackstorm] notify_rule`) does not exist: commands run, but \
             **their results will never arrive** in Matrix.\n\n\
             To fix it, install the `st2_matrix` pack from the `stackstorm/` folder of the st2-matrix repository \
             on the StackStorm host (see `stackstorm/st2_matrix/README.md`):\n\n\
             ```\nsudo cp -r stackstorm/st2_matrix /opt/stackstorm/packs/\nsudo st2ctl reload --register-rules\n```\n\n\
             Then restart the bridge: it checks the rule when it starts."
        ),
        "disabled" => format!(
            "⚠️ The StackStorm rule `{rule}` (`[stackstorm] notify_rule`) is disabled: commands run, but \
             **their results will never arrive** in Matrix.\n\n\
             To fix it, enable it on the StackStorm host with `st2 rule enable {rule}`, \
             then restart the bridge: it checks the rule when it starts."
        ),
        // Good news only for a room that was told about a problem.
        "enabled" => {
            let mut last = last?.split(' ');
            let (Some("missing" | "disabled"), Some(_), Some(last_room)) =
                (last.next(), last.next(), last.next())
            else {
                return None;
            };
            if last_room != room.as_str() {
                return None;
            }
            format!(
                "✅ The StackStorm rule `{rule}` is enabled now: results of commands arrive in Matrix."
            )
        }
        _ => return None,
    };
    Some((record, text))
}

async fn purge_periodically(store: Store, stop: CancellationToken) {
    loop {
        match store.purge(RETENTION).await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(rows = n, "purged old finished work"),
            Err(e) => tracing::warn!(error.message = %e, "purging old finished work failed"),
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(PURGE_EVERY) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULE: &str = "st2_matrix.notify_matrix";

    fn room(id: &str) -> ruma::OwnedRoomId {
        ruma::RoomId::parse(id).unwrap()
    }

    #[test]
    fn a_missing_rule_is_reported_with_how_to_install_it() {
        let (record, text) =
            notify_rule_notice(RULE, "missing", &room("!a:x"), None).expect("a notice");
        assert_eq!(record, "missing st2_matrix.notify_matrix !a:x");
        assert!(
            text.contains("does not exist")
                && text.contains("never arrive")
                && text.contains("stackstorm/st2_matrix")
                && text.contains("st2ctl reload --register-rules"),
            "{text}"
        );
    }

    #[test]
    fn a_disabled_rule_is_reported_with_how_to_enable_it() {
        let (_, text) =
            notify_rule_notice(RULE, "disabled", &room("!a:x"), None).expect("a notice");
        assert!(
            text.contains("is disabled")
                && text.contains("st2 rule enable st2_matrix.notify_matrix"),
            "{text}"
        );
    }

    #[test]
    fn the_same_problem_is_not_reported_twice_in_the_same_room() {
        let last = "missing st2_matrix.notify_matrix !a:x";
        assert_eq!(
            notify_rule_notice(RULE, "missing", &room("!a:x"), Some(last)),
            None
        );
        assert!(notify_rule_notice(RULE, "disabled", &room("!a:x"), Some(last)).is_some());
        assert!(notify_rule_notice(RULE, "missing", &room("!b:x"), Some(last)).is_some());
        assert!(notify_rule_notice("other.rule", "missing", &room("!a:x"), Some(last)).is_some());
    }

    #[test]
    fn an_enabled_rule_is_reported_only_after_a_problem_in_that_room() {
        let a = room("!a:x");
        assert_eq!(notify_rule_notice(RULE, "enabled", &a, None), None);
        let (record, text) = notify_rule_notice(
            RULE,
            "enabled",
            &a,
            Some("disabled st2_matrix.notify_matrix !a:x"),
        )
        .expect("good news");
        assert!(text.contains("enabled now"), "{text}");
        assert_eq!(notify_rule_notice(RULE, "enabled", &a, Some(&record)), None);
        assert_eq!(
            notify_rule_notice(
                RULE,
                "enabled",
                &a,
                Some("missing st2_matrix.notify_matrix !b:x")
            ),
            None
        );
    }

    #[test]
    fn an_unknown_state_says_nothing() {
        assert_eq!(
            notify_rule_notice(RULE, "unknown", &room("!a:x"), None),
            None
        );
    }
}
