//! `!st2help`: the commands a room can run.

use st2_matrix_testkit::st2::St2Options;

use crate::harness::Ctx;
use crate::harness::conversation::Conversation;
use crate::harness::events::{body, html_body};
use crate::harness::stackstorm::{self, St2Auth, alias};

/// Three aliases in two packs: `!st2help` answers with all three, each pack under its own
/// heading with its commands and their descriptions, in plain text and in HTML.
pub async fn help_lists_the_rooms_commands_grouped_by_pack(ctx: Ctx) -> anyhow::Result<()> {
    // Arrange
    let st2 = stackstorm::double(
        St2Options::default(),
        vec![
            alias(
                "ops",
                "restart",
                "restart {{service}}",
                "Restart a service.",
            ),
            alias(
                "net",
                "trace",
                "trace {{host}}",
                "Trace the route to a host.",
            ),
            alias(
                "ops",
                "deploy",
                "deploy {{service}} to {{env=staging}}",
                "Deploy a service.",
            ),
        ],
    )
    .await;
    let mut bridge = ctx.bridge();
    bridge.configure_stackstorm(&st2, St2Auth::ApiKey);
    let Conversation { bot, alice, room } = Conversation::start(&ctx, &mut bridge).await?;
    bridge.wait_for_aliases(3).await;

    // Act
    let help = alice.ask(&room, &bot, "!st2help").await?;

    // Assert
    let text = body(&help);
    assert!(
        text.starts_with("Commands you can run here (3):"),
        "the help counts the commands: {text}"
    );
    assert!(
        text.contains("\nnet\n  !st2 trace {{host}} — Trace the route to a host.\n"),
        "pack net lists its command: {text}"
    );
    assert!(
        text.contains(concat!(
            "\nops\n",
            "  !st2 deploy {{service}} to {{env=staging}} — Deploy a service.\n",
            "  !st2 restart {{service}} — Restart a service.\n",
        )),
        "pack ops lists its two commands together: {text}"
    );
    let html = html_body(&help).unwrap_or_else(|| panic!("the help has an HTML body: {help}"));
    let restart_item = "<li><code>!st2 restart {{service}}</code> — Restart a service.</li>";
    assert!(
        html.contains("<strong>ops</strong>") && html.contains(restart_item),
        "the HTML body shows packs and commands as markup: {html}"
    );
    Ok(())
}
