//! The admin room, permissions, and per-user StackStorm identity (login page included),
//! against the homeserver and StackStorm doubles.

use serde_json::{Value, json};
use st2_matrix_testkit::{
    homeserver::{Sent, events},
    poll,
    st2::RuleState,
};

use crate::helpers::*;

const ADMIN: &str = "@admin:example.org";
const BOB: &str = "@bob:example.org";
const ADMIN_ROOM: &str = "!created1:example.org";
const DM: &str = "!dm:example.org";

const CONFIG: &str = "[bridge]\nadmins = [\"@admin:example.org\"]\n\
                      [web]\npublic_url = \"https://bridge.example.org\"\n\
                      [permissions]\ndefault = \"help\"\n";
const REQUIRE_LOGIN: &str = "[bridge]\nadmins = [\"@admin:example.org\"]\nrequire_login = true\n\
                             [web]\npublic_url = \"https://bridge.example.org\"\n";

fn body(sent: &Sent) -> String {
    sent.content["body"].as_str().unwrap_or_default().to_owned()
}

fn alias(pack: &str, name: &str, format: &str) -> Value {
    json!({"name": name, "pack": pack, "ref": format!("{pack}.{name}"), "action_ref": "core.local", "enabled": true,
           "formats": [format], "ack": {"format": "started"}})
}

async fn app(config: &'static str) -> TestApp {
    app_with_rule(config, RuleState::Enabled).await
}

/// Like [`app`], with StackStorm's notify rule for the bridge's route in `rule`.
async fn app_with_rule(config: &'static str, rule: RuleState) -> TestApp {
    let st2 = st2_double().await;
    st2.set_notify_rule("matrix", rule);
    st2.set_aliases(vec![
        alias("ops", "uptime", "uptime"),
        alias("web", "deploy", "deploy {{app}}"),
    ]);
    st2.add_user("alice", "alice-password");
    st2.add_user("bob", "bob-password");
    let app = TestApp::spawn_with_double(
        Options {
            st2: Some(St2Auth::ApiKey),
            extra_config: config,
            // The admin room is encrypted: the admin reads it with a device of their own.
            devices: &[ADMIN],
            ..Default::default()
        },
        Some(st2),
    )
    .await;
    poll::wait_until(WAIT, "the aliases and the admin room", || async {
        let ready = app.bridge.aliases.catalog().aliases().len() == 2
            && app.bridge.rooms.admin_room.read().unwrap().is_some();
        ready.then_some(())
    })
    .await;
    app
}

/// Invites the bot into `room` (by `inviter`, direct or not) and waits until it joined.
async fn invite(app: &TestApp, room: &str, inviter: &str, direct: bool) {
    let mut event = events::member(room, inviter, BOT, "invite", &format!("$inv{room}"));
    if direct {
        event["content"]["is_direct"] = true.into();
    }
    app.push(&format!("inv{room}"), vec![event]).await;
    poll::wait_until(WAIT, "the bot to join", || async {
        st2_matrix::store::rooms::get(&app.bridge.store, room)
            .await
            .unwrap()
            .map(|_| ())
    })
    .await;
}

/// Sends `text` as `sender` in `room` and returns the bot's reply to it.
async fn say(app: &TestApp, room: &str, sender: &str, text: &str) -> Sent {
    let id = format!("$m{}", rand_suffix());
    app.push(
        &format!("t{id}"),
        vec![events::text(room, sender, &id, text)],
    )
    .await;
    poll::wait_until(WAIT, &format!("a reply to {text:?}"), || async {
        app.read(room).await.into_iter().find(|s| {
            let relation = &s.content["m.relates_to"];
            relation["m.in_reply_to"]["event_id"] == id.as_str()
                || relation["event_id"] == id.as_str()
        })
    })
    .await
}

fn rand_suffix() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed).to_string()
}

