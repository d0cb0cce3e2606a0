//! What end-to-end encryption costs the command path: decrypting a command in an encrypted
//! room, and encrypting a reply for a room of 50 devices whose Olm sessions and room key are
//! established, as the bridge does it (`e2ee::Encryption`: the room key is shared again only
//! when members or devices change, every 10 minutes, and when it must rotate, after 100
//! messages, Element's default `rotation_period_msgs`; those rotations are part of the
//! samples). The share check alone, which reads every member's devices from the store, is
//! measured apart.
//!
//! The bot's machine uses the crypto store exactly as the bridge opens it (SQLite, encrypted,
//! low-memory settings); the people's devices are in-memory machines. Keys travel between them
//! as the homeserver would carry them (uploads answered, queries and claims answered from what
//! was uploaded, to-device messages handed over), without HTTP: the figures are the crypto and
//! store work the bridge adds, not the network's.
//!
//! Run with `cargo bench --bench e2ee`.

use std::{collections::BTreeMap, hint::black_box, time::Duration};

use criterion::Criterion;
use matrix_sdk_crypto::{
    DecryptionSettings, EncryptionSettings, EncryptionSyncChanges, OlmMachine, TrustRequirement,
    types::requests::{AnyOutgoingRequest, ToDeviceRequest},
};
use matrix_sdk_sqlite::{SqliteCryptoStore, SqliteStoreConfig};
use ruma::{
    OneTimeKeyAlgorithm, OwnedDeviceId, OwnedOneTimeKeyId, OwnedUserId, RoomId, UInt,
    api::client::{
        keys::{claim_keys, get_keys, upload_keys},
        sync::sync_events::DeviceLists,
        to_device::send_event_to_device,
    },
    encryption::{DeviceKeys, OneTimeKey},
    events::{AnyMessageLikeEventContent, AnyToDeviceEvent},
    serde::Raw,
};
use serde_json::json;

/// What a device uploaded: its device keys and one-time keys.
struct Uploaded {
    user: OwnedUserId,
    device: OwnedDeviceId,
    keys: Raw<DeviceKeys>,
    one_time: BTreeMap<OwnedOneTimeKeyId, Raw<OneTimeKey>>,
}

/// Sends `machine`'s key upload to the "homeserver" and keeps what it uploaded.
async fn upload(machine: &OlmMachine) -> Uploaded {
    for request in machine.outgoing_requests().await.unwrap() {
        if let AnyOutgoingRequest::KeysUpload(up) = request.request() {
            let counts = BTreeMap::from([(
                OneTimeKeyAlgorithm::SignedCurve25519,
                UInt::from(up.one_time_keys.len() as u32),
            )]);
            let uploaded = Uploaded {
                user: machine.user_id().to_owned(),
                device: machine.device_id().to_owned(),
                keys: up
                    .device_keys
                    .clone()
                    .expect("a new device uploads its keys"),
                one_time: up.one_time_keys.clone(),
            };
            machine
                .mark_request_as_sent(
                    request.request_id(),
                    &upload_keys::v3::Response::new(counts),
                )
                .await
                .unwrap();
            return uploaded;
        }
    }
    panic!("a new machine has keys to upload");
}

/// Lets `machine` learn the devices of `others` (a key query) and open an Olm session with each
/// (a one-time-key claim), as it would through the homeserver.
async fn introduce(machine: &OlmMachine, others: &mut [Uploaded]) {
    machine
        .update_tracked_users(others.iter().map(|o| &*o.user))
        .await
        .unwrap();
    for request in machine.outgoing_requests().await.unwrap() {
        if let AnyOutgoingRequest::KeysQuery(_) = request.request() {
            let mut response = get_keys::v3::Response::new();
            for other in others.iter() {
                response
                    .device_keys
                    .entry(other.user.clone())
                    .or_default()
                    .insert(other.device.clone(), other.keys.clone());
            }
            machine
                .mark_request_as_sent(request.request_id(), &response)
                .await
                .unwrap();
        }
    }
    if let Some((id, _)) = machine
        .get_missing_sessions(others.iter().map(|o| &*o.user))
        .await
        .unwrap()
    {
        let mut claimed = BTreeMap::new();
        for other in others.iter_mut() {
            let key = other.one_time.pop_first().expect("a one-time key to claim");
            claimed
                .entry(other.user.clone())
                .or_insert_with(BTreeMap::new)
                .insert(other.device.clone(), BTreeMap::from([key]));
        }
        machine
            .mark_request_as_sent(&id, &claim_keys::v3::Response::new(claimed))
            .await
            .unwrap();
    }
}

