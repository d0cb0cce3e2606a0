//! Health, readiness, metrics.

use st2_matrix_testkit::homeserver::events;

use crate::helpers::*;

#[tokio::test]
async fn health_and_ready_answer() {
    let app = TestApp::spawn().await;
    let (status, body) = app.get("/health", None).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("ok")));
    let (status, body) = app.get("/ready", None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["homeserver"], "ok");
    assert_eq!(body["database"], "ok");
}

#[tokio::test]
async fn ready_reports_a_homeserver_outage() {
    let app = TestApp::spawn().await;
    app.hs.set_down(true);
    let (status, body) = app.get("/ready", None).await;
    assert_eq!(status, 503);
    assert!(
        body["homeserver"].as_str().unwrap().starts_with("error"),
        "{body}"
    );
}

#[tokio::test]
async fn metrics_count_transactions_and_sends() {
    let app = TestApp::spawn().await;
    app.push("1", vec![events::text(ROOM, ALICE, "$cmd", "!st2 ping")])
        .await;
    app.wait_for_messages(ROOM, 1).await;
    let (status, body) = app.get("/metrics", None).await;
    assert_eq!(status, 200);
    let text = body.as_str().unwrap();
    for metric in [
        "st2_matrix_transactions_total",
        "st2_matrix_events_total",
        "st2_matrix_messages_sent_total",
        "st2_matrix_send_duration_seconds",
    ] {
        assert!(text.contains(metric), "{metric} missing from:\n{text}");
    }
}
