//! `GET /stream/v1/stream`: st2stream's Server-Sent Events.
//!
//! On connect a lone `\n`, then a `\n` heartbeat whenever nothing was sent for the heartbeat
//! interval, and events as `event: <name>\ndata: <compact JSON>\n\n`. No `id:`/`retry:`, so
//! nothing can be resumed: events published while a client is away are gone. A cut ends the
//! body with an error, which drops the TCP connection mid-stream as a crashed st2stream would.
//!
//! Filters as st2's `stream/listener.py` applies them (st2 c2eaf56): `events`, `action_refs`
//! and `execution_ids` are comma-separated lists (the router's `split(",")`, no trimming; an
//! empty value is a list of one empty string, which matches nothing). No `events` means the
//! default whitelist below. An event passes if its name `fnmatch`es one of `events`, then,
//! when `action_refs` is given, if its `action.ref` is in it, then, when `execution_ids` is
//! given, if its id is in it; announcements have neither, so either filter drops them. With
//! `end_event` and `end_execution_id`, the stream ends after the event of that name for that
//! execution in a completed status (whether or not the filters let it through).

use std::collections::HashMap;
use std::io;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::stream;
use tokio::sync::broadcast::{self, error::RecvError};
use tokio_util::sync::CancellationToken;

use super::http::Fault;
use super::state::{BusEvent, Shared};

/// st2's default `events` whitelist, used when the client passes none.
const DEFAULT_EVENTS: [&str; 7] = [
    "st2.announcement__*",
    "st2.execution__create",
    "st2.execution__update",
    "st2.execution__delete",
    "st2.liveaction__create",
    "st2.liveaction__update",
    "st2.liveaction__delete",
];

/// Counts a connection for [`super::St2Double::stream_subscribers`] while it lives, and keeps
/// its filter registered for counting what a published event reaches.
struct Subscriber(Arc<Shared>, u64);

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.0.subscribers.fetch_sub(1, Ordering::SeqCst);
        self.0
            .filters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.1);
    }
}

/// What one connection asked for: `events` patterns and the `action_refs`/`execution_ids`
/// filters.
#[derive(Debug, Clone)]
pub(crate) struct Filter {
    patterns: Vec<String>,
    action_refs: Option<Vec<String>>,
    execution_ids: Option<Vec<String>>,
}

impl Filter {
    /// `_should_include_event`, then the `action_refs` and `execution_ids` filters.
    pub(crate) fn passes(&self, event: &BusEvent) -> bool {
        let listed = |filter: &Option<Vec<String>>, value: &Option<String>| match filter {
            None => true,
            Some(list) => value.as_ref().is_some_and(|v| list.contains(v)),
        };
        self.patterns.iter().any(|p| fnmatch(p, &event.name))
            && listed(&self.action_refs, &event.action_ref)
            && listed(&self.execution_ids, &event.execution_id)
    }
}

struct Conn {
    rx: broadcast::Receiver<BusEvent>,
    cut: CancellationToken,
    heartbeat: Duration,
    filter: Filter,
    end: Option<(String, String)>,
    greeted: bool,
    done: bool,
    _subscriber: Subscriber,
}

