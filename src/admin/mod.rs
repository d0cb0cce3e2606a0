//! The admin room: configuring the bridge from Matrix.
//!
//! Every message an admin writes there is a command (the `!st2` prefix is optional). A line is
//! shell-split (quotes work) and parsed with clap, so `help` and `<command> --help` are
//! generated from the doc comments below and a mistake answers with the usage. Clap's output is
//! sent as a code block, never as Markdown. Changes are stored and take effect at once.

pub mod aliases;
pub mod rooms;
pub mod status;
pub mod users;

use clap::{Parser, Subcommand};
use ruma::{OwnedRoomId, RoomOrAliasId};

use crate::{
    matrix::render::{self, Origin, escape_html},
    permissions::Level,
    state::AppState,
};

/// Administer st2-matrix. Type a command (the `!st2` prefix is optional here); `help <command>`
/// or `<command> --help` explains it.
#[derive(Debug, Parser)]
#[command(name = "!st2", disable_version_flag = true, color = clap::ColorChoice::Never, max_term_width = 100)]
pub struct AdminCli {
    /// What to do.
    #[command(subcommand)]
    pub command: AdminCommand,
}

/// The admin commands.
#[derive(Debug, Subcommand, PartialEq, Eq)]
pub enum AdminCommand {
    /// Health of the homeserver, StackStorm, the stream, the outbox and the alias cache.
    Status,
    /// Rooms the bot is in, their pack filters and permission rules.
    #[command(subcommand)]
    Rooms(RoomsCommand),
    /// The alias cache.
    #[command(subcommand)]
    Aliases(AliasesCommand),
    /// Linked StackStorm identities.
    #[command(subcommand)]
    Users(UsersCommand),
}

/// `rooms …`
#[derive(Debug, Subcommand, PartialEq, Eq)]
pub enum RoomsCommand {
    /// List the rooms the bot is in.
    List,
    /// Show a room's settings: pack filter, permission rules, aliases.
    Show {
        /// Room id (!…) or alias (#…:server).
        room: String,
    },
    /// Set the packs a room may use: a comma-separated list, `*` for every pack, or `default`
    /// for the config's `packs`.
    Packs {
        /// Room id or alias.
        room: String,
        /// e.g. `ops,packs`, `*` or `default`.
        packs: String,
    },
    /// Make the bot leave a room (its settings are forgotten).
    Leave {
        /// Room id or alias.
        room: String,
    },
    /// Grant a level in a room to a rule: a user id, a glob (@ops-*:example.org), *:server, a
    /// server name, or power>=N.
    Allow {
        /// Room id or alias.
        room: String,
        /// Who, e.g. `@bob:example.org`, `*:example.org`, `power>=50`.
        rule: String,
        /// The level granted: help, run or admin.
        #[arg(long, default_value = "run")]
        level: String,
    },
    /// Deny a rule in a room (level none; a deny wins over every grant).
    Deny {
        /// Room id or alias.
        room: String,
        /// Who.
        rule: String,
    },
    /// Remove a room's rule (allow or deny).
    Unset {
        /// Room id or alias.
        room: String,
        /// The rule, as shown by `rooms show`.
        rule: String,
    },
    /// A room's own approval rules: commands of matching aliases wait for approvers before
    /// they run. They are tried before the config's `[[approvals]]`; the first that matches
    /// decides. Without a subcommand: list them.
    Approvals {
        /// Room id or alias.
        room: String,
        /// What to do (default: list).
        #[command(subcommand)]
        action: Option<ApprovalsAction>,
    },
}

/// `rooms approvals <room> …`
#[derive(Debug, Subcommand, PartialEq, Eq)]
pub enum ApprovalsAction {
    /// List the room's approval rules, and the config's.
    List,
    /// Add a rule, e.g. `add deploy.*,ops.restart power>=50 --required 2 --timeout 1h`.
    Add {
        /// Alias refs (pack.name), comma-separated, globs allowed: `deploy.*`.
        aliases: String,
        /// Who may approve, comma-separated: user ids, globs (@ops-*:example.org), *:server,
        /// power>=N.
        approvers: String,
        /// Distinct approvers needed (the requester never counts).
        #[arg(long, default_value_t = 1)]
        required: u32,
        /// How long a request waits before it expires: 30s, 10m, 1h, 2d.
        #[arg(long, default_value = "30m")]
        timeout: String,
    },
    /// Remove a rule by its number (as `rooms approvals <room>` lists them).
    Remove {
        /// The rule's number.
        number: i64,
    },
}