#[tokio::test]
async fn the_admin_room_is_created_once_with_the_admins_invited() {
    let app = app(CONFIG).await;
    let created = app.hs.created_rooms();
    assert_eq!(created[0]["invite"], json!([ADMIN]));
    assert_eq!(created[0]["name"], "StackStorm bridge admin");
    let welcome = app.wait_for_messages(ADMIN_ROOM, 1).await;
    assert!(
        body(&welcome[0]).contains("admin room"),
        "{}",
        body(&welcome[0])
    );
    let app = app.restart().await;
    poll::wait_until(WAIT, "the admin room", || async {
        app.bridge.rooms.admin_room.read().unwrap().clone()
    })
    .await;
    assert_eq!(
        app.hs.created_rooms().len(),
        1,
        "remembered, not created again"
    );
}

#[tokio::test]
async fn admin_commands_answer_and_mistakes_show_the_usage() {
    let app = app(CONFIG).await;
    let status = body(&say(&app, ADMIN_ROOM, ADMIN, "status").await);
    assert!(
        status.contains("Homeserver")
            && status.contains("Outbox")
            && status.contains("Aliases: 2 enabled"),
        "{status}"
    );
    let help = say(&app, ADMIN_ROOM, ADMIN, "help").await;
    assert!(
        body(&help).contains("Usage:") && body(&help).contains("rooms"),
        "{}",
        body(&help)
    );
    assert!(
        help.content["formatted_body"]
            .as_str()
            .unwrap()
            .starts_with("<pre><code>")
    );
    let mistake = body(&say(&app, ADMIN_ROOM, ADMIN, "!st2 rooms frobnicate").await);
    assert!(
        mistake.contains("frobnicate") && mistake.contains("Usage:"),
        "{mistake}"
    );
    let missing = body(&say(&app, ADMIN_ROOM, ADMIN, "rooms allow").await);
    assert!(
        missing.contains("<ROOM>") && missing.contains("<RULE>"),
        "{missing}"
    );
}

#[tokio::test]
async fn a_missing_notify_rule_is_reported_in_the_admin_room_once_across_restarts() {
    let app = app_with_rule(CONFIG, RuleState::Absent).await;
    // The welcome, then the notice: the room is created before the rule is checked.
    let sent = app.wait_for_messages(ADMIN_ROOM, 2).await;
    let notice = body(&sent[1]);
    assert!(
        notice.contains("`st2_matrix.notify_matrix`")
            && notice.contains("does not exist")
            && notice.contains("never arrive")
            && notice.contains("stackstorm/st2_matrix"),
        "{notice}"
    );
    app.assert_message_count_stays(ADMIN_ROOM, 2).await;

    let app = app.restart().await;
    poll::wait_until(WAIT, "the rule check after the restart", || async {
        let state = app.bridge.notify_rule.read().unwrap().clone();
        (state.as_deref() == Some("missing")).then_some(())
    })
    .await;
    app.assert_message_count_stays(ADMIN_ROOM, 2).await;
}

#[tokio::test]
async fn a_disabled_notify_rule_enabled_before_a_restart_is_reported_fixed() {
    let app = app_with_rule(CONFIG, RuleState::Disabled).await;
    let sent = app.wait_for_messages(ADMIN_ROOM, 2).await;
    let notice = body(&sent[1]);
    assert!(
        notice.contains("is disabled")
            && notice.contains("st2 rule enable st2_matrix.notify_matrix"),
        "{notice}"
    );

    app.st2
        .as_ref()
        .unwrap()
        .set_notify_rule("matrix", RuleState::Enabled);
    let app = app.restart().await;
    let sent = app.wait_for_messages(ADMIN_ROOM, 3).await;
    let fixed = body(&sent[2]);
    assert!(
        fixed.contains("`st2_matrix.notify_matrix` is enabled now"),
        "{fixed}"
    );
    app.assert_message_count_stays(ADMIN_ROOM, 3).await;
}

