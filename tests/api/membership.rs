//! Invites, removals, and encrypted rooms with encryption off (with it on: `encryption.rs`).

use st2_matrix_testkit::{homeserver::events, poll};

use crate::helpers::*;

const MALLORY: &str = "@mallory:evil.org";

#[tokio::test]
async fn an_invite_from_an_allowed_user_is_accepted() {
    let app = TestApp::spawn().await;
    app.push(
        "1",
        vec![events::member(ROOM, ALICE, BOT, "invite", "$inv")],
    )
    .await;
    poll::wait_until(WAIT, "the bot to join", || async {
        app.hs.joined().contains(&ROOM.to_owned()).then_some(())
    })
    .await;
    assert!(app.hs.left().is_empty());
}

#[tokio::test]
async fn an_invite_from_anyone_else_is_declined_with_a_reason() {
    let app = TestApp::spawn().await;
    app.push(
        "1",
        vec![events::member(ROOM, MALLORY, BOT, "invite", "$inv")],
    )
    .await;
    let left = poll::wait_until(WAIT, "the invite to be declined", || async {
        let left = app.hs.left();
        (!left.is_empty()).then_some(left)
    })
    .await;
    assert_eq!(left[0].0, ROOM);
    assert!(
        left[0]
            .1
            .as_deref()
            .unwrap_or_default()
            .contains("invite_allow")
    );
    assert!(app.hs.joined().is_empty());
}

#[tokio::test]
async fn invite_allow_rules_come_from_the_config() {
    let app = TestApp::spawn_with(Options {
        extra_config: "[bridge]\ninvite_allow = [\"@mallory:evil.org\"]",
        ..Default::default()
    })
    .await;
    app.push(
        "1",
        vec![
            events::member(ROOM, ALICE, BOT, "invite", "$a"),
            events::member("!other:x", MALLORY, BOT, "invite", "$b"),
        ],
    )
    .await;
    poll::wait_until(WAIT, "one join and one decline", || async {
        (app.hs.joined().len() == 1 && app.hs.left().len() == 1).then_some(())
    })
    .await;
    assert_eq!(app.hs.joined(), ["!other:x"]);
    assert_eq!(app.hs.left()[0].0, ROOM);
}

/// The bridge with `[encryption] enabled = false`: no device, encrypted rooms get a notice.
async fn without_encryption() -> TestApp {
    TestApp::spawn_with(Options {
        encryption_off: true,
        ..Default::default()
    })
    .await
}

#[tokio::test]
async fn with_encryption_off_an_encrypted_room_gets_one_notice() {
    let app = without_encryption().await;
    app.hs.set_encrypted(ROOM);
    app.push(
        "1",
        vec![events::member(ROOM, ALICE, BOT, "invite", "$inv")],
    )
    .await;
    let sent = app.wait_for_messages(ROOM, 1).await;
    assert!(
        sent[0].content["body"]
            .as_str()
            .unwrap()
            .contains("encrypted")
    );
    assert_eq!(sent[0].content["msgtype"], "m.notice");
    app.push(
        "2",
        vec![
            events::encrypted(ROOM, ALICE, "$e1"),
            events::encrypted(ROOM, ALICE, "$e2"),
        ],
    )
    .await;
    app.assert_message_count_stays(ROOM, 1).await;
}

#[tokio::test]
async fn with_encryption_off_a_room_that_turns_encrypted_later_gets_one_notice() {
    let app = without_encryption().await;
    app.push(
        "1",
        vec![events::member(ROOM, ALICE, BOT, "invite", "$inv")],
    )
    .await;
    poll::wait_until(WAIT, "the join", || async {
        (!app.hs.joined().is_empty()).then_some(())
    })
    .await;
    app.push("2", vec![events::encrypted(ROOM, ALICE, "$e1")])
        .await;
    app.push("3", vec![events::encrypted(ROOM, ALICE, "$e2")])
        .await;
    app.wait_for_messages(ROOM, 1).await;
    app.assert_message_count_stays(ROOM, 1).await;
}

#[tokio::test]
async fn a_kick_forgets_the_room() {
    let app = TestApp::spawn().await;
    app.push(
        "1",
        vec![events::member(ROOM, ALICE, BOT, "invite", "$inv")],
    )
    .await;
    poll::wait_until(WAIT, "the join", || async {
        (!app.hs.joined().is_empty()).then_some(())
    })
    .await;
    let store = st2_matrix::store::Store::connect(
        &format!("sqlite://{}", app.dir.path().join("bridge.db").display()),
        1,
        Default::default(),
    )
    .await
    .unwrap();
    poll::wait_until(WAIT, "the room to be recorded", || async {
        st2_matrix::store::rooms::get(&store, ROOM)
            .await
            .unwrap()
            .map(|_| ())
    })
    .await;
    app.push(
        "2",
        vec![events::member(ROOM, ALICE, BOT, "leave", "$kick")],
    )
    .await;
    poll::wait_until(WAIT, "the room to be forgotten", || async {
        st2_matrix::store::rooms::get(&store, ROOM)
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
}