/// `aliases …`
#[derive(Debug, Subcommand, PartialEq, Eq)]
pub enum AliasesCommand {
    /// Fetch StackStorm's aliases now.
    Reload,
    /// Formats that do not compile, and formats that overlap (a command matching both).
    Check,
}

/// `users …`
#[derive(Debug, Subcommand, PartialEq, Eq)]
pub enum UsersCommand {
    /// Who linked which StackStorm account.
    List,
    /// Unlink someone's StackStorm account (their commands run as the bridge again).
    Revoke {
        /// The Matrix user id.
        user: String,
    },
}

/// What a command answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// Markdown.
    Markdown(String),
    /// Preformatted text (clap's help and errors): a code block, never Markdown.
    Plain(String),
}

/// A mistake in a command, answered verbatim.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// The person's mistake.
    #[error("{0}")]
    User(String),
    /// Ours: logged, and answered as "internal error".
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl From<sqlx::Error> for CommandError {
    fn from(e: sqlx::Error) -> Self {
        CommandError::Internal(e.into())
    }
}

/// Parses one admin-room message into a command, or the reply clap gives (help, usage).
pub fn parse_line(line: &str, prefix: &str) -> Result<AdminCommand, Reply> {
    let first_line = line
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or_default()
        .trim();
    let text = first_line
        .strip_prefix(prefix)
        .map(str::trim_start)
        .unwrap_or(first_line);
    let Some(mut words) = shlex::split(text) else {
        return Err(Reply::Markdown("That line has an unclosed quote.".into()));
    };
    // clap's `help X` shows the short help; `X --help` the long one, which is what people want.
    if words.first().map(String::as_str) == Some("help") {
        words.remove(0);
        words.push("--help".into());
    }
    if words.is_empty() {
        words.push("--help".into());
    }
    match AdminCli::try_parse_from(std::iter::once(prefix.to_owned()).chain(words)) {
        Ok(cli) => Ok(cli.command),
        // Help and usage errors alike are clap's text, shown as is.
        Err(e) => Err(Reply::Plain(e.render().to_string())),
    }
}

/// Handles a message in the admin room: checks the sender is an admin, runs the command, and
/// returns the reply.
pub async fn handle(
    bridge: &AppState,
    origin: &Origin,
    body: &str,
) -> ruma::events::room::message::RoomMessageEventContent {
    let level = bridge
        .access
        .level_of(bridge, &origin.room_id, &origin.sender)
        .await;
    if level < Level::Admin {
        return render::notice_markdown(&crate::access::refusal(
            &bridge.config,
            &origin.room_id,
            "Administering the bridge",
            Level::Admin,
            level,
        ));
    }
    let reply = match parse_line(body, &bridge.config.bridge.command_prefix) {
        Err(reply) => reply,
        Ok(command) => {
            tracing::info!(sender = %origin.sender, command = ?command, "admin command");
            match run(bridge, command).await {
                Ok(reply) => reply,
                Err(CommandError::User(message)) => Reply::Markdown(format!("❌ {message}")),
                Err(CommandError::Internal(e)) => {
                    tracing::error!(error.message = %e, error.cause_chain = ?e, "admin command failed");
                    Reply::Markdown("❌ Internal error; see the bridge's logs.".into())
                }
            }
        }
    };
    match reply {
        Reply::Markdown(text) => render::notice_markdown(&text),
        Reply::Plain(text) => render::notice_html(
            &text,
            format!("<pre><code>{}</code></pre>", escape_html(text.trim_end())),
        ),
    }
}

async fn run(bridge: &AppState, command: AdminCommand) -> Result<Reply, CommandError> {
    match command {
        AdminCommand::Status => status::status(bridge).await,
        AdminCommand::Rooms(command) => rooms::run(bridge, command).await,
        AdminCommand::Aliases(AliasesCommand::Reload) => aliases::reload(bridge).await,
        AdminCommand::Aliases(AliasesCommand::Check) => aliases::check(bridge),
        AdminCommand::Users(UsersCommand::List) => users::list(bridge).await,
        AdminCommand::Users(UsersCommand::Revoke { user }) => users::revoke(bridge, &user).await,
    }
}

