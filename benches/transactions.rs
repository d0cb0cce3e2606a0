//! Inbound throughput: transactions of 100 ordinary (non-command) message events through the
//! real transaction handler — hs_token check, ruma parsing, classification and the persisted
//! dedupe write to a SQLite file — driven in-process (no TCP) so the handler itself is measured.
//!
//! `cargo bench --bench transactions`

use std::sync::atomic::{AtomicU64, Ordering};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use st2_matrix::{config::Config, registration, startup};
use st2_matrix_testkit::homeserver::{HomeserverDouble, events};
use tower::ServiceExt as _;

const EVENTS_PER_TRANSACTION: u64 = 100;

fn bench_transactions(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // The bridge (its crypto store's connection pool above all) is dropped at the end of this
    // function, which must happen inside the runtime's context.
    let _context = runtime.enter();
    let dir = tempfile::tempdir().unwrap();
    let (router, hs_token, _hs) = runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let bind = listener.local_addr().unwrap();
        let text = format!(
            "[homeserver]\nurl = \"http://127.0.0.1:1\"\nserver_name = \"example.org\"\n\
             [appservice]\nbind = \"{bind}\"\nurl = \"http://{bind}\"\n[database]\nurl = \"sqlite://{}\"\n",
            dir.path().join("bench.db").display()
        );
        let mut config = Config::parse(&text, &dir.path().join("config.toml"), std::iter::empty()).unwrap();
        let registration = registration::generate(&config);
        let hs = HomeserverDouble::start(&registration.as_token, "@st2bot:example.org").await;
        config.homeserver.url = hs.url().parse().unwrap();
        let hs_token = registration.hs_token.clone();
        let app = startup::App::build(config, registration, listener).await.unwrap();
        (startup::router(app.bridge()), hs_token, hs)
    });

    let counter = AtomicU64::new(0);
    let mut group = c.benchmark_group("transactions");
    group.throughput(Throughput::Elements(EVENTS_PER_TRANSACTION));
    group.bench_function("100 ordinary messages per transaction", |b| {
        b.iter_batched(
            || {
                let txn = counter.fetch_add(1, Ordering::Relaxed);
                let body = events::transaction((0..EVENTS_PER_TRANSACTION).map(|i| {
                    events::text(
                        "!room:example.org",
                        "@alice:example.org",
                        &format!("$e{txn}_{i}"),
                        "an ordinary message that is not a command, as most traffic in a room is",
                    )
                }));
                http::Request::put(format!("/_matrix/app/v1/transactions/{txn}"))
                    .header("authorization", format!("Bearer {hs_token}"))
                    .header("content-type", "application/json")
                    .body(axum::body::Body::from(serde_json::to_vec(&body).unwrap()))
                    .unwrap()
            },
            |request| {
                let response = runtime.block_on(router.clone().oneshot(request)).unwrap();
                assert_eq!(response.status(), 200);
            },
            criterion::BatchSize::SmallInput,
        );
    });
    group.finish();
}

criterion_group!(benches, bench_transactions);
criterion_main!(benches);
