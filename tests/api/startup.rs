//! Start-up checks and crash recovery.

use st2_matrix::store::{Store, inbox, txns};
use st2_matrix_testkit::{homeserver::events, poll};

use crate::helpers::*;

#[tokio::test]
async fn start_registers_the_bot_sets_its_name_and_pings() {
    let app = TestApp::spawn().await;
    assert_eq!(app.hs.registered(), [BOT]);
    assert_eq!(app.hs.displayname(BOT).as_deref(), Some("StackStorm"));
    poll::wait_until(WAIT, "a ping", || async {
        (app.hs.pings() > 0).then_some(())
    })
    .await;
    let app = app.restart().await;
    // Registered already: M_USER_IN_USE is fine.
    assert_eq!(app.hs.registered(), [BOT]);
}

#[tokio::test]
async fn a_rejected_as_token_stops_start_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let hs = st2_matrix_testkit::homeserver::HomeserverDouble::start("the-right-token", BOT).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let bind = listener.local_addr().unwrap();
    let text = format!(
        "[homeserver]\nurl = \"{}\"\nserver_name = \"{SERVER}\"\n[appservice]\nbind = \"{bind}\"\nurl = \"http://{bind}\"\n[database]\nurl = \"sqlite://{}\"\n",
        hs.url(),
        dir.path().join("b.db").display()
    );
    let config =
        st2_matrix::config::Config::parse(&text, &dir.path().join("c.toml"), std::iter::empty())
            .unwrap();
    let registration = st2_matrix::registration::generate(&config);
    let error = match st2_matrix::startup::App::build(config, registration, listener).await {
        Ok(_) => panic!("start must fail"),
        Err(e) => format!("{e:#}"),
    };
    assert!(
        error.contains("as_token") && error.contains("app_service_config_files"),
        "{error}"
    );
}

#[tokio::test]
async fn an_unreachable_homeserver_stops_start_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let bind = listener.local_addr().unwrap();
    let text = format!(
        "[homeserver]\nurl = \"http://127.0.0.1:9\"\nserver_name = \"{SERVER}\"\nstartup_timeout = \"1s\"\n[appservice]\nbind = \"{bind}\"\nurl = \"http://{bind}\"\n[database]\nurl = \"sqlite://{}\"\n",
        dir.path().join("b.db").display()
    );
    let config =
        st2_matrix::config::Config::parse(&text, &dir.path().join("c.toml"), std::iter::empty())
            .unwrap();
    let registration = st2_matrix::registration::generate(&config);
    let error = match st2_matrix::startup::App::build(config, registration, listener).await {
        Ok(_) => panic!("start must fail"),
        Err(e) => format!("{e:#}"),
    };
    assert!(
        error.contains("cannot reach the homeserver") && error.contains("homeserver.url"),
        "{error}"
    );
}

#[tokio::test]
async fn work_stored_before_a_crash_is_done_once_after_restart() {
    // A transaction stored (and acknowledged) just before the bridge died, its command not
    // yet answered: the next start answers it, once.
    let mut app = TestApp::spawn().await;
    app.shutdown().await;
    let store = Store::connect(
        &format!("sqlite://{}", app.dir.path().join("bridge.db").display()),
        1,
        Default::default(),
    )
    .await
    .unwrap();
    let event = events::text(ROOM, ALICE, "$cmd", "!st2 ping").to_string();
    let row = inbox::NewEvent {
        event_id: "$cmd",
        room_id: ROOM,
        kind: inbox::Kind::Command,
        event: &event,
    };
    txns::store_transaction(&store, "crash:1", &[row])
        .await
        .unwrap();
    store.close().await;
    let app = app.restart().await;
    app.wait_for_messages(ROOM, 1).await;
    // The homeserver re-sends the transaction it never saw acknowledged: nothing new.
    app.push("1", vec![events::text(ROOM, ALICE, "$cmd", "!st2 ping")])
        .await;
    app.assert_message_count_stays(ROOM, 1).await;
}