/// Marks to-device requests sent (the homeserver accepted them).
async fn sent(machine: &OlmMachine, requests: &[std::sync::Arc<ToDeviceRequest>]) {
    for request in requests {
        machine
            .mark_request_as_sent(&request.txn_id, &send_event_to_device::v3::Response::new())
            .await
            .unwrap();
    }
}

/// Shares `machine`'s room key for `room` with every device of `members` (sent at once);
/// returns how many to-device requests that took.
async fn share(
    machine: &OlmMachine,
    room: &RoomId,
    members: &[OwnedUserId],
    settings: EncryptionSettings,
) -> usize {
    let shares = machine
        .share_room_key(room, members.iter().map(|m| &**m), settings)
        .await
        .unwrap();
    sent(machine, &shares).await;
    shares.len()
}

fn settings() -> DecryptionSettings {
    DecryptionSettings {
        sender_device_trust_requirement: TrustRequirement::Untrusted,
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let room = RoomId::parse("!ops:example.org").unwrap();
    let (bot, people) = runtime.block_on(async {
        let store = SqliteCryptoStore::open_with_config(
            &SqliteStoreConfig::with_low_memory_config(dir.path())
                .pool_max_size(2)
                .key(Some(&[7u8; 32])),
        )
        .await
        .unwrap();
        let bot_id: OwnedUserId = "@st2bot:example.org".try_into().unwrap();
        let bot = OlmMachine::with_store(&bot_id, "ST2MBENCH".into(), store, None)
            .await
            .unwrap();
        let mut bot_keys = upload(&bot).await;
        let mut people = Vec::new();
        let mut uploaded = Vec::new();
        for i in 0..50 {
            let user: OwnedUserId = format!("@person{i}:example.org").try_into().unwrap();
            let device: OwnedDeviceId = format!("DEVICE{i}").into();
            let machine = OlmMachine::new(&user, &device).await;
            uploaded.push(upload(&machine).await);
            people.push(machine);
        }
        introduce(&bot, &mut uploaded).await;
        introduce(&people[0], std::slice::from_mut(&mut bot_keys)).await;
        (bot, people)
    });
    let members: Vec<OwnedUserId> = people.iter().map(|p| p.user_id().to_owned()).collect();

    // A command from person 0, whose room key reaches the bot first (as a to-device event in a
    // transaction).
    let command = runtime.block_on(async {
        let alice = &people[0];
        let shares = alice
            .share_room_key(
                &room,
                std::iter::once(bot.user_id()),
                EncryptionSettings::default(),
            )
            .await
            .unwrap();
        let mut to_device: Vec<Raw<AnyToDeviceEvent>> = Vec::new();
        for share in &shares {
            for devices in share.messages.values() {
                for content in devices.values() {
                    let event = json!({
                        "sender": alice.user_id(), "type": share.event_type.to_string(),
                        "content": content,
                    });
                    to_device.push(Raw::new(&event).unwrap().cast_unchecked());
                }
            }
        }
        sent(alice, &shares).await;
        bot.receive_sync_changes(
            EncryptionSyncChanges {
                to_device_events: to_device,
                changed_devices: &DeviceLists::new(),
                one_time_keys_counts: &BTreeMap::new(),
                unused_fallback_keys: None,
                next_batch_token: None,
            },
            &settings(),
        )
        .await
        .unwrap();
        let content: Raw<AnyMessageLikeEventContent> =
            Raw::new(&json!({"msgtype": "m.text", "body": "!st2 deploy web to prod"}))
                .unwrap()
                .cast_unchecked();
        let encrypted = alice
            .encrypt_room_event_raw(&room, "m.room.message", &content)
            .await
            .unwrap();
        let event = json!({
            "type": "m.room.encrypted", "event_id": "$command", "room_id": room,
            "sender": alice.user_id(), "origin_server_ts": 1, "content": encrypted.content,
        });
        Raw::new(&event).unwrap().cast_unchecked()
    });
    let reply: Raw<AnyMessageLikeEventContent> = Raw::new(&json!({
        "msgtype": "m.notice", "body": "deploy started: execution 6915a2b7c1d4e5f6a7b8c9d0",
        "m.relates_to": {"rel_type": "m.thread", "event_id": "$command",
            "m.in_reply_to": {"event_id": "$command"}, "is_falling_back": true},
    }))
    .unwrap()
    .cast_unchecked();
    // A second room whose key rotates only after 10,000 messages (the most a room may ask),
    // so no rotation falls within its samples.
    let steady_room = RoomId::parse("!steady:example.org").unwrap();
    let steady = EncryptionSettings {
        rotation_period_msgs: 10_000,
        ..Default::default()
    };
    runtime.block_on(async {
        share(&bot, &steady_room, &members, steady).await;
    });
    // The first share is the expensive one (50 Olm encryptions): done before measuring, as
    // in a room the bot has spoken in before.
    runtime.block_on(async {
        share(&bot, &room, &members, EncryptionSettings::default()).await;
    });

    let mut criterion = Criterion::default()
        .configure_from_args()
        .measurement_time(Duration::from_secs(5));
    criterion.bench_function("decrypt a command (established room key)", |b| {
        b.iter(|| {
            runtime.block_on(async {
                black_box(
                    bot.try_decrypt_room_event(&command, &room, &settings())
                        .await
                        .unwrap(),
                )
            })
        })
    });
    // What the bridge does per reply: encrypt with the room key already shared, counting the
    // messages it has left; at its rotation (after 100 messages, Element's default
    // `rotation_period_msgs`) share again, which makes a new one for the 50 devices, and read
    // the stored session once to count anew. The rotations are part of these samples.
    let mut remaining = 0u64;
    criterion.bench_function("encrypt a reply for 50 devices (room key shared)", |b| {
        b.iter(|| {
            runtime.block_on(async {
                if remaining == 0 {
                    share(&bot, &room, &members, EncryptionSettings::default()).await;
                    let session = bot
                        .store()
                        .get_outbound_group_session(&room)
                        .await
                        .unwrap()
                        .unwrap();
                    remaining = 100 - u64::from(session.message_index().await);
                }
                remaining -= 1;
                black_box(
                    bot.encrypt_room_event_raw(&room, "m.room.message", &reply)
                        .await
                        .unwrap(),
                )
            })
        })
    });
    // The same without any rotation within the samples: one message on an established key.
    criterion.bench_function("encrypt a reply for 50 devices (no rotation)", |b| {
        b.iter(|| {
            runtime.block_on(async {
                black_box(
                    bot.encrypt_room_event_raw(&steady_room, "m.room.message", &reply)
                        .await
                        .unwrap(),
                )
            })
        })
    });
    // The stored session, read: what the bridge does once per share.
    criterion.bench_function("read the stored room key", |b| {
        b.iter(|| {
            runtime.block_on(async {
                black_box(
                    bot.store()
                        .get_outbound_group_session(&steady_room)
                        .await
                        .unwrap()
                        .is_some(),
                )
            })
        })
    });
    // The check the bridge makes when something may have changed: every member's devices
    // read from the store, nothing new to send.
    criterion.bench_function("share check for 50 devices, nothing to send", |b| {
        b.iter(|| {
            runtime.block_on(async {
                black_box(share(&bot, &room, &members, EncryptionSettings::default()).await)
            })
        })
    });
    criterion.final_summary();
    // The SQLite store's pool closes its connections on the runtime: drop it there.
    runtime.block_on(async move {
        drop(bot);
        drop(people);
    });
}
