//! Long results: a summary and the whole text as a file (`m.file`), uploaded by the outbox
//! when it sends the message; encrypted in encrypted rooms.

use std::io::Read as _;

use serde_json::{Value, json};
use st2_matrix_testkit::{
    homeserver::{Failure, Sent, events},
    poll,
};

use crate::helpers::*;

fn body(sent: &Sent) -> &str {
    sent.content["body"].as_str().unwrap_or_default()
}

/// `lines` numbered lines: about 30 bytes each.
fn output(lines: usize) -> String {
    (0..lines)
        .map(|i| format!("line {i} of a long command output\n"))
        .collect()
}

/// A bridge with StackStorm and an alias whose result is the command's stdout, in ROOM
/// (encrypted when `encrypted`, ALICE reading with her device).
async fn app(encrypted: bool) -> TestApp {
    let st2 = st2_double().await;
    st2.set_aliases(vec![json!({
        "name": "shell", "pack": "ops", "ref": "ops.shell", "action_ref": "core.local",
        "enabled": true, "formats": ["shell {{cmd}}"], "ack": {"enabled": false},
        "result": {"format": "{{ execution.result.stdout }}"},
    })]);
    let app = TestApp::spawn_with_double(
        Options {
            st2: Some(St2Auth::ApiKey),
            devices: &[ALICE],
            ..Default::default()
        },
        Some(st2),
    )
    .await;
    if encrypted {
        app.hs.set_encrypted(ROOM);
        app.hs.set_members(ROOM, &[(ALICE, "join"), (BOT, "join")]);
    }
    app.push(
        "join",
        vec![events::member(ROOM, ALICE, BOT, "invite", "$invite")],
    )
    .await;
    poll::wait_until(
        WAIT,
        "the bot to join and the stream to connect",
        || async {
            let joined = st2_matrix::store::rooms::get(&app.bridge.store, ROOM)
                .await
                .unwrap()
                .is_some();
            let fetched = app.bridge.aliases.catalog().fetched_at.is_some();
            (joined && fetched && app.st2.as_ref().unwrap().stream_subscribers() > 0).then_some(())
        },
    )
    .await;
    app
}

/// Runs `!st2 shell` as ALICE (command `$cmd`) and finishes it with `stdout`; returns the
/// execution id.
async fn run_and_finish(app: &TestApp, stdout: &str) -> String {
    let st2 = app.st2.as_ref().unwrap();
    app.push(
        "cmd",
        vec![events::text(ROOM, ALICE, "$cmd", "!st2 shell make")],
    )
    .await;
    let id = poll::wait_until(WAIT, "the execution", || async {
        st2.executions().last().map(|e| e.id.clone())
    })
    .await;
    // Finished once the bridge has recorded it (with its ack), as a real execution takes longer
    // than that: the result then names it.
    poll::wait_until(WAIT, "the execution recorded", || async {
        st2_matrix::store::executions::get(&app.bridge.store, &id)
            .await
            .unwrap()
            .map(drop)
    })
    .await;
    st2.finish_execution(&id, "succeeded", json!({"stdout": stdout, "stderr": ""}));
    id
}

#[tokio::test]
async fn a_long_result_is_one_summary_and_one_file_holding_the_whole_text() {
    // Arrange
    let app = app(false).await;
    let stdout = output(2000);

    // Act
    let id = run_and_finish(&app, &stdout).await;

    // Assert
    let sent = app.wait_for_messages(ROOM, 2).await;
    let (summary, file) = (&sent[0], &sent[1]);
    let name = format!("execution-{id}.txt");
    assert!(
        body(summary).starts_with(&format!("{ALICE}: line 0 of")),
        "{}",
        body(summary)
    );
    assert!(body(summary).contains(&format!("full output attached: `{name}`")));
    assert!(body(summary).len() < 2048, "a short summary");
    assert_eq!(summary.content["m.mentions"]["user_ids"], json!([ALICE]));
    assert_eq!(file.content["msgtype"], "m.file");
    assert_eq!(
        (
            file.content["body"].as_str(),
            file.content["filename"].as_str()
        ),
        (Some(name.as_str()), Some(name.as_str()))
    );
    assert_eq!(
        file.content["info"]["mimetype"],
        "text/plain; charset=utf-8"
    );
    assert_eq!(
        file.content["m.mentions"],
        json!({}),
        "one notification per result"
    );
    for part in [summary, file] {
        assert_eq!(part.content["m.relates_to"]["rel_type"], "m.thread");
        assert_eq!(part.content["m.relates_to"]["event_id"], "$cmd");
    }
    let uploads = app.hs.media_uploads();
    assert_eq!(uploads.len(), 1);
    assert_eq!(file.content["url"], uploads[0].content_uri.as_str());
    assert_eq!(uploads[0].filename.as_deref(), Some(name.as_str()));
    assert_eq!(
        uploads[0].content_type.as_deref(),
        Some("text/plain; charset=utf-8")
    );
    let text = String::from_utf8(uploads[0].data.clone()).unwrap();
    assert_eq!(text.trim_end(), stdout.trim_end(), "the whole text");
    assert_eq!(
        file.content["info"]["size"].as_u64(),
        Some(uploads[0].data.len() as u64)
    );
    app.assert_message_count_stays(ROOM, 2).await;
}

