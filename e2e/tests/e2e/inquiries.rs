//! StackStorm inquiries (workflows paused on `core.ask`) asked in rooms and answered there:
//! with ✅, in a poll, with `!st2 respond`.

use matrix_sdk::ruma::{EventId, RoomId, UserId};
use serde_json::{Value as Json, json};
use st2_matrix_testkit::st2::{AskOptions, St2Double, St2Options};

use crate::harness::Ctx;
use crate::harness::bridge::Bridge;
use crate::harness::conversation::Conversation;
use crate::harness::events::{body, is_notice_from, thread_root};
use crate::harness::stackstorm::{self, St2Auth};
use crate::harness::user::User;
use crate::harness::wait::{PROMPTLY, SETTLE, assert_count_stays, wait_until};
use crate::login::{login_link, open_login_page, wait_for_link_confirmation};

/// A StackStorm double whose one alias runs the asking workflow (`ask`), asking with
/// `options`.
async fn asking_double(options: AskOptions) -> St2Double {
    let st2 = stackstorm::double(St2Options::default(), vec![St2Double::ask_alias()]).await;
    st2.set_ask_options(options);
    st2
}

/// A bridge (not started) on `st2`, listing inquiries every second; with
/// `bridge_answers`, people without a linked account answer with the bridge's account.
fn inquiring_bridge(ctx: &Ctx, st2: &St2Double, bridge_answers: bool) -> Bridge {
    let mut bridge = ctx.bridge();
    bridge.configure_stackstorm(st2, St2Auth::ApiKey);
    bridge.set_config("inquiries", "poll_interval", "1s");
    bridge.set_config("inquiries", "allow_bridge_credential", bridge_answers);
    bridge
}

/// The bot's question in `room` (its notice naming an inquiry), as `user` sees it.
async fn question(user: &User, room: &RoomId, bot: &UserId) -> Json {
    user.wait_for_event(
        room,
        "the bot's question",
        |ev| is_notice_from(ev, bot) && body(ev).contains("StackStorm asks") && !is_edit(ev),
        PROMPTLY,
    )
    .await
}

fn is_edit(event: &Json) -> bool {
    event["content"]["m.relates_to"]["rel_type"] == "m.replace"
}

/// The bot's edit of `question` whose new text contains `needle`.
async fn edit_of(user: &User, room: &RoomId, question: &Json, needle: &str) -> Json {
    user.wait_for_event(
        room,
        &format!("the question edited to say {needle:?}"),
        |ev| {
            is_edit(ev)
                && ev["content"]["m.relates_to"]["event_id"] == question["event_id"]
                && ev["content"]["m.new_content"]["body"]
                    .as_str()
                    .is_some_and(|b| b.contains(needle))
        },
        PROMPTLY,
    )
    .await
}

/// `user` reacts to `target` with `key`, as Element does.
async fn react(user: &User, room: &RoomId, target: &str, key: &str) -> anyhow::Result<()> {
    let content =
        json!({"m.relates_to": {"rel_type": "m.annotation", "event_id": target, "key": key}});
    user.room(room)?.send_raw("m.reaction", content).await?;
    Ok(())
}

/// Waits until StackStorm took `n` answers; returns them.
async fn answers(st2: &St2Double, n: usize) -> Vec<st2_matrix_testkit::st2::InquiryAnswer> {
    wait_until(
        format!("{n} answers taken by StackStorm"),
        PROMPTLY,
        || async {
            let a = st2.inquiry_answers();
            (a.len() >= n).then_some(a)
        },
    )
    .await
}

/// Alice links her StackStorm account (an API key of `st2_user`) through the login page.
async fn link_alice(
    st2: &St2Double,
    bridge: &Bridge,
    alice: &User,
    bot: &UserId,
    st2_user: &str,
) -> anyhow::Result<()> {
    let key = st2.add_api_key(st2_user);
    let direct = alice.create_direct_chat_with(bot).await?;
    let offer = alice.ask(&direct, bot, "!st2 login").await?;
    let link = login_link(&offer, &bridge.url());
    let (browser, _) = open_login_page(&link).await?;
    browser.type_into("#api_key", &key).await?;
    browser.click("#link").await?;
    browser.wait_for_title("Account linked").await?;
    wait_for_link_confirmation(alice, &direct, bot).await;
    Ok(())
}

