//! Approvals: commands of configured aliases wait for a second person's ✅ (or `approve`)
//! before they run, as their requester — the bridge in-process against the homeserver double
//! and the StackStorm double.

use std::time::Duration;

use serde_json::{Value, json};
use st2_matrix_testkit::{
    homeserver::{Sent, events},
    poll,
};

use crate::helpers::*;

const BOB: &str = "@bob:example.org";
const CAROL: &str = "@carol:example.org";
const EVE: &str = "@eve:example.org";
const ADMIN: &str = "@admin:example.org";

/// `deploy.*` needs one approval by Alice, Bob or Carol (Alice is also the requester in the
/// tests: her own approval must not count).
const ONE_APPROVER: &str = "[[approvals]]\naliases = [\"deploy.*\"]\n\
     approvers = [\"@alice:example.org\", \"@bob:example.org\", \"@carol:example.org\"]\n";

fn body(sent: &Sent) -> String {
    sent.content["body"].as_str().unwrap_or_default().to_owned()
}

fn alias(pack: &str, name: &str, format: &str) -> Value {
    json!({"name": name, "pack": pack, "ref": format!("{pack}.{name}"), "action_ref": "core.local",
           "enabled": true, "formats": [format], "ack": {"format": "started {{ execution.parameters.app }}"}})
}

async fn app(config: &'static str) -> TestApp {
    let st2 = st2_double().await;
    st2.set_aliases(vec![
        alias("deploy", "web", "deploy {{app}}"),
        alias("ops", "uptime", "uptime"),
    ]);
    let app = TestApp::spawn_with_double(
        Options {
            st2: Some(St2Auth::ApiKey),
            extra_config: config,
            encryption_off: true,
            ..Default::default()
        },
        Some(st2),
    )
    .await;
    wait_for_aliases(&app).await;
    app
}

async fn wait_for_aliases(app: &TestApp) {
    poll::wait_until(WAIT, "the aliases", || async {
        (app.bridge.aliases.catalog().aliases().len() == 2).then_some(())
    })
    .await;
}

fn next_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed).to_string()
}

/// Pushes `event` in a transaction of its own.
async fn push(app: &TestApp, event: Value) {
    let (status, _) = app.push(&format!("t{}", next_id()), vec![event]).await;
    assert_eq!(status, 200);
}

/// `sender` says `text` in the room; returns the event id.
async fn say(app: &TestApp, sender: &str, text: &str) -> String {
    let id = format!("$m{}", next_id());
    push(app, events::text(ROOM, sender, &id, text)).await;
    id
}

/// `sender` reacts with `key` to `target`.
async fn react(app: &TestApp, sender: &str, target: &str, key: &str) {
    let id = format!("$r{}", next_id());
    push(
        app,
        json!({"type": "m.reaction", "room_id": ROOM, "sender": sender, "event_id": id,
               "origin_server_ts": 1_700_000_000_000_u64,
               "content": {"m.relates_to": {"rel_type": "m.annotation", "event_id": target, "key": key}}}),
    )
    .await;
}

/// The bot's messages in the room: not its reactions, nor its edits.
fn messages(app: &TestApp) -> Vec<Sent> {
    app.hs
        .sent_to(ROOM)
        .into_iter()
        .filter(|s| {
            s.event_type == "m.room.message" && s.content["m.relates_to"]["rel_type"] != "m.replace"
        })
        .collect()
}

/// The bot's edits in the room.
fn edits(app: &TestApp) -> Vec<Sent> {
    app.hs
        .sent_to(ROOM)
        .into_iter()
        .filter(|s| s.content["m.relates_to"]["rel_type"] == "m.replace")
        .collect()
}

/// Waits for a bot message whose body contains `needle`.
async fn wait_for_message(app: &TestApp, needle: &str) -> Sent {
    poll::wait_until(WAIT, &format!("a message with {needle:?}"), || async {
        messages(app).into_iter().find(|s| body(s).contains(needle))
    })
    .await
}

