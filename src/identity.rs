//! People's own StackStorm identities: once someone links their account (`!st2 login`, then the
//! web page), their commands run with their credential, so StackStorm's RBAC applies to them
//! and executions are theirs.
//!
//! What is kept, sealed with the secrets key (never in clear, never in the database's key):
//! - with a username and password: the password (so an expired token is renewed without
//!   asking again) and the current token;
//! - with an API key: the key (API keys do not expire; StackStorm may disable them).

use std::fmt::Write as _;

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use rand::RngCore as _;
use ruma::{RoomId, UserId};
use sha2::{Digest as _, Sha256};

use crate::{
    bridge::Bridge,
    secret::Secret,
    st2::{self, Credential},
    store::{identities, now_ms},
};

/// How long a login link is valid.
pub const LINK_TTL_MS: i64 = 10 * 60 * 1000;

/// `bytes` random bytes, from the operating system's generator (through `rand`).
pub(crate) fn random(bytes: usize) -> Vec<u8> {
    let mut buf = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut buf);
    buf
}

/// What is stored of a link's token: its SHA-256, so the database never holds a usable link.
pub(crate) fn hash_link_token(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .fold(String::with_capacity(64), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// Creates a one-time login link for `user`, to be confirmed in `room` (their direct chat).
/// `None` when logging in is not configured.
pub async fn create_login_link(
    bridge: &Bridge,
    user: &UserId,
    room: &RoomId,
) -> Result<Option<String>, sqlx::Error> {
    let Some(base) = &bridge.config.web.public_url else {
        return Ok(None);
    };
    let token = URL_SAFE_NO_PAD.encode(random(32));
    let session = identities::LoginSession {
        token_hash: hash_link_token(&token),
        user_id: user.to_string(),
        room_id: room.to_string(),
        form_token: URL_SAFE_NO_PAD.encode(random(16)),
        expires_at: now_ms() + LINK_TTL_MS,
        used_at: None,
    };
    identities::create_session(&bridge.store, &session).await?;
    Ok(Some(format!(
        "{}/login/{token}",
        base.as_str().trim_end_matches('/')
    )))
}

/// Why a linked credential cannot be used; told to the person.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// They must log in again (token expired and no password, key refused, key changed).
    #[error("{0}")]
    LoginAgain(String),
    /// StackStorm failed (not their fault).
    #[error(transparent)]
    St2(#[from] st2::Error),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] sqlx::Error),
}

fn secret_owner(user: &UserId) -> String {
    format!("identity-secret:{user}")
}

fn token_owner(user: &UserId) -> String {
    format!("identity-token:{user}")
}

/// What `whoami` shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Linked {
    /// The StackStorm user.
    pub st2_user: String,
    /// `password` or `api_key`.
    pub kind: String,
    /// Token expiry (unix ms), for the password kind.
    pub token_expires_at: Option<i64>,
}

/// Links `user` to StackStorm with a username and password: gets a token (the password is kept
/// sealed, for renewals). Returns the StackStorm user.
pub async fn link_password(
    bridge: &Bridge,
    user: &UserId,
    username: &str,
    password: &Secret,
) -> Result<String, Error> {
    let st2 = bridge.st2.as_ref().ok_or(st2::Error::NotConfigured)?;
    let (issued, st2_user) = st2.issue_token(username, password).await?;
    let identity = identities::Identity {
        user_id: user.to_string(),
        st2_user: st2_user.clone(),
        kind: "password".into(),
        sealed_secret: seal(bridge, &secret_owner(user), password.expose())?,
        sealed_token: Some(seal(bridge, &token_owner(user), issued.token.expose())?),
        token_expires_at: Some(issued.expires_at),
        linked_at: now_ms(),
    };
    identities::put(&bridge.store, &identity).await?;
    Ok(st2_user)
}

/// Links `user` with an API key, after checking StackStorm accepts it. Returns the StackStorm
/// user it belongs to.
pub async fn link_api_key(bridge: &Bridge, user: &UserId, key: &Secret) -> Result<String, Error> {
    let st2 = bridge.st2.as_ref().ok_or(st2::Error::NotConfigured)?;
    let st2_user = st2.current_user(&Credential::ApiKey(key.clone())).await?;
    let identity = identities::Identity {
        user_id: user.to_string(),
        st2_user: st2_user.clone(),
        kind: "api_key".into(),
        sealed_secret: seal(bridge, &secret_owner(user), key.expose())?,
        sealed_token: None,
        token_expires_at: None,
        linked_at: now_ms(),
    };
    identities::put(&bridge.store, &identity).await?;
    Ok(st2_user)
}

fn seal(bridge: &Bridge, owner: &str, value: &str) -> Result<String, Error> {
    bridge
        .secrets
        .seal(owner, value)
        .map_err(|e| Error::LoginAgain(format!("the bridge could not store your credential ({e})")))
}

/// The credential `user`'s commands run with: theirs when linked (renewing an expired token
/// when a password is kept), `None` when they did not link one.
pub async fn credential_for(bridge: &Bridge, user: &UserId) -> Result<Option<Credential>, Error> {
    let Some(identity) = identities::get(&bridge.store, user.as_str()).await? else {
        return Ok(None);
    };
    let secret = bridge
        .secrets
        .open(&secret_owner(user), &identity.sealed_secret)
        .map_err(|_| {
            Error::LoginAgain(
                "your saved StackStorm login can no longer be read (the bridge's key changed)"
                    .into(),
            )
        })?;
    if identity.kind == "api_key" {
        return Ok(Some(Credential::ApiKey(secret)));
    }
    let valid_token = match (&identity.sealed_token, identity.token_expires_at) {
        (Some(sealed), Some(expires_at)) if expires_at > now_ms() + 5000 => {
            bridge.secrets.open(&token_owner(user), sealed).ok()
        }
        _ => None,
    };
    match valid_token {
        Some(token) => Ok(Some(Credential::Token(token))),
        None => renew(bridge, user, &identity.st2_user, &secret)
            .await
            .map(Some),
    }
}

/// After StackStorm refused `user`'s credential (401): renews it when a password is kept, else
/// tells them to log in again.
pub async fn after_rejection(bridge: &Bridge, user: &UserId) -> Result<Credential, Error> {
    let identity = identities::get(&bridge.store, user.as_str())
        .await?
        .ok_or_else(|| Error::LoginAgain("your StackStorm login is gone".into()))?;
    if identity.kind == "api_key" {
        return Err(Error::LoginAgain(
            "StackStorm no longer accepts your API key".into(),
        ));
    }
    let password = bridge
        .secrets
        .open(&secret_owner(user), &identity.sealed_secret)
        .map_err(|_| {
            Error::LoginAgain("your saved StackStorm login can no longer be read".into())
        })?;
    renew(bridge, user, &identity.st2_user, &password).await
}

async fn renew(
    bridge: &Bridge,
    user: &UserId,
    st2_user: &str,
    password: &Secret,
) -> Result<Credential, Error> {
    let st2 = bridge.st2.as_ref().ok_or(st2::Error::NotConfigured)?;
    match st2.issue_token(st2_user, password).await {
        Ok((issued, _)) => {
            let sealed = seal(bridge, &token_owner(user), issued.token.expose())?;
            identities::set_token(&bridge.store, user.as_str(), &sealed, issued.expires_at).await?;
            tracing::info!(user = %user, "renewed a person's StackStorm token");
            Ok(Credential::Token(issued.token))
        }
        Err(st2::Error::Unauthorized { .. }) => Err(Error::LoginAgain(
            "StackStorm no longer accepts your saved password (was it changed?)".into(),
        )),
        Err(e) => Err(e.into()),
    }
}

/// What `user` is linked to.
pub async fn whoami(bridge: &Bridge, user: &UserId) -> Result<Option<Linked>, Error> {
    Ok(identities::get(&bridge.store, user.as_str())
        .await?
        .map(|i| Linked {
            st2_user: i.st2_user,
            kind: i.kind,
            token_expires_at: i.token_expires_at,
        }))
}

/// Unlinks `user`; returns whether they were linked.
pub async fn unlink(bridge: &Bridge, user: &UserId) -> Result<bool, Error> {
    Ok(identities::delete(&bridge.store, user.as_str()).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_hashed_and_random() {
        let a = URL_SAFE_NO_PAD.encode(random(32));
        assert_eq!(a.len(), 43);
        assert_ne!(a, URL_SAFE_NO_PAD.encode(random(32)));
        assert_eq!(hash_link_token("x").len(), 64);
        assert_ne!(hash_link_token(&a), a);
    }
}
