//! THE outbound path: every message the bridge says is queued here, in the database, before
//! anything is sent.
//!
//! - The send transaction id is chosen at enqueue and kept across retries and restarts
//!   (Synapse scopes these ids per appservice, not per user, so they are random 128-bit
//!   values, never counters).
//! - One sender drains the queue: oldest first per room, rooms in parallel. A room whose oldest
//!   message is waiting to be retried holds its later messages back, so order is never broken.
//!   This is also how a backlogged room is paced: its messages go one at a time, each after the
//!   homeserver answered the one before, so a room with hundreds queued never has more than one
//!   request waiting in the homeserver (which persists a room's events one after another) and a
//!   deep backlog does not turn into timeouts. At most 32 rooms (`ROOM_CONCURRENCY`) are sent to
//!   at once.
//! - Transient failures (429, 5xx, a homeserver that cannot be reached) are retried with capped
//!   exponential backoff and jitter, or after exactly the `Retry-After` the homeserver asked
//!   for. Permanent failures, and messages still undelivered after `give_up_after`, are marked
//!   failed and logged: never dropped silently.
//! - **Sends in doubt are looked up, not blindly repeated.** A send may reach the homeserver
//!   without its answer reaching us: a timeout, a connection broken while waiting, a gateway's
//!   502/504, or the bridge dying mid-request. Re-sending with the same transaction id is only
//!   safe while the homeserver remembers the id, and Synapse keeps an appservice's ids in
//!   memory only: after a homeserver restart (or long enough) a re-send is a second message.
//!   So a room's messages are marked `in_doubt` (committed) before the sender works through
//!   them; a success records the event id, a clear failure (or not getting to a message)
//!   clears the mark, and an answer that never came keeps it, as does a crash. Before sending
//!   a room's messages in doubt, the sender reads the bot's recent events in that room
//!   (`/messages`, newest first, back to the last event it knows it sent there, at most five
//!   pages of 100, `LOOKUP_PAGES`) and looks for their transaction ids in
//!   `unsigned.transaction_id`, which the homeserver gives back to the appservice that sent the
//!   event (Synapse does, for encrypted events too, from the event's stored metadata, so it
//!   survives its restarts). A
//!   message found is recorded as sent with that event id; one not found was never stored and
//!   is sent. One look-up serves every message in doubt in the room. If the homeserver cannot
//!   be asked, the room waits and asks again; if it does not give transaction ids back, the
//!   message is sent again, the old at-least-once behaviour.
//! - Messages for end-to-end encrypted rooms are encrypted at send time by a [`RoomEncryptor`]
//!   (rows stay plaintext content with their event type): a retry encrypts again under the
//!   same transaction id, which the homeserver deduplicates like any re-send. A message for an
//!   encrypted room that cannot be encrypted is retried or failed, never sent in the clear.
//! - An event may relate to another queued one (a reaction to the bot's question, an edit of
//!   it, a poll's end): it names the target by send transaction id, and its
//!   `m.relates_to.event_id` is filled in when it is sent. Same room, queued after it, so the
//!   room's order guarantees the target went first; a target that failed fails it too.
//! - A message may carry a file ([`FileMessage`]): its bytes are queued with it (in the same
//!   commit) and uploaded by the sender right before the message is sent, so the upload is
//!   retried exactly like a send and a result is never lost between an upload and a queue. The
//!   upload is recorded with the message (its content then refers to the file) in one commit;
//!   a crash between the upload and that commit uploads again (the first copy is orphaned in
//!   the media repository, which is harmless), and a retry of the send reuses the upload. The
//!   room's encryption is decided at upload time like a message's: an encrypted room gets an
//!   encrypted file; a plain upload is redone encrypted if the room turned encrypted since.
//!   Uploading before queueing would hold a result in memory across homeserver outages and
//!   lose it on a crash; uploading at send time keeps "queued first" true for files too.

use std::{
    collections::HashMap,
    fmt::Write as _,
    sync::Arc,
    time::{Duration, Instant},
};

use futures_util::{StreamExt as _, future::BoxFuture};
use rand::RngCore as _;
use ruma::{
    OwnedRoomId, RoomId,
    events::{
        AnyMessageLikeEventContent,
        room::{MediaSource, message::RoomMessageEventContent},
    },
    serde::Raw,
};
use sqlx::SqliteConnection;
use tokio::sync::{Notify, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::{
    MatrixClient,
    file::{self, FileMessage},
};
use crate::store::{self, Store, now_ms, outbox::Row};

/// Messages fetched per pass; rooms beyond this wait for the next pass.
const BATCH: i64 = 512;
/// Rooms sent to concurrently.
const ROOM_CONCURRENCY: usize = 32;
/// First retry delay; doubled per attempt up to `max_backoff`.
const BASE_BACKOFF: Duration = Duration::from_millis(500);

/// A fresh, globally unique send transaction id.
pub fn new_txn_id() -> String {
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    bytes.iter().fold(String::from("st2m"), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// Handle for queueing messages. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Outbox {
    store: Store,
    wake: Arc<Notify>,
    /// To the task that queues results in shared commits ([`Outbox::queue_result`]).
    results: mpsc::Sender<ResultJob>,
}

/// What guards a result's messages: asked inside the commit that would queue them, it says
/// whether to queue them at all. A result reported twice (stream, webhook, recovery) is thus
/// posted once. The outbox does not know what a claim is: [`crate::results`] owns that.
pub trait ResultGuard: Send + Sync + std::fmt::Debug + 'static {
    /// Takes the claim in `conn`'s transaction; `true` when the messages are to be queued.
    fn claim<'c>(
        &'c self,
        conn: &'c mut SqliteConnection,
    ) -> BoxFuture<'c, Result<bool, sqlx::Error>>;
}

