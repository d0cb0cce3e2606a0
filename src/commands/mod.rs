//! Commands people type in rooms: one closed enum to dispatch, and the handlers.
//!
//! Whether a message is addressed to the bridge at all, and its command text, is
//! [`crate::addressing`]'s answer; what follows the prefix is a built-in (`ping`, `help`,
//! `login`…) or an alias command for StackStorm.

pub mod approve;
pub mod executions;
pub mod help;
pub mod in_doubt;
pub mod login;
pub mod ping;
pub mod run;

use ruma::events::{
    OriginalMessageLikeEvent,
    room::message::{Relation, RoomMessageEventContent},
};

use crate::{
    matrix::render::{self, Origin},
    permissions::Level,
    state::AppState,
    store::inbox,
};

/// A recognised command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `ping`: proves the loop works, answers with the version.
    Ping,
    /// `help [filter] [--pack P] [--page N]`.
    Help(help::HelpArgs),
    /// Nothing after the prefix.
    Empty,
    /// `login`: a one-time link to the page that links a StackStorm account (direct chat only).
    Login,
    /// `logout`: unlink the StackStorm account.
    Logout,
    /// `whoami`: which StackStorm user commands run as.
    Whoami,
    /// `respond [inquiry id] key=value …`: answers a StackStorm inquiry.
    Respond(String),
    /// `approve <id>` / `reject <id> [reason]`: answer a request for approval.
    Approve(approve::Answer),
    /// `status|output|cancel|rerun [id]`, `history [N]`: executions started from rooms.
    Execution(executions::ExecCommand),
    /// Anything else: an action-alias command for StackStorm.
    Run(String),
}

impl Command {
    /// The command's name, for logs (never its arguments).
    pub fn name(&self) -> &'static str {
        match self {
            Command::Ping => "ping",
            Command::Help(_) => "help",
            Command::Empty => "empty",
            Command::Login => "login",
            Command::Logout => "logout",
            Command::Whoami => "whoami",
            Command::Respond(_) => "respond",
            Command::Approve(answer) => answer.name(),
            Command::Execution(command) => command.name(),
            Command::Run(_) => "run",
        }
    }

    /// Parses the command text (what [`crate::addressing::Addressing::command`] returned).
    pub fn parse(text: &str) -> Result<Command, String> {
        let text = text.trim();
        let (first, rest) = text.split_once(char::is_whitespace).unwrap_or((text, ""));
        Ok(match first {
            "" => Command::Empty,
            w if w.eq_ignore_ascii_case("ping") && rest.trim().is_empty() => Command::Ping,
            w if w.eq_ignore_ascii_case("help") => Command::Help(help::HelpArgs::parse(rest)?),
            w if w.eq_ignore_ascii_case("login") && rest.trim().is_empty() => Command::Login,
            w if w.eq_ignore_ascii_case("logout") && rest.trim().is_empty() => Command::Logout,
            w if w.eq_ignore_ascii_case("whoami") && rest.trim().is_empty() => Command::Whoami,
            w if w.eq_ignore_ascii_case("respond") => Command::Respond(rest.trim().to_owned()),
            w => match approve::Answer::parse(w, rest) {
                Some(answer) => Command::Approve(answer?),
                None => match executions::ExecCommand::parse(w, rest) {
                    Some(command) => Command::Execution(command),
                    None => Command::Run(text.to_owned()),
                },
            },
        })
    }

    /// The level needed, checked before the command is handled.
    pub fn required_level(&self) -> Level {
        match self {
            Command::Ping | Command::Empty => Level::None,
            Command::Help(_) | Command::Login | Command::Logout | Command::Whoami => Level::Help,
            Command::Run(_) | Command::Respond(_) | Command::Approve(_) | Command::Execution(_) => {
                Level::Run
            }
        }
    }

    /// How a refusal names what was attempted.
    fn what(&self) -> &'static str {
        match self {
            Command::Run(_) => "Running commands",
            Command::Respond(_) => "Answering StackStorm's questions",
            Command::Execution(_) => "Watching and steering executions",
            Command::Approve(_) => "Answering requests for approval",
            Command::Help(_) => "Reading the command list",
            _ => "This",
        }
    }
}

/// Where a command came from, for the reply.
pub fn origin(message: &OriginalMessageLikeEvent<RoomMessageEventContent>) -> Origin {
    let thread_root = match &message.content.relates_to {
        Some(Relation::Thread(thread)) => Some(thread.event_id.clone()),
        _ => None,
    };
    Origin {
        room_id: message.room_id.clone(),
        event_id: message.event_id.clone(),
        sender: message.sender.clone(),
        thread_root,
    }
}

/// Runs the command in `message` and queues the reply, committed together with "done".
pub async fn handle(
    bridge: &AppState,
    row: &inbox::Row,
    message: &OriginalMessageLikeEvent<RoomMessageEventContent>,
) -> anyhow::Result<()> {
    handle_as(bridge, row, message, false).await
}

