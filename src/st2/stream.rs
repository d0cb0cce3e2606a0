//! The StackStorm announcement stream: results of executions arrive here as
//! `st2.announcement__<route>` server-sent events.
//!
//! A connection with no bytes for twice the heartbeat is dead (StackStorm sends a `\n` every
//! `stream.heartbeat`, 25 s, when idle), and is replaced. Reconnects back off exponentially with
//! jitter, capped at a minute; a 401 renews the bridge's token.
//!
//! The SSE parser ([`SseParser`]) is written here, about 90 lines, for one measured reason: the
//! stream must be capped ([`MAX_EVENT_BYTES`] per line and per event, then reconnect), and
//! `eventsource-stream`, the maintained Rust parser, buffers a line without bound; wrapping it
//! would still need a line scanner of our own in front. StackStorm uses only `event`, `data`
//! and comments.
//!
//! This module only reads: it yields typed [`StreamEvent`]s. Delivering announcements, and
//! recovering results after a reconnection, is [`crate::results`]' work.

use std::{
    sync::{Arc, RwLock},
    time::Duration,
};

use futures_util::StreamExt as _;
use tokio_util::sync::CancellationToken;

use tokio::sync::mpsc;

use super::St2Client;
use crate::{config::StackStormConfig, retry::Backoff, store::now_ms};

/// What `/ready` and the admin status report about the stream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamState {
    /// Connected now.
    pub connected: bool,
    /// Since when (unix ms) it is in its current state.
    pub since: Option<i64>,
    /// The last reason it went down.
    pub last_error: Option<String>,
    /// Reconnections since start.
    pub reconnects: u64,
}

/// Shared stream state.
#[derive(Debug, Default)]
pub struct StreamStatus(RwLock<StreamState>);

impl StreamStatus {
    /// A copy of the current state.
    pub fn get(&self) -> StreamState {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn update(&self, f: impl FnOnce(&mut StreamState)) {
        f(&mut self.0.write().unwrap_or_else(|e| e.into_inner()));
    }
}

/// One server-sent event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// `event:` (empty when absent).
    pub name: String,
    /// The `data:` lines, joined with `\n`.
    pub data: String,
}

/// The longest line, and the largest event, the stream may send: StackStorm's announcements
/// carry a result, which the bridge posts in pieces under Matrix's event size anyway. A
/// stream that goes past it is broken (or hostile) and is reconnected, rather than buffered
/// without bound.
pub const MAX_EVENT_BYTES: usize = 1 << 20;

/// A line or an event over [`MAX_EVENT_BYTES`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the stream sent a line or event over {MAX_EVENT_BYTES} bytes")]
pub struct TooLong;

/// An incremental SSE parser (the subset StackStorm uses: `event`, `data`, comments, blank
/// lines; `id`/`retry` are ignored, StackStorm sends none).
///
/// Linear in what it is fed: the unfinished line is scanned only where new bytes arrived, and
/// finished lines are dropped from the buffer once per call, not once per line.
#[derive(Debug, Default)]
pub struct SseParser {
    buffer: Vec<u8>,
    /// Bytes of `buffer` already known to hold no newline.
    scanned: usize,
    name: String,
    data: Option<String>,
}

impl SseParser {
    /// Feeds bytes; returns the events completed by them. After [`TooLong`] the parser is
    /// empty again (the connection is to be dropped).
    pub fn feed(&mut self, bytes: &[u8]) -> Result<Vec<SseEvent>, TooLong> {
        self.buffer.extend_from_slice(bytes);
        let mut events = Vec::new();
        let mut start = 0;
        while let Some(offset) = self.buffer[self.scanned..].iter().position(|&b| b == b'\n') {
            let end = self.scanned + offset;
            let mut line = &self.buffer[start..end];
            if line.last() == Some(&b'\r') {
                line = &line[..line.len() - 1];
            }
            let line = String::from_utf8_lossy(line).into_owned();
            start = end + 1;
            self.scanned = start;
            if let Err(e) = self.line(&line, &mut events) {
                self.reset();
                return Err(e);
            }
        }
        self.buffer.drain(..start);
        self.scanned = self.buffer.len();
        if self.buffer.len() > MAX_EVENT_BYTES {
            self.reset();
            return Err(TooLong);
        }
        Ok(events)
    }