/// A room argument (id or alias) as a room id.
pub async fn room_arg(bridge: &AppState, room: &str) -> Result<OwnedRoomId, CommandError> {
    let parsed = RoomOrAliasId::parse(room.trim()).map_err(|_| {
        CommandError::User(format!(
            "`{room}` is not a room id (!…) or alias (#…:server)"
        ))
    })?;
    if parsed.is_room_id() {
        return ruma::RoomId::parse(parsed.as_str()).map_err(|e| CommandError::User(e.to_string()));
    }
    let alias =
        ruma::RoomAliasId::parse(parsed.as_str()).map_err(|e| CommandError::User(e.to_string()))?;
    bridge
        .matrix
        .resolve_alias(&alias)
        .await
        .map_err(|e| match e.errcode() {
            Some("M_NOT_FOUND") => CommandError::User(format!("the alias {alias} does not exist")),
            _ => CommandError::Internal(e.into()),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &str) -> Result<AdminCommand, Reply> {
        parse_line(line, "!st2")
    }

    #[test]
    fn the_command_tree_is_well_formed() {
        use clap::CommandFactory;
        AdminCli::command().debug_assert();
    }

    #[test]
    fn commands_parse_with_or_without_the_prefix_and_with_quotes() {
        assert_eq!(parse("status").unwrap(), AdminCommand::Status);
        assert_eq!(parse("!st2 status").unwrap(), AdminCommand::Status);
        assert_eq!(
            parse(r#"rooms allow "!abc:example.org" '@bob:example.org' --level help"#).unwrap(),
            AdminCommand::Rooms(RoomsCommand::Allow {
                room: "!abc:example.org".into(),
                rule: "@bob:example.org".into(),
                level: "help".into()
            })
        );
        assert_eq!(
            parse(
                "rooms approvals !r:x add deploy.*,ops.restart power>=50 --required 2 --timeout 1h"
            )
            .unwrap(),
            AdminCommand::Rooms(RoomsCommand::Approvals {
                room: "!r:x".into(),
                action: Some(ApprovalsAction::Add {
                    aliases: "deploy.*,ops.restart".into(),
                    approvers: "power>=50".into(),
                    required: 2,
                    timeout: "1h".into()
                })
            })
        );
        assert_eq!(
            parse("rooms approvals !r:x").unwrap(),
            AdminCommand::Rooms(RoomsCommand::Approvals {
                room: "!r:x".into(),
                action: None
            })
        );
        assert_eq!(
            parse("rooms approvals !r:x remove 3").unwrap(),
            AdminCommand::Rooms(RoomsCommand::Approvals {
                room: "!r:x".into(),
                action: Some(ApprovalsAction::Remove { number: 3 })
            })
        );
        assert_eq!(
            parse("users revoke @bob:x").unwrap(),
            AdminCommand::Users(UsersCommand::Revoke {
                user: "@bob:x".into()
            })
        );
    }

    #[test]
    fn help_is_generated_and_mistakes_show_the_usage() {
        let Err(Reply::Plain(help)) = parse("help") else {
            panic!("help expected")
        };
        assert!(
            help.contains("Usage:") && help.contains("rooms") && help.contains("status"),
            "{help}"
        );
        let Err(Reply::Plain(help)) = parse("help rooms") else {
            panic!("help expected")
        };
        assert!(help.contains("allow") && help.contains("packs"), "{help}");
        let Err(Reply::Plain(help)) = parse("rooms allow --help") else {
            panic!("help expected")
        };
        assert!(help.contains("power>=N"), "{help}");
        let Err(Reply::Plain(error)) = parse("rooms frobnicate") else {
            panic!("error expected")
        };
        assert!(
            error.contains("frobnicate") && error.contains("Usage:"),
            "{error}"
        );
        let Err(Reply::Plain(error)) = parse("rooms allow !r:x") else {
            panic!("error expected")
        };
        assert!(error.contains("<RULE>"), "{error}");
        assert!(matches!(
            parse(r#"rooms show "!unclosed"#),
            Err(Reply::Markdown(_))
        ));
    }
}