/// One message of a result, serialised: alone, or with the file it carries.
#[derive(Debug)]
enum Queued {
    Message(String),
    File {
        content: String,
        data: Vec<u8>,
        mimetype: String,
    },
}

/// A result waiting for the writer: its messages (serialised), and who waits for the outcome.
#[derive(Debug)]
struct ResultJob {
    room: OwnedRoomId,
    contents: Vec<Queued>,
    guard: Box<dyn ResultGuard>,
    done: oneshot::Sender<Result<bool, sqlx::Error>>,
}

/// Results queued in one commit at most; more wait for the next.
const RESULTS_PER_COMMIT: usize = 256;

impl Outbox {
    /// An outbox over `store`. Starts the task that queues results, which ends when the last
    /// handle is dropped; so it must be called inside a tokio runtime.
    pub fn new(store: Store) -> Self {
        let wake = Arc::new(Notify::new());
        let (results, jobs) = mpsc::channel(RESULTS_PER_COMMIT * 4);
        tokio::spawn(write_results(store.clone(), jobs, Arc::clone(&wake)));
        Self {
            store,
            wake,
            results,
        }
    }

    /// Queues a result's `contents` for `room` if its `guard` lets it (in the same commit);
    /// returns whether it queued them.
    ///
    /// Results that arrive together share one database commit (group commit): under a burst of
    /// webhook pushes, each waits for one short batch instead of taking the write lock in turn.
    pub async fn queue_result(
        &self,
        room: &RoomId,
        contents: &[RoomMessageEventContent],
        guard: Box<dyn ResultGuard>,
    ) -> Result<bool, sqlx::Error> {
        self.queue_result_with_file(room, contents, None, guard)
            .await
    }

    /// [`Outbox::queue_result`] for a result whose `contents` are followed by `file` (a long
    /// result: its summary, then the whole text as a file).
    pub async fn queue_result_with_file(
        &self,
        room: &RoomId,
        contents: &[RoomMessageEventContent],
        file: Option<FileMessage>,
        guard: Box<dyn ResultGuard>,
    ) -> Result<bool, sqlx::Error> {
        let encode = |e: serde_json::Error| sqlx::Error::Encode(Box::new(e));
        let mut contents = contents
            .iter()
            .map(|c| {
                serde_json::to_string(c)
                    .map(Queued::Message)
                    .map_err(encode)
            })
            .collect::<Result<Vec<_>, _>>()?;
        if let Some(file) = file {
            contents.push(Queued::File {
                content: file::queued_content(&file.content).map_err(encode)?,
                data: file.data,
                mimetype: file.mimetype,
            });
        }
        let (done, outcome) = oneshot::channel();
        let job = ResultJob {
            room: room.to_owned(),
            contents,
            guard,
            done,
        };
        let gone = || sqlx::Error::WorkerCrashed;
        self.results.send(job).await.map_err(|_| gone())?;
        outcome.await.map_err(|_| gone())?
    }

    /// Queues `content` for `room` and wakes the sender. Returns the queue sequence number.
    pub async fn send(
        &self,
        room: &RoomId,
        content: &RoomMessageEventContent,
    ) -> Result<i64, sqlx::Error> {
        let mut conn = self.store.begin().await?;
        let seq = self.queue_in(&mut conn, room, content).await?;
        conn.commit().await?;
        self.wake();
        Ok(seq)
    }

    /// Queues `content` inside the caller's transaction, so it commits together with other
    /// state (e.g. "this command is done"). Call [`Outbox::wake`] after the commit.
    pub async fn queue_in(
        &self,
        conn: &mut SqliteConnection,
        room: &RoomId,
        content: &RoomMessageEventContent,
    ) -> Result<i64, sqlx::Error> {
        let json = serde_json::to_string(content).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
        enqueue_json(conn, room, &json).await
    }

