//! Results pushed over HTTP: err-stackstorm's `POST /chatops/message` and hubot's
//! `POST /hubot/st2` on the bridge's own listener, authenticated by `[webhook] secret`.

use serde_json::json;

use crate::harness::Ctx;
use crate::harness::bridge::{Bridge, WebhookBody};
use crate::harness::conversation::Conversation;
use crate::harness::events::{body, is_notice_from};
use crate::harness::wait::{PROMPTLY, SETTLE, assert_count_stays};

/// The shared secret of the bridges in these tests (the bridge wants 16 characters or more).
const SECRET: &str = "e2e-webhook-secret-0123456789";

/// err-stackstorm's endpoint.
const ERRBOT: &str = "/chatops/message";
/// hubot's endpoint.
const HUBOT: &str = "/hubot/st2";

/// A bridge (not started) with its webhooks on, behind [`SECRET`].
fn bridge_with_webhooks(ctx: &Ctx) -> Bridge {
    let mut bridge = ctx.bridge();
    bridge.set_config("webhook", "secret", SECRET);
    bridge
}

/// `POST /chatops/message` with the secret and err-stackstorm's body (`channel`, `message`,
/// `user`, `whisper`, `extra`) is answered 202 with the room and the number of messages, and the
/// message appears in the room, mentioning the `user`.
pub async fn errbot_webhook_with_the_secret_posts_the_message_into_the_room(
    ctx: Ctx,
) -> anyhow::Result<()> {
    // Arrange
    let mut bridge = bridge_with_webhooks(&ctx);
    let Conversation { bot, alice, room } = Conversation::start(&ctx, &mut bridge).await?;

    // Act
    let (status, answer) = bridge
        .post_webhook(
            ERRBOT,
            Some(SECRET),
            WebhookBody::Json(json!({
                "channel": room,
                "message": "web deployed by a rule",
                "user": alice.user_id(),
                "whisper": false,
                "extra": {},
            })),
        )
        .await?;

    // Assert
    assert_eq!(status, 202, "accepted: {answer}");
    assert_eq!(
        answer,
        json!({"status": "accepted", "room_id": room, "messages": 1}),
        "the answer names the room and the messages queued"
    );
    let message = alice
        .wait_for_event(
            &room,
            "the webhook's message",
            |ev| is_notice_from(ev, &bot) && body(ev).ends_with("web deployed by a rule"),
            PROMPTLY,
        )
        .await;
    assert_eq!(
        body(&message),
        format!("{}: web deployed by a rule", alice.user_id()),
        "the message mentions the user it is for: {message}"
    );
    Ok(())
}

/// `POST /hubot/st2` with the secret takes hubot's body both as JSON and as a form field
/// `payload=<json>`: each is answered 202 and both messages appear in the room, in order.
pub async fn hubot_webhook_takes_json_and_form_bodies(ctx: Ctx) -> anyhow::Result<()> {
    // Arrange
    let mut bridge = bridge_with_webhooks(&ctx);
    let Conversation { bot, alice, room } = Conversation::start(&ctx, &mut bridge).await?;

    // Act
    let (json_status, json_answer) = bridge
        .post_webhook(
            HUBOT,
            Some(SECRET),
            WebhookBody::Json(json!({"channel": room, "message": "sent as JSON"})),
        )
        .await?;
    let (form_status, form_answer) = bridge
        .post_webhook(
            HUBOT,
            Some(SECRET),
            WebhookBody::Form(json!({"channel": room, "message": "sent as a form"}).to_string()),
        )
        .await?;

    // Assert
    assert_eq!(json_status, 202, "the JSON body is accepted: {json_answer}");
    assert_eq!(form_status, 202, "the form body is accepted: {form_answer}");
    alice
        .wait_for_event(
            &room,
            "the message sent as a form",
            |ev| is_notice_from(ev, &bot) && body(ev) == "sent as a form",
            PROMPTLY,
        )
        .await;
    let messages: Vec<String> = alice
        .events_matching(&room, |ev| is_notice_from(ev, &bot))
        .iter()
        .map(|ev| body(ev).to_owned())
        .collect();
    assert_eq!(
        messages,
        ["sent as JSON", "sent as a form"],
        "both messages, in the order they were posted"
    );
    Ok(())
}

/// Both webhooks refuse a request without `Authorization: Bearer <secret>`, or with a wrong
/// secret, with 401 and an error saying which; none of them posts anything, while a request
/// with the secret, made after them, does.
pub async fn webhook_without_or_with_a_wrong_secret_is_refused_with_401(
    ctx: Ctx,
) -> anyhow::Result<()> {
    // Arrange
    let mut bridge = bridge_with_webhooks(&ctx);
    let Conversation { bot, alice, room } = Conversation::start(&ctx, &mut bridge).await?;
    let valid = json!({"channel": room, "message": "let me in"});
    let wrong = format!("{SECRET}-not");

    // Act
    let mut refusals = Vec::new();
    for path in [ERRBOT, HUBOT] {
        for secret in [None, Some(wrong.as_str())] {
            let (status, answer) = bridge
                .post_webhook(path, secret, WebhookBody::Json(valid.clone()))
                .await?;
            refusals.push((path, secret.is_some(), status, answer));
        }
    }
    let (status, answer) = bridge
        .post_webhook(
            ERRBOT,
            Some(SECRET),
            WebhookBody::Json(json!({"channel": room, "message": "with the secret"})),
        )
        .await?;

    // Assert
    for (path, with_wrong_secret, status, answer) in &refusals {
        assert_eq!(*status, 401, "{path} refuses: {answer}");
        let error = answer["error"].as_str().unwrap_or_default();
        if *with_wrong_secret {
            assert_eq!(error, "wrong webhook secret", "{path}: {answer}");
        } else {
            assert!(
                error.contains("Authorization: Bearer"),
                "{path} says the secret is missing: {answer}"
            );
        }
    }
    assert_eq!(
        status, 202,
        "the request with the secret is accepted: {answer}"
    );
    // The outbox posts a room's messages in order: anything a refused request had queued
    // would arrive before this one.
    alice
        .wait_for_event(
            &room,
            "the message posted with the secret",
            |ev| is_notice_from(ev, &bot) && body(ev) == "with the secret",
            PROMPTLY,
        )
        .await;
    assert_count_stays("messages from the bot", 1, SETTLE, || async {
        alice
            .events_matching(&room, |ev| is_notice_from(ev, &bot))
            .len()
    })
    .await;
    Ok(())
}