/// The stream handler (authentication already done by the route layer).
pub(crate) async fn stream(
    State(shared): State<Arc<Shared>>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let heartbeat = {
        let state = shared.state();
        if !state.stream_available {
            // Stands in for the proxy's answer while st2stream is down.
            return Fault::new(StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable")
                .into_response();
        }
        // A zero interval would spin; a millisecond is the smallest useful heartbeat.
        state.heartbeat.max(Duration::from_millis(1))
    };
    let list = |name: &str| -> Option<Vec<String>> {
        query
            .get(name)
            .map(|v| v.split(',').map(str::to_owned).collect())
    };
    let patterns =
        list("events").unwrap_or_else(|| DEFAULT_EVENTS.iter().map(|e| (*e).to_owned()).collect());
    let end = match (query.get("end_event"), query.get("end_execution_id")) {
        (Some(event), Some(id)) if !event.is_empty() && !id.is_empty() => {
            Some((event.clone(), id.clone()))
        }
        _ => None,
    };
    // Subscribe before answering, so nothing published after the client sees the first
    // byte can be missed.
    let rx = shared.events.subscribe();
    shared.subscribers.fetch_add(1, Ordering::SeqCst);
    let filter = Filter {
        patterns,
        action_refs: list("action_refs"),
        execution_ids: list("execution_ids"),
    };
    let number = shared.next_connection.fetch_add(1, Ordering::SeqCst);
    shared
        .filters
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(number, filter.clone());
    let conn = Conn {
        rx,
        cut: shared.stream_cut_token(),
        heartbeat,
        filter,
        end,
        greeted: false,
        done: false,
        _subscriber: Subscriber(shared.clone(), number),
    };
    let body = stream::unfold(conn, next_chunk);
    (
        [
            (header::CONTENT_TYPE, "text/event-stream; charset=UTF-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        [("x-accel-buffering", "no")],
        Body::from_stream(body),
    )
        .into_response()
}

async fn next_chunk(mut conn: Conn) -> Option<(Result<Bytes, io::Error>, Conn)> {
    if conn.done {
        return None;
    }
    if !conn.greeted {
        conn.greeted = true;
        return Some((Ok(Bytes::from_static(b"\n")), conn));
    }
    loop {
        tokio::select! {
            _ = conn.cut.cancelled() => {
                conn.done = true;
                let err = io::Error::new(io::ErrorKind::ConnectionAborted, "stream cut by the test");
                return Some((Err(err), conn));
            }
            received = tokio::time::timeout(conn.heartbeat, conn.rx.recv()) => match received {
                Err(_idle) => return Some((Ok(Bytes::from_static(b"\n")), conn)),
                Ok(Ok(event)) => {
                    if conn.is_end(&event) {
                        conn.done = true;
                    }
                    if conn.filter.passes(&event) {
                        let frame = format!("event: {}\ndata: {}\n\n", event.name, event.data);
                        return Some((Ok(Bytes::from(frame)), conn));
                    }
                    if conn.done {
                        return None;
                    }
                }
                Ok(Err(RecvError::Lagged(_))) => continue,
                Ok(Err(RecvError::Closed)) => return None,
            },
        }
    }
}

/// st2's `LIVEACTION_COMPLETED_STATES`.
const COMPLETED: [&str; 5] = ["succeeded", "failed", "timed_out", "canceled", "abandoned"];

impl Conn {
    /// Whether this is the event `end_event`/`end_execution_id` wait for.
    fn is_end(&self, event: &BusEvent) -> bool {
        self.end.as_ref().is_some_and(|(name, id)| {
            event.name == *name
                && event.execution_id.as_deref() == Some(id.as_str())
                && event
                    .status
                    .as_deref()
                    .is_some_and(|s| COMPLETED.contains(&s))
        })
    }
}

/// Python's `fnmatch.fnmatch` on POSIX: `*`, `?`, `[seq]`, `[!seq]`, case-sensitive.
pub(crate) fn fnmatch(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    matches_at(&p, &n)
}

fn matches_at(p: &[char], n: &[char]) -> bool {
    match p.first() {
        None => n.is_empty(),
        Some('*') => (0..=n.len()).any(|i| matches_at(&p[1..], &n[i..])),
        Some('?') => !n.is_empty() && matches_at(&p[1..], &n[1..]),
        Some('[') => {
            let Some(close) = p.iter().skip(2).position(|c| *c == ']').map(|i| i + 2) else {
                return n.first() == Some(&'[') && matches_at(&p[1..], &n[1..]);
            };
            let Some(c) = n.first() else { return false };
            let (negate, set) = match p[1] {
                '!' => (true, &p[2..close]),
                _ => (false, &p[1..close]),
            };
            let mut hit = false;
            let mut i = 0;
            while i < set.len() {
                if i + 2 < set.len() && set[i + 1] == '-' {
                    hit |= set[i] <= *c && *c <= set[i + 2];
                    i += 3;
                } else {
                    hit |= set[i] == *c;
                    i += 1;
                }
            }
            hit != negate && matches_at(&p[close + 1..], &n[1..])
        }
        Some(c) => n.first() == Some(c) && matches_at(&p[1..], &n[1..]),
    }
}

#[cfg(test)]
mod tests {
    use super::fnmatch;

    #[test]
    fn fnmatch_globs_like_python() {
        assert!(fnmatch("st2.announcement__*", "st2.announcement__matrix"));
        assert!(!fnmatch(
            "st2.announcement__matrix",
            "st2.announcement__matrix2"
        ));
        assert!(fnmatch("st2.execution__[cu]*", "st2.execution__update"));
        assert!(!fnmatch("st2.execution__[!cu]*", "st2.execution__update"));
        assert!(fnmatch("st2.?nnouncement__x", "st2.announcement__x"));
    }
}