/// Alice runs a workflow that asks whether to continue. The question appears in her
/// command's thread with the bot's ✅ and ❌; her ✅ answers it on StackStorm with her own
/// linked account; the question is edited to say she answered, and the workflow's result
/// follows in the thread.
pub async fn workflow_question_in_the_commands_thread_is_answered_by_a_check_mark_with_that_persons_account(
    ctx: Ctx,
) -> anyhow::Result<()> {
    // Arrange
    let st2 = asking_double(AskOptions::default()).await;
    let mut bridge = inquiring_bridge(&ctx, &st2, false);
    bridge.set_config("web", "public_url", bridge.url());
    let Conversation { bot, alice, room } = Conversation::start(&ctx, &mut bridge).await?;
    bridge.wait_for_aliases(1).await;
    link_alice(&st2, &bridge, &alice, &bot, "alice-st2").await?;

    // Act
    let command = alice.send_text(&room, "!st2 ask").await?;
    let q = question(&alice, &room, &bot).await;
    let q_id = q["event_id"].as_str().unwrap().to_owned();
    alice
        .wait_for_event(
            &room,
            "the bot's ❌ on its question",
            |ev| {
                ev["type"] == "m.reaction"
                    && ev["content"]["m.relates_to"]["event_id"] == q_id.as_str()
                    && ev["content"]["m.relates_to"]["key"] == "❌"
            },
            PROMPTLY,
        )
        .await;
    react(&alice, &room, &q_id, "✅").await?;

    // Assert
    assert_eq!(
        thread_root(&q),
        Some(command.as_str()),
        "asked in the command's thread: {q}"
    );
    let taken = answers(&st2, 1).await;
    assert_eq!(
        (taken[0].user.as_str(), &taken[0].response),
        ("alice-st2", &json!({"continue": true})),
        "answered with alice's own StackStorm account"
    );
    edit_of(&alice, &room, &q, "Answered by @alice").await;
    let result = alice
        .wait_for_event(
            &room,
            "the workflow's result",
            |ev| is_notice_from(ev, &bot) && body(ev).contains("proceeded : True"),
            PROMPTLY,
        )
        .await;
    assert_eq!(thread_root(&result), Some(command.as_str()));
    Ok(())
}

/// Bob may read help but not run commands: his ✅ on the question is ignored (StackStorm gets
/// no answer) and he is told why once, however often he reacts.
pub async fn reaction_from_someone_who_may_not_run_commands_is_refused_once(
    ctx: Ctx,
) -> anyhow::Result<()> {
    // Arrange
    let st2 = asking_double(AskOptions::default()).await;
    let mut bridge = inquiring_bridge(&ctx, &st2, true);
    bridge.patch_config(|config| {
        let permissions = config
            .entry("permissions")
            .or_insert_with(|| toml::Value::Table(Default::default()))
            .as_table_mut()
            .unwrap();
        permissions.insert("default".into(), "help".into());
        let rule: toml::Table = toml::from_str("rule = \"@alice*\"\nlevel = \"run\"").unwrap();
        permissions.insert(
            "rules".into(),
            toml::Value::Array(vec![toml::Value::Table(rule)]),
        );
    });
    let Conversation { bot, alice, room } = Conversation::start(&ctx, &mut bridge).await?;
    let bob = ctx.user("bob").await?;
    alice.invite(&room, bob.user_id()).await?;
    bob.join(&room).await?;
    bridge.wait_for_aliases(1).await;
    alice.send_text(&room, "!st2 ask").await?;
    let q = question(&bob, &room, &bot).await;
    let q_id = q["event_id"].as_str().unwrap().to_owned();

    // Act
    react(&bob, &room, &q_id, "✅").await?;
    let refusal = |ev: &Json| {
        is_notice_from(ev, &bot) && body(ev).contains("only people who may run commands")
    };
    bob.wait_for_event(&room, "the refusal", refusal, PROMPTLY)
        .await;
    react(&bob, &room, &q_id, "❌").await?;

    // Assert
    assert_count_stays("refusals", 1, SETTLE, || async {
        bob.events_matching(&room, refusal).len()
    })
    .await;
    assert!(
        st2.inquiry_puts().is_empty(),
        "nothing was sent to StackStorm"
    );
    Ok(())
}

