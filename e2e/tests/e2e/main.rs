//! End-to-end tests: the real `st2-matrix` binary against a real Synapse, with human users
//! driven by matrix-sdk.
//!
//! Run with `cargo test -p st2-matrix-e2e` after `cargo build -p st2-matrix --bin st2-matrix`
//! (or with `ST2_MATRIX_BIN` pointing at a binary). The first run installs Synapse from PyPI
//! into `.test-deps/` (`scripts/synapse.sh install`). `harness` says how a run is set up;
//! every other module holds the tests of one behaviour, each test a sentence.

/// Synapse, bridge slots, bridges, users and polling: what every test stands on.
mod harness;

/// Encrypted rooms, which the bridge cannot read yet.
mod encryption;
/// Who may invite the bot.
mod invites;
/// What the bridge writes to its log.
mod logs;
/// `!st2 ping`, the first command: the round trip through Synapse and the bridge.
mod ping;
/// A bridge that crashes and comes back.
mod restart;
/// Commands inside threads.
mod threads;
/// The appservice transaction endpoint, driven directly.
mod transactions;

use std::process::ExitCode;

/// `module::test` names and functions, in the order libtest-mimic lists them.
macro_rules! tests {
    ($($module:ident :: $test:ident),* $(,)?) => {
        vec![$((
            concat!(stringify!($module), "::", stringify!($test)),
            (|ctx| Box::pin($module::$test(ctx))) as harness::TestFn,
        )),*]
    };
}

fn main() -> ExitCode {
    harness::main(tests![
        ping::invited_bot_joins_and_answers_ping_with_a_reply,
        threads::ping_in_a_thread_is_answered_in_that_thread,
        transactions::resent_transaction_is_answered_once,
        transactions::wrong_hs_token_is_refused_with_403,
        transactions::missing_hs_token_is_refused_with_401,
        restart::command_sent_while_the_bridge_is_down_is_answered_once_after_restart,
        invites::invite_from_a_user_outside_invite_allow_is_declined,
        encryption::encrypted_room_gets_one_notice_that_encryption_is_unsupported,
        logs::bridge_log_never_contains_the_appservice_tokens,
    ])
}