/// Asserts that no message with `needle` comes for a short settle period.
async fn no_message(app: &TestApp, needle: &str) {
    poll::stays(
        Duration::from_millis(500),
        &format!("no message with {needle:?}"),
        || async { !messages(app).iter().any(|s| body(s).contains(needle)) },
    )
    .await;
}

/// A request for approval, as the room saw it.
struct Request {
    id: String,
    event_id: String,
    body: String,
}

/// Alice's `!st2 deploy <app>` and the request it gets.
async fn request(app: &TestApp, what: &str) -> Request {
    let command = say(app, ALICE, &format!("!st2 deploy {what}")).await;
    let sent = poll::wait_until(WAIT, "the request for approval", || async {
        messages(app).into_iter().find(|s| {
            s.content["m.relates_to"]["m.in_reply_to"]["event_id"] == command.as_str()
                && body(s).contains("needs approval")
        })
    })
    .await;
    let text = body(&sent);
    let start = text
        .find("!st2 approve ")
        .expect("the request says how to approve")
        + "!st2 approve ".len();
    // No wait for the outbox to record the request's event id: a reaction that comes before
    // it is retried, not dropped.
    Request {
        id: text[start..start + 6].to_owned(),
        event_id: sent.event_id.clone(),
        body: text,
    }
}

fn executions(app: &TestApp) -> usize {
    app.st2.as_ref().unwrap().executions().len()
}

async fn assert_no_execution(app: &TestApp) {
    poll::stays(Duration::from_millis(500), "no execution", || async {
        executions(app) == 0
    })
    .await;
}

#[tokio::test]
async fn a_command_that_needs_approval_runs_as_its_requester_once_a_second_person_approves() {
    let app = app(ONE_APPROVER).await;
    let request = request(&app, "shop").await;
    assert!(
        request.body.contains("`deploy.web`")
            && request.body.contains("`app` = `shop`")
            && request.body.contains(ALICE)
            && request.body.contains("`@bob:example.org`")
            && request.body.contains("UTC")
            && request
                .body
                .contains(&format!("!st2 reject {} [reason]", request.id)),
        "{}",
        request.body
    );
    // The bot's own ✅ and ❌ on it, so people only have to click.
    let reactions: Vec<Sent> = poll::wait_until(WAIT, "the bot's two reactions", || async {
        let r: Vec<Sent> = app
            .hs
            .sent_to(ROOM)
            .into_iter()
            .filter(|s| s.event_type == "m.reaction")
            .collect();
        (r.len() == 2).then_some(r)
    })
    .await;
    for (reaction, key) in reactions.iter().zip(["✅", "❌"]) {
        assert_eq!(
            reaction.content["m.relates_to"],
            json!({"rel_type": "m.annotation", "event_id": request.event_id, "key": key})
        );
    }
    assert_no_execution(&app).await;

    // The requester's own ✅ does not count: she is told once, however often she reacts.
    react(&app, ALICE, &request.event_id, "✅").await;
    let told = wait_for_message(&app, "your own approval does not count").await;
    assert_eq!(told.content["m.mentions"]["user_ids"], json!([ALICE]));
    react(&app, ALICE, &request.event_id, "✅️").await;
    assert_no_execution(&app).await;
    assert_eq!(
        messages(&app)
            .iter()
            .filter(|s| body(s).contains("your own approval"))
            .count(),
        1
    );

    react(&app, BOB, &request.event_id, "✅").await;
    let outcome = wait_for_message(&app, "Approved by @bob:example.org").await;
    assert!(body(&outcome).contains(&format!("it runs now as {ALICE}")));
    let ack = wait_for_message(&app, "started shop").await;
    let execution = app.st2.as_ref().unwrap().last_execution().unwrap();
    assert_eq!(execution.request["user"], ALICE, "it runs as the requester");
    assert_eq!(
        execution.user, "bot",
        "with the bridge's credential, as Alice linked no account"
    );
    assert_eq!(execution.execution["parameters"], json!({"app": "shop"}));
    assert_eq!(
        ack.content["m.relates_to"]["m.in_reply_to"]["event_id"],
        execution.request["source_context"]["event_id"],
        "the ack answers the command itself"
    );
    // The request is edited to say so.
    let edit = edits(&app).pop().expect("the request is edited");
    assert_eq!(edit.content["m.relates_to"]["event_id"], request.event_id);
    assert!(
        edit.content["m.new_content"]["body"]
            .as_str()
            .unwrap()
            .contains("Approved by @bob:example.org"),
        "{}",
        edit.content
    );
    // A late ✅ changes nothing.
    react(&app, CAROL, &request.event_id, "✅").await;
    poll::stays(Duration::from_millis(500), "one execution", || async {
        executions(&app) == 1
    })
    .await;
}