#[tokio::test]
async fn a_notify_rule_disabled_while_running_is_reported_then_reported_fixed() {
    let app = app(CONFIG).await;
    // The welcome; an enabled rule says nothing, however often it is checked.
    app.wait_for_messages(ADMIN_ROOM, 1).await;
    app.assert_message_count_stays(ADMIN_ROOM, 1).await;

    let st2 = app.st2.as_ref().unwrap();
    st2.set_notify_rule("matrix", RuleState::Disabled);
    let sent = app.wait_for_messages(ADMIN_ROOM, 2).await;
    assert!(body(&sent[1]).contains("is disabled"), "{}", body(&sent[1]));
    app.assert_message_count_stays(ADMIN_ROOM, 2).await;

    st2.set_notify_rule("matrix", RuleState::Enabled);
    let sent = app.wait_for_messages(ADMIN_ROOM, 3).await;
    assert!(
        body(&sent[2]).contains("`st2_matrix.notify_matrix` is enabled now"),
        "{}",
        body(&sent[2])
    );
    app.assert_message_count_stays(ADMIN_ROOM, 3).await;
}

#[tokio::test]
async fn someone_who_is_not_an_admin_is_refused_in_the_admin_room() {
    let app = app(CONFIG).await;
    let refusal = body(&say(&app, ADMIN_ROOM, BOB, "status").await);
    assert!(
        refusal.contains("needs the `admin` permission") && refusal.contains(ADMIN),
        "{refusal}"
    );
}

#[tokio::test]
async fn rules_set_in_the_admin_room_grant_and_deny_at_once() {
    let app = app(CONFIG).await;
    invite(&app, ROOM, ALICE, false).await;
    // Default level `help`: alice may read help but not run.
    let refused = body(&say(&app, ROOM, ALICE, "!st2 uptime").await);
    assert!(
        refused.contains("needs the `run` permission")
            && refused.contains("you have `help`")
            && refused.contains(ADMIN),
        "{refused}"
    );
    let help = body(&say(&app, ROOM, ALICE, "!st2help").await);
    assert!(
        help.starts_with("Commands in this room")
            && !help.contains("you can run")
            && help.contains("uptime")
            && help.contains("needs the `run` permission")
            && help.contains("you have `help`")
            && help.contains(ADMIN),
        "{help}"
    );
    assert!(app.st2.as_ref().unwrap().executions().is_empty());

    let granted = body(
        &say(
            &app,
            ADMIN_ROOM,
            ADMIN,
            &format!("rooms allow {ROOM} '*:example.org'"),
        )
        .await,
    );
    assert!(granted.starts_with("✅"), "{granted}");
    let ack = body(&say(&app, ROOM, ALICE, "!st2 uptime").await);
    assert!(ack.starts_with("started"), "{ack}");
    let help = body(&say(&app, ROOM, ALICE, "!st2help").await);
    assert!(
        help.starts_with("Commands you can run here") && !help.contains("needs the"),
        "{help}"
    );

    body(
        &say(
            &app,
            ADMIN_ROOM,
            ADMIN,
            &format!("rooms deny {ROOM} {ALICE}"),
        )
        .await,
    );
    let denied = body(&say(&app, ROOM, ALICE, "!st2help").await);
    assert!(denied.contains("you have `none`"), "{denied}");
    let shown = body(&say(&app, ADMIN_ROOM, ADMIN, &format!("rooms show {ROOM}")).await);
    assert!(
        shown.contains("`*:example.org` → `run`") && shown.contains(&format!("`{ALICE}` → `none`")),
        "{shown}"
    );

    body(
        &say(
            &app,
            ADMIN_ROOM,
            ADMIN,
            &format!("rooms unset {ROOM} {ALICE}"),
        )
        .await,
    );
    let app = app.restart().await;
    let ack = body(&say(&app, ROOM, ALICE, "!st2 uptime").await);
    assert!(ack.starts_with("started"), "rules survive a restart: {ack}");
}

