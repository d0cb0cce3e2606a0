//! `status`: the state of every dependency, in one message.

use std::time::Duration;

use super::{CommandError, Reply};
use crate::{state::AppState, store};

/// `3d 4h`, `2h 5m`, `4m 10s`, `12s`.
pub fn human(duration: Duration) -> String {
    let s = duration.as_secs();
    match (s / 86_400, s % 86_400 / 3600, s % 3600 / 60, s % 60) {
        (d, h, _, _) if d > 0 => format!("{d}d {h}h"),
        (_, h, m, _) if h > 0 => format!("{h}h {m}m"),
        (_, _, m, sec) if m > 0 => format!("{m}m {sec}s"),
        (_, _, _, sec) => format!("{sec}s"),
    }
}

fn ago(ms: i64) -> String {
    human(Duration::from_millis(
        u64::try_from(store::now_ms() - ms).unwrap_or(0),
    ))
}

fn until(ms: i64) -> String {
    let left = ms - store::now_ms();
    if left <= 0 {
        "expired".to_owned()
    } else {
        format!("in {}", human(Duration::from_millis(left as u64)))
    }
}

/// `status`.
pub async fn status(bridge: &AppState) -> Result<Reply, CommandError> {
    let mut lines = vec![format!(
        "**st2-matrix {}**, up {}",
        env!("CARGO_PKG_VERSION"),
        human(bridge.started_at.elapsed())
    )];
    let homeserver =
        match tokio::time::timeout(Duration::from_secs(3), bridge.matrix.versions()).await {
            Ok(Ok(_)) => "ok".to_owned(),
            Ok(Err(e)) => format!("⚠️ {e}"),
            Err(_) => "⚠️ no answer in 3 s".to_owned(),
        };
    lines.push(format!(
        "- Homeserver ({}): {homeserver}",
        bridge.config.homeserver.url
    ));
    match (&bridge.st2, &bridge.config.stackstorm) {
        (Some(st2), Some(config)) => {
            let auth = st2.auth();
            let expiry = auth
                .token_expiry()
                .map(|at| format!(", token expires {}", until(at)))
                .unwrap_or_default();
            lines.push(format!(
                "- StackStorm ({}): credential: {}{expiry}",
                config.url,
                auth.kind()
            ));
            let stream = bridge.stream.get();
            let since = stream
                .since
                .map(|at| format!(" for {}", ago(at)))
                .unwrap_or_default();
            let state = match (stream.connected, &stream.last_error) {
                (true, _) => format!("connected{since}"),
                (false, Some(e)) => format!("⚠️ disconnected{since}: {e}"),
                (false, None) => "connecting".to_owned(),
            };
            lines.push(format!(
                "- Stream (st2.announcement__{}): {state}, {} reconnections",
                config.route, stream.reconnects
            ));
            let rule = bridge
                .notify_rule
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone()
                .unwrap_or_else(|| "not checked yet".into());
            let warn = if matches!(rule.as_str(), "missing" | "disabled") {
                "⚠️ "
            } else {
                ""
            };
            lines.push(format!(
                "- Notify rule {}: {warn}{rule}",
                config.notify_rule
            ));
        }
        _ => lines.push("- StackStorm: not configured".into()),
    }
    lines.push(encryption_line(bridge));
    let outbox = store::outbox::stats(&bridge.store).await?;
    let warn = if outbox.failed > 0 { "⚠️ " } else { "" };
    lines.push(format!(
        "- Outbox: {} pending, {warn}{} failed",
        outbox.pending, outbox.failed
    ));
    let catalog = bridge.aliases.catalog();
    let fetched = catalog
        .fetched_at
        .map(|at| format!(", fetched {} ago", ago(at)))
        .unwrap_or_else(|| ", never fetched".into());
    lines.push(format!(
        "- Aliases: {} enabled{fetched}",
        catalog.aliases().len()
    ));
    let rooms = store::rooms::all_ids(&bridge.store).await?;
    lines.push(format!("- Rooms: {}", rooms.len()));
    for room in rooms {
        let Ok(room_id) = ruma::RoomId::parse(&room) else {
            continue;
        };
        let filter = bridge.packs_for(&room_id);
        let count = bridge.aliases.view(&filter).aliases.len();
        let admin = if bridge.is_admin_room(&room_id) {
            " (admin room)"
        } else {
            ""
        };
        lines.push(format!(
            "  - `{room}`{admin}: {count} aliases (packs {filter})"
        ));
    }
    Ok(Reply::Markdown(lines.join("\n")))
}

/// The bot device's state, or why the bot cannot read encrypted rooms.
fn encryption_line(bridge: &AppState) -> String {
    let Some(e2ee) = &bridge.e2ee else {
        return "- Encryption: off ([encryption] enabled = false): encrypted rooms are told the bot cannot read them".into();
    };
    let status = e2ee.status();
    let cross = if status.cross_signed {
        "cross-signed"
    } else {
        "⚠️ not cross-signed (Element shows it as not verified by its owner)"
    };
    let extensions = match status.extensions_seen {
        Some(true) => String::new(),
        Some(false) => {
            ", ⚠️ transactions carry no MSC3202 fields (see the homeserver's experimental_features)"
                .into()
        }
        None => String::new(),
    };
    let warn = |n: u64| if n > 0 { "⚠️ " } else { "" };
    format!(
        "- Encryption: device `{}`, {cross}, {} tracked users, {} to-device messages received, \
         {}{} undecryptable events, {}{} errors{extensions}",
        status.device_id,
        status.tracked_users,
        status.to_device_received,
        warn(status.undecryptable),
        status.undecryptable,
        warn(status.errors),
        status.errors,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_well() {
        assert_eq!(human(Duration::from_secs(12)), "12s");
        assert_eq!(human(Duration::from_secs(250)), "4m 10s");
        assert_eq!(human(Duration::from_secs(7500)), "2h 5m");
        assert_eq!(human(Duration::from_secs(3 * 86_400 + 4 * 3600)), "3d 4h");
    }
}