    /// Queues an edit (`m.replace`) of a message the bridge queued earlier in `room`, inside the
    /// caller's transaction: it will say `new`. The edited message is named by its event id
    /// when known (the outbox forgets sent rows after a while, while a message may be edited
    /// later than that), else by its send transaction id, filled in at send time.
    pub async fn queue_edit_in(
        &self,
        conn: &mut SqliteConnection,
        room: &RoomId,
        new: &RoomMessageEventContent,
        event_id: Option<&str>,
        txn_id: &str,
    ) -> Result<String, sqlx::Error> {
        let new = serde_json::to_value(new).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
        let mut edit = new.clone();
        // The fallback for clients without edits, marked as the spec suggests.
        for key in ["body", "formatted_body"] {
            if let Some(text) = new.get(key).and_then(serde_json::Value::as_str) {
                edit[key] = format!("* {text}").into();
            }
        }
        edit["m.new_content"] = new;
        edit["m.relates_to"] =
            serde_json::json!({"rel_type": "m.replace", "event_id": event_id.unwrap_or_default()});
        let relates_to_txn = event_id.is_none().then_some(txn_id);
        self.queue_event_in(conn, room, "m.room.message", &edit, relates_to_txn)
            .await
    }

    /// Queues an event of any message-like `event_type` inside the caller's transaction and
    /// returns its send transaction id. With `relates_to_txn` (an event queued earlier for the
    /// same room), `content`'s `m.relates_to.event_id` is set to that event's id at send time.
    pub async fn queue_event_in(
        &self,
        conn: &mut SqliteConnection,
        room: &RoomId,
        event_type: &str,
        content: &serde_json::Value,
        relates_to_txn: Option<&str>,
    ) -> Result<String, sqlx::Error> {
        let json = serde_json::to_string(content).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
        let txn_id = new_txn_id();
        let msg = store::outbox::NewMessage {
            room_id: room.as_str(),
            txn_id: &txn_id,
            event_type,
            content: &json,
            relates_to_txn,
        };
        store::outbox::enqueue(conn, &msg).await?;
        Ok(txn_id)
    }

    /// Queues a file message for `room` inside the caller's transaction: the message and the
    /// file's bytes, uploaded when the message is sent. Returns its send transaction id. Call
    /// [`Outbox::wake`] after the commit.
    pub async fn queue_file_in(
        &self,
        conn: &mut SqliteConnection,
        room: &RoomId,
        file: &FileMessage,
    ) -> Result<String, sqlx::Error> {
        let content =
            file::queued_content(&file.content).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
        enqueue_file(conn, room, &content, &file.data, &file.mimetype).await
    }

    /// Queues a file message for `room` on its own and wakes the sender. Returns its send
    /// transaction id.
    pub async fn queue_file(
        &self,
        room: &RoomId,
        file: &FileMessage,
    ) -> Result<String, sqlx::Error> {
        let mut conn = self.store.begin().await?;
        let txn_id = self.queue_file_in(&mut conn, room, file).await?;
        conn.commit().await?;
        self.wake();
        Ok(txn_id)
    }

    /// Tells the sender there is something new to send.
    pub fn wake(&self) {
        self.wake.notify_one();
    }
}

/// Queues one serialised `m.room.message` for `room`, with a fresh transaction id.
async fn enqueue_json(
    conn: &mut SqliteConnection,
    room: &RoomId,
    json: &str,
) -> Result<i64, sqlx::Error> {
    let txn_id = new_txn_id();
    let msg = store::outbox::NewMessage {
        room_id: room.as_str(),
        txn_id: &txn_id,
        event_type: "m.room.message",
        content: json,
        relates_to_txn: None,
    };
    store::outbox::enqueue(conn, &msg).await
}

/// Queues one serialised `m.room.message` carrying a file, and the file's bytes.
async fn enqueue_file(
    conn: &mut SqliteConnection,
    room: &RoomId,
    content: &str,
    data: &[u8],
    mimetype: &str,
) -> Result<String, sqlx::Error> {
    let txn_id = new_txn_id();
    let msg = store::outbox::NewMessage {
        room_id: room.as_str(),
        txn_id: &txn_id,
        event_type: "m.room.message",
        content,
        relates_to_txn: None,
    };
    store::outbox::enqueue(conn, &msg).await?;
    store::outbox::attach(conn, &txn_id, data, mimetype).await?;
    Ok(txn_id)
}

/// The results writer: takes every result waiting (up to [`RESULTS_PER_COMMIT`]), claims and
/// queues them in one transaction, answers each, wakes the sender, and goes on.
async fn write_results(store: Store, mut jobs: mpsc::Receiver<ResultJob>, wake: Arc<Notify>) {
    let mut batch = Vec::with_capacity(RESULTS_PER_COMMIT);
    while jobs.recv_many(&mut batch, RESULTS_PER_COMMIT).await > 0 {
        match write_batch(&store, &batch).await {
            Ok(queued) => {
                wake.notify_one();
                for (job, queued) in batch.drain(..).zip(queued) {
                    let _ = job.done.send(Ok(queued));
                }
            }
            Err(e) => {
                // One commit for all: they all failed. Each waiter gets the reason.
                let why = e.to_string();
                for job in batch.drain(..) {
                    let _ = job.done.send(Err(sqlx::Error::Protocol(why.clone())));
                }
            }
        }
    }
}

