//! The StackStorm login page: how people link their own StackStorm account without their
//! password ever going through the chat.
//!
//! `!st2 login` (in a direct chat with the bot) answers with a one-time link,
//! `<[web].public_url>/login/<token>`: random (256 bits), single use, valid 10 minutes; only a
//! hash of the token is stored. The page is plain server-rendered HTML with a one-time form
//! token; the person enters a StackStorm username and password, or an API key, which are posted
//! in the request body (never in a URL), exchanged with StackStorm, sealed, and stored
//! (see [`crate::identity`]). The link is used up by the first submission, whatever its outcome:
//! a guessed password needs a fresh link each time. Nothing here logs a form value.

use std::sync::Arc;

use axum::{
    Router,
    body::Bytes,
    extract::{DefaultBodyLimit, Path, State},
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use ruma::{RoomId, UserId};

use crate::{
    bridge::Bridge,
    identity,
    matrix::render::{escape_html, notice_markdown},
    secret::{Secret, token_matches},
    store::{identities, now_ms},
};

/// The login routes, when `[web].public_url` and `[stackstorm]` are configured.
pub fn router(bridge: Arc<Bridge>) -> Option<Router> {
    bridge.config.web.public_url.as_ref()?;
    bridge.st2.as_ref()?;
    Some(
        Router::new()
            .route("/login/{token}", get(page).post(submit))
            .layer(DefaultBodyLimit::max(16 * 1024))
            .with_state(bridge),
    )
}

/// A page, with the headers that keep it from being cached, framed, or leaking its URL.
fn html(status: StatusCode, title: &str, body: &str) -> Response {
    let page = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width\">\
         <title>{title}</title><style>body{{font-family:sans-serif;max-width:32rem;margin:3rem auto;padding:0 1rem;line-height:1.5}}\
         label{{display:block;margin-top:1rem}}input{{width:100%;padding:.4rem;box-sizing:border-box}}\
         button{{margin-top:1.2rem;padding:.5rem 1.2rem}}fieldset{{margin-top:1.5rem}}.error{{color:#b00}}</style></head>\
         <body><h1>{title}</h1>{body}</body></html>",
        title = escape_html(title)
    );
    let mut response = (status, page).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'"),
    );
    response
}

/// How to get a new link (`prefix` is `[bridge].command_prefix`), as HTML.
fn new_link_hint(prefix: &str) -> String {
    format!(
        "Type <code>{} login</code> in your direct chat with the bot for a new one.",
        escape_html(prefix)
    )
}

fn gone(prefix: &str) -> Response {
    html(
        StatusCode::GONE,
        "This link no longer works",
        &format!(
            "<p>Login links work once, for 10 minutes. {}</p>",
            new_link_hint(prefix)
        ),
    )
}

/// The session of a link, if it can still be used.
async fn live_session(
    bridge: &Bridge,
    token: &str,
) -> Result<Option<identities::LoginSession>, Response> {
    match identities::session(&bridge.store, &identity::hash_link_token(token)).await {
        Ok(Some(s)) if s.used_at.is_none() && s.expires_at > now_ms() => Ok(Some(s)),
        Ok(_) => Ok(None),
        Err(e) => {
            tracing::error!(error.message = %e, "login page: database error");
            Err(html(
                StatusCode::SERVICE_UNAVAILABLE,
                "Try again",
                "<p>The bridge could not read its database. Try again in a moment.</p>",
            ))
        }
    }
}

async fn page(State(bridge): State<Arc<Bridge>>, Path(token): Path<String>) -> Response {
    let session = match live_session(&bridge, &token).await {
        Ok(Some(s)) => s,
        Ok(None) => return gone(&bridge.config.bridge.command_prefix),
        Err(page) => return page,
    };
    let body = format!(
        "<p>Link the Matrix account <strong>{user}</strong> to your StackStorm account. Your commands will then run as your \
         StackStorm user, with your StackStorm permissions.</p>\
         <p>Enter a username and password, <em>or</em> an API key. They go to the bridge only, which keeps them encrypted.</p>\
         <form method=\"post\" autocomplete=\"off\">\
         <input type=\"hidden\" name=\"form_token\" value=\"{form}\">\
         <fieldset><legend>StackStorm username and password</legend>\
         <label for=\"username\">Username</label><input id=\"username\" name=\"username\" autocomplete=\"username\">\
         <label for=\"password\">Password</label><input id=\"password\" name=\"password\" type=\"password\" autocomplete=\"current-password\">\
         </fieldset>\
         <fieldset><legend>Or an API key</legend>\
         <label for=\"api_key\">API key</label><input id=\"api_key\" name=\"api_key\" type=\"password\">\
         </fieldset>\
         <button id=\"link\" type=\"submit\">Link my account</button></form>\
         <p><small>This link works once and expires at {expires} (UTC).</small></p>",
        user = escape_html(&session.user_id),
        form = escape_html(&session.form_token),
        expires = utc_time(session.expires_at),
    );
    html(StatusCode::OK, "Link your StackStorm account", &body)
}

