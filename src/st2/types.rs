//! StackStorm request and response bodies the bridge uses (st2-protocol.md §3).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// `POST /api/v1/aliasexecution` body.
#[derive(Debug, Clone, Serialize)]
pub struct AliasExecutionRequest {
    /// The alias name (StackStorm looks aliases up by name).
    pub name: String,
    /// The representation that matched.
    pub format: String,
    /// The command as typed (without the prefix).
    pub command: String,
    /// The Matrix user who typed it.
    pub user: String,
    /// The room id.
    pub source_channel: String,
    /// Where the result must go back to: room, event, thread, sender.
    pub source_context: Value,
    /// Announcement route for the result.
    pub notification_route: String,
}

/// One result of `POST /api/v1/aliasexecution` (a list of them for `match_multiple` formats).
#[derive(Debug, Clone, Deserialize)]
pub struct AliasExecutionResult {
    /// The execution started.
    pub execution: Execution,
    /// The rendered `ack.format`, when the alias has one.
    #[serde(default)]
    pub message: Option<String>,
    /// The rendered `ack.extra`.
    #[serde(default)]
    pub extra: Option<Value>,
}

/// An execution, as far as the bridge reads it.
#[derive(Debug, Clone, Deserialize)]
pub struct Execution {
    /// Execution id.
    pub id: String,
    /// `requested`, `running`, `succeeded`, `failed`…
    #[serde(default)]
    pub status: Option<String>,
    /// Link to the execution in the web UI (st2 ≥ 2.0).
    #[serde(default)]
    pub web_url: Option<String>,
    /// The action, e.g. `{"ref": "core.local"}`.
    #[serde(default)]
    pub action: Option<Map<String, Value>>,
    /// The action's result, once finished.
    #[serde(default)]
    pub result: Option<Value>,
    /// Start time (ISO 8601).
    #[serde(default)]
    pub start_timestamp: Option<String>,
    /// End time (ISO 8601), once finished.
    #[serde(default)]
    pub end_timestamp: Option<String>,
    /// Context (alias reference, user, …).
    #[serde(default)]
    pub context: Option<Map<String, Value>>,
    /// The parent execution's id (a workflow's task, an inquiry's workflow).
    #[serde(default)]
    pub parent: Option<String>,
    /// The runner, e.g. `{"name": "inquirer"}`.
    #[serde(default)]
    pub runner: Option<Map<String, Value>>,
    /// The parameters it ran with.
    #[serde(default)]
    pub parameters: Option<Map<String, Value>>,
    /// Seconds it took, once finished.
    #[serde(default)]
    pub elapsed_seconds: Option<f64>,
}

impl Execution {
    /// The action's reference (`pack.name`), when StackStorm sent it.
    pub fn action_ref(&self) -> Option<&str> {
        self.action.as_ref()?.get("ref")?.as_str()
    }

    /// Who started it: the context's `user` (for chatops, the bridge's or the person's
    /// StackStorm user).
    pub fn started_by(&self) -> Option<&str> {
        self.context.as_ref()?.get("user")?.as_str()
    }
}

/// The `source_context` the chat sent with the alias execution that started `execution` (an
/// execution object as StackStorm returns it): StackStorm keeps it in the notify data of the
/// live action (`liveaction.notify.on-complete.data.source_context`) and nowhere else. Read
/// from the JSON rather than kept in [`Execution`], which every stream update is parsed into.
pub fn source_context_of(execution: &Value) -> Option<&Value> {
    execution
        .pointer("/liveaction/notify/on-complete/data/source_context")
        .filter(|v| !v.is_null())
}

impl Execution {
    /// Whether the execution reached a final state.
    pub fn is_finished(&self) -> bool {
        matches!(
            self.status.as_deref(),
            Some("succeeded" | "failed" | "timeout" | "canceled" | "abandoned")
        )
    }
}

/// A pending inquiry (`GET /api/v1/inquiries`): a `core.ask`-like execution waiting for a
/// person's response. Its id is the execution's.
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
pub struct Inquiry {
    /// The inquiry (and execution) id.
    pub id: String,
    /// Where the workflow's author wants it asked (free text; often a room or channel).
    #[serde(default)]
    pub route: String,
    /// Minutes it stays answerable (only enforced when StackStorm purges inquiries).
    #[serde(default)]
    pub ttl: Option<i64>,
    /// StackStorm users allowed to answer (empty: anyone).
    #[serde(default)]
    pub users: Vec<String>,
    /// StackStorm roles allowed to answer (empty: any; ignored without RBAC).
    #[serde(default)]
    pub roles: Vec<String>,
    /// The JSON schema of the expected response.
    #[serde(default)]
    pub schema: Value,
}