/// Claims and queues `batch` in one transaction; whether each was queued.
async fn write_batch(store: &Store, batch: &[ResultJob]) -> Result<Vec<bool>, sqlx::Error> {
    let mut tx = store.begin().await?;
    let mut queued = Vec::with_capacity(batch.len());
    for job in batch {
        let claimed = job.guard.claim(&mut tx).await?;
        if claimed {
            for queued in &job.contents {
                match queued {
                    Queued::Message(json) => {
                        enqueue_json(&mut tx, &job.room, json).await?;
                    }
                    Queued::File {
                        content,
                        data,
                        mimetype,
                    } => {
                        enqueue_file(&mut tx, &job.room, content, data, mimetype).await?;
                    }
                }
            }
        }
        queued.push(claimed);
    }
    tx.commit().await?;
    Ok(queued)
}

/// Encrypts a message for its room just before it is sent. Implemented by the bot's device
/// ([`crate::e2ee`]); the outbox only knows it may get an encrypted content back.
pub trait RoomEncryptor: Send + Sync {
    /// `Some(content of an m.room.encrypted)` when `room` is encrypted, `None` when it is not.
    /// A transient error ([`super::Error::is_transient`]) is retried like a failed send.
    fn encrypt<'a>(
        &'a self,
        room: &'a RoomId,
        event_type: &'a str,
        content: &'a Raw<AnyMessageLikeEventContent>,
    ) -> BoxFuture<'a, Result<Option<Raw<AnyMessageLikeEventContent>>, super::Error>>;

    /// Whether `room` is encrypted, decided as [`RoomEncryptor::encrypt`] decides it: a file
    /// for that room is encrypted before it is uploaded.
    fn is_encrypted<'a>(&'a self, room: &'a RoomId) -> BoxFuture<'a, Result<bool, super::Error>>;
}

/// Retry policy of the sender.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// Undelivered for longer than this: give up.
    pub give_up_after: Duration,
    /// Longest wait between attempts.
    pub max_backoff: Duration,
    /// On shutdown, keep sending for this long.
    pub shutdown_drain: Duration,
}

/// What looking up a room's messages in doubt found.
#[derive(Debug)]
enum Lookup {
    /// The send transaction ids found among the bot's events, with their event ids.
    Found(HashMap<String, String>),
    /// The homeserver could not be asked: try again after this long.
    Retry(Duration, String),
}

/// Pages of the bot's events read at most when looking for messages in doubt.
const LOOKUP_PAGES: usize = 5;
/// Events per page of that look-up.
const LOOKUP_PAGE_SIZE: u32 = 100;

/// What one delivery attempt did.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Attempt {
    /// Delivered; the homeserver's event id.
    Sent(String),
    /// Will be retried; the room's later messages must wait.
    Retry,
    Failed,
}

/// Drains the outbox into the homeserver.
#[derive(Clone)]
pub struct Sender {
    outbox: Outbox,
    client: MatrixClient,
    policy: Policy,
    encryptor: Option<Arc<dyn RoomEncryptor>>,
}

impl std::fmt::Debug for Sender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sender")
            .field("policy", &self.policy)
            .field("encrypts", &self.encryptor.is_some())
            .finish_non_exhaustive()
    }
}

impl Sender {
    /// A sender for `outbox` through `client`.
    pub fn new(outbox: Outbox, client: MatrixClient, policy: Policy) -> Self {
        Self {
            outbox,
            client,
            policy,
            encryptor: None,
        }
    }

    /// Encrypts messages for encrypted rooms with `encryptor` before sending them.
    pub fn with_encryption(mut self, encryptor: Arc<dyn RoomEncryptor>) -> Self {
        self.encryptor = Some(encryptor);
        self
    }

    /// Sends until `stop` is cancelled, then drains for at most `shutdown_drain`.
    pub async fn run(self, stop: CancellationToken) {
        let mut db_failures = 0u32;
        let mut depth_recorded = Instant::now() - Duration::from_secs(1);
        loop {
            let pass = self.send_due_once().await;
            // The gauge is a count query: once a second is enough, not once per pass.
            if depth_recorded.elapsed() >= Duration::from_secs(1) {
                self.record_depth().await;
                depth_recorded = Instant::now();
            }
            let wait = match pass {
                // Something is due but the batch held none of it (a backlog behind rooms that
                // are waiting to retry): pause briefly instead of spinning.
                Ok(0) => self.until_next_due().await.max(Duration::from_millis(100)),
                Ok(_) => {
                    db_failures = 0;
                    self.until_next_due().await
                }
                Err(e) => {
                    db_failures = db_failures.saturating_add(1);
                    tracing::error!(error.message = %e, "outbox: database error, retrying");
                    backoff(db_failures, self.policy.max_backoff)
                }
            };
            if wait.is_zero() {
                if stop.is_cancelled() {
                    break;
                }
                continue;
            }
            tokio::select! {
                () = stop.cancelled() => break,
                () = self.outbox.wake.notified() => {}
                () = tokio::time::sleep(wait) => {}
            }
        }
        self.drain().await;
    }

