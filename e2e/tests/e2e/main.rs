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
/// Commands that wait for a second person's approval before they run.
mod approvals;
/// Long results: a summary and the whole output as a file.
mod attachments;
/// Failures combined: kills, a stream cut and a Synapse restart under 300 commands.
mod chaos;
/// StackStorm commands: matched, run for their sender, acknowledged in place.
mod commands;
/// End-to-end encrypted rooms and direct chats.
mod encryption;
/// Executions watched and steered from the room.
mod executions;
/// `!st2help`: the commands a room can run.
mod help;
/// Commands in StackStorm's hands when the bridge was killed: looked up, not guessed.
mod in_doubt_commands;
/// Sends whose answer was lost (and a Synapse restart) posted once; a backlog drained.
mod in_doubt_sends;
/// StackStorm inquiries asked in rooms and answered there.
mod inquiries;
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

/// The tests that send to-device messages (room keys: they talk in encrypted rooms), which
/// take turns, as Synapse loses some to-device messages sent at the same moment (see
/// `harness::main`): every encryption test, the admin tests (the admin room is encrypted), the
/// whisper test (whispers go to an encrypted direct chat), and the inquiry and the approval in
/// an encrypted room.
const TAKING_TURNS: &[&str] = &[
    "encryption::",
    "admin::",
    "attachments::long_result_in_an_encrypted_room_arrives_as_an_encrypted_file",
    "results::whispered_results_arrive_in_one_direct_chat_with_the_user",
    "inquiries::question_in_an_encrypted_room_is_answered_by_an_encrypted_reaction",
    "approvals::approval_in_an_encrypted_room_is_given_by_an_encrypted_reaction",
];

