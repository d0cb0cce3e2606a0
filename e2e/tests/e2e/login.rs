//! People's own StackStorm identity: `!st2 login` in a direct chat, the one-time page the
//! bridge serves (filled in a real browser), commands run with that identity, restarts,
//! `!st2 logout`, and a log that never holds any of the secrets involved.

use base64::Engine as _;
use matrix_sdk::ruma::{RoomId, UserId};
use rand::RngCore as _;
use st2_matrix_testkit::st2::{CredentialKind, St2Double, St2Options};

use crate::harness::Ctx;
use crate::harness::bridge::Bridge;
use crate::harness::browser::Browser;
use crate::harness::events::{body, is_notice_from};
use crate::harness::stackstorm::{self, BOT_USER, St2Auth, ops_deploy};
use crate::harness::user::{User, random_lowercase};
use crate::harness::wait::PROMPTLY;
use serde_json::Value as Json;

/// Alice's account on StackStorm, which she links to her Matrix account.
pub const ALICE_ST2: &str = "alice-st2";

/// Bob's account on StackStorm, linked with an API key.
const BOB_ST2: &str = "bob-st2";

/// A StackStorm double with one alias, [`ops_deploy`].
pub async fn deploy_double() -> St2Double {
    stackstorm::double(St2Options::default(), vec![ops_deploy()]).await
}

/// A bridge (not started) using `st2` with an API key and serving the login page: its links
/// point at its own listener (`[web] public_url`), where the test's browser reaches it.
pub fn bridge_serving_login(ctx: &Ctx, st2: &St2Double) -> Bridge {
    let mut bridge = ctx.bridge();
    bridge.configure_stackstorm(st2, St2Auth::ApiKey);
    bridge.set_config("web", "public_url", bridge.url());
    bridge
}

/// Opens the one-time login `link` in a new Chromium and waits for its form; returns the
/// browser and the form page's text.
pub async fn open_login_page(link: &str) -> anyhow::Result<(Browser, String)> {
    let browser = Browser::launch().await?;
    browser.open(link).await?;
    let form_page = browser
        .wait_for_title("Link your StackStorm account")
        .await?;
    Ok((browser, form_page))
}

/// Waits for `bot`'s notice in the direct chat `direct` that `user`'s account is now linked,
/// and returns it.
pub async fn wait_for_link_confirmation(user: &User, direct: &RoomId, bot: &UserId) -> Json {
    user.wait_for_event(
        direct,
        "the bot's confirmation in the direct chat",
        |ev| is_notice_from(ev, bot) && body(ev).contains("now linked"),
        PROMPTLY,
    )
    .await
}

/// The one-time `<bridge>/login/<token>` link in the bot's answer to `!st2 login`.
pub fn login_link(offer: &Json, bridge_url: &str) -> String {
    let prefix = format!("{bridge_url}/login/");
    body(offer)
        .split_whitespace()
        .map(|word| word.trim_matches(|c| c == '<' || c == '>'))
        .find(|word| word.starts_with(&prefix))
        .unwrap_or_else(|| panic!("no {prefix}… link in the bot's answer: {offer}"))
        .to_owned()
}