#[tokio::test]
async fn a_cross_from_an_approver_rejects_and_nothing_runs() {
    let app = app(ONE_APPROVER).await;
    let request = request(&app, "shop").await;
    react(&app, BOB, &request.event_id, "❌").await;
    wait_for_message(&app, "Rejected by @bob:example.org: it does not run").await;
    react(&app, CAROL, &request.event_id, "✅").await;
    assert_no_execution(&app).await;
}

#[tokio::test]
async fn approve_and_reject_commands_answer_requests_and_say_what_happened() {
    let app = app(
        "[[approvals]]\naliases = [\"deploy.*\"]\napprovers = [\"@bob:example.org\", \"@carol:example.org\"]\nrequired = 2\n",
    )
    .await;
    let first = request(&app, "shop").await;
    assert!(first.body.contains("2 approvals from different people"));
    say(
        &app,
        BOB,
        &format!("!st2 approve {}", first.id.to_uppercase()),
    )
    .await;
    wait_for_message(
        &app,
        &format!("Your approval of `{}` is recorded (1 of 2)", first.id),
    )
    .await;
    assert_no_execution(&app).await;
    say(&app, CAROL, &format!("!st2 approve {}", first.id)).await;
    wait_for_message(&app, "Approved by @bob:example.org, @carol:example.org").await;
    wait_for_message(&app, "started shop").await;

    let second = request(&app, "blog").await;
    say(
        &app,
        BOB,
        &format!("!st2 reject {} not during the freeze", second.id),
    )
    .await;
    wait_for_message(
        &app,
        "Rejected by @bob:example.org: not during the freeze: it does not run",
    )
    .await;
    say(&app, CAROL, &format!("!st2 approve {}", second.id)).await;
    wait_for_message(
        &app,
        &format!("Request `{}` was already rejected", second.id),
    )
    .await;
    say(&app, CAROL, "!st2 approve zzzzzz").await;
    wait_for_message(
        &app,
        "There is no request for approval `zzzzzz` in this room",
    )
    .await;
    no_message(&app, "started blog").await;
    assert_eq!(executions(&app), 1);

    // The requester may withdraw her own request.
    let third = request(&app, "wiki").await;
    say(&app, ALICE, &format!("!st2 reject {}", third.id)).await;
    wait_for_message(&app, "Withdrawn by @alice:example.org").await;
    assert_eq!(executions(&app), 1);
}