fn main() -> ExitCode {
    harness::main(tests![
        // The tests that let real time pass come first, longest first, as tests start in this
        // order and a run lasts as long as its slowest chain of tests: a 30 s homeserver
        // outage on a private Synapse (~45 s), a 10 s stream outage (~20 s), 3 s of key wait
        // watched for 6 s more, 4 s of tokens. The tests that take turns (about a minute in
        // all, so the longest chain) are spread through the list, every third one, so that
        // about one test thread is having its turn at a time and the others keep running.
        chaos::three_hundred_commands_through_kills_a_stream_cut_and_a_synapse_restart_exactly_once,
        results::five_results_while_synapse_is_down_for_30_s_arrive_after_it_returns_in_order_once,
        results::result_finished_while_the_stream_was_down_for_10_s_is_posted_once_recovered,
        in_doubt_sends::a_result_whose_answer_was_lost_before_a_synapse_restart_is_posted_once,
        in_doubt_sends::a_result_in_flight_when_the_bridge_is_killed_is_posted_once,
        in_doubt_sends::eight_hundred_messages_for_one_room_drain_in_order_without_sends_in_doubt,
        encryption::messages_the_bot_can_never_decrypt_get_one_notice_naming_their_sender,
        tokens::expired_token_is_renewed_without_the_user_noticing,
        login::login_in_a_browser_links_the_account_until_logout_and_no_secret_is_logged,
        encryption::login_in_an_encrypted_direct_chat_sends_the_link_and_links_the_account,
        login::login_with_an_api_key_in_a_browser_runs_commands_with_that_key,
        inquiries::workflow_question_in_the_commands_thread_is_answered_by_a_check_mark_with_that_persons_account,
        inquiries::inquiry_created_while_the_stream_was_down_is_asked_once,
        ping::invited_bot_joins_and_answers_ping_with_a_reply,
        encryption::bridge_restarted_or_killed_after_a_key_arrived_keeps_answering_with_the_same_device,
        threads::ping_in_a_thread_is_answered_in_that_thread,
        transactions::resent_transaction_is_answered_once,
        encryption::command_whose_room_key_arrives_seconds_later_is_answered,
        transactions::wrong_hs_token_is_refused_with_403,
        transactions::missing_hs_token_is_refused_with_401,
        admin::admin_room_is_created_for_the_admin_and_mistakes_are_answered_with_the_usage,
        restart::command_sent_while_the_bridge_is_down_is_answered_once_after_restart,
        in_doubt_commands::command_stackstorm_ran_when_the_bridge_was_killed_is_confirmed_with_one_result,
        in_doubt_commands::command_stackstorm_never_received_during_a_crash_is_answered_that_it_did_not_run,
        approvals::approval_granted_by_a_second_person_runs_the_command_as_its_requester,
        approvals::approval_rejected_by_an_approver_never_runs,
        approvals::approval_nobody_gives_expires_and_the_command_never_runs,
        approvals::approval_given_after_a_restart_runs_the_command_once,
        approvals::approval_in_an_encrypted_room_is_given_by_an_encrypted_reaction,
        invites::invite_from_a_user_outside_invite_allow_is_declined,
        admin::admin_rules_refuse_then_allow_then_narrow_help_then_deny,
        logs::bridge_log_never_contains_the_appservice_tokens,
        help::help_lists_the_rooms_commands_grouped_by_pack,
        encryption::ping_in_an_encrypted_room_is_answered_with_an_encrypted_reply,
        commands::command_in_a_thread_runs_for_its_sender_and_is_acknowledged_in_that_thread,
        commands::command_after_the_bots_display_name_runs,
        executions::ack_is_edited_as_the_execution_runs_and_the_command_gets_a_check_mark_or_a_cross,
        executions::status_output_and_history_answer_in_the_commands_thread,
        executions::cancel_stops_a_running_execution_and_explains_a_finished_one,
        executions::rerun_with_a_changed_parameter_reports_in_its_own_thread,
        executions::someone_who_may_not_run_commands_cannot_cancel,
        inquiries::reaction_from_someone_who_may_not_run_commands_is_refused_once,
        inquiries::choice_question_is_a_poll_and_a_vote_answers_it,
        inquiries::several_fields_are_answered_with_respond_after_a_schema_error,
        encryption::command_in_an_encrypted_room_gets_its_ack_and_result_encrypted_in_its_thread,
        commands::ambiguous_command_lists_the_commands_it_matches_and_runs_none,
        commands::unmatched_command_is_answered_with_a_hint_to_help,
        encryption::member_who_joins_an_encrypted_room_later_reads_the_bots_answers,
        aliases::all_250_aliases_are_fetched_and_the_last_one_runs,
        aliases::alias_with_an_invalid_format_does_not_stop_the_others,
        encryption::after_a_member_leaves_the_bot_encrypts_with_a_new_room_key,
        inquiries::question_in_an_encrypted_room_is_answered_by_an_encrypted_reaction,
        outages::command_while_stackstorm_is_down_is_answered_that_it_was_not_run,
        outages::help_after_a_restart_while_stackstorm_is_down_answers_from_the_stored_aliases,
        encryption::bridge_log_holds_no_room_key_or_secret_of_an_encrypted_conversation,
        results::result_of_a_run_appears_in_the_commands_thread_mentioning_its_sender,
        attachments::long_result_arrives_as_a_summary_and_a_file_holding_the_whole_output,
        attachments::long_result_in_an_encrypted_room_arrives_as_an_encrypted_file,
        webhooks::errbot_webhook_with_the_secret_posts_the_message_into_the_room,
        encryption::direct_chat_the_bot_opens_for_a_whisper_is_encrypted,
        webhooks::hubot_webhook_takes_json_and_form_bodies,
        webhooks::webhook_without_or_with_a_wrong_secret_is_refused_with_401,
        encryption::admin_room_the_bot_creates_is_encrypted_and_commands_there_are_answered_encrypted,
        webhooks::webhook_body_that_is_not_json_or_lacks_a_field_is_refused_with_400_naming_it,
        webhooks::webhook_body_over_1_mib_is_refused_with_413,
        results::whispered_results_arrive_in_one_direct_chat_with_the_user,
        webhooks::webhook_for_a_room_the_bot_is_not_in_is_answered_404,
        webhooks::bridge_without_a_webhook_secret_answers_404_on_the_webhook_paths,
        encryption::with_encryption_off_an_encrypted_room_gets_one_notice_that_it_cannot_be_read,
    ], TAKING_TURNS)
}