#[tokio::test]
async fn a_power_rule_counts_room_v12_creators_as_all_powerful() {
    let app = app(CONFIG).await;
    invite(&app, ROOM, ALICE, false).await;
    app.hs.set_room_state(ROOM, vec![
        json!({"type": "m.room.create", "sender": ALICE, "state_key": "", "content": {"room_version": "12"}}),
        json!({"type": "m.room.power_levels", "sender": ALICE, "state_key": "", "content": {"users": {BOB: 50}, "users_default": 0}}),
    ]);
    body(
        &say(
            &app,
            ADMIN_ROOM,
            ADMIN,
            &format!("rooms allow {ROOM} power>=50"),
        )
        .await,
    );
    assert!(
        body(&say(&app, ROOM, ALICE, "!st2 uptime").await).starts_with("started"),
        "the creator is above any level"
    );
    assert!(body(&say(&app, ROOM, BOB, "!st2 uptime").await).starts_with("started"));
    let carol = "@carol:example.org";
    assert!(
        body(&say(&app, ROOM, carol, "!st2 uptime").await).contains("needs the `run` permission")
    );
}

#[tokio::test]
async fn a_rooms_pack_filter_narrows_help_and_matching() {
    let app = app("[bridge]\nadmins = [\"@admin:example.org\"]\n").await;
    invite(&app, ROOM, ALICE, false).await;
    let set = body(&say(&app, ADMIN_ROOM, ADMIN, &format!("rooms packs {ROOM} web")).await);
    assert!(set.contains("1 aliases"), "{set}");
    let help = body(&say(&app, ROOM, ALICE, "!st2help").await);
    assert!(
        help.contains("deploy") && !help.contains("uptime"),
        "{help}"
    );
    let no_match = body(&say(&app, ROOM, ALICE, "!st2 uptime").await);
    assert!(no_match.starts_with("No command matches"), "{no_match}");
}

#[tokio::test]
async fn login_outside_a_direct_chat_is_refused() {
    let app = app(CONFIG).await;
    invite(&app, ROOM, ALICE, false).await;
    let refused = body(&say(&app, ROOM, ALICE, "!st2 login").await);
    assert!(refused.contains("only in a direct chat"), "{refused}");
}

/// `!st2 login` in a direct chat; returns the page's URL on the test listener.
async fn login_link(app: &TestApp, user: &str) -> String {
    invite(app, DM, user, true).await;
    let reply = body(&say(app, DM, user, "login").await);
    let link = reply
        .split_whitespace()
        .find(|w| w.starts_with("https://bridge.example.org/login/"))
        .expect("a link");
    link.replace("https://bridge.example.org", &app.url)
}

fn form_token(page: &str) -> String {
    let start =
        page.find("name=\"form_token\" value=\"").unwrap() + "name=\"form_token\" value=\"".len();
    page[start..start + page[start..].find('"').unwrap()].to_owned()
}

