//! `login`, `logout`, `whoami`: people's own StackStorm identity.

use ruma::events::room::message::RoomMessageEventContent;

use crate::{
    identity,
    matrix::render::{self, Origin},
    state::AppState,
};

/// `login`: in a direct chat, a one-time link to the login page; elsewhere, why not.
pub async fn login(
    bridge: &AppState,
    origin: &Origin,
    direct: bool,
) -> anyhow::Result<RoomMessageEventContent> {
    let prefix = &bridge.config.bridge.command_prefix;
    if bridge.st2.is_none() {
        return Ok(render::notice(
            "StackStorm is not configured for this bridge, so there is nothing to log in to.",
        ));
    }
    if !direct {
        return Ok(render::notice_markdown(&format!(
            "🔒 `login` works only in a direct chat with me, so your login link stays private. Start a direct chat with \
             {} and type `{prefix} login` there.",
            bridge.bot
        )));
    }
    let Some(link) =
        crate::identity::create_login_link(bridge, &origin.sender, &origin.room_id).await?
    else {
        return Ok(render::notice(
            "Logging in to StackStorm is not enabled on this bridge ([web].public_url is not set). Ask its operator.",
        ));
    };
    Ok(render::notice_markdown(&format!(
        "Open this link to link your StackStorm account (it works once, for 10 minutes; your password goes to the \
         bridge's page, never through the chat):\n\n{link}"
    )))
}

/// `logout`.
pub async fn logout(bridge: &AppState, origin: &Origin) -> anyhow::Result<RoomMessageEventContent> {
    Ok(if identity::unlink(bridge, &origin.sender).await? {
        render::notice(
            "Unlinked: your commands run as the bridge's StackStorm user again. Your saved StackStorm credential was deleted.",
        )
    } else {
        render::notice("You had no linked StackStorm account.")
    })
}

/// `whoami`.
pub async fn whoami(bridge: &AppState, origin: &Origin) -> anyhow::Result<RoomMessageEventContent> {
    let prefix = &bridge.config.bridge.command_prefix;
    Ok(match identity::whoami(bridge, &origin.sender).await? {
        Some(linked) => {
            let how = if linked.kind == "api_key" {
                "an API key"
            } else {
                "your username and password (renewed automatically)"
            };
            render::notice_markdown(&format!(
                "You are {}; your commands run as StackStorm user `{}`, with {how}.",
                origin.sender, linked.st2_user
            ))
        }
        None if bridge.config.bridge.require_login => render::notice_markdown(&format!(
            "You are {} and have no linked StackStorm account, so you cannot run commands here. Type `{prefix} login` \
             in a direct chat with me.",
            origin.sender
        )),
        None => render::notice_markdown(&format!(
            "You are {}; your commands run as the bridge's StackStorm user. `{prefix} login` (in a direct chat with me) \
             links your own account.",
            origin.sender
        )),
    })
}
