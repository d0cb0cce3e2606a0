//! `users list` and `users revoke`.

use super::{CommandError, Reply};
use crate::{identity, state::AppState, store};

/// `users list`.
pub async fn list(bridge: &AppState) -> Result<Reply, CommandError> {
    let all = store::identities::all(&bridge.store).await?;
    if all.is_empty() {
        return Ok(Reply::Markdown("Nobody linked a StackStorm account: every command runs as the bridge's StackStorm user.".into()));
    }
    let mut lines = vec![format!("{} linked StackStorm account(s):", all.len())];
    for i in all {
        let how = if i.kind == "api_key" {
            "API key"
        } else {
            "username and password"
        };
        lines.push(format!(
            "- {} → StackStorm user `{}` ({how})",
            i.user_id, i.st2_user
        ));
    }
    Ok(Reply::Markdown(lines.join("\n")))
}

/// `users revoke <@user>`.
pub async fn revoke(bridge: &AppState, user: &str) -> Result<Reply, CommandError> {
    let user = ruma::UserId::parse(user.trim())
        .map_err(|_| CommandError::User(format!("`{user}` is not a user id (@name:server)")))?;
    if identity::unlink(bridge, &user)
        .await
        .map_err(|e| CommandError::Internal(e.into()))?
    {
        Ok(Reply::Markdown(format!(
            "✅ Unlinked {user}: their commands run as the bridge's StackStorm user again."
        )))
    } else {
        Err(CommandError::User(format!(
            "{user} has no linked StackStorm account"
        )))
    }
}
