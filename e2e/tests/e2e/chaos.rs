//! Failures combined: 300 commands typed through Synapse while the bridge is killed (-9) three
//! times, StackStorm's stream is cut for 5 s and Synapse itself restarts, each at a random
//! moment (fixed seed). Nothing may run twice, no result may be lost or posted twice, and no
//! one may be told a command "may or may not have run" while StackStorm can be asked.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use matrix_sdk::ruma::{
    OwnedEventId, OwnedTransactionId, RoomId, events::room::message::RoomMessageEventContent,
};
use rand::{Rng as _, SeedableRng as _, rngs::StdRng};
use st2_matrix_testkit::st2::{St2Double, St2Options};
use tokio::sync::RwLock;
use tokio::time::{Instant, sleep, sleep_until};

use crate::harness::Ctx;
use crate::harness::events::{body, in_reply_to, is_notice_from, thread_root};
use crate::harness::stackstorm::{self, St2Auth, alias};
use crate::harness::user::User;
use crate::harness::wait::{PROMPTLY, SETTLE, poll_until, wait_until};
use crate::results::shell_result;

/// The seed of the moments the failures strike; change it to explore, keep it for CI.
const SEED: u64 = 0x5732_6d61_7472_6978;
/// Commands typed.
const COMMANDS: usize = 300;
/// Between two commands.
const TYPING: Duration = Duration::from_millis(90);
/// How long the stream is cut.
const STREAM_CUT: Duration = Duration::from_secs(5);
/// Every command answered within this after the last one is typed.
const DRAIN: Duration = Duration::from_secs(150);

/// The failures, in the order they strike.
#[derive(Debug, Clone, Copy)]
enum Failure {
    KillBridge,
    CutStream,
    RestartSynapse,
}