    /// One pass: sends every message that is due, oldest first per room, and returns how many
    /// delivery attempts it made. Public so tests and benchmarks can drive the queue.
    pub async fn send_due_once(&self) -> Result<usize, sqlx::Error> {
        self.send_due(None).await
    }

    /// [`Sender::send_due_once`], stopping each room's sending at `deadline` if given (the
    /// shutdown drain: a pass over a deep backlog would otherwise outlast it).
    async fn send_due(&self, deadline: Option<Instant>) -> Result<usize, sqlx::Error> {
        let rows = store::outbox::pending(&self.outbox.store, BATCH).await?;
        let now = now_ms();
        let mut rooms: Vec<Vec<Row>> = Vec::new();
        let mut index: HashMap<String, usize> = HashMap::new();
        for row in rows {
            let slot = *index.entry(row.room_id.clone()).or_insert_with(|| {
                rooms.push(Vec::new());
                rooms.len() - 1
            });
            rooms[slot].push(row);
        }
        let results: Vec<Result<usize, sqlx::Error>> = futures_util::stream::iter(rooms)
            .filter(|queue| {
                std::future::ready(queue.first().is_some_and(|r| r.next_attempt_at <= now))
            })
            .map(|queue| self.send_room(queue, deadline))
            .buffer_unordered(ROOM_CONCURRENCY)
            .collect()
            .await;
        results.into_iter().sum()
    }

    async fn send_room(
        &self,
        mut queue: Vec<Row>,
        deadline: Option<Instant>,
    ) -> Result<usize, sqlx::Error> {
        // Successes are recorded in batches, one transaction each, not one commit per message.
        // A crash before a batch is recorded leaves those messages in doubt: they are looked
        // up before anything is sent again.
        const MARK_EVERY: usize = 64;
        let store = &self.outbox.store;
        let (Some(first), Some(last)) = (queue.first(), queue.last()) else {
            return Ok(0);
        };
        let (room_id, first_seq, upto) = (first.room_id.clone(), first.seq, last.seq);
        let mut sent: Vec<(i64, String)> = Vec::new();
        if queue.iter().any(|row| row.in_doubt) {
            match self.find_in_doubt(&queue).await? {
                Lookup::Found(found) => {
                    // Those the homeserver has are done; the others were never stored and
                    // are sent like any message.
                    for row in &mut queue {
                        if !row.in_doubt {
                            continue;
                        }
                        let outcome = match found.get(&row.txn_id) {
                            Some(event_id) => {
                                sent.push((row.seq, event_id.clone()));
                                "delivered"
                            }
                            None => "absent",
                        };
                        metrics::counter!("st2_matrix_send_in_doubt_total", "outcome" => outcome)
                            .increment(1);
                        tracing::info!(room_id = %row.room_id, txn_id = %row.txn_id, outcome,
                            "outbox: looked up a message whose send was in doubt");
                    }
                    let delivered: std::collections::HashSet<i64> =
                        sent.iter().map(|(seq, _)| *seq).collect();
                    queue.retain(|row| !delivered.contains(&row.seq));
                }
                Lookup::Retry(wait, why) => {
                    let next = now_ms() + i64::try_from(wait.as_millis()).unwrap_or(i64::MAX);
                    tracing::warn!(room_id = %room_id, error.message = %why,
                        "outbox: cannot find out whether messages in doubt arrived; will ask again");
                    store::outbox::mark_retry(store, first_seq, next, &why, true).await?;
                    return Ok(1);
                }
            }
        }
        // From here until each is recorded, a crash leaves these messages in doubt.
        store::outbox::mark_in_doubt(store, &room_id, upto).await?;
        let mut attempts = 0;
        // Event ids sent in this pass and not yet recorded, for events relating to them.
        let mut sent_now: HashMap<String, String> = HashMap::new();
        for row in queue {
            if deadline.is_some_and(|deadline| Instant::now() >= deadline) {
                // Out of time: the rest was not tried, so it is not in doubt.
                store::outbox::clear_in_doubt(store, &room_id, row.seq - 1, upto).await?;
                break;
            }
            attempts += 1;
            let seq = row.seq;
            let txn_id = row.txn_id.clone();
            if row.relates_to_txn.is_some() && !sent.is_empty() {
                // The event it relates to (a prompt people answer) is recorded before anything
                // relating to it goes out: a person's answer looks it up by event id.
                store::outbox::mark_sent_many(store, &std::mem::take(&mut sent)).await?;
            }
            match self.deliver(row, &sent_now).await? {
                Attempt::Sent(event_id) => {
                    sent_now.insert(txn_id, event_id.clone());
                    sent.push((seq, event_id));
                    if sent.len() >= MARK_EVERY {
                        store::outbox::mark_sent_many(store, &std::mem::take(&mut sent)).await?;
                    }
                }
                Attempt::Failed => {}
                Attempt::Retry => {
                    // The room's later messages were not tried: not in doubt.
                    store::outbox::clear_in_doubt(store, &room_id, seq, upto).await?;
                    break;
                }
            }
        }
        if !sent.is_empty() {
            store::outbox::mark_sent_many(store, &sent).await?;
        }
        Ok(attempts)
    }