    fn line(&mut self, line: &str, events: &mut Vec<SseEvent>) -> Result<(), TooLong> {
        if line.is_empty() {
            if let Some(data) = self.data.take() {
                events.push(SseEvent {
                    name: std::mem::take(&mut self.name),
                    data,
                });
            }
            self.name.clear();
            return Ok(());
        }
        if line.starts_with(':') {
            return Ok(());
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "event" => self.name = value.to_owned(),
            "data" => match &mut self.data {
                Some(data) => {
                    data.push('\n');
                    data.push_str(value);
                }
                None => self.data = Some(value.to_owned()),
            },
            _ => {}
        }
        if self
            .data
            .as_ref()
            .is_some_and(|d| d.len() > MAX_EVENT_BYTES)
        {
            return Err(TooLong);
        }
        Ok(())
    }

    fn reset(&mut self) {
        *self = SseParser::default();
    }
}

/// Which events one stream connection asks StackStorm for (its `events=` and `action_refs=`
/// filters, applied by StackStorm's stream listener).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    /// What the connection is for, in logs and the metrics' `stream` label.
    pub name: &'static str,
    /// Event names, e.g. `st2.announcement__chatops`.
    pub events: Vec<String>,
    /// Only executions of these actions. StackStorm applies it to every event, announcements
    /// included (they carry no action), so it needs a connection of its own.
    pub action_refs: Vec<String>,
}

impl Subscription {
    /// The chatops announcements for `route`: results to deliver.
    pub fn announcements(route: &str) -> Self {
        Self {
            name: "announcements",
            events: vec![format!("st2.announcement__{route}")],
            action_refs: Vec::new(),
        }
    }

    /// Every execution's creation and change: the live status of executions started from
    /// rooms (their workflows' tasks included, so no `action_refs` filter) and inquiries (a
    /// `core.ask` going `pending`).
    pub fn executions() -> Self {
        Self {
            name: "executions",
            events: vec![
                "st2.execution__create".to_owned(),
                "st2.execution__update".to_owned(),
            ],
            action_refs: Vec::new(),
        }
    }
}

/// What the stream reader reports to its consumer ([`crate::results`], [`crate::watch`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamEvent {
    /// The stream is up again: anything sent while it was down is lost, so the consumer
    /// catches up from StackStorm's API.
    Connected,
    /// An announcement for the bridge's route: the event's `data` (JSON with a `payload`).
    Announcement(String),
    /// An execution was created or changed: the event's `data` (the execution as JSON).
    Execution(String),
}

/// Why a connection ended.
enum Ended {
    Stopping,
    Idle,
    Closed,
    Failed(String),
}

/// Reads the stream until `stop`, reconnecting forever with backoff, and hands what it reads
/// to `events`. A slow consumer slows the reader (the channel is bounded), never the other
/// way round: the reader does no delivery work of its own.
pub async fn run(
    st2: St2Client,
    config: StackStormConfig,
    subscription: Subscription,
    status: Arc<StreamStatus>,
    events: mpsc::Sender<StreamEvent>,
    stop: CancellationToken,
) {
    let idle = config.heartbeat.get() * 2;
    let event_name = subscription.events.join(",");
    let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(60));
    // Whether the last attempt to open the stream failed: only the first failure of a run is
    // logged at warn (the backoff counts the wait after a lost connection too).
    let mut failing = false;
    loop {
        let attempt = tokio::select! {
            () = stop.cancelled() => return,
            attempt = st2.open_stream(&subscription) => attempt,
        };
        match attempt {
            Ok(response) => {
                backoff.reset();
                failing = false;
                status.update(|s| {
                    s.connected = true;
                    s.since = Some(now_ms());
                });
                metrics::gauge!("st2_matrix_stream_connected", "stream" => subscription.name)
                    .set(1.0);
                tracing::info!(stream = subscription.name, events = %event_name, "StackStorm stream connected");
                if events.send(StreamEvent::Connected).await.is_err() {
                    return;
                }
                let ended = read(response, idle, &subscription, &events, &stop).await;
                metrics::gauge!("st2_matrix_stream_connected", "stream" => subscription.name)
                    .set(0.0);
                let why = match ended {
                    Ended::Stopping => return,
                    Ended::Idle => format!("no data for {idle:?} (heartbeats missing)"),
                    Ended::Closed => "StackStorm closed the stream".to_owned(),
                    Ended::Failed(e) => e,
                };
                tracing::warn!(stream = subscription.name, reason = %why, "StackStorm stream lost; reconnecting");
                status.update(|s| {
                    s.connected = false;
                    s.since = Some(now_ms());
                    s.last_error = Some(why);
                    s.reconnects += 1;
                });
            }
            Err(e) => {
                if !failing {
                    tracing::warn!(stream = subscription.name, error.message = %e, "cannot open the StackStorm stream; retrying with backoff");
                }
                failing = true;
                status.update(|s| {
                    if s.connected || s.since.is_none() {
                        s.since = Some(now_ms());
                    }
                    s.connected = false;
                    s.last_error = Some(e.to_string());
                });
            }
        }
        metrics::counter!("st2_matrix_stream_reconnects_total", "stream" => subscription.name)
            .increment(1);
        if !backoff.wait(&stop).await {
            return;
        }
    }
}

