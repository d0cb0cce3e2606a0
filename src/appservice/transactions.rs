//! `PUT /_matrix/app/v1/transactions/{txnId}`: the homeserver pushing events.
//!
//! Persisted before acknowledged, and nothing slow on the way: parse, pick the events that need
//! work ([`crate::dispatch::classify`]), store them with the transaction's dedupe key in one
//! SQLite transaction, wake the worker, answer `200 {}`. The handler never calls the network, so
//! the homeserver's queue never waits on StackStorm or on our own sends.
//!
//! A transaction the homeserver re-sends (it does so until it gets a 2xx) is recognised by its
//! key and answered `200 {}` without changes; an event that reappears in another transaction
//! is recognised by its event id in the inbox. Either way, a command is acted on at most once.

use std::{fmt::Write as _, sync::Arc};

use axum::{
    body::Bytes,
    extract::{Path, State},
    response::Response,
};
use ruma::{
    api::{IncomingRequest, appservice::event::push_events},
    events::AnyTimelineEvent,
};
use sha2::{Digest, Sha256};

use super::error::{ApiError, ruma_response};
use crate::{
    dispatch,
    state::AppState,
    store::{
        inbox::{Kind, NewEvent},
        txns,
    },
};

/// Handles one pushed transaction.
pub async fn push(
    State(bridge): State<Arc<AppState>>,
    Path(txn_id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    // The first mark of the command path's breakdown (docs/performance.md): the body is read.
    tracing::debug!(txn_id, bytes = body.len(), "transaction received");
    let request = parse(&txn_id, &body)?;
    metrics::counter!("st2_matrix_transactions_total").increment(1);
    if let Some(e2ee) = &bridge.e2ee {
        // Before anything is acknowledged: a room key in a to-device event is delivered once,
        // and the crypto store has it when this returns. A failure answers 500, so the
        // homeserver sends the transaction again.
        e2ee.receive(&request).await.map_err(|e| {
            ApiError::Internal(
                anyhow::Error::new(e).context("handing the transaction's keys to the bot's device"),
            )
        })?;
        if let Some(warning) = e2ee.extension_warning() {
            warn_about_extensions(&bridge, warning);
        }
    }

    let mut digest = Sha256::new();
    let mut work: Vec<(String, String, Kind, String)> = Vec::new();
    for raw in &request.events {
        let event = match raw.deserialize() {
            Ok(event) => event,
            Err(e) => {
                // One malformed event must not make the homeserver re-send (and us re-reject)
                // the whole transaction forever: count it, log it, skip it.
                digest.update(raw.json().get().as_bytes());
                metrics::counter!("st2_matrix_events_total", "kind" => "invalid").increment(1);
                tracing::debug!(txn_id, error.message = %e, "skipping an event that does not parse");
                continue;
            }
        };
        digest.update(event.event_id().as_bytes());
        digest.update(b"\n");
        if let Some(e2ee) = &bridge.e2ee {
            e2ee.observe(&event);
        }
        let kind = dispatch::classify(&bridge, &event);
        metrics::counter!("st2_matrix_events_total", "kind" => kind.map_or("ignored", Kind::as_str)).increment(1);
        if let Some(kind) = kind {
            work.push((
                event.event_id().to_string(),
                event.room_id().to_string(),
                kind,
                raw.json().get().to_owned(),
            ));
        }
    }

    let key = transaction_key(&txn_id, digest);
    let rows: Vec<NewEvent<'_>> = work
        .iter()
        .map(|(event_id, room_id, kind, json)| NewEvent {
            event_id,
            room_id,
            kind: *kind,
            event: json,
        })
        .collect();
    match txns::store_transaction(&bridge.store, &key, &rows).await {
        Ok(txns::Outcome::Duplicate) => {
            tracing::debug!(txn_id, "transaction already stored; acknowledging again");
        }
        Ok(txns::Outcome::Stored { new_events }) => {
            if new_events > 0 {
                bridge.inbox_wake.notify_one();
            }
            tracing::debug!(
                txn_id,
                events = request.events.len(),
                new_events,
                "transaction stored"
            );
        }
        // A 500 makes the homeserver retry later: nothing is lost.
        Err(e) => {
            return Err(ApiError::Internal(
                anyhow::Error::new(e).context("storing the transaction"),
            ));
        }
    }
    Ok(ruma_response(push_events::v1::Response::new()))
}

/// Logs that transactions lack the MSC3202 fields encryption needs, and says so in the admin
/// room (queued by a task of its own: the transaction's answer does not wait for it).
fn warn_about_extensions(bridge: &Arc<AppState>, warning: String) {
    tracing::warn!(
        "transactions carry no MSC3202 device lists or one-time-key counts: encrypted rooms \
         cannot be read; enable Synapse's experimental_features msc2409_to_device_messages_enabled \
         and msc3202_transaction_extensions, and put receive_ephemeral: true and \
         org.matrix.msc3202: true in the registration"
    );
    let admin_room = bridge
        .rooms
        .admin_room
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    if let Some(room) = admin_room {
        let bridge = bridge.clone();
        tokio::spawn(async move {
            let notice = crate::matrix::render::notice_markdown(&warning);
            if let Err(e) = bridge.outbox.send(&room, &notice).await {
                tracing::error!(error.message = %e, "could not queue the encryption warning for the admin room");
            }
        });
    }
}

/// Parses the body with ruma, telling "not JSON" from "JSON of the wrong shape".
pub fn parse(txn_id: &str, body: &[u8]) -> Result<push_events::v1::Request, ApiError> {
    if let Err(e) = serde_json::from_slice::<&serde_json::value::RawValue>(body) {
        return Err(ApiError::NotJson(e.to_string()));
    }
    let http_request = http::Request::builder()
        .method(http::Method::PUT)
        .uri("/_matrix/app/v1/transactions/txn")
        .body(body)
        .map_err(|e| ApiError::BadJson(e.to_string()))?;
    push_events::v1::Request::try_from_http_request(http_request, &[txn_id])
        .map_err(|e| ApiError::BadJson(e.to_string()))
}

/// The dedupe key: the homeserver's txn id plus a digest of the events it carried. Synapse
/// numbers transactions 1, 2, 3… per database, so after a homeserver reset a bare id would
/// make us ignore new transactions; its re-sends of one transaction carry the same events.
fn transaction_key(txn_id: &str, digest: Sha256) -> String {
    let hash = digest.finalize();
    let mut key = String::with_capacity(txn_id.len() + 33);
    key.push_str(txn_id);
    key.push(':');
    for b in &hash[..16] {
        let _ = write!(key, "{b:02x}");
    }
    key
}

/// For property tests: parse and classify without a database; must never panic.
#[doc(hidden)]
pub fn parse_events(body: &[u8]) -> Result<Vec<AnyTimelineEvent>, ApiError> {
    let request = parse("fuzz", body)?;
    Ok(request
        .events
        .iter()
        .filter_map(|raw| raw.deserialize().ok())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn not_json_and_bad_json_are_told_apart() {
        assert!(matches!(parse("1", b"{nope"), Err(ApiError::NotJson(_))));
        assert!(matches!(parse("1", b"[]"), Err(ApiError::BadJson(_))));
        assert!(matches!(
            parse("1", br#"{"events": 3}"#),
            Err(ApiError::BadJson(_))
        ));
        assert!(parse("1", br#"{"events": []}"#).unwrap().events.is_empty());
    }

    #[test]
    fn the_key_depends_on_the_events_not_only_the_id() {
        let mut a = Sha256::new();
        a.update(b"$one\n");
        let mut b = Sha256::new();
        b.update(b"$two\n");
        assert_ne!(transaction_key("1", a.clone()), transaction_key("1", b));
        assert_eq!(transaction_key("1", a.clone()), transaction_key("1", a));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(body in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = parse_events(&body);
        }

        #[test]
        fn arbitrary_event_shaped_json_never_panics(
            ty in prop_oneof!["m.room.message", "m.room.member", "m.room.encrypted", ".{0,12}"],
            sender in ".{0,20}",
            body in ".{0,40}",
            state_key in proptest::option::of(".{0,20}"),
            membership in prop_oneof!["invite", "join", "leave", "ban", ".{0,5}"],
        ) {
            let mut event = serde_json::json!({
                "type": ty, "sender": sender, "event_id": "$e", "room_id": "!r",
                "origin_server_ts": 1, "content": {"msgtype": "m.text", "body": body, "membership": membership},
            });
            if let Some(k) = state_key { event["state_key"] = k.into(); }
            let txn = serde_json::json!({"events": [event]});
            let _ = parse_events(serde_json::to_vec(&txn).unwrap().as_slice());
        }
    }
}