    /// Finds which of `queue`'s messages in doubt the homeserver has: the bot's events in the
    /// room, newest first, are searched for their send transaction ids, back to the room's last
    /// message known to be sent (everything in doubt was queued after it) or at most
    /// [`LOOKUP_PAGES`] pages.
    async fn find_in_doubt(&self, queue: &[Row]) -> Result<Lookup, sqlx::Error> {
        let mut wanted: std::collections::HashSet<&str> = queue
            .iter()
            .filter(|row| row.in_doubt)
            .map(|row| row.txn_id.as_str())
            .collect();
        let Some(first) = queue.iter().find(|row| row.in_doubt) else {
            return Ok(Lookup::Found(HashMap::new()));
        };
        let Ok(room) = RoomId::parse(&first.room_id) else {
            // Sending fails it as an invalid room.
            return Ok(Lookup::Found(HashMap::new()));
        };
        let known =
            store::outbox::last_sent_before(&self.outbox.store, &first.room_id, first.seq).await?;
        let mut found = HashMap::new();
        let mut from = None;
        for _ in 0..LOOKUP_PAGES {
            let (events, next) = match self
                .client
                .own_recent_events(&room, from.take(), LOOKUP_PAGE_SIZE)
                .await
            {
                Ok(page) => page,
                Err(e) if e.is_transient() => {
                    let attempts = u32::try_from(first.attempts)
                        .unwrap_or(u32::MAX)
                        .saturating_add(1);
                    let wait = e
                        .retry_after()
                        .unwrap_or_else(|| backoff(attempts, self.policy.max_backoff));
                    return Ok(Lookup::Retry(wait, e.to_string()));
                }
                Err(e) => {
                    // The room cannot be read (e.g. the bot left it): sending will tell.
                    tracing::warn!(room_id = %first.room_id, error.message = %e,
                        "outbox: cannot look up messages in doubt; sending them again");
                    break;
                }
            };
            for event in events {
                if known.as_deref() == Some(event.event_id.as_str()) {
                    return Ok(Lookup::Found(found));
                }
                if let Some(txn) = event.transaction_id()
                    && wanted.remove(txn)
                {
                    found.insert(txn.to_owned(), event.event_id.to_string());
                }
            }
            if wanted.is_empty() {
                break;
            }
            match next {
                Some(token) => from = Some(token),
                None => break,
            }
        }
        Ok(Lookup::Found(found))
    }

    /// `row`'s content with `m.relates_to.event_id` set to the event id of the event it
    /// relates to. `Ok(None)`: that event is not sent yet (try again later). `Err`: it never
    /// will be, so neither will this one.
    async fn resolve_relation(
        &self,
        row: &Row,
        target: &str,
        sent_now: &HashMap<String, String>,
    ) -> Result<Result<Option<String>, String>, sqlx::Error> {
        let event_id = match sent_now.get(target) {
            Some(event_id) => event_id.clone(),
            None => {
                let mut conn = self.outbox.store.pool().acquire().await?;
                match store::outbox::sent_event(&mut conn, target).await? {
                    store::outbox::Sent::Event(event_id) => event_id,
                    store::outbox::Sent::Pending => return Ok(Ok(None)),
                    store::outbox::Sent::Gone => {
                        return Ok(Err(format!(
                            "the event it relates to (transaction {target}) was not sent"
                        )));
                    }
                }
            }
        };
        let mut content: serde_json::Value = match serde_json::from_str(&row.content) {
            Ok(content) => content,
            Err(e) => return Ok(Err(format!("invalid content: {e}"))),
        };
        content["m.relates_to"]["event_id"] = serde_json::Value::String(event_id);
        Ok(Ok(Some(content.to_string())))
    }