/// Either one value or a list of them (alias execution answers a list for `match_multiple`).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany<T> {
    /// A single value.
    One(T),
    /// A list.
    Many(Vec<T>),
}

impl<T> OneOrMany<T> {
    /// As a list.
    pub fn into_vec(self) -> Vec<T> {
        match self {
            OneOrMany::One(one) => vec![one],
            OneOrMany::Many(many) => many,
        }
    }
}

/// `POST /auth/v1/tokens` answer.
#[derive(Debug, Clone, Deserialize)]
pub struct TokenResponse {
    /// The token.
    pub token: String,
    /// ISO 8601 UTC, e.g. `2016-05-28T12:39:28.650231Z`.
    pub expiry: String,
    /// The StackStorm user.
    #[serde(default)]
    pub user: Option<String>,
}

/// Parses a StackStorm timestamp into unix milliseconds: RFC 3339 (`2016-05-28T12:39:28.650231Z`,
/// any offset, which is respected), or the same without an offset (or with a space for the
/// `T`), which StackStorm means as UTC.
pub fn parse_timestamp_ms(s: &str) -> Option<i64> {
    use time::{OffsetDateTime, PrimitiveDateTime, format_description::well_known::Rfc3339};
    let s = s.trim().replacen(' ', "T", 1);
    let at = OffsetDateTime::parse(&s, &Rfc3339)
        .or_else(|_| {
            // No offset: read it as a local date-time, in UTC.
            let iso = time::format_description::well_known::Iso8601::DEFAULT;
            PrimitiveDateTime::parse(&s, &iso).map(PrimitiveDateTime::assume_utc)
        })
        .ok()?;
    i64::try_from(at.unix_timestamp_nanos() / 1_000_000).ok()
}

/// Formats unix milliseconds as StackStorm writes timestamps and its `timestamp_gt` /
/// `timestamp_lt` filters accept them (`isotime.ISO8601_UTC_REGEX`):
/// `2016-05-28T12:39:28.650000Z`.
pub fn format_timestamp_ms(ms: i64) -> String {
    let at = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second(),
        at.microsecond()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_written_as_st2_filters_read_them() {
        assert_eq!(
            format_timestamp_ms(1_464_439_168_650),
            "2016-05-28T12:39:28.650000Z"
        );
        assert_eq!(format_timestamp_ms(0), "1970-01-01T00:00:00.000000Z");
        let ms = 1_765_000_000_123;
        assert_eq!(parse_timestamp_ms(&format_timestamp_ms(ms)), Some(ms));
    }

    #[test]
    fn the_source_context_is_read_from_the_notify_data() {
        let execution = serde_json::json!({
            "id": "5e1",
            "liveaction": {"notify": {"on-complete": {"routes": ["matrix"],
                "data": {"user": "@a:x", "source_context": {"event_id": "$c"}}}}},
        });
        assert_eq!(source_context_of(&execution).unwrap()["event_id"], "$c");
        assert_eq!(source_context_of(&serde_json::json!({"id": "5e2"})), None);
    }

    #[test]
    fn st2_timestamps_parse() {
        assert_eq!(parse_timestamp_ms("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_timestamp_ms("2016-05-28T12:39:28.650231Z"),
            Some(1_464_439_168_650)
        );
        assert_eq!(
            parse_timestamp_ms("2016-05-28T12:39:28+00:00"),
            Some(1_464_439_168_000)
        );
        assert_eq!(
            parse_timestamp_ms("2000-02-29T00:00:00.5Z"),
            Some(951_782_400_500)
        );
        assert_eq!(
            parse_timestamp_ms("2016-05-28T14:39:28+02:00"),
            parse_timestamp_ms("2016-05-28T12:39:28Z"),
            "an offset is respected"
        );
        assert_eq!(
            parse_timestamp_ms("2016-05-28 12:39:28"),
            parse_timestamp_ms("2016-05-28T12:39:28Z"),
            "no offset means UTC"
        );
        assert_eq!(parse_timestamp_ms("not a time"), None);
        assert_eq!(parse_timestamp_ms("2016-13-01T00:00:00Z"), None);
    }

    #[test]
    fn one_or_many_reads_both_shapes() {
        let one: OneOrMany<u8> = serde_json::from_str("1").unwrap();
        let many: OneOrMany<u8> = serde_json::from_str("[1, 2]").unwrap();
        assert_eq!(one.into_vec(), [1]);
        assert_eq!(many.into_vec(), [1, 2]);
    }
}