/// With the secret, a body that is not JSON, a form whose `payload` is not JSON, or a body
/// without `channel` or `message` is refused with 400 and an `error` naming the problem.
pub async fn webhook_body_that_is_not_json_or_lacks_a_field_is_refused_with_400_naming_it(
    ctx: Ctx,
) -> anyhow::Result<()> {
    // Arrange
    let mut bridge = bridge_with_webhooks(&ctx);
    bridge.start().await?;
    let room = "!somewhere:localhost";
    let cases = [
        (
            ERRBOT,
            WebhookBody::Raw("{\"channel\": ".into()),
            "the body is not JSON",
        ),
        (
            ERRBOT,
            WebhookBody::Json(json!({"message": "hi"})),
            "missing field `channel`",
        ),
        (
            ERRBOT,
            WebhookBody::Json(json!({"channel": room})),
            "missing field `message`",
        ),
        (
            HUBOT,
            WebhookBody::Raw("channel=x".into()),
            "the body is not JSON",
        ),
        (
            HUBOT,
            WebhookBody::Form("{not json".into()),
            "`payload` is not JSON",
        ),
        (
            HUBOT,
            WebhookBody::Form(json!({"channel": room}).to_string()),
            "missing field `message`",
        ),
        (
            HUBOT,
            WebhookBody::Json(json!({"message": "hi"})),
            "missing field `channel`",
        ),
    ];

    // Act
    let mut answers = Vec::new();
    for (path, request, expected) in cases {
        let (status, answer) = bridge
            .post_webhook(path, Some(SECRET), request.clone())
            .await?;
        answers.push((path, request, expected, status, answer));
    }

    // Assert
    for (path, request, expected, status, answer) in answers {
        assert_eq!(status, 400, "{path} refuses {request:?}: {answer}");
        let error = answer["error"].as_str().unwrap_or_default();
        assert!(
            error.starts_with(expected),
            "{path} answers {request:?} with an error starting {expected:?}: {answer}"
        );
    }
    Ok(())
}

/// A body over 1 MiB is refused with 413, whatever it holds.
pub async fn webhook_body_over_1_mib_is_refused_with_413(ctx: Ctx) -> anyhow::Result<()> {
    // Arrange
    let mut bridge = bridge_with_webhooks(&ctx);
    bridge.start().await?;
    let huge = json!({"channel": "!somewhere:localhost", "message": "x".repeat(1024 * 1024)});

    // Act
    let (status, answer) = bridge
        .post_webhook(ERRBOT, Some(SECRET), WebhookBody::Json(huge))
        .await?;

    // Assert
    assert_eq!(status, 413, "too large: {answer}");
    Ok(())
}

/// With the secret and a valid body naming a room the bot is not in, the webhook answers 404
/// and says why.
pub async fn webhook_for_a_room_the_bot_is_not_in_is_answered_404(ctx: Ctx) -> anyhow::Result<()> {
    // Arrange
    let mut bridge = bridge_with_webhooks(&ctx);
    bridge.start().await?;
    let alice = ctx.user("alice").await?;
    let room = alice.create_room().await?;

    // Act
    let (status, answer) = bridge
        .post_webhook(
            ERRBOT,
            Some(SECRET),
            WebhookBody::Json(json!({"channel": room, "message": "anyone there?"})),
        )
        .await?;

    // Assert
    assert_eq!(status, 404, "the bot is not in that room: {answer}");
    assert!(
        answer["error"]
            .as_str()
            .is_some_and(|e| e.contains("not in the room")),
        "the error says the bot is not in the room: {answer}"
    );
    Ok(())
}

/// A bridge without `[webhook] secret` does not serve the webhooks: both paths are 404, even
/// to a request that brings a secret and a valid body.
pub async fn bridge_without_a_webhook_secret_answers_404_on_the_webhook_paths(
    ctx: Ctx,
) -> anyhow::Result<()> {
    // Arrange
    let mut bridge = ctx.bridge();
    bridge.start().await?;
    let valid = json!({"channel": "!somewhere:localhost", "message": "hello?"});

    // Act
    let mut answers = Vec::new();
    for path in [ERRBOT, HUBOT] {
        let (status, answer) = bridge
            .post_webhook(path, Some(SECRET), WebhookBody::Json(valid.clone()))
            .await?;
        answers.push((path, status, answer));
    }

    // Assert
    for (path, status, answer) in answers {
        assert_eq!(status, 404, "{path} is not served: {answer}");
    }
    Ok(())
}