    async fn deliver(
        &self,
        mut row: Row,
        sent_now: &HashMap<String, String>,
    ) -> Result<Attempt, sqlx::Error> {
        let store = &self.outbox.store;
        let room = match RoomId::parse(&row.room_id) {
            Ok(room) => room,
            Err(e) => return self.fail(&row, &format!("invalid room id: {e}")).await,
        };
        if let Some(target) = row.relates_to_txn.clone() {
            match self.resolve_relation(&row, &target, sent_now).await? {
                Ok(Some(content)) => row.content = content,
                Ok(None) => {
                    // Its target is queued before it in the same room, so this only happens
                    // when the target is waiting for a retry: wait with it.
                    let next = now_ms() + 500;
                    store::outbox::mark_retry(
                        store,
                        row.seq,
                        next,
                        "waiting for the event it relates to",
                        false,
                    )
                    .await?;
                    return Ok(Attempt::Retry);
                }
                Err(why) => return self.fail(&row, &why).await,
            }
        }
        let started = Instant::now();
        let uploaded = if row.file {
            self.upload_file(&room, &mut row).await?
        } else {
            Ok(())
        };
        let content = match serde_json::value::RawValue::from_string(row.content.clone()) {
            Ok(raw) => Raw::from_json(raw),
            Err(e) => return self.fail(&row, &format!("invalid content: {e}")).await,
        };
        let encrypted = match uploaded {
            Ok(()) => self.encrypted(&room, &row.event_type, content).await,
            Err(e) => Err(e),
        };
        let result = match encrypted {
            Ok((event_type, content)) => {
                self.client
                    .send_message(
                        room,
                        event_type.unwrap_or(&row.event_type),
                        &row.txn_id,
                        content,
                    )
                    .await
            }
            Err(e) => Err(e),
        };
        metrics::histogram!("st2_matrix_send_duration_seconds")
            .record(started.elapsed().as_secs_f64());
        match result {
            Ok(event_id) => {
                metrics::counter!("st2_matrix_messages_sent_total").increment(1);
                tracing::debug!(room_id = %row.room_id, txn_id = %row.txn_id, event_id = %event_id, "sent");
                Ok(Attempt::Sent(event_id.to_string()))
            }
            Err(e) => {
                let age =
                    Duration::from_millis(u64::try_from(now_ms() - row.created_at).unwrap_or(0));
                if e.is_transient() && age < self.policy.give_up_after {
                    let attempts = u32::try_from(row.attempts)
                        .unwrap_or(u32::MAX)
                        .saturating_add(1);
                    let wait = e
                        .retry_after()
                        .unwrap_or_else(|| backoff(attempts, self.policy.max_backoff));
                    let next = now_ms() + i64::try_from(wait.as_millis()).unwrap_or(i64::MAX);
                    metrics::counter!("st2_matrix_send_failures_total", "kind" => "transient")
                        .increment(1);
                    tracing::warn!(
                        room_id = %row.room_id, txn_id = %row.txn_id, attempts, retry_in_ms = wait.as_millis() as u64,
                        error.message = %e, "send failed, will retry"
                    );
                    let in_doubt = e.may_have_arrived();
                    if in_doubt {
                        metrics::counter!("st2_matrix_send_failures_total", "kind" => "in_doubt")
                            .increment(1);
                    }
                    store::outbox::mark_retry(store, row.seq, next, &e.to_string(), in_doubt)
                        .await?;
                    Ok(Attempt::Retry)
                } else {
                    let why = if e.is_transient() {
                        format!("gave up after {age:?}: {e}")
                    } else {
                        e.to_string()
                    };
                    self.fail(&row, &why).await
                }
            }
        }
    }

    /// Uploads the file `row` carries, unless an earlier attempt did (and the room's
    /// encryption has not changed since), and makes `row.content` refer to it. A failed upload
    /// is an `Err` like a failed send, retried or failed by the same rules.
    async fn upload_file(
        &self,
        room: &RoomId,
        row: &mut Row,
    ) -> Result<Result<(), super::Error>, sqlx::Error> {
        let store = &self.outbox.store;
        let Some(stored) = store::outbox::file(store, &row.txn_id).await? else {
            return Ok(Err(super::Error::Request(
                "the file of this message is gone".into(),
            )));
        };
        let encrypted = match &self.encryptor {
            Some(encryptor) => match encryptor.is_encrypted(room).await {
                Ok(encrypted) => encrypted,
                Err(e) => return Ok(Err(e)),
            },
            None => false,
        };
        match stored.uploaded.as_deref() {
            Some("encrypted") => return Ok(Ok(())),
            Some("plain") if !encrypted => return Ok(Ok(())),
            _ => {}
        }
        let filename = serde_json::from_str::<serde_json::Value>(&row.content)
            .ok()
            .and_then(|c| {
                c.get("filename")
                    .or_else(|| c.get("body"))
                    .and_then(|v| v.as_str().map(str::to_owned))
            });
        let size = stored.data.len();
        let source = if encrypted {
            let mut sealed = file::Encrypted::new(&stored.data);
            drop(stored);
            let ciphertext = std::mem::take(&mut sealed.data);
            // Neither a name nor a type: the media repository learns nothing of the contents.
            let url = match self
                .client
                .upload(ciphertext, "application/octet-stream", None)
                .await
            {
                Ok(url) => url,
                Err(e) => return Ok(Err(e)),
            };
            MediaSource::Encrypted(Box::new(sealed.file(url)))
        } else {
            match self
                .client
                .upload(stored.data, &stored.mimetype, filename.as_deref())
                .await
            {
                Ok(url) => MediaSource::Plain(url),
                Err(e) => return Ok(Err(e)),
            }
        };
        row.content = match file::with_source(&row.content, &source) {
            Ok(content) => content,
            Err(why) => return Ok(Err(super::Error::Request(why))),
        };
        let how = if encrypted { "encrypted" } else { "plain" };
        store::outbox::file_uploaded(store, row.seq, &row.txn_id, &row.content, how).await?;
        metrics::counter!("st2_matrix_files_uploaded_total", "encrypted" => how).increment(1);
        tracing::debug!(room_id = %row.room_id, txn_id = %row.txn_id, size, encrypted, "file uploaded");
        Ok(Ok(()))
    }

