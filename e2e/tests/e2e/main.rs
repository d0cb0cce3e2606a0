//! End-to-end tests: the real `st2-matrix` binary against a real Synapse, with human users
//! driven by matrix-sdk.
//!
//! Run with `cargo test -p st2-matrix-e2e` after `cargo build -p st2-matrix --bin st2-matrix`
//! (or with `ST2_MATRIX_BIN` pointing at a binary). The first run installs Synapse from PyPI
//! into `.test-deps/` (`scripts/synapse.sh install`). `harness` says how a run is set up;
//! every other module holds the tests of one behaviour, each test a sentence.

/// Synapse, bridge slots, bridges, users and polling: what every test stands on.
mod harness;

/// The admin room, and the permissions managed from it.
mod admin;
/// StackStorm's alias list: long lists, broken aliases.
mod aliases;
/// StackStorm commands: matched, run for their sender, acknowledged in place.
mod commands;
/// Encrypted rooms, which the bridge cannot read yet.
mod encryption;
/// `!st2help`: the commands a room can run.
mod help;
/// Who may invite the bot.
mod invites;
/// People's own StackStorm identity: login page, linked commands, logout.
mod login;
/// What the bridge writes to its log.
mod logs;
/// StackStorm down: what people are told, and what still works.
mod outages;
/// `!st2 ping`, the first command: the round trip through Synapse and the bridge.
mod ping;
/// A bridge that crashes and comes back.
mod restart;
/// Results of executions back in the room: threads, whispers, outages.
mod results;
/// Commands inside threads.
mod threads;
/// The bridge's own StackStorm token, renewed as it expires.
mod tokens;
/// The appservice transaction endpoint, driven directly.
mod transactions;
/// Results pushed over HTTP: the errbot and hubot webhooks.
mod webhooks;

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
        // The tests that let real time pass come first, longest first, as tests start in this
        // order and a run lasts as long as its slowest chain of tests: a 30 s homeserver
        // outage on a private Synapse (~45 s), a 10 s stream outage (~20 s), 4 s of tokens.
        results::five_results_while_synapse_is_down_for_30_s_arrive_after_it_returns_in_order_once,
        results::result_finished_while_the_stream_was_down_for_10_s_is_posted_once_recovered,
        tokens::expired_token_is_renewed_without_the_user_noticing,
        login::login_in_a_browser_links_the_account_until_logout_and_no_secret_is_logged,
        login::login_with_an_api_key_in_a_browser_runs_commands_with_that_key,
        admin::admin_room_is_created_for_the_admin_and_mistakes_are_answered_with_the_usage,
        admin::admin_rules_refuse_then_allow_then_narrow_help_then_deny,
        ping::invited_bot_joins_and_answers_ping_with_a_reply,
        threads::ping_in_a_thread_is_answered_in_that_thread,
        transactions::resent_transaction_is_answered_once,
        transactions::wrong_hs_token_is_refused_with_403,
        transactions::missing_hs_token_is_refused_with_401,
        restart::command_sent_while_the_bridge_is_down_is_answered_once_after_restart,
        invites::invite_from_a_user_outside_invite_allow_is_declined,
        encryption::encrypted_room_gets_one_notice_that_encryption_is_unsupported,
        logs::bridge_log_never_contains_the_appservice_tokens,
        help::help_lists_the_rooms_commands_grouped_by_pack,
        commands::command_in_a_thread_runs_for_its_sender_and_is_acknowledged_in_that_thread,
        commands::command_after_the_bots_display_name_runs,
        commands::ambiguous_command_lists_the_commands_it_matches_and_runs_none,
        commands::unmatched_command_is_answered_with_a_hint_to_help,
        aliases::all_250_aliases_are_fetched_and_the_last_one_runs,
        aliases::alias_with_an_invalid_format_does_not_stop_the_others,
        outages::command_while_stackstorm_is_down_is_answered_that_it_was_not_run,
        outages::help_after_a_restart_while_stackstorm_is_down_answers_from_the_stored_aliases,
        results::result_of_a_run_appears_in_the_commands_thread_mentioning_its_sender,
        results::whispered_results_arrive_in_one_direct_chat_with_the_user,
        webhooks::errbot_webhook_with_the_secret_posts_the_message_into_the_room,
        webhooks::hubot_webhook_takes_json_and_form_bodies,
        webhooks::webhook_without_or_with_a_wrong_secret_is_refused_with_401,
        webhooks::webhook_body_that_is_not_json_or_lacks_a_field_is_refused_with_400_naming_it,
        webhooks::webhook_body_over_1_mib_is_refused_with_413,
        webhooks::webhook_for_a_room_the_bot_is_not_in_is_answered_404,
        webhooks::bridge_without_a_webhook_secret_answers_404_on_the_webhook_paths,
    ])
}
