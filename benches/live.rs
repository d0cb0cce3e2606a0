//! Live status under load: 1,000 executions started from rooms, all running at once, each
//! updated by StackStorm every second for 30 s, then all ending. The bridge's live status
//! ([`st2_matrix::live::Live`]) takes every update and edits the acks (coalesced to one edit per
//! execution per `[live] edit_interval`, 3 s) through the real outbox into a homeserver double.
//!
//! Reported: the time the bridge takes to absorb each second's 1,000 updates, the outbox's
//! backlog each second (it must not grow), the edits the homeserver received, the bridge's CPU
//! time and the process's resident memory; then how long the 1,000 ends (edit + ✅) take to
//! drain. The stream's HTTP/SSE reading is not in the measurement (the updates are handed to
//! the live status as the stream consumer does). It reports; it asserts nothing.
//! `cargo bench --bench live`

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use serde_json::json;
use st2_matrix::{
    config::Config,
    registration,
    st2::types::Execution,
    startup::App,
    store::{self, executions},
};
use st2_matrix_testkit::homeserver::HomeserverDouble;

const EXECUTIONS: usize = 1_000;
const ROOMS: usize = 10;
const SECONDS: usize = 30;

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run());
}

fn room_id(i: usize) -> String {
    format!("!room{i}:example.org")
}

fn execution_id(i: usize) -> String {
    format!("{i:024x}")
}

fn update(i: usize, status: &str, started: &str) -> Execution {
    serde_json::from_value(json!({
        "id": execution_id(i), "status": status, "start_timestamp": started,
        "action": {"ref": "core.local"}, "runner": {"name": "local-shell-cmd"},
    }))
    .unwrap()
}

/// CPU time (user + system) of this process so far.
fn cpu_time() -> Duration {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes a complete `rusage` into the pointer it is given.
    let usage = unsafe {
        libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr());
        usage.assume_init()
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// The process's resident memory, in MiB.
fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

async fn run() {
    st2_matrix::tls::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let bind = listener.local_addr().unwrap();
    let text = format!(
        "[homeserver]\nurl = \"http://127.0.0.1:1\"\nserver_name = \"example.org\"\n[appservice]\nbind = \"{bind}\"\n\
         url = \"http://{bind}\"\n[database]\nurl = \"sqlite://{}\"\n[encryption]\nenabled = false\n[log]\nfilter = \"warn\"\n",
        dir.path().join("bench.db").display()
    );
    let mut config =
        Config::parse(&text, &dir.path().join("config.toml"), std::iter::empty()).unwrap();
    let reg = registration::generate(&config);
    let hs = Arc::new(HomeserverDouble::start(&reg.as_token, "@st2bot:example.org").await);
    config.homeserver.url = hs.url().parse().unwrap();
    let app = App::build(config, reg, listener).await.unwrap();
    let bridge = app.bridge();
    for room in 0..ROOMS {
        store::rooms::joined(&bridge.store, &room_id(room), None, false)
            .await
            .unwrap();
    }
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until_stopped(async move {
        let _ = stopped.await;
    }));

    // 1,000 executions started from the rooms, each with its ack.
    for i in 0..EXECUTIONS {
        let room = room_id(i % ROOMS);
        let room_ref = ruma::RoomId::parse(&room).unwrap();
        let mut tx = bridge.store.begin().await.unwrap();
        executions::record(
            &mut tx,
            &executions::Execution {
                execution_id: execution_id(i),
                room_id: room.clone(),
                event_id: format!("$cmd{i}"),
                thread_root: None,
                sender: "@alice:example.org".into(),
                alias_ref: "ops.deploy".into(),
                created_at: store::now_ms(),
            },
        )
        .await
        .unwrap();
        let ack = format!("Running `ops.deploy`: execution `{}`.", execution_id(i));
        let content = json!({"msgtype": "m.notice", "body": ack});
        let txn = bridge
            .outbox
            .queue_event_in(&mut tx, &room_ref, "m.room.message", &content, None)
            .await
            .unwrap();
        executions::set_ack(&mut tx, &execution_id(i), &ack, &txn)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        bridge.live.follow(&execution_id(i));
    }
    bridge.outbox.wake();
    while hs.sent_count() < EXECUTIONS {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let acks = hs.sent_count();
    let started = "2026-12-07T12:00:00.000000Z";
    println!(
        "live: {EXECUTIONS} running executions in {ROOMS} rooms, an update each every second for {SECONDS} s"
    );
    let cpu_before = cpu_time();
    let wall = Instant::now();
    let mut absorb = Vec::new();
    let mut backlog = Vec::new();
    for second in 0..SECONDS {
        let tick = Instant::now();
        for i in 0..EXECUTIONS {
            bridge
                .live
                .on_update(&bridge.core, &update(i, "running", started))
                .await
                .unwrap();
        }
        // What the stream consumer's timer does every second.
        bridge.live.flush(&bridge.core).await;
        absorb.push(tick.elapsed());
        let pending = store::outbox::stats(&bridge.store).await.unwrap().pending;
        backlog.push(pending);
        if second % 5 == 4 {
            println!(
                "  after {:>2} s: this second's updates absorbed in {:>4} ms; outbox backlog {pending}; edits received so far {}",
                second + 1,
                absorb.last().unwrap().as_millis(),
                hs.sent_count() - acks
            );
        }
        if let Some(rest) = Duration::from_secs(1).checked_sub(tick.elapsed()) {
            tokio::time::sleep(rest).await;
        }
    }
    let running_cpu = cpu_time() - cpu_before;
    let running_wall = wall.elapsed();
    let edits = hs.sent_count() - acks;
    let mut sorted = absorb.clone();
    sorted.sort();
    println!(
        "  updates: {} in {:.1} s; absorbing a second's {EXECUTIONS}: median {} ms, max {} ms",
        EXECUTIONS * SECONDS,
        running_wall.as_secs_f64(),
        sorted[sorted.len() / 2].as_millis(),
        sorted.last().unwrap().as_millis()
    );
    println!(
        "  edits sent: {edits} ({:.0}/s; coalesced from {} updates); outbox backlog max {}, last {}",
        edits as f64 / running_wall.as_secs_f64(),
        EXECUTIONS * SECONDS,
        backlog.iter().max().unwrap(),
        backlog.last().unwrap()
    );
    println!(
        "  CPU: {:.1} s over {:.1} s ({:.0} % of one core); RSS {:.1} MiB (bench process, homeserver double included)",
        running_cpu.as_secs_f64(),
        running_wall.as_secs_f64(),
        100.0 * running_cpu.as_secs_f64() / running_wall.as_secs_f64(),
        rss_mib()
    );

    // All end at once: each ack's last edit and a ✅ on its command.
    let sent_before = hs.sent_count();
    let ending = Instant::now();
    for i in 0..EXECUTIONS {
        bridge
            .live
            .on_update(&bridge.core, &update(i, "succeeded", started))
            .await
            .unwrap();
    }
    while hs.sent_count() < sent_before + 2 * EXECUTIONS {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!(
        "  {EXECUTIONS} ends (an edit and a ✅ each) delivered in {} ms",
        ending.elapsed().as_millis()
    );
    let _ = stop.send(());
    let _ = server.await;
}
