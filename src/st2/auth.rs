//! The bridge's own StackStorm credential, kept alive.
//!
//! Precedence is the config's: API key, else a fixed token, else username + password. With a
//! password the bridge asks `/auth/v1/tokens` for a token with an explicit ttl (adapting when
//! StackStorm says its maximum is lower), stores it sealed in SQLite so a restart reuses it,
//! renews it before it expires, and renews it once more whenever StackStorm answers 401. A failed
//! renewal is retried with backoff forever; it never stops the bridge (hubot's answer to an
//! expired token was to exit).

use std::{
    sync::{
        Arc, RwLock,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use reqwest::StatusCode;
use serde_json::json;
use tokio_util::sync::CancellationToken;
use url::Url;

use super::{Credential, Error, check, transport_error, types::TokenResponse};
use crate::{
    config::St2Credentials,
    crypto::SecretBox,
    secret::Secret,
    store::{Store, now_ms, tokens},
};

/// The owner key of the bridge's own token in `st2_tokens`.
const BOT_OWNER: &str = "bot";

/// The bridge's StackStorm authentication.
#[derive(Debug)]
pub struct BotAuth {
    credentials: St2Credentials,
    auth_base: Url,
    /// Seconds asked for new tokens; lowered to StackStorm's maximum when it says so.
    ttl_secs: AtomicU64,
    store: Store,
    secrets: Arc<SecretBox>,
    current: RwLock<Option<Issued>>,
    renewing: tokio::sync::Mutex<()>,
}

impl BotAuth {
    /// Authentication with `credentials` against the auth service at `auth_base`.
    pub fn new(
        credentials: St2Credentials,
        auth_base: Url,
        ttl: Duration,
        store: Store,
        secrets: Arc<SecretBox>,
    ) -> Self {
        Self {
            credentials,
            auth_base,
            ttl_secs: AtomicU64::new(ttl.as_secs().max(1)),
            store,
            secrets,
            current: RwLock::new(None),
            renewing: tokio::sync::Mutex::new(()),
        }
    }

    /// What kind of credential is configured, for status output.
    pub fn kind(&self) -> &'static str {
        match self.credentials {
            St2Credentials::ApiKey(_) => "API key",
            St2Credentials::Token(_) => "token",
            St2Credentials::Password { .. } => "username and password",
        }
    }

    /// Expiry (unix ms) of the token in use, when tokens are obtained by the bridge.
    pub fn token_expiry(&self) -> Option<i64> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|i| i.expires_at)
    }

    /// The credential to present now, logging in first if there is no valid token.
    pub async fn credential(&self, http: &reqwest::Client) -> Result<Credential, Error> {
        match &self.credentials {
            St2Credentials::ApiKey(key) => Ok(Credential::ApiKey(key.clone())),
            St2Credentials::Token(token) => Ok(Credential::Token(token.clone())),
            St2Credentials::Password { .. } => {
                if let Some(issued) = self.valid_token() {
                    return Ok(Credential::Token(issued.token));
                }
                self.renew(http, None)
                    .await
                    .map(|issued| Credential::Token(issued.token))
            }
        }
    }

    /// After a 401 for `rejected`: renew the token (unless someone already did) and say whether
    /// a retry makes sense. Fixed credentials cannot be renewed.
    pub async fn renew_after_rejection(
        &self,
        http: &reqwest::Client,
        rejected: &Secret,
    ) -> Result<bool, Error> {
        if !matches!(self.credentials, St2Credentials::Password { .. }) {
            tracing::error!(
                kind = self.kind(),
                "StackStorm rejected the bridge's credential; check [stackstorm]"
            );
            return Ok(false);
        }
        tracing::info!("StackStorm answered 401 for the bridge's token; renewing it");
        self.renew(http, Some(rejected)).await.map(|_| true)
    }

    fn valid_token(&self) -> Option<Issued> {
        let current = self.current.read().unwrap_or_else(|e| e.into_inner());
        // A token about to expire is as good as expired: a request sent with it may arrive late.
        current
            .as_ref()
            .filter(|i| i.expires_at > now_ms() + 1000)
            .cloned()
    }

    /// Logs in unless another task already replaced the token (or `rejected` is no longer the
    /// current one), so concurrent callers cause one login.
    async fn renew(
        &self,
        http: &reqwest::Client,
        rejected: Option<&Secret>,
    ) -> Result<Issued, Error> {
        let _guard = self.renewing.lock().await;
        if let Some(issued) = self.valid_token()
            && rejected.is_none_or(|r| *r != issued.token)
        {
            return Ok(issued);
        }
        let issued = self.login(http).await?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Some(issued.clone());
        self.persist(&issued).await;
        Ok(issued)
    }

    async fn login(&self, http: &reqwest::Client) -> Result<Issued, Error> {
        let St2Credentials::Password { username, password } = &self.credentials else {
            return Err(Error::Protocol(
                "no username and password to log in with".into(),
            ));
        };
        match request_token(http, &self.auth_base, username, password, &self.ttl_secs).await {
            Ok((issued, _)) => {
                tracing::info!(user = %username, expires_in_s = (issued.expires_at - now_ms()) / 1000, "obtained a StackStorm token");
                Ok(issued)
            }
            Err(Error::Unauthorized { request_id, .. }) => Err(Error::Unauthorized {
                faultstring: "StackStorm rejected stackstorm.username / stackstorm.password".into(),
                request_id,
            }),
            Err(e) => Err(e),
        }
    }

    fn owner(&self) -> String {
        match &self.credentials {
            St2Credentials::Password { username, .. } => {
                format!("{BOT_OWNER}:{username}@{}", self.auth_base)
            }
            _ => BOT_OWNER.to_owned(),
        }
    }

    async fn persist(&self, issued: &Issued) {
        let owner = self.owner();
        let sealed = match self.secrets.seal(&owner, issued.token.expose()) {
            Ok(sealed) => sealed,
            Err(e) => {
                return tracing::warn!(error.message = %e, "cannot seal the StackStorm token; it will not survive a restart");
            }
        };
        let row = tokens::SealedToken {
            owner: BOT_OWNER.into(),
            sealed,
            expires_at: Some(issued.expires_at),
        };
        if let Err(e) = tokens::put(&self.store, &row).await {
            tracing::warn!(error.message = %e, "cannot store the StackStorm token; it will not survive a restart");
        }
    }

    /// Reuses the token stored by a previous run, if it is still valid and was issued for the
    /// same user and StackStorm. Call it before anything asks for a credential.
    pub async fn load_persisted(&self) {
        if !matches!(self.credentials, St2Credentials::Password { .. }) {
            return;
        }
        let Ok(Some(row)) = tokens::get(&self.store, BOT_OWNER).await else {
            return;
        };
        let Some(expires_at) = row.expires_at.filter(|&at| at > now_ms() + 5000) else {
            return;
        };
        match self.secrets.open(&self.owner(), &row.sealed) {
            Ok(token) => {
                tracing::info!(
                    expires_in_s = (expires_at - now_ms()) / 1000,
                    "reusing the stored StackStorm token"
                );
                *self.current.write().unwrap_or_else(|e| e.into_inner()) =
                    Some(Issued { token, expires_at });
            }
            // Another user/StackStorm than configured now, or another key: log in afresh.
            Err(_) => {
                tracing::debug!("the stored StackStorm token does not belong to this configuration")
            }
        }
    }

    /// Keeps the token fresh: renews it a quarter of its lifetime (at most 5 minutes) before it
    /// expires; retries failures with backoff. Returns at once for fixed credentials.
    pub async fn run_renewal(&self, http: reqwest::Client, stop: CancellationToken) {
        if !matches!(self.credentials, St2Credentials::Password { .. }) {
            return;
        }
        let mut failures = 0u32;
        loop {
            let wait = match self.token_expiry() {
                None => Duration::ZERO,
                Some(expires_at) => {
                    let ttl_ms =
                        i64::try_from(self.ttl_secs.load(Ordering::Relaxed).saturating_mul(1000))
                            .unwrap_or(i64::MAX);
                    let margin = (ttl_ms / 4).min(300_000);
                    Duration::from_millis(
                        u64::try_from(expires_at - margin - now_ms()).unwrap_or(0),
                    )
                }
            };
            let wait = if failures > 0 {
                crate::retry::delay(Duration::from_secs(2), Duration::from_secs(32), failures)
            } else {
                wait
            };
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(wait) => {}
            }
            let current = self.token_expiry();
            let rejected = self
                .current
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .as_ref()
                .map(|i| i.token.clone());
            match self.renew(&http, rejected.as_ref()).await {
                Ok(_) => failures = 0,
                Err(e) => {
                    failures += 1;
                    tracing::warn!(error.message = %e, failures, expires = ?current, "renewing the StackStorm token failed; retrying");
                }
            }
        }
    }

    /// Start-up check of the credential, logged (never fatal: StackStorm may come later).
    pub async fn check_at_start(&self, http: &reqwest::Client) {
        match &self.credentials {
            St2Credentials::Token(token) => {
                let mut url = self.auth_base.clone();
                let path = format!("{}/tokens/validate", url.path().trim_end_matches('/'));
                url.set_path(&path);
                let answer = http
                    .post(url)
                    .json(&json!({"token": token.expose()}))
                    .send()
                    .await;
                match answer {
                    Ok(r) if r.status() == StatusCode::OK => {
                        let valid = r
                            .json::<serde_json::Value>()
                            .await
                            .ok()
                            .and_then(|v| v["valid"].as_bool());
                        if valid == Some(false) {
                            tracing::error!(
                                "stackstorm.token is not valid (expired?): commands will fail until it is replaced"
                            );
                        } else {
                            tracing::warn!(
                                "stackstorm.token is a fixed token: the bridge cannot renew it, and it stops working when it expires; prefer api_key"
                            );
                        }
                    }
                    Ok(r) => tracing::warn!(
                        status = r.status().as_u16(),
                        "could not validate stackstorm.token"
                    ),
                    Err(e) => {
                        tracing::warn!(error.message = %e, "could not validate stackstorm.token (StackStorm unreachable)")
                    }
                }
            }
            St2Credentials::Password { .. } => {
                if let Err(e) = self.credential(http).await {
                    tracing::warn!(error.message = %e, "could not obtain a StackStorm token yet; will retry");
                }
            }
            St2Credentials::ApiKey(_) => {}
        }
    }
}