#[tokio::test]
async fn someone_who_may_not_approve_is_told_once_and_ignored() {
    let app = app(ONE_APPROVER).await;
    let request = request(&app, "shop").await;
    react(&app, EVE, &request.event_id, "✅").await;
    let told = wait_for_message(&app, "you may not approve").await;
    assert!(
        body(&told).contains("`@bob:example.org`"),
        "{}",
        body(&told)
    );
    react(&app, EVE, &request.event_id, "❌").await;
    react(&app, EVE, &request.event_id, "✅").await;
    no_message(&app, "Rejected").await;
    assert_eq!(
        messages(&app)
            .iter()
            .filter(|s| body(s).contains("you may not"))
            .count(),
        1,
        "one refusal per person"
    );
    // Typed, it is always answered.
    say(&app, EVE, &format!("!st2 approve {}", request.id)).await;
    poll::wait_until(WAIT, "a second refusal, to the command", || async {
        (messages(&app)
            .iter()
            .filter(|s| body(s).contains("you may not approve"))
            .count()
            == 2)
            .then_some(())
    })
    .await;
    assert_no_execution(&app).await;
    // An approver still can.
    react(&app, BOB, &request.event_id, "✅").await;
    wait_for_message(&app, "started shop").await;
}

#[tokio::test]
async fn a_request_nobody_answers_expires_and_a_late_approval_does_not_run_it() {
    let app = app(
        "[[approvals]]\naliases = [\"deploy.*\"]\napprovers = [\"@bob:example.org\"]\ntimeout = \"1s\"\n",
    )
    .await;
    let request = request(&app, "shop").await;
    let expired = wait_for_message(&app, "Expired: nobody approved it").await;
    assert_eq!(expired.content["m.mentions"]["user_ids"], json!([ALICE]));
    react(&app, BOB, &request.event_id, "✅").await;
    say(&app, BOB, &format!("!st2 approve {}", request.id)).await;
    wait_for_message(&app, "was already expired").await;
    assert_no_execution(&app).await;
    // Other commands are not held up.
    say(&app, ALICE, "!st2 uptime").await;
    poll::wait_until(WAIT, "uptime runs", || async {
        (executions(&app) == 1).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_request_survives_a_restart_and_runs_once_when_approved_after_it() {
    let app = app(ONE_APPROVER).await;
    let request = request(&app, "shop").await;
    let app = app.restart().await;
    react(&app, BOB, &request.event_id, "✅").await;
    wait_for_message(&app, "started shop").await;
    let app = app.restart().await;
    poll::stays(Duration::from_millis(800), "one execution", || async {
        executions(&app) == 1
    })
    .await;
    no_message(&app, "may or may not have run").await;
}

#[tokio::test]
async fn a_request_that_fell_due_while_the_bridge_was_down_expires_at_start() {
    let app = app(
        "[[approvals]]\naliases = [\"deploy.*\"]\napprovers = [\"@bob:example.org\"]\ntimeout = \"2s\"\n",
    )
    .await;
    let mut app = app;
    let request = request(&app, "shop").await;
    app.shutdown().await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let app = app.restart().await;
    wait_for_message(&app, "Expired: nobody approved it").await;
    react(&app, BOB, &request.event_id, "✅").await;
    assert_no_execution(&app).await;
}

#[tokio::test]
async fn approvers_may_be_a_power_level_and_rooms_get_rules_from_the_admin_room() {
    let config = "[bridge]\nadmins = [\"@admin:example.org\"]\n";
    let app = app(config).await;
    poll::wait_until(WAIT, "the admin room", || async {
        app.bridge.rooms.admin_room.read().unwrap().clone()
    })
    .await;
    let admin_room = app.bridge.rooms.admin_room.read().unwrap().clone().unwrap();
    app.push(
        "inv",
        vec![events::member(ROOM, ALICE, BOT, "invite", "$inv")],
    )
    .await;
    poll::wait_until(WAIT, "the bot to join", || async {
        st2_matrix::store::rooms::get(&app.bridge.store, ROOM)
            .await
            .unwrap()
    })
    .await;
    app.hs.set_room_state(ROOM, vec![
        json!({"type": "m.room.create", "sender": ALICE, "state_key": "", "content": {"room_version": "11"}}),
        json!({"type": "m.room.power_levels", "sender": ALICE, "state_key": "", "content": {"users": {BOB: 50, ALICE: 100}, "users_default": 0}}),
    ]);
    let admin_say = |text: String| {
        let app = &app;
        let room = admin_room.to_string();
        async move {
            let id = format!("$a{}", next_id());
            push(app, events::text(&room, ADMIN, &id, &text)).await;
            poll::wait_until(WAIT, &format!("a reply to {text:?}"), || async {
                app.read(&room)
                    .await
                    .into_iter()
                    .find(|s| s.content["m.relates_to"]["m.in_reply_to"]["event_id"] == id.as_str())
            })
            .await
        }
    };
    let added = body(
        &admin_say(format!(
            "rooms approvals {ROOM} add deploy.* power>=50 --timeout 1h"
        ))
        .await,
    );
    assert!(
        added.contains("rule 1") && added.contains("`power>=50`"),
        "{added}"
    );
    let bad = body(
        &admin_say(format!(
            "rooms approvals {ROOM} add deploy.* power>=50 --required 0"
        ))
        .await,
    );
    assert!(bad.contains("--required must be at least 1"), "{bad}");
    let listed = body(&admin_say(format!("rooms approvals {ROOM}")).await);
    assert!(
        listed.contains("- 1: `deploy.*` → approvers `power>=50`, 1 needed, expires after 1h"),
        "{listed}"
    );

    let request = request(&app, "shop").await;
    react(&app, CAROL, &request.event_id, "✅").await;
    wait_for_message(&app, "you may not approve").await;
    react(&app, BOB, &request.event_id, "✅").await;
    wait_for_message(&app, "started shop").await;

    let removed = body(&admin_say(format!("rooms approvals {ROOM} remove 1")).await);
    assert!(removed.contains("Removed approval rule 1"), "{removed}");
    say(&app, ALICE, "!st2 deploy blog").await;
    wait_for_message(&app, "started blog").await;
}

#[tokio::test]
async fn an_approved_command_runs_with_the_requesters_own_stackstorm_account() {
    let app = app(ONE_APPROVER).await;
    let st2 = app.st2.as_ref().unwrap();
    st2.add_user("alice", "alice-password");
    st2.add_user("bob", "bob-password");
    let alice_key = st2.add_api_key("alice");
    let bob_key = st2.add_api_key("bob");
    for (user, key) in [(ALICE, alice_key), (BOB, bob_key)] {
        st2_matrix::identity::link_api_key(
            &app.bridge.core,
            &ruma::UserId::parse(user).unwrap(),
            &st2_matrix::secret::Secret::new(key),
        )
        .await
        .unwrap();
    }
    let request = request(&app, "shop").await;
    react(&app, BOB, &request.event_id, "✅").await;
    wait_for_message(&app, "started shop").await;
    let execution = st2.last_execution().unwrap();
    assert_eq!(
        (execution.request["user"].as_str(), execution.user.as_str()),
        (Some(ALICE), "alice"),
        "Alice's command, with Alice's StackStorm credential, not Bob's"
    );
}

#[tokio::test]
async fn an_approved_command_that_now_matches_another_alias_is_not_run() {
    let app = app(ONE_APPROVER).await;
    let request = request(&app, "shop").await;
    // StackStorm's aliases change while the request waits.
    let st2 = app.st2.as_ref().unwrap();
    st2.set_aliases(vec![
        alias("rollout", "web", "deploy {{app}}"),
        alias("ops", "uptime", "uptime"),
    ]);
    st2_matrix::aliases::refresh_once(
        &app.bridge.aliases,
        &app.bridge.store,
        app.bridge.st2.as_ref().unwrap(),
        &app.bridge.config.bridge.packs,
    )
    .await
    .unwrap();
    react(&app, BOB, &request.event_id, "✅").await;
    let refused = wait_for_message(&app, "was approved as `deploy.web`").await;
    assert!(
        body(&refused).contains("now matches `rollout.web`")
            && body(&refused).contains("was not run"),
        "{}",
        body(&refused)
    );
    assert_no_execution(&app).await;
}
