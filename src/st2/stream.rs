//! The StackStorm announcement stream: results of executions arrive here as
//! `st2.announcement__<route>` server-sent events.
//!
//! A connection with no bytes for twice the heartbeat is dead (StackStorm sends a `\n` every
//! `stream.heartbeat`, 25 s, when idle), and is replaced. Reconnects back off exponentially with
//! jitter, capped at a minute; a 401 renews the bridge's token. Every time the stream comes up,
//! results that finished while it was down are recovered ([`crate::results::recovery`]).

use std::{
    sync::{Arc, RwLock},
    time::Duration,
};

use futures_util::StreamExt as _;
use rand::Rng as _;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::{
    bridge::Bridge,
    results::{self, Announcement, Claim, Source},
    store::now_ms,
};

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

/// An incremental SSE parser (the subset StackStorm uses: `event`, `data`, comments, blank
/// lines; `id`/`retry` are ignored, StackStorm sends none).
#[derive(Debug, Default)]
pub struct SseParser {
    buffer: Vec<u8>,
    name: String,
    data: Option<String>,
}

impl SseParser {
    /// Feeds bytes; returns the events completed by them.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<SseEvent> {
        self.buffer.extend_from_slice(bytes);
        let mut events = Vec::new();
        while let Some(newline) = self.buffer.iter().position(|&b| b == b'\n') {
            let mut line: Vec<u8> = self.buffer.drain(..=newline).collect();
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            let line = String::from_utf8_lossy(&line);
            if line.is_empty() {
                if let Some(data) = self.data.take() {
                    events.push(SseEvent {
                        name: std::mem::take(&mut self.name),
                        data,
                    });
                }
                self.name.clear();
                continue;
            }
            if line.starts_with(':') {
                continue;
            }
            let (field, value) = line.split_once(':').unwrap_or((&line, ""));
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
        }
        events
    }
}

/// Why a connection ended.
enum Ended {
    Stopping,
    Idle,
    Closed,
    Failed(String),
}

/// Consumes the stream until `stop`, reconnecting forever.
pub async fn run(bridge: Arc<Bridge>, stop: CancellationToken) {
    let Some((st2, config)) = bridge.st2.clone().zip(bridge.config.stackstorm.clone()) else {
        return;
    };
    let idle = config.heartbeat.get() * 2;
    let event_name = format!("st2.announcement__{}", config.route);
    let mut failures = 0u32;
    loop {
        let attempt = tokio::select! {
            () = stop.cancelled() => return,
            attempt = st2.open_stream() => attempt,
        };
        match attempt {
            Ok(response) => {
                let connected_at = now_ms();
                failures = 0;
                bridge.stream.update(|s| {
                    s.connected = true;
                    s.since = Some(connected_at);
                });
                metrics::gauge!("st2_matrix_stream_connected").set(1.0);
                tracing::info!(events = %event_name, "StackStorm stream connected");
                let recovering = bridge.clone();
                tokio::spawn(async move {
                    results::recovery::recover(&recovering, connected_at).await;
                });
                let ended = consume(&bridge, response, idle, &event_name, &stop).await;
                metrics::gauge!("st2_matrix_stream_connected").set(0.0);
                let why = match ended {
                    Ended::Stopping => return,
                    Ended::Idle => format!("no data for {idle:?} (heartbeats missing)"),
                    Ended::Closed => "StackStorm closed the stream".to_owned(),
                    Ended::Failed(e) => e,
                };
                tracing::warn!(reason = %why, "StackStorm stream lost; reconnecting");
                bridge.stream.update(|s| {
                    s.connected = false;
                    s.since = Some(now_ms());
                    s.last_error = Some(why);
                    s.reconnects += 1;
                });
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                if failures == 1 {
                    tracing::warn!(error.message = %e, "cannot open the StackStorm stream; retrying with backoff");
                }
                bridge.stream.update(|s| {
                    if s.connected || s.since.is_none() {
                        s.since = Some(now_ms());
                    }
                    s.connected = false;
                    s.last_error = Some(e.to_string());
                });
            }
        }
        metrics::counter!("st2_matrix_stream_reconnects_total").increment(1);
        let wait = backoff(failures);
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
    }
}

/// 0.5 s doubling to 60 s, ±25 % jitter, so many bridges do not reconnect in lockstep.
fn backoff(failures: u32) -> Duration {
    let base = Duration::from_millis(500)
        .saturating_mul(2u32.saturating_pow(failures.min(7)))
        .min(Duration::from_secs(60));
    base.mul_f64(rand::rng().random_range(0.75..1.25))
}

async fn consume(
    bridge: &Bridge,
    response: reqwest::Response,
    idle: Duration,
    event_name: &str,
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
        for event in parser.feed(&chunk) {
            if event.name != event_name {
                continue;
            }
            handle(bridge, &event.data).await;
        }
    }
}

async fn handle(bridge: &Bridge, data: &str) {
    let payload = serde_json::from_str::<Value>(data)
        .ok()
        .and_then(|v| v.get("payload").cloned());
    let announcement = match payload.map(serde_json::from_value::<Announcement>) {
        Some(Ok(announcement)) => announcement,
        _ => {
            metrics::counter!("st2_matrix_results_undeliverable_total", "reason" => "malformed")
                .increment(1);
            tracing::warn!(
                bytes = data.len(),
                "ignoring a stream announcement that is not a chatops payload"
            );
            return;
        }
    };
    // Refusals are logged and counted inside; a transient failure (database, homeserver for a
    // direct chat) is retried a few times rather than losing the result.
    for attempt in 1..=3u64 {
        match results::deliver(bridge, &announcement, Source::Stream, Claim::ByContext).await {
            Err(e) if e.is_transient() && attempt < 3 => {
                tokio::time::sleep(Duration::from_secs(attempt)).await
            }
            _ => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_heartbeats_and_split_chunks_parse() {
        let mut p = SseParser::default();
        assert!(p.feed(b"\n").is_empty(), "a heartbeat is not an event");
        assert!(
            p.feed(b"event: st2.announcement__matrix\r\ndata: {\"pay")
                .is_empty()
        );
        let events = p.feed(b"load\": 1}\r\n\r\n");
        assert_eq!(
            events,
            [SseEvent {
                name: "st2.announcement__matrix".into(),
                data: "{\"payload\": 1}".into()
            }]
        );
        let events = p.feed(b": comment\ndata: a\ndata: b\n\n");
        assert_eq!(
            events,
            [SseEvent {
                name: String::new(),
                data: "a\nb".into()
            }]
        );
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        assert!(backoff(0) <= Duration::from_millis(625));
        assert!(backoff(3) >= Duration::from_secs(3));
        assert!(backoff(50) <= Duration::from_secs(75));
    }
}