/// 300 commands, three `kill -9`, a 5 s stream cut and a Synapse restart at random moments:
/// every command that ran has exactly one result in its thread, no command ran twice, every
/// command that did not run was answered so, and no answer says "may or may not". After the
/// typing, the bridge is restarted once more so that Synapse sends any transaction it
/// stranded (see [`flush_stuck_appservice_transactions`]).
pub async fn three_hundred_commands_through_kills_a_stream_cut_and_a_synapse_restart_exactly_once(
    ctx: Ctx,
) -> anyhow::Result<()> {
    // Arrange
    let mut synapse = ctx.private_synapse(1).await?;
    let st2 = Arc::new(
        stackstorm::double(
            St2Options::default(),
            vec![alias("ops", "echo", "echo {{text}}", "Say something.")],
        )
        .await,
    );
    // Requests take a moment, as a real StackStorm's do: a kill can land while one is in flight.
    st2.set_latency(Duration::from_millis(30));
    let mut bridge = synapse.bridge();
    bridge.configure_stackstorm(&st2, St2Auth::ApiKey);
    bridge.set_config("outbox", "max_backoff", "2s");
    bridge.start().await?;
    let bot = bridge.bot_user_id();
    let alice = Arc::new(synapse.user("alice").await?);
    let room = alice.create_room_with(&bot).await?;
    bridge.wait_for_aliases(1).await;
    bridge.wait_for_stream().await;

    let mut rng = StdRng::seed_from_u64(SEED);
    let typing_time = TYPING * COMMANDS as u32;
    let mut plan: Vec<(Duration, Failure)> = [
        Failure::KillBridge,
        Failure::KillBridge,
        Failure::KillBridge,
        Failure::CutStream,
        Failure::RestartSynapse,
    ]
    .into_iter()
    .map(|failure| {
        let at = rng.random_range(2_000..typing_time.as_millis() as u64 - 2_000);
        (Duration::from_millis(at), failure)
    })
    .collect();
    plan.sort_by_key(|(at, _)| *at);
    println!("chaos: seed {SEED:#x}, plan {plan:?}");

    // Act
    let finisher = tokio::spawn(finish_executions(st2.clone()));
    let typed = Arc::new(Mutex::new(Vec::new()));
    let gate = Arc::new(RwLock::new(()));
    let typist = {
        let (alice, room) = (alice.clone(), room.clone());
        let (typed, gate) = (typed.clone(), gate.clone());
        tokio::spawn(async move { type_commands(&alice, &room, &typed, &gate).await })
    };
    let start = Instant::now();
    for (at, failure) in &plan {
        sleep_until(start + *at).await;
        match failure {
            Failure::KillBridge => {
                bridge.kill()?;
                bridge.start().await?;
            }
            Failure::CutStream => st2.stream_down_for(STREAM_CUT),
            Failure::RestartSynapse => {
                // Synapse hands events to an appservice from a queue in memory: an event stored
                // as it shuts down never reaches the bridge (Synapse 1.163). Typing pauses and
                // the restart waits until the bridge has the last command typed, so what is
                // tested is the bridge, not that loss.
                let _paused = gate.write().await;
                let last = typed
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .last()
                    .cloned();
                if let Some(last) = last {
                    wait_until(
                        "the bridge to act on the last command typed",
                        PROMPTLY,
                        || async {
                            let ran = st2
                                .executions()
                                .iter()
                                .any(|e| e.request["source_context"]["event_id"] == last.as_str());
                            let answered = !alice
                                .events_matching(&room, |ev| {
                                    thread_root(ev).or_else(|| in_reply_to(ev))
                                        == Some(last.as_str())
                                })
                                .is_empty();
                            (ran || answered).then_some(())
                        },
                    )
                    .await;
                }
                synapse.stop().await?;
                synapse.start_again().await?;
            }
        }
        println!(
            "chaos: {failure:?} at {:?} done after {:?}",
            at,
            start.elapsed()
        );
    }
    let commands = typist.await??;
    flush_stuck_appservice_transactions(&mut bridge, &alice, &room).await?;

    // Assert
    let texts: HashMap<OwnedEventId, String> = commands.into_iter().collect();
    let outcome = |alice: &User| Outcome::of(alice, &room, &bot, &texts, &st2);
    let drained = poll_until(DRAIN, || async {
        outcome(&alice).unresolved().is_empty().then_some(())
    })
    .await;
    if drained.is_none() {
        let seen = outcome(&alice);
        let unresolved: Vec<String> = seen
            .unresolved()
            .into_iter()
            .take(20)
            .map(|c| {
                let ran = seen.executed.iter().any(|e| e == c.as_str());
                let replies: Vec<String> = alice
                    .events_matching(&room, |ev| {
                        thread_root(ev).or_else(|| in_reply_to(ev)) == Some(c.as_str())
                    })
                    .iter()
                    .map(|ev| body(ev).chars().take(80).collect())
                    .collect();
                // What the bridge said about it: did it ever get the event?
                let log = bridge.log();
                let bridge_lines: Vec<&str> = log
                    .lines()
                    .filter(|l| l.contains(c.as_str()))
                    .take(8)
                    .collect();
                format!(
                    "{} {c} ran={ran} replies={replies:?}\n  bridge log: {bridge_lines:#?}",
                    texts[c]
                )
            })
            .collect();
        panic!(
            "after {DRAIN:?}: {} with results, {} did not run, {} may or may not, {} unresolved; first:\n{}",
            seen.results.len(),
            seen.not_run.len(),
            seen.may_or_may_not.len(),
            seen.unresolved().len(),
            unresolved.join("\n")
        );
    }
    sleep(SETTLE).await;
    finisher.abort();
    let seen = outcome(&alice);
    println!(
        "chaos: {} ran, {} did not run, {} executions at StackStorm",
        seen.results.len(),
        seen.not_run.len(),
        st2.executions().len()
    );
    assert!(
        seen.may_or_may_not.is_empty(),
        "told 'may or may not': {:?}",
        seen.may_or_may_not
    );
    assert!(seen.ran_twice.is_empty(), "ran twice: {:?}", seen.ran_twice);
    let duplicated: Vec<_> = seen.results.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        duplicated.is_empty(),
        "results posted more than once: {duplicated:?}"
    );
    assert!(
        seen.unresolved().is_empty(),
        "unanswered: {:?}",
        seen.unresolved()
    );
    let ran: HashSet<&str> = seen.executed.iter().map(String::as_str).collect();
    let with_result: HashSet<&str> = seen.results.keys().map(|e| e.as_str()).collect();
    assert_eq!(
        ran, with_result,
        "every command that ran has its result, and only those"
    );
    Ok(())
}

/// Makes Synapse send the appservice transactions it may have left unsent, then returns.
///
/// Synapse 1.163 can strand a transaction: one created while the appservice is marked down
/// but after its recoverer has sent the last stored one is sent by neither (`scheduler.py`:
/// `send` stores it without sending when the service is down; the recoverer then marks the
/// service up). Its events reach the bridge only when a later transaction fails and a new
/// recoverer starts, which sends the oldest stored one first. So the bridge is killed, alice
/// says something (that transaction fails), and the bridge starts again: the recoverer then
/// delivers everything stored, in order. In production the next restart or outage of the
/// bridge does the same.
async fn flush_stuck_appservice_transactions(
    bridge: &mut crate::harness::bridge::Bridge,
    alice: &User,
    room: &RoomId,
) -> anyhow::Result<()> {
    let bot = bridge.bot_user_id();
    // Killed, not stopped: a graceful stop with hundreds of messages still queued has been
    // seen to take longer than the harness's 15 s (noted as an open problem).
    bridge.kill()?;
    let ping = alice.send_text(room, "!st2 ping").await?;
    // Long enough for Synapse to try the transaction and mark the bridge down.
    sleep(Duration::from_secs(1)).await;
    bridge.start().await?;
    alice
        .wait_for_event(
            room,
            "the answer to the ping sent while the bridge was stopped",
            |ev| {
                is_notice_from(ev, &bot)
                    && thread_root(ev).or_else(|| in_reply_to(ev)) == Some(ping.as_str())
            },
            // Behind the room's backlog: the commands and their answers queued before it.
            DRAIN,
        )
        .await;
    Ok(())
}

