//! StackStorm down: commands are answered with what happened to them, and help still works
//! from the aliases the bridge stored.

use st2_matrix_testkit::st2::St2Options;

use crate::harness::Ctx;
use crate::harness::conversation::Conversation;
use crate::harness::events::body;
use crate::harness::stackstorm::{self, St2Auth, alias, ops_deploy};

/// StackStorm stops after the aliases were loaded: `!st2 deploy web` is answered that
/// StackStorm is unavailable and the command was not run.
pub async fn command_while_stackstorm_is_down_is_answered_that_it_was_not_run(
    ctx: Ctx,
) -> anyhow::Result<()> {
    // Arrange
    let st2 = stackstorm::double(St2Options::default(), vec![ops_deploy()]).await;
    let mut bridge = ctx.bridge();
    bridge.configure_stackstorm(&st2, St2Auth::ApiKey);
    let Conversation { bot, alice, room } = Conversation::start(&ctx, &mut bridge).await?;
    bridge.wait_for_aliases(1).await;
    st2.stop().await;

    // Act
    let reply = alice.ask(&room, &bot, "!st2 deploy web").await?;

    // Assert
    let text = body(&reply);
    assert!(
        text.contains("StackStorm is unavailable ("),
        "the reply says StackStorm is unavailable: {reply}"
    );
    assert!(
        text.contains("`deploy web` was not run"),
        "the reply says the command was not run: {reply}"
    );
    Ok(())
}

/// The bridge loads the aliases, stops, and starts again while StackStorm is down:
/// `!st2help` lists the aliases it stored.
pub async fn help_after_a_restart_while_stackstorm_is_down_answers_from_the_stored_aliases(
    ctx: Ctx,
) -> anyhow::Result<()> {
    // Arrange
    let st2 = stackstorm::double(
        St2Options::default(),
        vec![
            // Written out: the help this test checks quotes them.
            alias("ops", "deploy", "deploy {{service}}", "Deploy a service."),
            alias(
                "ops",
                "restart",
                "restart {{service}}",
                "Restart a service.",
            ),
        ],
    )
    .await;
    let mut bridge = ctx.bridge();
    bridge.configure_stackstorm(&st2, St2Auth::ApiKey);
    let Conversation { bot, alice, room } = Conversation::start(&ctx, &mut bridge).await?;
    bridge.wait_for_aliases(2).await;
    bridge.stop().await?;
    st2.stop().await;
    bridge.start().await?;

    // Act
    let help = alice.ask(&room, &bot, "!st2help").await?;

    // Assert
    let text = body(&help);
    assert!(
        text.starts_with("Commands you can run here (2):"),
        "the help lists the stored aliases: {help}"
    );
    assert!(
        text.contains("!st2 deploy {{service}} — Deploy a service.")
            && text.contains("!st2 restart {{service}} — Restart a service."),
        "the help shows both commands: {help}"
    );
    Ok(())
}
