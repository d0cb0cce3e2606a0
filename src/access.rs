//! Access in a room: a person's permission level (rules from [`crate::permissions`], the
//! room's own rules and pack filter from [`crate::room_settings`], and power levels read from
//! the homeserver and cached) and the sentence that tells them who can grant more.
//!
//! Above the core ([`Bridge`]) because power levels are read through the homeserver client;
//! the rules themselves stay in [`crate::permissions`], below the config that holds them.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use ruma::{RoomId, UserId};

use crate::{
    bridge::Bridge,
    config::Config,
    matrix::MatrixClient,
    permissions::{Level, PackFilter, RoomPower, Rule, any_rule_matches, evaluate},
    room_settings::RoomSettings,
};

/// How long a room's power levels are trusted before being read again (they are also dropped
/// as soon as the room's `m.room.power_levels` changes).
const POWER_CACHE_TTL: Duration = Duration::from_secs(60);

/// The state access needs: each room's own settings and the cached power levels.
#[derive(Debug)]
pub struct Access {
    /// Rules and pack filters set per room in the admin room.
    pub settings: RoomSettings,
    /// Rooms' power levels, for `power>=N` rules.
    pub power: PowerCache,
}

/// Per-room power levels, cached.
#[derive(Debug, Default)]
pub struct PowerCache {
    rooms: Mutex<HashMap<String, (Instant, RoomPower)>>,
}

impl PowerCache {
    /// Forgets `room`'s power levels (its `m.room.power_levels` changed).
    pub fn invalidate(&self, room: &RoomId) {
        self.rooms
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(room.as_str());
    }

    async fn get(&self, matrix: &MatrixClient, room: &RoomId) -> Option<RoomPower> {
        {
            let rooms = self.rooms.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((at, power)) = rooms.get(room.as_str())
                && at.elapsed() < POWER_CACHE_TTL
            {
                return Some(power.clone());
            }
        }
        match matrix.room_state(room).await {
            Ok(events) => {
                let power = RoomPower::from_state(&events);
                self.rooms
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(room.to_string(), (Instant::now(), power.clone()));
                Some(power)
            }
            Err(e) => {
                // Fail closed: power rules do not match when power levels cannot be read.
                tracing::warn!(room_id = %room, error.message = %e, "cannot read the room's power levels");
                None
            }
        }
    }
}

impl Access {
    /// `user`'s level in `room`.
    pub async fn level_of(&self, bridge: &Bridge, room: &RoomId, user: &UserId) -> Level {
        if bridge.config.bridge.admins.iter().any(|a| a == user) {
            return Level::Admin;
        }
        let grants = self
            .settings
            .grants_for(room, &bridge.config.permissions.rules);
        let needs_power = grants
            .iter()
            .any(|g| matches!(g.rule, Rule::PowerAtLeast(_)));
        let power = if needs_power {
            self.power
                .get(&bridge.matrix, room)
                .await
                .map(|p| p.of(user))
        } else {
            None
        };
        evaluate(&grants, user, power, bridge.config.permissions.default)
    }

    /// Whether `user` matches any of `rules` in `room` (e.g. an approval's approvers), with
    /// the power levels and the evaluation room rules use ([`any_rule_matches`]).
    pub async fn matches_any(
        &self,
        bridge: &Bridge,
        room: &RoomId,
        user: &UserId,
        rules: &[Rule],
    ) -> bool {
        let needs_power = rules.iter().any(|r| matches!(r, Rule::PowerAtLeast(_)));
        let power = if needs_power {
            self.power
                .get(&bridge.matrix, room)
                .await
                .map(|p| p.of(user))
        } else {
            None
        };
        any_rule_matches(rules, user, power)
    }

    /// The packs `room` may use.
    pub fn packs_for(&self, bridge: &Bridge, room: &RoomId) -> PackFilter {
        self.settings.packs_for(room, &bridge.config.bridge.packs)
    }
}

/// The sentence for someone who lacks `needed` (having `has`): which permission, and who can
/// grant it.
pub fn refusal(config: &Config, room: &RoomId, what: &str, needed: Level, has: Level) -> String {
    let admins: Vec<String> = config
        .bridge
        .admins
        .iter()
        .map(ToString::to_string)
        .collect();
    let who = if admins.is_empty() {
        "the bridge's operator (in its config, [permissions])".to_owned()
    } else {
        format!(
            "a bridge admin ({}) in the admin room, with `rooms allow {room} <your user id>`",
            admins.join(", ")
        )
    };
    format!("⛔ {what} needs the `{needed}` permission in this room; you have `{has}`. Ask {who}.")
}