#[tokio::test]
async fn a_short_result_is_one_message_and_uploads_nothing() {
    let app = app(false).await;
    run_and_finish(&app, "all good\n").await;
    let sent = app.wait_for_messages(ROOM, 1).await;
    assert_eq!(body(&sent[0]).trim_end(), format!("{ALICE}: all good"));
    assert_eq!(sent[0].content["msgtype"], "m.notice");
    app.assert_message_count_stays(ROOM, 1).await;
    assert!(app.hs.media_uploads().is_empty());
}

#[tokio::test]
async fn a_failing_upload_is_retried_and_the_file_arrives_once() {
    let app = app(false).await;
    app.hs.fail_next_uploads([
        Failure::Status(502),
        Failure::RateLimited {
            retry_after_secs: 1,
        },
    ]);
    let stdout = output(1000);
    run_and_finish(&app, &stdout).await;
    let sent = app.wait_for_messages(ROOM, 2).await;
    assert_eq!(sent[1].content["msgtype"], "m.file");
    let uploads = app.hs.media_uploads();
    assert_eq!(uploads.len(), 1, "uploaded once it worked, not again");
    assert_eq!(sent[1].content["url"], uploads[0].content_uri.as_str());
    assert_eq!(
        String::from_utf8_lossy(&uploads[0].data).trim_end(),
        stdout.trim_end()
    );
    app.assert_message_count_stays(ROOM, 2).await;
}

#[tokio::test]
async fn in_an_encrypted_room_the_file_is_encrypted_and_its_key_decrypts_it_to_the_text() {
    // Arrange
    let app = app(true).await;
    let text = output(1500);

    // Act
    app.st2
        .as_ref()
        .unwrap()
        .announce("matrix", json!({"channel": ROOM, "message": text}));

    // Assert
    let sent = app.wait_for_messages(ROOM, 2).await;
    let raw = app.hs.sent_to(ROOM);
    assert!(raw.iter().all(|s| s.event_type == "m.room.encrypted"));
    let file = &sent[1];
    assert_eq!(file.event_type, "m.room.message", "Alice can read it");
    assert_eq!(file.content["msgtype"], "m.file");
    assert_eq!(file.content["body"], "result.txt");
    assert!(file.content.get("url").is_none(), "{}", file.content);
    let key: Value = file.content["file"].clone();
    assert_eq!(key["v"], "v2");
    let uploads = app.hs.media_uploads();
    assert_eq!(uploads.len(), 1);
    let upload = &uploads[0];
    assert_eq!(key["url"], upload.content_uri.as_str());
    assert_eq!(
        (upload.content_type.as_deref(), upload.filename.as_deref()),
        (Some("application/octet-stream"), None),
        "nothing about the file in the clear"
    );
    assert!(!String::from_utf8_lossy(&upload.data).contains("line 0 of"));
    let info: matrix_sdk_crypto::MediaEncryptionInfo = serde_json::from_value(key).unwrap();
    let mut ciphertext = upload.data.as_slice();
    let mut decryptor = matrix_sdk_crypto::AttachmentDecryptor::new(&mut ciphertext, info).unwrap();
    let mut plain = Vec::new();
    decryptor.read_to_end(&mut plain).unwrap();
    assert_eq!(String::from_utf8(plain).unwrap(), text);
}

#[tokio::test]
async fn a_long_result_queued_while_the_homeserver_is_down_arrives_whole_after_a_restart() {
    // Arrange: the result is queued, but nothing (upload or send) can go out.
    let mut app = app(false).await;
    app.hs.set_down(true);
    let text = output(1000);
    app.st2
        .as_ref()
        .unwrap()
        .announce("matrix", json!({"channel": ROOM, "message": text}));
    poll::wait_until(WAIT, "the result queued", || async {
        let stats = st2_matrix::store::outbox::stats(&app.bridge.store)
            .await
            .unwrap();
        (stats.pending >= 2).then_some(())
    })
    .await;

    // Act: stopped with it still queued; the homeserver comes back before the next start.
    app.shutdown().await;
    app.hs.set_down(false);
    let app = app.restart().await;

    // Assert
    let sent = app.wait_for_messages(ROOM, 2).await;
    assert!(body(&sent[0]).contains("full output attached: `result.txt`"));
    assert_eq!(sent[1].content["msgtype"], "m.file");
    let uploads = app.hs.media_uploads();
    assert_eq!(uploads.len(), 1);
    assert_eq!(String::from_utf8_lossy(&uploads[0].data), text);
    app.assert_message_count_stays(ROOM, 2).await;
}
