//! The admin room and the permissions it manages: who may read help, run commands, or
//! administer the bridge, changed from chat and in force at once.

use serde_json::Value as Json;
use st2_matrix_testkit::st2::St2Options;

use crate::harness::Ctx;
use crate::harness::bridge::Bridge;
use crate::harness::events::{body, html_body};
use crate::harness::stackstorm::{self, St2Auth, alias, ops_deploy};
use crate::harness::user::User;
use crate::harness::wait::PROMPTLY;

/// The name the bot gives the admin room it creates.
pub const ADMIN_ROOM_NAME: &str = "StackStorm bridge admin";

/// `ops.deploy` (`deploy {{service}}`) and `web.status` (`web status`): two packs.
fn two_packs() -> Vec<Json> {
    vec![
        ops_deploy(),
        alias("web", "status", "web status", "Show the web tier's status."),
    ]
}

/// Makes `admins` the bridge's admins (`[bridge] admins`).
pub fn set_admins(bridge: &mut Bridge, admins: &[&User]) {
    let ids: Vec<toml::Value> = admins
        .iter()
        .map(|u| toml::Value::from(u.user_id().as_str()))
        .collect();
    bridge.set_config("bridge", "admins", ids);
}

/// On its first start, a bridge with an admin and no configured admin room creates one and
/// invites the admin, greeting them there. Admin commands answer there (`status`); a mistyped
/// one (`rooms frobnicate`) and one with a missing argument are answered with clap's usage,
/// and `help` with the generated command list as code; after a restart the same room is used.
pub async fn admin_room_is_created_for_the_admin_and_mistakes_are_answered_with_the_usage(
    ctx: Ctx,
) -> anyhow::Result<()> {
    // Arrange
    let st2 = stackstorm::double(St2Options::default(), two_packs()).await;
    let alice = ctx.user("alice").await?;
    let mut bridge = ctx.bridge();
    bridge.configure_stackstorm(&st2, St2Auth::ApiKey);
    set_admins(&mut bridge, &[&alice]);
    bridge.start().await?;
    let bot = bridge.bot_user_id();

    // Act
    let admin_room = alice.join_when_invited(&bot, ADMIN_ROOM_NAME).await?;
    bridge.wait_for_aliases(2).await;
    let status = alice.ask(&admin_room, &bot, "status").await?;
    let mistake = alice
        .ask(&admin_room, &bot, "!st2 rooms frobnicate")
        .await?;
    let missing = alice.ask(&admin_room, &bot, "rooms allow").await?;
    let help = alice.ask(&admin_room, &bot, "help").await?;

    // Assert
    let welcome = alice
        .wait_for_event(
            &admin_room,
            "the admin room's welcome",
            |ev| body(ev).contains("admin room of st2-matrix"),
            PROMPTLY,
        )
        .await;
    assert!(
        body(&welcome).contains("`help`"),
        "the welcome says how to start: {welcome}"
    );
    for part in ["Homeserver", "StackStorm", "Outbox", "Aliases: 2 enabled"] {
        assert!(
            body(&status).contains(part),
            "status reports {part:?}: {}",
            body(&status)
        );
    }
    assert!(
        body(&mistake).contains("frobnicate") && body(&mistake).contains("Usage:"),
        "an unknown subcommand is named, with the usage: {}",
        body(&mistake)
    );
    assert!(
        body(&missing).contains("<ROOM>") && body(&missing).contains("<RULE>"),
        "missing arguments are named: {}",
        body(&missing)
    );
    assert!(
        body(&help).contains("rooms") && body(&help).contains("aliases"),
        "help lists the command groups: {}",
        body(&help)
    );
    assert!(
        html_body(&help).is_some_and(|html| html.starts_with("<pre><code>")),
        "help is shown as code, as clap laid it out: {help}"
    );

    bridge.restart().await?;
    let again = alice.ask(&admin_room, &bot, "status").await?;
    assert!(
        body(&again).contains("Homeserver"),
        "the same room is the admin room after a restart: {again}"
    );
    assert_eq!(
        alice
            .invites()
            .iter()
            .filter(|i| i.name.as_deref() == Some(ADMIN_ROOM_NAME))
            .count(),
        1,
        "no second admin room was created"
    );
    Ok(())
}

/// With `[permissions] default = "help"`, bob may read help in his room but not run: his
/// command is refused, naming the missing permission and who can grant it, and StackStorm
/// gets nothing. Alice, the admin, allows him in the admin room; his command then runs. She
/// narrows the room to the `web` pack; his help then lists only that pack. She denies him;
/// he may not even read help.
pub async fn admin_rules_refuse_then_allow_then_narrow_help_then_deny(
    ctx: Ctx,
) -> anyhow::Result<()> {
    // Arrange
    let st2 = stackstorm::double(St2Options::default(), two_packs()).await;
    let alice = ctx.user("alice").await?;
    let bob = ctx.user("bob").await?;
    let mut bridge = ctx.bridge();
    bridge.configure_stackstorm(&st2, St2Auth::ApiKey);
    set_admins(&mut bridge, &[&alice]);
    bridge.set_config("permissions", "default", "help");
    bridge.start().await?;
    let bot = bridge.bot_user_id();
    let admin_room = alice.join_when_invited(&bot, ADMIN_ROOM_NAME).await?;
    let room = bob.create_room_with(&bot).await?;
    bridge.wait_for_aliases(2).await;

    // Act: refused
    let refused = bob.ask(&room, &bot, "!st2 deploy web").await?;
    let help = bob.ask(&room, &bot, "!st2help").await?;

    // Assert
    assert!(
        body(&refused).contains("`run` permission")
            && body(&refused).contains("you have `help`")
            && body(&refused).contains(alice.user_id().as_str()),
        "the refusal names the permission, bob's level and the admin who grants it: {}",
        body(&refused)
    );
    assert!(
        st2.executions().is_empty(),
        "nothing was sent to StackStorm"
    );
    assert!(
        body(&help).contains("deploy") && body(&help).contains("`run` permission"),
        "help shows the room's commands and says bob cannot run them: {}",
        body(&help)
    );

    // Act: allowed
    let allow = format!("rooms allow {room} {}", bob.user_id());
    let granted = alice.ask(&admin_room, &bot, &allow).await?;
    let ran = bob.ask(&room, &bot, "!st2 deploy web").await?;

    // Assert
    assert!(
        !body(&granted).contains("Usage:"),
        "the rule was accepted: {}",
        body(&granted)
    );
    let execution = st2
        .last_execution()
        .unwrap_or_else(|| panic!("bob's command did not run; the bot answered: {ran}"));
    assert_eq!(execution.request["user"], bob.user_id().as_str());

    // Act: the room narrowed to the web pack
    alice
        .ask(&admin_room, &bot, &format!("rooms packs {room} web"))
        .await?;
    let narrowed = bob.ask(&room, &bot, "!st2help").await?;

    // Assert
    assert!(
        body(&narrowed).contains("web status") && !body(&narrowed).contains("deploy"),
        "help lists only the web pack now: {}",
        body(&narrowed)
    );

    // Act: denied
    alice
        .ask(
            &admin_room,
            &bot,
            &format!("rooms deny {room} {}", bob.user_id()),
        )
        .await?;
    let denied = bob.ask(&room, &bot, "!st2help").await?;

    // Assert
    assert!(
        body(&denied).contains("`help` permission") && body(&denied).contains("you have `none`"),
        "a deny wins over the grant, down to reading help: {}",
        body(&denied)
    );
    Ok(())
}