fn utc_time(ms: i64) -> String {
    let secs = ms.div_euclid(1000).rem_euclid(86_400);
    format!("{:02}:{:02}", secs / 3600, secs % 3600 / 60)
}

async fn submit(
    State(bridge): State<Arc<Bridge>>,
    Path(token): Path<String>,
    body: Bytes,
) -> Response {
    let session = match live_session(&bridge, &token).await {
        Ok(Some(s)) => s,
        Ok(None) => return gone(&bridge.config.bridge.command_prefix),
        Err(page) => return page,
    };
    let mut form_token = String::new();
    let (mut username, mut password, mut api_key) =
        (String::new(), Secret::new(""), Secret::new(""));
    for (key, value) in url::form_urlencoded::parse(&body) {
        match key.as_ref() {
            "form_token" => form_token = value.into_owned(),
            "username" => username = value.trim().to_owned(),
            "password" => password = Secret::new(value.into_owned()),
            "api_key" => api_key = Secret::new(value.trim().to_owned()),
            _ => {}
        }
    }
    if !token_matches(&form_token, &session.form_token) {
        return html(
            StatusCode::FORBIDDEN,
            "This form is not valid",
            "<p>Open the link from the chat again.</p>",
        );
    }
    let use_key = !api_key.expose().is_empty();
    if !use_key && (username.is_empty() || password.expose().is_empty()) {
        return html(
            StatusCode::BAD_REQUEST,
            "Something is missing",
            "<p class=\"error\">Enter a username <em>and</em> a password, or an API key. Go back to correct it.</p>",
        );
    }
    // Single use from here on: whatever StackStorm answers, this link is spent.
    match identities::use_session(&bridge.store, &session.token_hash).await {
        Ok(true) => {}
        Ok(false) => return gone(&bridge.config.bridge.command_prefix),
        Err(e) => {
            tracing::error!(error.message = %e, "login page: database error");
            return html(
                StatusCode::SERVICE_UNAVAILABLE,
                "Try again",
                "<p>The bridge could not read its database.</p>",
            );
        }
    }
    let (Ok(user), Ok(room)) = (
        UserId::parse(&session.user_id),
        RoomId::parse(&session.room_id),
    ) else {
        return gone(&bridge.config.bridge.command_prefix);
    };
    let linked = if use_key {
        identity::link_api_key(&bridge, &user, &api_key).await
    } else {
        identity::link_password(&bridge, &user, &username, &password).await
    };
    match linked {
        Ok(st2_user) => {
            tracing::info!(user = %user, st2_user = %st2_user, method = if use_key { "api_key" } else { "password" }, "linked a StackStorm account");
            let prefix = &bridge.config.bridge.command_prefix;
            let text = format!(
                "✅ Your Matrix account is now linked to StackStorm user `{st2_user}`: your commands run as `{st2_user}`, \
                 with its permissions. `{prefix} whoami` shows it; `{prefix} logout` unlinks."
            );
            if let Err(e) = bridge.outbox.send(&room, &notice_markdown(&text)).await {
                tracing::warn!(error.message = %e, "could not queue the login confirmation");
            }
            html(
                StatusCode::OK,
                "Account linked",
                &format!(
                    "<p>Your Matrix account is now linked to StackStorm user <strong>{}</strong>. You can close this page.</p>",
                    escape_html(&st2_user)
                ),
            )
        }
        Err(e) => {
            let why = match &e {
                identity::Error::St2(crate::st2::Error::Unauthorized { .. }) => {
                    "StackStorm did not accept these credentials.".to_owned()
                }
                other => format!("{other}."),
            };
            tracing::info!(user = %user, "a StackStorm login attempt failed");
            html(
                StatusCode::UNAUTHORIZED,
                "Not linked",
                &format!(
                    "<p class=\"error\">{}</p><p>This link is now used up. {}</p>",
                    escape_html(&why),
                    new_link_hint(&bridge.config.bridge.command_prefix)
                ),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_new_link_hint_names_the_configured_prefix_escaped() {
        assert_eq!(
            new_link_hint("!ops<"),
            "Type <code>!ops&lt; login</code> in your direct chat with the bot for a new one."
        );
    }

    #[test]
    fn times_are_shown_as_utc_clock_time() {
        assert_eq!(utc_time(0), "00:00");
        assert_eq!(utc_time((13 * 3600 + 5 * 60) * 1000), "13:05");
    }
}