    /// `content` as it goes on the wire: encrypted (with its new event type) for an encrypted
    /// room, unchanged otherwise.
    async fn encrypted(
        &self,
        room: &RoomId,
        event_type: &str,
        content: Raw<AnyMessageLikeEventContent>,
    ) -> Result<(Option<&'static str>, Raw<AnyMessageLikeEventContent>), super::Error> {
        let Some(encryptor) = &self.encryptor else {
            return Ok((None, content));
        };
        Ok(match encryptor.encrypt(room, event_type, &content).await? {
            Some(encrypted) => (Some("m.room.encrypted"), encrypted),
            None => (None, content),
        })
    }

    async fn fail(&self, row: &Row, why: &str) -> Result<Attempt, sqlx::Error> {
        metrics::counter!("st2_matrix_send_failures_total", "kind" => "permanent").increment(1);
        tracing::error!(room_id = %row.room_id, txn_id = %row.txn_id, error.message = %why, "message could not be delivered; marked failed");
        store::outbox::mark_failed(&self.outbox.store, row.seq, why).await?;
        Ok(Attempt::Failed)
    }

    /// How long until the next queued message is due (zero if one is due now).
    async fn until_next_due(&self) -> Duration {
        match store::outbox::next_due(&self.outbox.store).await {
            Ok(Some(at)) => Duration::from_millis(u64::try_from(at - now_ms()).unwrap_or(0)),
            // Nothing queued: sleep until woken (the timeout only bounds a missed wake).
            Ok(None) => Duration::from_secs(60),
            Err(_) => Duration::from_secs(1),
        }
    }

    async fn record_depth(&self) {
        if let Ok(stats) = store::outbox::stats(&self.outbox.store).await {
            metrics::gauge!("st2_matrix_outbox_depth").set(stats.pending as f64);
            metrics::gauge!("st2_matrix_outbox_failed").set(stats.failed as f64);
        }
    }

    /// On shutdown: keep sending what is due for a bounded time; the rest stays queued for the
    /// next start.
    async fn drain(&self) {
        let deadline = Instant::now() + self.policy.shutdown_drain;
        while Instant::now() < deadline {
            match self.send_due(Some(deadline)).await {
                Ok(n) if n > 0 && self.until_next_due().await.is_zero() => continue,
                _ => break,
            }
        }
        if let Ok(stats) = store::outbox::stats(&self.outbox.store).await
            && stats.pending > 0
        {
            tracing::info!(
                pending = stats.pending,
                "outbox: messages left queued for the next start"
            );
        }
    }
}

/// The outbox's retry delay: [`crate::retry::delay`] from [`BASE_BACKOFF`].
fn backoff(attempt: u32, max: Duration) -> Duration {
    crate::retry::delay(BASE_BACKOFF, max, attempt)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A guard that answers what it was built with.
    #[derive(Debug)]
    struct Answer(bool);

    impl ResultGuard for Answer {
        fn claim<'c>(
            &'c self,
            _: &'c mut SqliteConnection,
        ) -> BoxFuture<'c, Result<bool, sqlx::Error>> {
            Box::pin(async move { Ok(self.0) })
        }
    }

    #[tokio::test]
    async fn a_result_is_queued_only_when_its_guard_lets_it() {
        let store = Store::in_memory().await.unwrap();
        let outbox = Outbox::new(store.clone());
        let room = RoomId::parse("!r:x").unwrap();
        let message = [
            RoomMessageEventContent::notice_plain("one"),
            RoomMessageEventContent::notice_plain("two"),
        ];
        let queued = futures_util::future::join_all(
            [true, false, true]
                .map(|answer| outbox.queue_result(&room, &message, Box::new(Answer(answer)))),
        )
        .await;
        let queued: Vec<bool> = queued.into_iter().map(Result::unwrap).collect();
        assert_eq!(queued, [true, false, true]);
        assert_eq!(store::outbox::stats(&store).await.unwrap().pending, 4);
    }

    #[test]
    fn transaction_ids_are_unique_and_opaque() {
        let a = new_txn_id();
        assert!(a.starts_with("st2m") && a.len() == 36, "{a}");
        assert_ne!(a, new_txn_id());
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        let max = Duration::from_secs(60);
        let first = backoff(1, max);
        assert!(
            first >= Duration::from_millis(400) && first <= Duration::from_millis(600),
            "{first:?}"
        );
        let fourth = backoff(4, max);
        assert!(
            fourth >= Duration::from_millis(3200) && fourth <= Duration::from_millis(4800),
            "{fourth:?}"
        );
        assert!(backoff(50, max) <= max.mul_f64(1.2));
    }
}
