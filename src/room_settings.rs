//! Per-room settings made in the admin room — permission rules and pack filters — kept in
//! memory for the hot path (classification, permission checks) and persisted in SQLite.

use std::{collections::HashMap, sync::RwLock};

use ruma::RoomId;

use crate::{
    permissions::{Grant, Level, PackFilter, Rule},
    store::{Store, settings},
};

/// The settings of every room.
#[derive(Debug, Default)]
pub struct RoomSettings {
    grants: RwLock<HashMap<String, Vec<Grant>>>,
    packs: RwLock<HashMap<String, PackFilter>>,
}

impl RoomSettings {
    /// Loads what the store holds. Rows that no longer parse (edited by hand) are skipped
    /// with a warning.
    pub async fn load(store: &Store) -> Result<RoomSettings, sqlx::Error> {
        let mut grants: HashMap<String, Vec<Grant>> = HashMap::new();
        for (room, rule, level) in settings::rules(store).await? {
            match (rule.parse::<Rule>(), level.parse::<Level>()) {
                (Ok(rule), Ok(level)) => {
                    grants.entry(room).or_default().push(Grant { rule, level })
                }
                _ => {
                    tracing::warn!(room_id = %room, rule, level, "skipping a stored room rule that does not parse")
                }
            }
        }
        let mut packs = HashMap::new();
        for (room, filter) in settings::packs(store).await? {
            match filter.parse::<PackFilter>() {
                Ok(filter) => {
                    packs.insert(room, filter);
                }
                Err(e) => {
                    tracing::warn!(room_id = %room, filter, error.message = %e, "skipping a stored pack filter")
                }
            }
        }
        Ok(RoomSettings {
            grants: RwLock::new(grants),
            packs: RwLock::new(packs),
        })
    }

    /// The room's own grants, then the global ones.
    pub fn grants_for(&self, room: &RoomId, global: &[Grant]) -> Vec<Grant> {
        let grants = self.grants.read().unwrap_or_else(|e| e.into_inner());
        grants
            .get(room.as_str())
            .into_iter()
            .flatten()
            .chain(global)
            .cloned()
            .collect()
    }

    /// The room's own grants.
    pub fn room_grants(&self, room: &RoomId) -> Vec<Grant> {
        self.grants
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(room.as_str())
            .cloned()
            .unwrap_or_default()
    }

    /// The packs the room may use (its own filter, else `default`).
    pub fn packs_for(&self, room: &RoomId, default: &PackFilter) -> PackFilter {
        self.packs
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(room.as_str())
            .cloned()
            .unwrap_or_else(|| default.clone())
    }

    /// The room's own pack filter, if it has one.
    pub fn own_packs(&self, room: &RoomId) -> Option<PackFilter> {
        self.packs
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(room.as_str())
            .cloned()
    }

    /// Every pack filter in use by some room.
    pub fn filters_in_use(&self) -> Vec<PackFilter> {
        self.packs
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// Sets (replacing any for the same rule) a grant in a room.
    pub async fn set_grant(
        &self,
        store: &Store,
        room: &RoomId,
        grant: Grant,
    ) -> Result<(), sqlx::Error> {
        settings::put_rule(
            store,
            room.as_str(),
            &grant.rule.to_string(),
            grant.level.as_str(),
        )
        .await?;
        let mut grants = self.grants.write().unwrap_or_else(|e| e.into_inner());
        let list = grants.entry(room.to_string()).or_default();
        list.retain(|g| g.rule != grant.rule);
        list.push(grant);
        Ok(())
    }

    /// Removes a room's grant for `rule`; returns whether there was one.
    pub async fn remove_grant(
        &self,
        store: &Store,
        room: &RoomId,
        rule: &Rule,
    ) -> Result<bool, sqlx::Error> {
        let existed = settings::delete_rule(store, room.as_str(), &rule.to_string()).await?;
        if let Some(list) = self
            .grants
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .get_mut(room.as_str())
        {
            list.retain(|g| &g.rule != rule);
        }
        Ok(existed)
    }

    /// Sets a room's own pack filter (`None`: back to the default). False if the bot is not in
    /// the room.
    pub async fn set_packs(
        &self,
        store: &Store,
        room: &RoomId,
        filter: Option<PackFilter>,
    ) -> Result<bool, sqlx::Error> {
        let stored = settings::set_packs(
            store,
            room.as_str(),
            filter.as_ref().map(ToString::to_string).as_deref(),
        )
        .await?;
        if stored {
            let mut packs = self.packs.write().unwrap_or_else(|e| e.into_inner());
            match filter {
                Some(filter) => packs.insert(room.to_string(), filter),
                None => packs.remove(room.as_str()),
            };
        }
        Ok(stored)
    }

    /// Forgets everything about a room (the bot left or was removed).
    pub async fn forget(&self, store: &Store, room: &RoomId) -> Result<(), sqlx::Error> {
        settings::delete_room_rules(store, room.as_str()).await?;
        self.grants
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(room.as_str());
        self.packs
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(room.as_str());
        Ok(())
    }
}
