//! The outbox through homeserver failures: retries, order, give-up.

use std::time::Duration;

use st2_matrix_testkit::{
    homeserver::{Failure, events},
    poll,
};

use crate::helpers::*;

fn pings(n: usize) -> Vec<serde_json::Value> {
    (0..n)
        .map(|i| events::text(ROOM, ALICE, &format!("$c{i}"), "!st2 ping"))
        .collect()
}

fn answered(sent: &[st2_matrix_testkit::homeserver::Sent]) -> Vec<String> {
    sent.iter()
        .map(|s| {
            s.content["m.relates_to"]["m.in_reply_to"]["event_id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect()
}

#[tokio::test]
async fn rate_limits_and_server_errors_are_retried_in_order() {
    let app = TestApp::spawn().await;
    app.hs.fail_next_sends([
        Failure::RateLimited {
            retry_after_secs: 1,
        },
        Failure::Status(502),
        Failure::RateLimitedMs(200),
        Failure::Status(500),
    ]);
    app.push("1", pings(3)).await;
    let sent = app.wait_for_messages(ROOM, 3).await;
    assert_eq!(answered(&sent), ["$c0", "$c1", "$c2"]);
    // Retries reused the transaction id chosen at enqueue: all distinct, none duplicated.
    let mut txns: Vec<_> = sent.iter().map(|s| s.txn_id.clone()).collect();
    txns.dedup();
    assert_eq!(txns.len(), 3);
}

#[tokio::test]
async fn retry_after_is_honoured() {
    let app = TestApp::spawn().await;
    app.hs.fail_next_sends([Failure::RateLimited {
        retry_after_secs: 2,
    }]);
    let started = std::time::Instant::now();
    app.push("1", pings(1)).await;
    app.wait_for_messages(ROOM, 1).await;
    assert!(
        started.elapsed() >= Duration::from_millis(1900),
        "sent after {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_permanent_failure_is_marked_failed_and_the_queue_moves_on() {
    let app = TestApp::spawn().await;
    app.hs.fail_next_sends([Failure::Forbidden]);
    app.push("1", pings(2)).await;
    let sent = app.wait_for_messages(ROOM, 1).await;
    assert_eq!(answered(&sent), ["$c1"]);
    let store = outbox_store(&app).await;
    // The homeserver records the send before the outbox marks the row delivered: wait for both.
    poll::wait_until(WAIT, "one failed, none pending", || async {
        let stats = st2_matrix::store::outbox::stats(&store).await.unwrap();
        ((stats.pending, stats.failed) == (0, 1)).then_some(())
    })
    .await;
}

#[tokio::test]
async fn messages_wait_through_a_homeserver_outage() {
    let app = TestApp::spawn().await;
    app.hs.set_down(true);
    let before = app.send_attempts();
    app.push("1", pings(3)).await;
    app.wait_for_send_attempts(before, 2).await; // tried, failed, tried again
    assert!(app.hs.sent().is_empty());
    app.hs.set_down(false);
    let sent = app.wait_for_messages(ROOM, 3).await;
    assert_eq!(answered(&sent), ["$c0", "$c1", "$c2"]);
}

#[tokio::test]
async fn queued_messages_survive_a_restart() {
    let mut app = TestApp::spawn().await;
    app.hs.set_down(true);
    app.push("1", pings(2)).await;
    poll::wait_until(WAIT, "a failed send attempt", || async {
        // With encryption on, an attempt starts by asking whether the room is encrypted.
        app.hs
            .requests()
            .iter()
            .any(|r| r.path.contains("/send/") || r.path.contains("/state/m.room.encryption"))
            .then_some(())
    })
    .await;
    app.shutdown().await;
    app.hs.set_down(false);
    let app = app.restart().await;
    let sent = app.wait_for_messages(ROOM, 2).await;
    assert_eq!(answered(&sent), ["$c0", "$c1"]);
}

/// The bridge's own outbox rows, read from its database.
async fn outbox_store(app: &TestApp) -> st2_matrix::store::Store {
    st2_matrix::store::Store::connect(
        &format!("sqlite://{}", app.dir.path().join("bridge.db").display()),
        1,
        Default::default(),
    )
    .await
    .unwrap()
}

fn lookups(app: &TestApp) -> usize {
    app.hs
        .requests()
        .iter()
        .filter(|r| r.path.ends_with("/messages"))
        .count()
}

#[tokio::test]
async fn a_send_whose_answer_was_lost_is_looked_up_not_sent_twice() {
    let app = TestApp::spawn().await;
    // Stored, but the gateway answered 504; then the homeserver restarted and forgot the
    // transaction id, so a blind re-send would post the reply twice.
    app.hs.fail_next_sends([Failure::StoredButLost(504)]);
    app.push("1", pings(1)).await;
    app.wait_for_messages(ROOM, 1).await;
    app.push("2", vec![events::text(ROOM, ALICE, "$c9", "!st2 ping")])
        .await;
    let sent = app.wait_for_messages(ROOM, 2).await;
    assert_eq!(answered(&sent), ["$c0", "$c9"], "each reply once, in order");
    assert!(lookups(&app) >= 1, "the send in doubt was looked up");
    let store = outbox_store(&app).await;
    poll::wait_until(WAIT, "nothing pending", || async {
        let stats = st2_matrix::store::outbox::stats(&store).await.unwrap();
        (stats.pending == 0 && stats.failed == 0).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_send_in_doubt_that_never_arrived_is_sent() {
    let app = TestApp::spawn().await;
    // A gateway timeout without the event stored: the look-up finds nothing, so it is sent.
    app.hs.fail_next_sends([Failure::Status(504)]);
    app.push("1", pings(2)).await;
    let sent = app.wait_for_messages(ROOM, 2).await;
    assert_eq!(answered(&sent), ["$c0", "$c1"]);
    assert!(lookups(&app) >= 1, "the send in doubt was looked up");
}

#[tokio::test]
async fn a_clear_refusal_is_retried_without_a_look_up() {
    let app = TestApp::spawn().await;
    app.hs.fail_next_sends([
        Failure::RateLimited {
            retry_after_secs: 1,
        },
        Failure::Status(500),
        Failure::Status(503),
    ]);
    app.push("1", pings(2)).await;
    let sent = app.wait_for_messages(ROOM, 2).await;
    assert_eq!(answered(&sent), ["$c0", "$c1"]);
    assert_eq!(lookups(&app), 0, "nothing was in doubt");
}

#[tokio::test]
async fn messages_in_flight_at_a_crash_are_looked_up_after_it() {
    let mut app = TestApp::spawn().await;
    app.hs.set_down(true);
    app.push("1", pings(3)).await;
    app.wait_for_send_attempts(app.send_attempts(), 1).await;
    app.shutdown().await;
    // As a crash mid-pass leaves them: all three in doubt, the first one on the homeserver
    // already (sent, its success not recorded), and the homeserver restarted since.
    let store = outbox_store(&app).await;
    let pending = st2_matrix::store::outbox::pending(&store, 10)
        .await
        .unwrap();
    assert_eq!(pending.len(), 3);
    st2_matrix::store::outbox::mark_in_doubt(&store, ROOM, i64::MAX)
        .await
        .unwrap();
    drop(store);
    app.hs.set_down(false);
    app.hs.store_sent(
        ROOM,
        &pending[0].txn_id,
        &pending[0].event_type,
        &pending[0].content,
    );
    app.hs.forget_transactions();
    let before = lookups(&app);
    let app = app.restart().await;
    let sent = app.wait_for_messages(ROOM, 3).await;
    assert_eq!(answered(&sent), ["$c0", "$c1", "$c2"], "each once");
    assert_eq!(
        lookups(&app) - before,
        1,
        "one look-up for the room's messages in doubt"
    );
}