/// A question with one field of listed values is a poll; alice's vote answers it, and the bot
/// ends the poll.
pub async fn choice_question_is_a_poll_and_a_vote_answers_it(ctx: Ctx) -> anyhow::Result<()> {
    // Arrange
    let schema = json!({"type": "object", "properties": {"env": {"type": "string",
        "enum": ["staging", "production"], "description": "Deploy where?", "required": true}}});
    let st2 = asking_double(AskOptions::default().schema(&schema)).await;
    let mut bridge = inquiring_bridge(&ctx, &st2, true);
    let Conversation { bot, alice, room } = Conversation::start(&ctx, &mut bridge).await?;
    bridge.wait_for_aliases(1).await;
    alice.send_text(&room, "!st2 ask").await?;
    let poll = alice
        .wait_for_event(
            &room,
            "the bot's poll",
            |ev| ev["type"] == "org.matrix.msc3381.poll.start" && ev["sender"] == bot.as_str(),
            PROMPTLY,
        )
        .await;
    let start = &poll["content"]["org.matrix.msc3381.poll.start"];
    let production = start["answers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["org.matrix.msc1767.text"] == "production")
        .expect("an answer for each value")["id"]
        .clone();

    // Act
    let vote = json!({"m.relates_to": {"rel_type": "m.reference", "event_id": poll["event_id"]},
                      "org.matrix.msc3381.poll.response": {"answers": [production]}});
    alice
        .room(&room)?
        .send_raw("org.matrix.msc3381.poll.response", vote)
        .await?;

    // Assert
    assert_eq!(
        start["question"]["org.matrix.msc1767.text"],
        "Deploy where?"
    );
    let taken = answers(&st2, 1).await;
    assert_eq!(taken[0].response, json!({"env": "production"}));
    alice
        .wait_for_event(
            &room,
            "the poll's end",
            |ev| {
                ev["type"] == "org.matrix.msc3381.poll.end"
                    && ev["content"]["m.relates_to"]["event_id"] == poll["event_id"]
            },
            PROMPTLY,
        )
        .await;
    Ok(())
}

/// A question of two fields is answered with `!st2 respond` in its thread, without the id; an
/// answer of the wrong type first gets StackStorm's validation message.
pub async fn several_fields_are_answered_with_respond_after_a_schema_error(
    ctx: Ctx,
) -> anyhow::Result<()> {
    // Arrange
    let schema = json!({"type": "object", "properties": {
        "approve": {"type": "boolean", "required": true},
        "ticket": {"type": "integer", "required": true}}});
    let st2 = asking_double(AskOptions::default().schema(&schema)).await;
    let mut bridge = inquiring_bridge(&ctx, &st2, true);
    let Conversation { bot, alice, room } = Conversation::start(&ctx, &mut bridge).await?;
    bridge.wait_for_aliases(1).await;
    let command = alice.send_text(&room, "!st2 ask").await?;
    let q = question(&alice, &room, &bot).await;

    // Act
    let wrong = alice
        .send_thread_reply(&room, &command, "!st2 respond approve=true ticket=soon")
        .await?;
    let refused = alice
        .wait_for_event(
            &room,
            "StackStorm's refusal",
            |ev| is_reply_to(ev, &wrong),
            PROMPTLY,
        )
        .await;
    let right = alice
        .send_thread_reply(&room, &command, "!st2 respond approve=true ticket=4711")
        .await?;
    let sent = alice
        .wait_for_event(
            &room,
            "the confirmation",
            |ev| is_reply_to(ev, &right),
            PROMPTLY,
        )
        .await;

    // Assert
    assert!(
        body(&q).contains("Answer with `!st2 respond"),
        "{}",
        body(&q)
    );
    assert!(
        body(&refused).contains("did not pass schema validation"),
        "StackStorm's message is shown: {}",
        body(&refused)
    );
    assert!(body(&sent).contains("Sent your answer"), "{}", body(&sent));
    let taken = answers(&st2, 1).await;
    assert_eq!(taken[0].response, json!({"approve": true, "ticket": 4711}));
    edit_of(&alice, &room, &q, "Answered by @alice").await;
    Ok(())
}

fn is_reply_to(event: &Json, to: &EventId) -> bool {
    event["content"]["m.relates_to"]["m.in_reply_to"]["event_id"] == to.as_str()
}

/// An inquiry created while the bridge's stream was down (a workflow started by a rule,
/// routed to alice's room) is asked in that room once the bridge lists inquiries again, and
/// only once, also across a restart.
pub async fn inquiry_created_while_the_stream_was_down_is_asked_once(
    ctx: Ctx,
) -> anyhow::Result<()> {
    // Arrange
    let st2 = asking_double(AskOptions::default()).await;
    let mut bridge = inquiring_bridge(&ctx, &st2, true);
    let Conversation { bot, alice, room } = Conversation::start(&ctx, &mut bridge).await?;
    bridge.wait_for_stream().await;

    // Act
    st2.set_stream_available(false);
    st2.cut_streams();
    let started = st2.start_ask_workflow("ops", AskOptions::default().route(room.as_str()));
    st2.set_stream_available(true);
    let q = question(&alice, &room, &bot).await;
    bridge.restart().await?;

    // Assert
    assert!(body(&q).contains(&started.inquiry_id), "{}", body(&q));
    assert_count_stays("questions", 1, SETTLE, || async {
        alice
            .events_matching(&room, |ev| {
                is_notice_from(ev, &bot) && body(ev).contains("StackStorm asks") && !is_edit(ev)
            })
            .len()
    })
    .await;
    Ok(())
}

/// In an encrypted room (Element's default) the question goes out encrypted and alice's
/// encrypted ✅ answers it.
pub async fn question_in_an_encrypted_room_is_answered_by_an_encrypted_reaction(
    ctx: Ctx,
) -> anyhow::Result<()> {
    // Arrange
    let st2 = asking_double(AskOptions::default()).await;
    let mut bridge = inquiring_bridge(&ctx, &st2, true);
    let Conversation { bot, alice, room } =
        Conversation::start_encrypted(&ctx, &mut bridge).await?;
    bridge.wait_for_aliases(1).await;
    alice.send_text(&room, "!st2 ask").await?;
    let q = question(&alice, &room, &bot).await;

    // Act
    react(&alice, &room, q["event_id"].as_str().unwrap(), "✅").await?;

    // Assert
    assert!(
        alice.encryption_of(&room, &q).is_some(),
        "the question was sent encrypted: {q}"
    );
    let taken = answers(&st2, 1).await;
    assert_eq!(taken[0].response, json!({"continue": true}));
    edit_of(&alice, &room, &q, "Answered by @alice").await;
    Ok(())
}