/// Runs a command that was approved (an inbox row of kind `approved`): like [`handle`],
/// permissions checked again, but without asking for approval a second time.
pub async fn handle_approved(
    bridge: &AppState,
    row: &inbox::Row,
    message: &OriginalMessageLikeEvent<RoomMessageEventContent>,
) -> anyhow::Result<()> {
    handle_as(bridge, row, message, true).await
}

async fn handle_as(
    bridge: &AppState,
    row: &inbox::Row,
    message: &OriginalMessageLikeEvent<RoomMessageEventContent>,
    approved: bool,
) -> anyhow::Result<()> {
    let origin = origin(message);
    let direct = bridge.is_direct(&origin.room_id);
    let text = bridge
        .addressing
        .command(message.content.body(), direct)
        .unwrap_or_default();
    let prefix = &bridge.config.bridge.command_prefix;
    if row.interrupted {
        // Marked started by a run that did not finish: the request may have reached
        // StackStorm. Running it again could run it twice; StackStorm is asked instead.
        return in_doubt::on_interrupted(bridge, row, &origin, text).await;
    }
    if bridge.is_admin_room(&origin.room_id) && !approved {
        let content = crate::admin::handle(bridge, &origin, message.content.body()).await;
        return reply_and_finish(bridge, row, &origin, content).await;
    }
    let command = match Command::parse(text) {
        Ok(command) => command,
        Err(usage) => {
            return reply_and_finish(bridge, row, &origin, render::notice_markdown(&usage)).await;
        }
    };
    // The command's name only: the text of a StackStorm command (its `key=value` extras
    // above all) can hold secrets. `run` logs the alias and the parameter names.
    tracing::info!(sender = %origin.sender, command = command.name(), "command");
    // Permissions are checked here, once, before any handler.
    let needed = command.required_level();
    let level = if needed > Level::None {
        bridge
            .access
            .level_of(bridge, &origin.room_id, &origin.sender)
            .await
    } else {
        Level::None
    };
    if level < needed {
        let text = crate::access::refusal(
            &bridge.config,
            &origin.room_id,
            command.what(),
            needed,
            level,
        );
        return reply_and_finish(bridge, row, &origin, render::notice_markdown(&text)).await;
    }
    let content = match command {
        Command::Ping => render::notice(&ping::reply()),
        Command::Empty => render::notice_markdown(&format!(
            "Type `{prefix}help` to see the commands you can run here, or `{prefix} ping` to check I am here."
        )),
        Command::Help(args) => help::render(bridge, &origin, &args, level),
        Command::Login => login::login(bridge, &origin, direct).await?,
        Command::Logout => login::logout(bridge, &origin).await?,
        Command::Whoami => login::whoami(bridge, &origin).await?,
        Command::Execution(command) => {
            return executions::handle(bridge, row, message, &origin, &command).await;
        }
        Command::Respond(args) => {
            return crate::inquiries::respond(bridge, row, message, &origin, &args).await;
        }
        Command::Approve(answer) => return approve::answer(bridge, row, &origin, &answer).await,
        Command::Run(text) if approved => {
            let approval = crate::approvals::for_approved_row(bridge, row).await?;
            let Some(approval) = approval else {
                anyhow::bail!("approved row {} has no approval", row.event_id);
            };
            return run::run(bridge, row, &origin, &text, Some(&approval), message).await;
        }
        Command::Run(text) => return run::run(bridge, row, &origin, &text, None, message).await,
    };
    reply_and_finish(bridge, row, &origin, content).await
}

pub use crate::{matrix::render::one_line, state::reply_and_finish};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_parse() {
        assert_eq!(Command::parse("ping"), Ok(Command::Ping));
        assert_eq!(Command::parse(" PING "), Ok(Command::Ping));
        assert_eq!(Command::parse(""), Ok(Command::Empty));
        assert_eq!(
            Command::parse("ping web1"),
            Ok(Command::Run("ping web1".into()))
        );
        assert_eq!(
            Command::parse("help"),
            Ok(Command::Help(help::HelpArgs::default()))
        );
        assert!(Command::parse("help --page x").is_err());
        assert_eq!(
            Command::parse("respond 5f00 continue=true"),
            Ok(Command::Respond("5f00 continue=true".into()))
        );
        assert_eq!(
            Command::parse("approve ABC234"),
            Ok(Command::Approve(approve::Answer {
                approve: true,
                id: "ABC234".into(),
                reason: None
            }))
        );
        assert_eq!(
            Command::parse("reject abc234 not during the freeze"),
            Ok(Command::Approve(approve::Answer {
                approve: false,
                id: "abc234".into(),
                reason: Some("not during the freeze".into())
            }))
        );
        assert!(Command::parse("approve").is_err());
        assert_eq!(
            Command::parse("approve change 1234"),
            Ok(Command::Run("approve change 1234".into())),
            "an alias that starts with approve still runs"
        );
        assert_eq!(
            Command::parse("run date on web1"),
            Ok(Command::Run("run date on web1".into()))
        );
    }

    #[test]
    fn quoted_commands_stay_on_one_line() {
        assert_eq!(one_line("run `x`\n  on y"), "run 'x' on y");
        assert_eq!(one_line(&"a".repeat(200)).chars().count(), 120);
    }
}
