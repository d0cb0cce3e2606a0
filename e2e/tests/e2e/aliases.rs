//! StackStorm's alias list as the bridge gets it: every page of a long list, and every usable
//! alias even when another one is broken.

use st2_matrix_testkit::st2::St2Options;

use crate::harness::Ctx;
use crate::harness::conversation::Conversation;
use crate::harness::events::body;
use crate::harness::stackstorm::{self, St2Auth, alias, ops_deploy, started_execution};

/// How many aliases the long list has: more than two of StackStorm's 100-alias pages.
const MANY: usize = 250;

/// 250 aliases, which StackStorm serves at most 100 per request to a non-admin: help counts
/// all 250 (its last page ends with the 250th), and the 250th runs.
pub async fn all_250_aliases_are_fetched_and_the_last_one_runs(ctx: Ctx) -> anyhow::Result<()> {
    // Arrange: `probe 001` … `probe 250` (three digits, so no format is a prefix of another);
    // help pages of 100 make the 250th the last line of page 3.
    let aliases = (1..=MANY)
        .map(|n| {
            alias(
                "fleet",
                &format!("probe_{n:03}"),
                &format!("probe {n:03}"),
                &format!("Probe host {n}."),
            )
        })
        .collect();
    let st2 = stackstorm::double(St2Options::default(), aliases).await;
    let mut bridge = ctx.bridge();
    bridge.configure_stackstorm(&st2, St2Auth::ApiKey);
    bridge.patch_config(|config| {
        config
            .get_mut("bridge")
            .and_then(toml::Value::as_table_mut)
            .expect("[bridge] is a table")
            .insert("help_page_size".into(), 100.into());
    });
    let Conversation { bot, alice, room } = Conversation::start(&ctx, &mut bridge).await?;
    bridge.wait_for_aliases(MANY).await;

    // Act
    let help = alice.ask(&room, &bot, "!st2help --page 3").await?;
    let ack = alice.ask(&room, &bot, "!st2 probe 250").await?;

    // Assert
    assert!(
        body(&help).starts_with("Commands you can run here (50 of 250, page 3 of 3):"),
        "the help counts all 250 commands: {help}"
    );
    assert!(
        body(&help)
            .trim_end()
            .ends_with("!st2 probe 250 — Probe host 250."),
        "the last page ends with the 250th command: {help}"
    );
    let execution = started_execution(&st2, &ack);
    assert_eq!(execution.request["name"], "probe_250", "{ack}");
    assert!(
        body(&ack).starts_with(&format!(
            "Running `fleet.probe_250`: execution `{}`.",
            execution.id
        )),
        "the default ack names the alias and the execution: {ack}"
    );
    Ok(())
}

/// An alias whose format does not compile (`{{my-param}}`: not a valid parameter name) sits
/// beside a working one: the working one still runs.
pub async fn alias_with_an_invalid_format_does_not_stop_the_others(ctx: Ctx) -> anyhow::Result<()> {
    // Arrange
    let st2 = stackstorm::double(
        St2Options::default(),
        vec![
            alias("ops", "broken", "broken {{my-param}}", "Cannot be parsed."),
            ops_deploy(),
        ],
    )
    .await;
    let mut bridge = ctx.bridge();
    bridge.configure_stackstorm(&st2, St2Auth::ApiKey);
    let Conversation { bot, alice, room } = Conversation::start(&ctx, &mut bridge).await?;
    bridge.wait_for_aliases(2).await;

    // Act
    let ack = alice.ask(&room, &bot, "!st2 deploy web").await?;

    // Assert
    let execution = started_execution(&st2, &ack);
    assert_eq!(execution.request["name"], "deploy", "{ack}");
    assert!(
        body(&ack).starts_with("Running `ops.deploy`"),
        "the command is acknowledged: {ack}"
    );
    Ok(())
}
