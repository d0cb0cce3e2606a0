//! Results through the durable outbox: `POST /chatops/message` (webhook, stored in SQLite,
//! answered 202) → outbox sender → a fast homeserver double. Two measurements:
//!
//! 1. sustained throughput: 10,000 messages over 10 rooms, posted by 16 concurrent clients;
//!    messages/s from the first POST to the last message received by the homeserver double;
//! 2. latency at a steady 500 messages/s for 10 s: time from the webhook's 202 to the double
//!    receiving the message (p50, p99, max).
//!
//! Everything runs in one process on the machine's cores (bridge, clients and double compete
//! for the CPU, as they would on a small host). It reports; it asserts nothing.
//! `cargo bench --bench outbox`

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use serde_json::json;
use st2_matrix::{config::Config, registration, startup::App, store};
use st2_matrix_testkit::homeserver::HomeserverDouble;

const SECRET: &str = "benchmark-webhook-secret";
const ROOMS: usize = 10;

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

async fn run() {
    st2_matrix::tls::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let bind = listener.local_addr().unwrap();
    let text = format!(
        "[homeserver]\nurl = \"http://127.0.0.1:1\"\nserver_name = \"example.org\"\n[appservice]\nbind = \"{bind}\"\n\
         url = \"http://{bind}\"\n[database]\nurl = \"sqlite://{}\"\n[webhook]\nsecret = \"{SECRET}\"\n[log]\nfilter = \"warn\"\n",
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
    let client = reqwest::Client::new();
    let url = format!("http://{bind}/chatops/message");

    // 1. Throughput.
    let total = 10_000usize;
    let started = Instant::now();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut posters = Vec::new();
    for _ in 0..16 {
        let (client, url, next) = (client.clone(), url.clone(), next.clone());
        posters.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= total {
                    return;
                }
                post(&client, &url, i % ROOMS, &format!("t{i}")).await;
            }
        }));
    }
    for poster in posters {
        poster.await.unwrap();
    }
    let accepted = started.elapsed();
    wait_for(&hs, total).await;
    let elapsed = started.elapsed();
    println!(
        "outbox throughput: {total} messages in {:.2} s = {:.0} messages/s delivered ({:.0}/s accepted by the webhook)",
        elapsed.as_secs_f64(),
        total as f64 / elapsed.as_secs_f64(),
        total as f64 / accepted.as_secs_f64()
    );

    // 2. Latency at 500 messages/s.
    let rate = 500u64;
    let seconds = 10u64;
    let mut accepted_at: HashMap<String, Instant> = HashMap::new();
    let mut ticker = tokio::time::interval(Duration::from_micros(1_000_000 / rate));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut in_flight = tokio::task::JoinSet::new();
    for i in 0..(rate * seconds) as usize {
        ticker.tick().await;
        let (client, url) = (client.clone(), url.clone());
        in_flight.spawn(async move {
            let tag = format!("l{i}");
            post(&client, &url, i % ROOMS, &tag).await;
            (tag, Instant::now())
        });
    }
    while let Some(done) = in_flight.join_next().await {
        let (tag, at) = done.unwrap();
        accepted_at.insert(tag, at);
    }
    wait_for(&hs, total + (rate * seconds) as usize).await;
    let mut latencies: Vec<Duration> = hs
        .sent()
        .into_iter()
        .filter_map(|s| {
            let tag = s.content["body"].as_str()?.to_owned();
            accepted_at
                .get(&tag)
                .map(|&at| s.received_at.saturating_duration_since(at))
        })
        .collect();
    latencies.sort();
    let pct = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
    println!(
        "outbox latency at {rate} messages/s for {seconds} s ({} messages), webhook 202 → homeserver: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        latencies.len(),
        pct(0.50).as_secs_f64() * 1000.0,
        pct(0.99).as_secs_f64() * 1000.0,
        latencies.last().unwrap().as_secs_f64() * 1000.0
    );
    let _ = stop.send(());
    server.await.unwrap().unwrap();
}

fn room_id(i: usize) -> String {
    format!("!bench{i}:example.org")
}

async fn post(client: &reqwest::Client, url: &str, room: usize, tag: &str) {
    let response = client
        .post(url)
        .bearer_auth(SECRET)
        .json(&json!({"channel": room_id(room), "message": tag}))
        .send()
        .await
        .expect("webhook reachable");
    assert_eq!(
        response.status(),
        202,
        "{}",
        response.text().await.unwrap_or_default()
    );
}

async fn wait_for(hs: &HomeserverDouble, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(300);
    while hs.sent_count() < n {
        assert!(
            Instant::now() < deadline,
            "only {} of {n} messages arrived",
            hs.sent_count()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