/// The login page at `url`, as a browser gets it.
async fn open_page(app: &TestApp, url: &str) -> String {
    app.http
        .get(url)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// Opens the login page at `url` and submits it with `credentials` and the page's form token.
async fn fill_in(app: &TestApp, url: &str, credentials: &[(&str, &str)]) -> (u16, String) {
    let page = open_page(app, url).await;
    let token = form_token(&page);
    let mut fields = vec![("form_token", token.as_str())];
    fields.extend_from_slice(credentials);
    submit(app, url, &fields).await
}

async fn submit(app: &TestApp, url: &str, fields: &[(&str, &str)]) -> (u16, String) {
    let body = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(fields)
        .finish();
    let response = app
        .http
        .post(url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

#[tokio::test]
async fn the_login_flow_links_a_password_and_commands_then_run_as_that_user() {
    let app = app(CONFIG).await;
    invite(&app, ROOM, ALICE, false).await;
    let granted = body(
        &say(
            &app,
            ADMIN_ROOM,
            ADMIN,
            &format!("rooms allow {ROOM} '*:example.org'"),
        )
        .await,
    );
    assert!(granted.starts_with("✅"), "{granted}");
    let url = login_link(&app, ALICE).await;
    assert!(!url.contains("password"));

    let page = app.http.get(&url).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert_eq!(page.headers()["cache-control"], "no-store");
    assert!(
        page.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("default-src 'none'")
    );
    let page = page.text().await.unwrap();
    assert!(
        page.contains(ALICE) && page.contains("type=\"password\""),
        "{page}"
    );
    let (status, done) = submit(
        &app,
        &url,
        &[
            ("form_token", &form_token(&page)),
            ("username", "alice"),
            ("password", "alice-password"),
        ],
    )
    .await;
    assert_eq!(status, 200, "{done}");
    assert!(done.contains("<strong>alice</strong>"), "{done}");
    let confirmation = app.wait_for_messages(DM, 2).await;
    assert!(
        body(&confirmation[1]).contains("linked to StackStorm user `alice`"),
        "{}",
        body(&confirmation[1])
    );

    assert!(body(&say(&app, ROOM, ALICE, "!st2 uptime").await).starts_with("started"));
    let execution = app.st2.as_ref().unwrap().last_execution().unwrap();
    assert_eq!(
        execution.user, "alice",
        "the execution ran with alice's own token"
    );
    assert_eq!(
        execution.credential.kind,
        st2_matrix_testkit::st2::CredentialKind::Token
    );

    let whoami = body(&say(&app, ROOM, ALICE, "!st2 whoami").await);
    assert!(whoami.contains("StackStorm user `alice`"), "{whoami}");
    let (status, _) = submit(
        &app,
        &url,
        &[
            ("form_token", &form_token(&page)),
            ("username", "alice"),
            ("password", "alice-password"),
        ],
    )
    .await;
    assert_eq!(status, 410, "the link works once");

    // A restart keeps the link; logout removes it.
    let app = app.restart().await;
    assert!(body(&say(&app, ROOM, ALICE, "!st2 uptime").await).starts_with("started"));
    assert_eq!(
        app.st2.as_ref().unwrap().last_execution().unwrap().user,
        "alice"
    );
    assert!(body(&say(&app, ROOM, ALICE, "!st2 logout").await).starts_with("Unlinked"));
    assert!(body(&say(&app, ROOM, ALICE, "!st2 uptime").await).starts_with("started"));
    assert_eq!(
        app.st2.as_ref().unwrap().last_execution().unwrap().user,
        "bot"
    );
}

#[tokio::test]
async fn the_login_pages_and_confirmation_name_the_configured_prefix() {
    let app = app(
        "[bridge]\ncommand_prefix = \"!ops\"\nadmins = [\"@admin:example.org\"]\n\
                   [web]\npublic_url = \"https://bridge.example.org\"\n",
    )
    .await;
    let url = login_link(&app, ALICE).await;
    let page = open_page(&app, &url).await;
    let fields = [
        ("form_token", form_token(&page)),
        ("username", "alice".to_owned()),
        ("password", "alice-password".to_owned()),
    ];
    let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();

    let (status, _) = submit(&app, &url, &fields).await;
    assert_eq!(status, 200);
    let confirmation = body(&app.wait_for_messages(DM, 2).await[1]);
    assert!(
        confirmation.contains("`!ops whoami` shows it; `!ops logout` unlinks."),
        "{confirmation}"
    );
    let (status, gone) = submit(&app, &url, &fields).await;
    assert_eq!(status, 410);
    assert!(
        gone.contains("<code>!ops login</code>") && !gone.contains("!st2"),
        "{gone}"
    );

    let url = login_link(&app, ALICE).await;
    let (status, failed) =
        fill_in(&app, &url, &[("username", "alice"), ("password", "wrong")]).await;
    assert_eq!(status, 401);
    assert!(
        failed.contains("<code>!ops login</code>") && !failed.contains("!st2"),
        "{failed}"
    );
}

#[tokio::test]
async fn an_api_key_links_too_and_stays_encrypted_at_rest() {
    let app = app(CONFIG).await;
    let key = app.st2.as_ref().unwrap().add_api_key("bob");
    let url = login_link(&app, BOB).await;
    let (status, done) = fill_in(&app, &url, &[("api_key", &key)]).await;
    assert_eq!(status, 200, "{done}");
    let stored = st2_matrix::store::identities::get(&app.bridge.store, BOB)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (stored.st2_user.as_str(), stored.kind.as_str()),
        ("bob", "api_key")
    );
    assert!(!stored.sealed_secret.contains(&key), "sealed, not in clear");
    let list = body(&say(&app, ADMIN_ROOM, ADMIN, "users list").await);
    assert!(
        list.contains(&format!("{BOB} → StackStorm user `bob` (API key)")),
        "{list}"
    );
    let revoked = body(&say(&app, ADMIN_ROOM, ADMIN, &format!("users revoke {BOB}")).await);
    assert!(revoked.starts_with("✅"), "{revoked}");
    assert!(
        st2_matrix::store::identities::get(&app.bridge.store, BOB)
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn wrong_credentials_use_up_the_link_and_a_bad_form_token_is_refused() {
    let app = app(CONFIG).await;
    let url = login_link(&app, ALICE).await;
    let page = open_page(&app, &url).await;
    let (status, _) = submit(
        &app,
        &url,
        &[
            ("form_token", "forged"),
            ("username", "alice"),
            ("password", "x"),
        ],
    )
    .await;
    assert_eq!(status, 403);
    let (status, text) = submit(
        &app,
        &url,
        &[
            ("form_token", &form_token(&page)),
            ("username", "alice"),
            ("password", "wrong"),
        ],
    )
    .await;
    assert_eq!(status, 401);
    assert!(
        text.contains("did not accept") && text.contains("used up"),
        "{text}"
    );
    assert_eq!(app.http.get(&url).send().await.unwrap().status(), 410);
    assert!(
        st2_matrix::store::identities::get(&app.bridge.store, ALICE)
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn with_require_login_unlinked_people_are_told_how_to_link() {
    let app = app(REQUIRE_LOGIN).await;
    invite(&app, ROOM, ALICE, false).await;
    let refused = body(&say(&app, ROOM, ALICE, "!st2 uptime").await);
    assert!(
        refused.contains("have not linked one") && refused.contains("login"),
        "{refused}"
    );
    assert!(app.st2.as_ref().unwrap().executions().is_empty());
}

#[tokio::test]
async fn an_expired_personal_token_is_renewed_with_the_kept_password() {
    let app = app(REQUIRE_LOGIN).await;
    invite(&app, ROOM, ALICE, false).await;
    let url = login_link(&app, ALICE).await;
    let (status, _) = fill_in(
        &app,
        &url,
        &[("username", "alice"), ("password", "alice-password")],
    )
    .await;
    assert_eq!(status, 200);
    let st2 = app.st2.as_ref().unwrap();
    for (token, _) in st2.tokens_of("alice") {
        st2.revoke_token(&token);
    }
    assert!(body(&say(&app, ROOM, ALICE, "!st2 uptime").await).starts_with("started"));
    assert_eq!(st2.last_execution().unwrap().user, "alice");
}

#[tokio::test]
async fn aliases_check_reviews_the_packs_rooms_use_when_not_every_pack_is_allowed() {
    // Arrange
    let st2 = st2_double().await;
    st2.set_aliases(vec![
        alias("ops", "uptime", "uptime"),
        alias("ops", "broken", "broken (unclosed"),
        alias("ops", "again", "uptime"),
        alias("web", "deploy", "deploy {{app}}"),
    ]);
    let app = TestApp::spawn_with_double(
        Options {
            st2: Some(St2Auth::ApiKey),
            extra_config: "[bridge]\nadmins = [\"@admin:example.org\"]\npacks = [\"ops\"]\n",
            devices: &[ADMIN],
            ..Default::default()
        },
        Some(st2),
    )
    .await;
    poll::wait_until(WAIT, "the aliases and the admin room", || async {
        let ready = app.bridge.aliases.catalog().aliases().len() == 4
            && app.bridge.rooms.admin_room.read().unwrap().is_some();
        ready.then_some(())
    })
    .await;

    // Act
    let report = body(&say(&app, ADMIN_ROOM, ADMIN, "aliases check").await);

    // Assert
    assert!(
        report.contains("1 format(s) do not compile") && report.contains("ops.broken"),
        "{report}"
    );
    assert!(
        report.contains("`uptime`: ")
            && report.contains("ops.again")
            && report.contains("ops.uptime"),
        "{report}"
    );
}