/// A token issued by `/auth/v1/tokens`.
#[derive(Debug, Clone)]
pub struct Issued {
    /// The token.
    pub token: Secret,
    /// Its expiry (unix ms).
    pub expires_at: i64,
}

/// `POST <auth>/tokens` with Basic credentials and an explicit ttl. When StackStorm answers
/// that the ttl is above its maximum, `ttl_secs` is lowered to that maximum and the request
/// made again. Returns the token and the StackStorm user it belongs to.
pub async fn request_token(
    http: &reqwest::Client,
    auth_base: &Url,
    username: &str,
    password: &Secret,
    ttl_secs: &AtomicU64,
) -> Result<(Issued, String), Error> {
    let mut url = auth_base.clone();
    let path = format!("{}/tokens", url.path().trim_end_matches('/'));
    url.set_path(&path);
    for _ in 0..2 {
        let ttl = ttl_secs.load(Ordering::Relaxed);
        let response = http
            .post(url.clone())
            .basic_auth(username, Some(password.expose()))
            .json(&json!({"ttl": ttl}))
            .send()
            .await
            .map_err(transport_error)?;
        match check(response).await {
            Ok(response) => {
                let body: TokenResponse = response
                    .json()
                    .await
                    .map_err(|e| Error::Protocol(format!("token: {e}")))?;
                let expires_at =
                    super::types::parse_timestamp_ms(&body.expiry).ok_or_else(|| {
                        Error::Protocol(format!(
                            "token expiry {:?} is not a timestamp",
                            body.expiry
                        ))
                    })?;
                let user = body.user.unwrap_or_else(|| username.to_owned());
                return Ok((
                    Issued {
                        token: Secret::new(body.token),
                        expires_at,
                    },
                    user,
                ));
            }
            // "TTL specified 86400 is greater than max allowed 3600." — ask again within it.
            Err(Error::BadRequest { faultstring, .. }) if max_ttl(&faultstring).is_some() => {
                let max = max_ttl(&faultstring).unwrap_or(1).max(1);
                tracing::warn!(
                    asked = ttl,
                    max,
                    "StackStorm caps token lifetimes; asking for {max}s (lower stackstorm.token_ttl)"
                );
                ttl_secs.store(max, Ordering::Relaxed);
            }
            Err(e) => return Err(e),
        }
    }
    Err(Error::Protocol(
        "StackStorm refused every token lifetime asked for".into(),
    ))
}

/// The maximum from StackStorm's "TTL specified N is greater than max allowed M." message.
fn max_ttl(faultstring: &str) -> Option<u64> {
    let rest = faultstring.split("max allowed").nth(1)?;
    rest.trim().trim_end_matches('.').trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ttl_maximum_is_read_from_st2s_message() {
        assert_eq!(
            max_ttl("TTL specified 86400 is greater than max allowed 3600."),
            Some(3600)
        );
        assert_eq!(max_ttl("Invalid or missing credentials"), None);
    }
}