/// Alice links her StackStorm account: `!st2 login` in a group room is refused (the link must
/// stay private); in her direct chat with the bot it answers with a one-time link. She opens
/// it in Chromium, enters her StackStorm username and password, and submits; the page says
/// she is linked and the bot confirms in the direct chat. The link then no longer works.
///
/// Her commands then run on StackStorm with her own token (the double records the credential
/// of each execution), also after the bridge restarts; after `!st2 logout` they run as the
/// bridge's account again. The bridge's log of the whole run holds none of the secrets: her
/// password, her tokens, the link and form tokens, the bridge's API key, the key that seals
/// stored tokens, the webhook secret.
pub async fn login_in_a_browser_links_the_account_until_logout_and_no_secret_is_logged(
    ctx: Ctx,
) -> anyhow::Result<()> {
    // Arrange
    let st2 = deploy_double().await;
    let password = random_lowercase(24);
    st2.add_user(ALICE_ST2, &password);
    let mut sealing_key = [0u8; 32];
    rand::rng().fill_bytes(&mut sealing_key);
    let sealing_key = base64::engine::general_purpose::STANDARD.encode(sealing_key);
    let webhook_secret = random_lowercase(32);
    let alice = ctx.user("alice").await?;
    let mut bridge = bridge_serving_login(&ctx, &st2);
    let bridge_api_key = bridge
        .config_str("stackstorm", "api_key")
        .expect("configure_stackstorm set an API key");
    bridge.set_config("secrets", "key", sealing_key.as_str());
    bridge.set_config("webhook", "secret", webhook_secret.as_str());
    bridge.start().await?;
    let bot = bridge.bot_user_id();
    let room = alice.create_room_with(&bot).await?;
    let direct = alice.create_direct_chat_with(&bot).await?;
    bridge.wait_for_aliases(1).await;

    // Act: asking in the group room, then in the direct chat
    let refused = alice.ask(&room, &bot, "!st2 login").await?;
    let offer = alice.ask(&direct, &bot, "!st2 login").await?;

    // Assert
    assert!(
        body(&refused).contains("only in a direct chat"),
        "login is refused outside a direct chat: {}",
        body(&refused)
    );
    let link = login_link(&offer, &bridge.url());
    let link_token = link[format!("{}/login/", bridge.url()).len()..].to_owned();

    // Act: the page, in a browser
    let (browser, form_page) = open_login_page(&link).await?;
    let form_token = browser.value_of("input[name=form_token]").await?;
    browser.type_into("#username", ALICE_ST2).await?;
    browser.type_into("#password", &password).await?;
    browser.click("#link").await?;
    let linked_page = browser.wait_for_title("Account linked").await?;

    // Assert
    assert!(
        form_page.contains(alice.user_id().as_str()),
        "the page names the Matrix account being linked: {form_page}"
    );
    assert!(
        linked_page.contains(ALICE_ST2),
        "the page names the StackStorm user: {linked_page}"
    );
    let confirmed = wait_for_link_confirmation(&alice, &direct, &bot).await;
    assert!(
        body(&confirmed).contains(ALICE_ST2),
        "the confirmation names the StackStorm user: {confirmed}"
    );
    browser.open(&link).await?;
    browser.wait_for_title("This link no longer works").await?;

    // Act: a command with the linked account, before and after a restart
    alice.ask(&room, &bot, "!st2 deploy web").await?;
    let first = st2.last_execution().expect("the command ran");
    bridge.restart().await?;
    let whoami = alice.ask(&direct, &bot, "!st2 whoami").await?;
    alice.ask(&room, &bot, "!st2 deploy api").await?;
    let second = st2.last_execution().expect("the command ran");

    // Assert
    let alice_tokens: Vec<String> = st2
        .tokens_of(ALICE_ST2)
        .into_iter()
        .map(|(token, _)| token)
        .collect();
    for execution in [&first, &second] {
        assert_eq!(
            execution.user, ALICE_ST2,
            "the command ran as alice's StackStorm user: {:?}",
            execution.request
        );
        assert_eq!(execution.credential.kind, CredentialKind::Token);
        assert!(
            alice_tokens.contains(&execution.credential.value),
            "with a token StackStorm issued to alice"
        );
    }
    assert_ne!(first.id, second.id);
    assert!(
        body(&whoami).contains(ALICE_ST2),
        "the link survived the restart: {}",
        body(&whoami)
    );

    // Act: logout
    let unlinked = alice.ask(&direct, &bot, "!st2 logout").await?;
    alice.ask(&room, &bot, "!st2 deploy db").await?;
    let third = st2.last_execution().expect("the command ran");
    bridge.stop().await?;

    // Assert
    assert!(
        body(&unlinked).contains("Unlinked"),
        "logout says so: {}",
        body(&unlinked)
    );
    assert_eq!(
        third.user, BOT_USER,
        "after logout commands run as the bridge's StackStorm account"
    );
    let log = bridge.log();
    assert!(
        log.contains("linked a StackStorm account"),
        "the log shows the run it is checked for"
    );
    let mut secrets = vec![
        ("alice's StackStorm password", password.clone()),
        ("the login link's token", link_token),
        ("the login form's token", form_token),
        ("the bridge's StackStorm API key", bridge_api_key),
        ("the key sealing stored tokens", sealing_key),
        ("the webhook secret", webhook_secret),
    ];
    secrets.extend(
        alice_tokens
            .into_iter()
            .map(|token| ("a StackStorm token of alice's", token)),
    );
    for (what, secret) in secrets {
        assert!(!secret.is_empty(), "{what} is known to the test");
        assert!(!log.contains(&secret), "{what} appears in the bridge's log");
    }
    Ok(())
}

/// Bob links his StackStorm account with an API key instead of a password: the same one-time
/// page, its API key field, in Chromium. His commands then run with that key, as his StackStorm
/// user, and the key never reaches the bridge's log.
pub async fn login_with_an_api_key_in_a_browser_runs_commands_with_that_key(
    ctx: Ctx,
) -> anyhow::Result<()> {
    // Arrange
    let st2 = deploy_double().await;
    let bob_key = st2.add_api_key(BOB_ST2);
    let bob = ctx.user("bob").await?;
    let mut bridge = bridge_serving_login(&ctx, &st2);
    bridge.start().await?;
    let bot = bridge.bot_user_id();
    let room = bob.create_room_with(&bot).await?;
    let direct = bob.create_direct_chat_with(&bot).await?;
    bridge.wait_for_aliases(1).await;
    let offer = bob.ask(&direct, &bot, "!st2 login").await?;
    let link = login_link(&offer, &bridge.url());

    // Act
    let (browser, _) = open_login_page(&link).await?;
    browser.type_into("#api_key", &bob_key).await?;
    browser.click("#link").await?;
    let linked_page = browser.wait_for_title("Account linked").await?;
    wait_for_link_confirmation(&bob, &direct, &bot).await;
    bob.ask(&room, &bot, "!st2 deploy web").await?;
    let execution = st2.last_execution().expect("the command ran");
    bridge.stop().await?;

    // Assert
    assert!(
        linked_page.contains(BOB_ST2),
        "the page names the StackStorm user the key belongs to: {linked_page}"
    );
    assert_eq!(
        execution.user, BOB_ST2,
        "the command ran as bob's StackStorm user"
    );
    assert_eq!(execution.credential.kind, CredentialKind::ApiKey);
    assert_eq!(
        execution.credential.value, bob_key,
        "with bob's own API key, not the bridge's"
    );
    let log = bridge.log();
    assert!(
        log.contains("linked a StackStorm account"),
        "the log shows the run it is checked for"
    );
    assert!(
        !log.contains(&bob_key),
        "bob's API key appears in the bridge's log"
    );
    Ok(())
}