/// Reads one connection until it ends, sending the subscribed events on.
async fn read(
    response: reqwest::Response,
    idle: Duration,
    subscription: &Subscription,
    events: &mpsc::Sender<StreamEvent>,
    stop: &CancellationToken,
) -> Ended {
    let mut bytes = response.bytes_stream();
    let mut parser = SseParser::default();
    loop {
        let next = tokio::select! {
            () = stop.cancelled() => return Ended::Stopping,
            next = tokio::time::timeout(idle, bytes.next()) => next,
        };
        let chunk = match next {
            Err(_) => return Ended::Idle,
            Ok(None) => return Ended::Closed,
            Ok(Some(Err(e))) => return Ended::Failed(e.to_string()),
            Ok(Some(Ok(chunk))) => chunk,
        };
        let parsed = match parser.feed(&chunk) {
            Ok(parsed) => parsed,
            Err(e) => return Ended::Failed(e.to_string()),
        };
        for event in parsed {
            if !subscription.events.contains(&event.name) {
                continue;
            }
            let event = if event.name.starts_with("st2.announcement__") {
                StreamEvent::Announcement(event.data)
            } else {
                StreamEvent::Execution(event.data)
            };
            let sent = tokio::select! {
                () = stop.cancelled() => return Ended::Stopping,
                sent = events.send(event) => sent,
            };
            if sent.is_err() {
                return Ended::Stopping;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_heartbeats_and_split_chunks_parse() {
        let mut p = SseParser::default();
        assert!(
            p.feed(b"\n").unwrap().is_empty(),
            "a heartbeat is not an event"
        );
        assert!(
            p.feed(b"event: st2.announcement__matrix\r\ndata: {\"pay")
                .unwrap()
                .is_empty()
        );
        let events = p.feed(b"load\": 1}\r\n\r\n").unwrap();
        assert_eq!(
            events,
            [SseEvent {
                name: "st2.announcement__matrix".into(),
                data: "{\"payload\": 1}".into()
            }]
        );
        let events = p.feed(b": comment\ndata: a\ndata: b\n\n").unwrap();
        assert_eq!(
            events,
            [SseEvent {
                name: String::new(),
                data: "a\nb".into()
            }]
        );
    }

    #[test]
    fn a_line_fed_a_byte_at_a_time_parses() {
        let mut p = SseParser::default();
        let text = format!("event: e\ndata: {}\n\n", "x".repeat(10_000));
        let mut events = Vec::new();
        for byte in text.as_bytes() {
            events.extend(p.feed(std::slice::from_ref(byte)).unwrap());
        }
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].data.len(), 10_000);
    }

    #[test]
    fn a_line_or_event_over_the_cap_is_refused_and_the_parser_starts_afresh() {
        let mut p = SseParser::default();
        let chunk = vec![b'x'; 64 * 1024];
        let mut refused = false;
        p.feed(b"data: ").unwrap();
        for _ in 0..20 {
            if p.feed(&chunk).is_err() {
                refused = true;
                break;
            }
        }
        assert!(refused, "a 1.25 MiB line without a newline is refused");
        assert_eq!(
            p.feed(b"data: ok\n\n").unwrap(),
            [SseEvent {
                name: String::new(),
                data: "ok".into()
            }]
        );
        let line = format!("data: {}\n", "y".repeat(100 * 1024));
        let mut result = Ok(Vec::new());
        for _ in 0..12 {
            result = p.feed(line.as_bytes());
            if result.is_err() {
                break;
            }
        }
        assert_eq!(result, Err(TooLong), "an event of many lines over the cap");
    }
}
