//! Alice in a room with the bot of a started bridge: the arrangement most tests start from.
//! Written once, so that a test's Arrange says only what is particular to it (the bridge's
//! config, StackStorm's aliases, a second user).

use matrix_sdk::ruma::{OwnedRoomId, OwnedUserId};

use super::Ctx;
use super::bridge::Bridge;
use super::user::User;

/// Alice and a room of hers that the bridge's bot has joined. Tests destructure it
/// (`let Conversation { bot, alice, room } = …`), so that the rest of a test reads as if the
/// arrangement were written out.
pub struct Conversation {
    /// The bridge's bot.
    pub bot: OwnedUserId,
    /// The human user talking to it.
    pub alice: User,
    /// A private room whose members are alice and the bot.
    pub room: OwnedRoomId,
}

impl Conversation {
    /// Starts `bridge`, configured as the test wants it, then registers alice, who creates a
    /// private room and invites the bot; returns once the bot has joined.
    ///
    /// The bridge stays the test's own, as most tests go on to stop it, read its log or its
    /// metrics.
    pub async fn start(ctx: &Ctx, bridge: &mut Bridge) -> anyhow::Result<Conversation> {
        let (bot, alice) = start_with_alice(ctx, bridge).await?;
        let room = alice.create_room_with(&bot).await?;
        Ok(Conversation { bot, alice, room })
    }

    /// As [`Conversation::start`], in a room created encrypted, as Element creates private
    /// rooms: what alice sends there goes out encrypted.
    pub async fn start_encrypted(ctx: &Ctx, bridge: &mut Bridge) -> anyhow::Result<Conversation> {
        let (bot, alice) = start_with_alice(ctx, bridge).await?;
        let room = alice.create_encrypted_room_with(&bot).await?;
        Ok(Conversation { bot, alice, room })
    }
}

/// Starts `bridge` and registers alice: the bot's id and her.
async fn start_with_alice(ctx: &Ctx, bridge: &mut Bridge) -> anyhow::Result<(OwnedUserId, User)> {
    bridge.start().await?;
    let bot = bridge.bot_user_id();
    let alice = ctx.user("alice").await?;
    Ok((bot, alice))
}
