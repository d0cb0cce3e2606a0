//! The bridge's own StackStorm token, when it logs in with a username and password: renewed as
//! it expires, without anyone in a room noticing.

use std::time::Duration;

use st2_matrix_testkit::st2::{CredentialKind, St2Options};
use tokio::time::{Instant, sleep_until};

use crate::harness::Ctx;
use crate::harness::events::{body, is_notice_from};
use crate::harness::stackstorm::{self, BOT_USER, St2Auth, ops_deploy, started_execution};
use crate::harness::wait::{SETTLE, assert_count_stays};

/// The lifetime of every token StackStorm issues in this test (default and maximum alike).
const TOKEN_TTL: Duration = Duration::from_secs(2);

/// StackStorm issues 2-second tokens and the bridge logs in with a password. After two
/// lifetimes have passed, `!st2 deploy web` runs with a fresh token: the one reply is the ack.
pub async fn expired_token_is_renewed_without_the_user_noticing(ctx: Ctx) -> anyhow::Result<()> {
    // Arrange
    let st2 = stackstorm::double(
        St2Options {
            default_token_ttl: TOKEN_TTL,
            max_token_ttl: TOKEN_TTL,
            ..St2Options::default()
        },
        vec![ops_deploy()],
    )
    .await;
    let mut bridge = ctx.bridge();
    bridge.configure_stackstorm(&st2, St2Auth::Password);
    bridge.start().await?;
    bridge.wait_for_aliases(1).await;
    // Real time has to pass: the token the aliases were fetched with must expire, and the
    // next one's lifetime too. The clock runs while the room is set up.
    let two_lifetimes_later = Instant::now() + 2 * TOKEN_TTL;
    let bot = bridge.bot_user_id();
    let alice = ctx.user("alice").await?;
    let room = alice.create_room_with(&bot).await?;
    sleep_until(two_lifetimes_later).await;

    // Act
    let ack = alice.ask(&room, &bot, "!st2 deploy web").await?;

    // Assert
    assert!(
        body(&ack).starts_with("Running `ops.deploy`"),
        "the command ran: {ack}"
    );
    let execution = started_execution(&st2, &ack);
    assert_eq!(
        execution.credential.kind,
        CredentialKind::Token,
        "the bridge used a token"
    );
    let tokens = st2.tokens_of(BOT_USER);
    assert!(
        tokens.len() >= 2,
        "the bridge logged in again after its first token expired; tokens issued: {tokens:?}"
    );
    assert_count_stays("notices from the bot", 1, SETTLE, || async {
        alice
            .events_matching(&room, |ev| is_notice_from(ev, &bot))
            .len()
    })
    .await;
    Ok(())
}