/// Types the commands, one every [`TYPING`], retrying each (same transaction id, so Synapse
/// stores it once) while Synapse is down, and noting each in `typed`; a send holds `gate` for
/// reading. Returns each command's event id and text.
async fn type_commands(
    alice: &User,
    room: &RoomId,
    typed: &Mutex<Vec<OwnedEventId>>,
    gate: &RwLock<()>,
) -> anyhow::Result<Vec<(OwnedEventId, String)>> {
    let mut sent = Vec::with_capacity(COMMANDS);
    let next = Instant::now();
    for i in 0..COMMANDS {
        sleep_until(next + TYPING * i as u32).await;
        let _typing = gate.read().await;
        let text = format!("c{i:03}");
        let txn = OwnedTransactionId::from(format!("chaos-{i}"));
        let give_up = Instant::now() + Duration::from_secs(60);
        let event_id = loop {
            let attempt = alice
                .room(room)?
                .send(RoomMessageEventContent::text_plain(format!(
                    "!st2 echo {text}"
                )))
                .with_transaction_id(txn.clone())
                .await;
            match attempt {
                Ok(response) => break response.response.event_id,
                Err(e) if Instant::now() < give_up => {
                    let _ = e;
                    sleep(Duration::from_millis(500)).await;
                }
                Err(e) => anyhow::bail!("typing {text}: {e}"),
            }
        };
        typed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(event_id.clone());
        sent.push((event_id, text));
    }
    Ok(sent)
}

/// Finishes every execution StackStorm started, a moment after it started, with an output
/// naming its command; runs until aborted.
async fn finish_executions(st2: Arc<St2Double>) {
    loop {
        let running: Vec<(String, String)> = st2
            .executions()
            .into_iter()
            .filter(|e| {
                matches!(
                    e.execution["status"].as_str(),
                    Some("requested" | "scheduled" | "running")
                )
            })
            .map(|e| (e.id, e.request["command"].as_str().unwrap_or("").to_owned()))
            .collect();
        for (id, command) in running {
            let text = command.trim_start_matches("echo ").to_owned();
            st2.finish_execution(&id, "succeeded", shell_result(&format!("out-{text}")));
        }
        sleep(Duration::from_millis(150)).await;
    }
}

/// What the room and StackStorm show of the commands.
#[derive(Debug, Default)]
struct Outcome {
    /// Commands with a result in their thread, and how many results.
    results: HashMap<OwnedEventId, usize>,
    /// Commands answered that they did not run.
    not_run: HashSet<OwnedEventId>,
    /// Commands answered "may or may not have run".
    may_or_may_not: Vec<OwnedEventId>,
    /// Commands StackStorm ran (by the command's event id).
    executed: Vec<String>,
    /// Commands StackStorm ran more than once.
    ran_twice: Vec<String>,
    /// Every command typed.
    commands: Vec<OwnedEventId>,
}

impl Outcome {
    fn of(
        alice: &User,
        room: &RoomId,
        bot: &matrix_sdk::ruma::UserId,
        texts: &HashMap<OwnedEventId, String>,
        st2: &St2Double,
    ) -> Outcome {
        let mut outcome = Outcome {
            commands: texts.keys().cloned().collect(),
            ..Outcome::default()
        };
        for event in alice.events_matching(room, |ev| is_notice_from(ev, bot)) {
            // Results and acks go into the command's thread; other answers reply to it.
            let Some(root) = thread_root(&event)
                .or_else(|| in_reply_to(&event))
                .and_then(|r| OwnedEventId::try_from(r).ok())
            else {
                continue;
            };
            let Some(text) = texts.get(&root) else {
                continue;
            };
            let said = body(&event);
            if said.contains(&format!("out-{text}")) {
                *outcome.results.entry(root).or_default() += 1;
            } else if said.contains("may or may not") {
                outcome.may_or_may_not.push(root);
            } else if said.contains("did not run") {
                outcome.not_run.insert(root);
            }
        }
        let mut runs: HashMap<String, usize> = HashMap::new();
        for execution in st2.executions() {
            if let Some(event) = execution.request["source_context"]["event_id"].as_str() {
                *runs.entry(event.to_owned()).or_default() += 1;
            }
        }
        outcome.ran_twice = runs
            .iter()
            .filter(|(_, n)| **n > 1)
            .map(|(e, _)| e.clone())
            .collect();
        outcome.executed = runs.into_keys().collect();
        outcome
    }

    /// Commands with neither a result nor a "did not run" answer (nor a "may or may not").
    fn unresolved(&self) -> Vec<&OwnedEventId> {
        self.commands
            .iter()
            .filter(|c| {
                !self.results.contains_key(*c)
                    && !self.not_run.contains(*c)
                    && !self.may_or_may_not.contains(c)
            })
            .collect()
    }
}
