//! The homeserver double's end-to-end encryption endpoints against what Synapse answers (see
//! the module docs of `homeserver`), and people's devices ([`HumanDevice`]) working through it:
//! these keep the double honest, so the bridge's device is tested against Synapse's behaviour.

use std::time::Instant;

use reqwest::{Client, Method, StatusCode};
use serde_json::{Value, json};
use st2_matrix_testkit::{
    homeserver::{HomeserverDouble, Sent},
    human::HumanDevice,
};

const TOKEN: &str = "as-token";
const BOT: &str = "@st2bot:example.org";
const ALICE: &str = "@alice:example.org";
const BOB: &str = "@bob:example.org";
const ROOM: &str = "!room:example.org";

fn client() -> Client {
    // Built in the same cargo invocation as the bridge, reqwest gets the bridge's
    // `rustls-no-provider` feature and needs a provider even for plain http.
    let _ = rustls::crypto::ring::default_provider().install_default();
    Client::builder()
        .no_proxy()
        .build()
        .expect("reqwest client")
}

/// `method path` with the as_token and `body`; the status and JSON answer.
async fn call(
    hs: &HomeserverDouble,
    method: Method,
    path: &str,
    body: Value,
) -> (StatusCode, Value) {
    let response = client()
        .request(method, format!("{}{path}", hs.url()))
        .bearer_auth(TOKEN)
        .json(&body)
        .send()
        .await
        .expect("the double answers");
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// The query string acting as the bot's `device`.
fn as_device(device: &str) -> String {
    format!("user_id=%40st2bot%3Aexample.org&device_id={device}")
}

#[tokio::test]
async fn a_device_must_be_created_before_the_appservice_acts_as_it() {
    // Arrange
    let hs = HomeserverDouble::start(TOKEN, BOT).await;
    let upload = format!("/_matrix/client/v3/keys/upload?{}", as_device("BOTDEV"));

    // Act
    let (refused, error) = call(&hs, Method::POST, &upload, json!({})).await;
    let created = call(
        &hs,
        Method::PUT,
        "/_matrix/client/v3/devices/BOTDEV",
        json!({"display_name": "bot"}),
    )
    .await;
    let updated = call(
        &hs,
        Method::PUT,
        "/_matrix/client/v3/devices/BOTDEV",
        json!({}),
    )
    .await;
    let (accepted, counts) = call(&hs, Method::POST, &upload, json!({})).await;

    // Assert
    assert_eq!(refused, StatusCode::BAD_REQUEST);
    assert_eq!(error["errcode"], "ORG.MATRIX.MSC4326.M_UNKNOWN_DEVICE");
    assert_eq!(created.0, StatusCode::CREATED);
    assert_eq!(updated.0, StatusCode::OK);
    assert_eq!(accepted, StatusCode::OK);
    assert_eq!(
        counts,
        json!({"one_time_key_counts": {"signed_curve25519": 0}})
    );
    assert_eq!(hs.devices(BOT), ["BOTDEV"]);
}

#[tokio::test]
async fn claims_take_one_time_keys_first_then_the_fallback_key_which_stays() {
    // Arrange
    let hs = HomeserverDouble::start(TOKEN, BOT).await;
    hs.register_device(BOT, "BOTDEV", None);
    let upload = format!("/_matrix/client/v3/keys/upload?{}", as_device("BOTDEV"));
    let (_, counts) = call(&hs, Method::POST, &upload, json!({
        "one_time_keys": {"signed_curve25519:AAAAAQ": {"key": "k1"}, "signed_curve25519:AAAAAg": {"key": "k2"}},
        "fallback_keys": {"signed_curve25519:AAAAAw": {"key": "f", "fallback": true}},
    }))
    .await;
    assert_eq!(counts["one_time_key_counts"]["signed_curve25519"], 2);
    let claim = json!({"one_time_keys": {BOT: {"BOTDEV": "signed_curve25519"}}});

    // Act
    let mut claimed = Vec::new();
    for _ in 0..4 {
        let (_, answer) = call(
            &hs,
            Method::POST,
            "/_matrix/client/v3/keys/claim",
            claim.clone(),
        )
        .await;
        let keys = answer["one_time_keys"][BOT]["BOTDEV"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        claimed.push(keys.keys().cloned().collect::<Vec<_>>().join(","));
    }

    // Assert
    assert_eq!(
        claimed,
        [
            "signed_curve25519:AAAAAQ",
            "signed_curve25519:AAAAAg",
            "signed_curve25519:AAAAAw",
            "signed_curve25519:AAAAAw"
        ]
    );
    assert_eq!(hs.one_time_key_count(BOT, "BOTDEV"), 0);
    let transaction = hs.appservice_transaction(Vec::new());
    assert_eq!(
        transaction["org.matrix.msc3202.device_unused_fallback_key_types"],
        json!({BOT: {"BOTDEV": []}}),
        "the fallback key is marked used"
    );
    assert_eq!(
        transaction["org.matrix.msc3202.device_one_time_keys_count"],
        json!({BOT: {"BOTDEV": {}}})
    );
}

#[tokio::test]
async fn to_device_messages_reach_every_device_once_and_the_bots_ride_in_one_transaction() {
    // Arrange
    let hs = HomeserverDouble::start(TOKEN, BOT).await;
    hs.register_device(BOT, "BOTDEV", None);
    hs.register_device(ALICE, "PHONE", None);
    hs.register_device(ALICE, "LAPTOP", None);
    let send = format!(
        "/_matrix/client/v3/sendToDevice/m.dummy/txn1?{}",
        as_device("BOTDEV")
    );
    let body = json!({"messages": {ALICE: {"*": {"n": 1}}, BOT: {"BOTDEV": {"n": 2}}, BOB: {"GONE": {"n": 3}}}});

    // Act
    let first = call(&hs, Method::PUT, &send, body.clone()).await;
    let again = call(&hs, Method::PUT, &send, body).await;
    let transaction = hs.appservice_transaction(Vec::new());
    let next = hs.appservice_transaction(Vec::new());

    // Assert
    assert_eq!((first.0, again.0), (StatusCode::OK, StatusCode::OK));
    for device in ["PHONE", "LAPTOP"] {
        let messages = hs.to_device_for(ALICE, device);
        assert_eq!(messages.len(), 1, "{device}: once, though sent twice");
        assert_eq!(
            messages[0].event(),
            json!({"sender": BOT, "type": "m.dummy", "content": {"n": 1}})
        );
        assert_eq!(messages[0].sender_device.as_deref(), Some("BOTDEV"));
    }
    assert!(
        hs.to_device_for(BOB, "GONE").is_empty(),
        "no such device: dropped"
    );
    assert_eq!(
        transaction["de.sorunome.msc2409.to_device"],
        json!([{"sender": BOT, "type": "m.dummy", "content": {"n": 2}, "to_user_id": BOT, "to_device_id": "BOTDEV"}])
    );
    assert_eq!(
        next["de.sorunome.msc2409.to_device"],
        json!([]),
        "delivered once"
    );
}

#[tokio::test]
async fn a_room_created_encrypted_has_its_members_and_state() {
    // Arrange
    let hs = HomeserverDouble::start(TOKEN, BOT).await;
    let create = json!({"invite": [ALICE], "preset": "private_chat", "initial_state": [
        {"type": "m.room.encryption", "state_key": "", "content": {"algorithm": "m.megolm.v1.aes-sha2", "rotation_period_msgs": 100}}]});

    // Act
    let (_, created) = call(&hs, Method::POST, "/_matrix/client/v3/createRoom", create).await;
    let room = created["room_id"].as_str().expect("a room id").to_owned();
    let (_, members) = call(
        &hs,
        Method::GET,
        &format!("/_matrix/client/v3/rooms/{room}/members"),
        Value::Null,
    )
    .await;
    let (_, encryption) = call(
        &hs,
        Method::GET,
        &format!("/_matrix/client/v3/rooms/{room}/state/m.room.encryption/"),
        Value::Null,
    )
    .await;
    let (_, visibility) = call(
        &hs,
        Method::GET,
        &format!("/_matrix/client/v3/rooms/{room}/state/m.room.history_visibility/"),
        Value::Null,
    )
    .await;
    let (unknown, _) = call(
        &hs,
        Method::GET,
        &format!("/_matrix/client/v3/rooms/{ROOM}/members"),
        Value::Null,
    )
    .await;

    // Assert
    let memberships: Vec<(String, String)> = members["chunk"]
        .as_array()
        .expect("a chunk")
        .iter()
        .map(|e| {
            (
                e["state_key"].as_str().unwrap_or_default().to_owned(),
                e["content"]["membership"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            )
        })
        .collect();
    assert_eq!(
        memberships,
        [
            (ALICE.to_owned(), "invite".to_owned()),
            (BOT.to_owned(), "join".to_owned())
        ]
    );
    assert_eq!(encryption["rotation_period_msgs"], 100);
    assert_eq!(visibility, json!({"history_visibility": "shared"}));
    assert_eq!(unknown, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn two_peoples_devices_read_each_others_encrypted_messages_through_the_double() {
    // Arrange
    let hs = HomeserverDouble::start(TOKEN, BOT).await;
    hs.set_members(ROOM, &[(ALICE, "join"), (BOB, "join")]);
    let alice = HumanDevice::new(&hs, ALICE, "ALICEDEV").await;
    let bob = HumanDevice::new(&hs, BOB, "BOBDEV").await;

    // Act
    alice.share_room_key(ROOM, &[ALICE, BOB]).await;
    let event = alice.encrypted_text(ROOM, "$hello", "hello Bob").await;
    let as_sent = Sent {
        room_id: ROOM.into(),
        event_type: "m.room.encrypted".into(),
        txn_id: "t".into(),
        content: event["content"].clone(),
        event_id: "$hello".into(),
        user_id: Some(ALICE.into()),
        received_at: Instant::now(),
    };
    let read = bob.decrypt(&as_sent).await;

    // Assert
    assert!(hs.device_keys(ALICE, "ALICEDEV").is_some(), "keys uploaded");
    assert!(hs.one_time_key_count(BOB, "BOBDEV") > 0);
    let read = read.expect("Bob reads Alice's message");
    assert_eq!(read["content"]["body"], "hello Bob");
    assert_eq!(read["sender"], ALICE);
    assert_eq!(
        hs.to_device_for(BOB, "BOBDEV")[0].event_type,
        "m.room.encrypted"
    );
}
