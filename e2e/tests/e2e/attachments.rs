//! Long results: a result over `[results] attach_over` arrives as a short summary and the
//! whole output as a file (`m.file`) in the command's thread, which people download as Element
//! does; in an encrypted room the file is encrypted and its key travels in the encrypted
//! message.

use matrix_sdk::ruma::UserId;
use serde_json::{Value as Json, json};
use st2_matrix_testkit::st2::{St2Double, St2Options};

use crate::harness::Ctx;
use crate::harness::conversation::Conversation;
use crate::harness::events::{body, sender, thread_root};
use crate::harness::stackstorm::{self, St2Auth};
use crate::harness::user::User;
use crate::harness::wait::PROMPTLY;
use crate::results::{Deploy, deploy_alias, deploy_web, is_result_of, shell_result};

/// About 40 KiB of output: over the default 16 KiB, so it is attached.
fn long_output() -> String {
    (0..1200)
        .map(|i| format!("step {i:04}: copied web assets to the frontend\n"))
        .collect()
}

/// `ops.deploy` whose result is the command's stdout, unchanged.
fn stdout_alias() -> Json {
    let mut deploy = deploy_alias();
    deploy["result"] = json!({ "format": "{{ execution.result.stdout }}" });
    deploy
}

/// Whether `event` is a file the bot posted in the thread of `deploy`'s command.
fn is_file_of(event: &Json, bot: &UserId, deploy: &Deploy) -> bool {
    event["type"] == "m.room.message"
        && event["content"]["msgtype"] == "m.file"
        && sender(event) == bot.as_str()
        && thread_root(event) == Some(deploy.command.as_str())
}

/// StackStorm finishes `deploy` with `output`; returns the bot's summary and its file.
async fn finish_with(
    st2: &St2Double,
    alice: &User,
    room: &matrix_sdk::ruma::RoomId,
    bot: &UserId,
    deploy: &Deploy,
    output: &str,
) -> (Json, Json) {
    let finished = st2.finish_execution(&deploy.execution.id, "succeeded", shell_result(output));
    assert!(
        finished.delivered_to >= 1,
        "the result was announced to the bridge's stream"
    );
    let summary = alice
        .wait_for_event(
            room,
            "the summary of the result",
            |ev| is_result_of(ev, bot, &deploy.command, &deploy.ack),
            PROMPTLY,
        )
        .await;
    let file = alice
        .wait_for_event(
            room,
            "the result's file",
            |ev| is_file_of(ev, bot, deploy),
            PROMPTLY,
        )
        .await;
    (summary, file)
}

/// Checks what every long result looks like: the summary names the file, the file message
/// names itself and its type.
fn assert_summary_and_file(summary: &Json, file: &Json, deploy: &Deploy) {
    let name = format!("execution-{}.txt", deploy.execution.id);
    assert!(
        body(summary).contains("step 0000: copied")
            && body(summary).contains(&format!("full output attached: `{name}`")),
        "the summary shows the first lines and names the file: {summary}"
    );
    assert!(body(summary).len() < 2048, "a short summary: {summary}");
    assert_eq!(
        thread_root(summary),
        Some(deploy.command.as_str()),
        "{summary}"
    );
    assert_eq!(file["content"]["body"], name.as_str(), "{file}");
    assert_eq!(
        file["content"]["info"]["mimetype"], "text/plain; charset=utf-8",
        "{file}"
    );
}

/// A deploy whose output is about 40 KiB: its result arrives in the command's thread as a
/// summary and a text file, and the file alice downloads is the whole output.
pub async fn long_result_arrives_as_a_summary_and_a_file_holding_the_whole_output(
    ctx: Ctx,
) -> anyhow::Result<()> {
    // Arrange
    let st2 = stackstorm::double(St2Options::default(), vec![stdout_alias()]).await;
    let mut bridge = ctx.bridge();
    bridge.configure_stackstorm(&st2, St2Auth::ApiKey);
    let Conversation { bot, alice, room } = Conversation::start(&ctx, &mut bridge).await?;
    bridge.wait_for_aliases(1).await;
    bridge.wait_for_stream().await;
    let deploy = deploy_web(&st2, &alice, &room, &bot).await?;
    let output = long_output();

    // Act
    let (summary, file) = finish_with(&st2, &alice, &room, &bot, &deploy, &output).await;

    // Assert
    assert_summary_and_file(&summary, &file, &deploy);
    assert!(
        file["content"]["url"]
            .as_str()
            .is_some_and(|u| u.starts_with("mxc://")),
        "a plain room gets a plain file: {file}"
    );
    let downloaded = String::from_utf8(alice.download_file(&file).await?)?;
    assert_eq!(downloaded.trim_end(), output.trim_end(), "the whole output");
    Ok(())
}

/// The same in an encrypted room: both messages arrive encrypted, the file message carries the
/// key (`file`, no `url`), and the file alice downloads and decrypts is the whole output.
pub async fn long_result_in_an_encrypted_room_arrives_as_an_encrypted_file(
    ctx: Ctx,
) -> anyhow::Result<()> {
    // Arrange
    let st2 = stackstorm::double(St2Options::default(), vec![stdout_alias()]).await;
    let mut bridge = ctx.bridge();
    bridge.configure_stackstorm(&st2, St2Auth::ApiKey);
    let Conversation { bot, alice, room } =
        Conversation::start_encrypted(&ctx, &mut bridge).await?;
    bridge.wait_for_aliases(1).await;
    bridge.wait_for_stream().await;
    let deploy = deploy_web(&st2, &alice, &room, &bot).await?;
    let output = long_output();

    // Act
    let (summary, file) = finish_with(&st2, &alice, &room, &bot, &deploy, &output).await;

    // Assert
    assert!(alice.encryption_of(&room, &summary).is_some(), "{summary}");
    assert!(alice.encryption_of(&room, &file).is_some(), "{file}");
    assert_summary_and_file(&summary, &file, &deploy);
    assert!(file["content"].get("url").is_none(), "{file}");
    assert_eq!(file["content"]["file"]["v"], "v2", "{file}");
    let downloaded = String::from_utf8(alice.download_file(&file).await?)?;
    assert_eq!(downloaded.trim_end(), output.trim_end(), "the whole output");
    Ok(())
}
