//! Resident memory of the running bridge (the release binary, a separate process), read from
//! /proc: VmRSS (split into anonymous and file-backed) and the peak VmHWM.
//!
//! 1. idle: against a homeserver double, no StackStorm, 5 s after `/ready`;
//! 2. with 10,000 aliases cached: a StackStorm double serving 10,000 aliases (30,000 formats,
//!    fetched page by page, stored, compiled), 5 s after the bridge reports them loaded.
//!
//! It prints the figures and asserts nothing. `cargo bench --bench idle_memory`
//! (`IDLE_MEMORY_SMAPS=1` adds the resident and anonymous size of every mapping over 64 KiB).

use std::{process::Stdio, time::Duration};

use serde_json::{Value, json};
use st2_matrix::{config::Config, registration};
use st2_matrix_testkit::{
    homeserver::HomeserverDouble,
    st2::{St2Double, St2Options},
};

#[tokio::main(flavor = "current_thread")]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo bench -- --list` and friends: nothing to enumerate.
    }
    st2_matrix::tls::install_crypto_provider();
    measure("idle", None).await;
    let st2 = St2Double::start(St2Options::default()).await;
    st2.set_aliases((0..10_000).map(synthetic_alias).collect());
    let key = st2.add_api_key("bot");
    measure("with 10,000 aliases cached", Some((&st2, key))).await;
}

/// A realistic alias: a plain format, an object format with display and representation, and
/// a format with a default.
fn synthetic_alias(i: usize) -> Value {
    const VERBS: &[&str] = &[
        "deploy", "restart", "show", "scale", "backup", "check", "rollback", "tail",
    ];
    let verb = VERBS[i % VERBS.len()];
    let noun = format!("service{i}");
    json!({
        "name": format!("alias{i}"), "pack": format!("pack{}", i % 50), "ref": format!("pack{}.alias{i}", i % 50),
        "action_ref": "core.local", "enabled": true, "description": format!("{verb} the {noun} service"),
        "formats": [
            format!("{verb} {noun} on {{{{host}}}}"),
            {"display": format!("{verb} {noun} to <env>"), "representation": [format!("{verb} {noun} to {{{{env}}}}")]},
            format!("{verb} {noun} with {{{{count=1}}}} replicas"),
        ],
        "ack": {"format": format!("{verb} started")},
    })
}

async fn measure(label: &str, st2: Option<(&St2Double, String)>) {
    let dir = tempfile::tempdir().unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let bind = listener.local_addr().unwrap();
    drop(listener);
    let stackstorm = st2
        .as_ref()
        .map(|(st2, key)| {
            format!(
                "[stackstorm]\nurl = \"{}\"\napi_key = \"{key}\"\n",
                st2.url()
            )
        })
        .unwrap_or_default();
    let write_config = |hs_url: &str| {
        let text = format!(
            "[homeserver]\nurl = \"{hs_url}\"\nserver_name = \"example.org\"\n[appservice]\nbind = \"{bind}\"\n\
             url = \"http://{bind}\"\n[database]\nurl = \"sqlite://{}\"\n[log]\nfilter = \"warn\"\n{stackstorm}",
            dir.path().join("bridge.db").display()
        );
        std::fs::write(dir.path().join("config.toml"), text).unwrap();
    };
    write_config("http://127.0.0.1:1");
    let config = Config::load(&dir.path().join("config.toml")).unwrap();
    let reg = registration::generate(&config);
    registration::write(
        &reg,
        &dir.path().join("registration.yaml"),
        false,
        config.encryption.enabled,
    )
    .unwrap();
    let hs = HomeserverDouble::start(&reg.as_token, "@st2bot:example.org").await;
    hs.set_appservice(&format!("http://{bind}"), &reg.hs_token);
    write_config(&hs.url());

    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_st2-matrix"))
        .args(["run", "--config"])
        .arg(dir.path().join("config.toml"))
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("start the bridge");
    let pid = child.id().unwrap();
    let client = reqwest::Client::new();
    let ready = format!("http://{bind}/ready");
    let mut up = false;
    for _ in 0..400 {
        if client
            .get(&ready)
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
        {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(up, "the bridge did not become ready");
    if st2.is_some() {
        let metrics = format!("http://{bind}/metrics");
        let mut loaded = false;
        for _ in 0..1200 {
            let text = client
                .get(&metrics)
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            if text
                .lines()
                .any(|l| l.starts_with("st2_matrix_aliases ") && l.ends_with(" 10000"))
            {
                loaded = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(loaded, "the bridge did not load the 10,000 aliases");
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .map(|l| l.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap())
            .unwrap()
    };
    let (rss, hwm, threads) = (field("VmRSS:"), field("VmHWM:"), field("Threads:"));
    let (anon, file) = (field("RssAnon:"), field("RssFile:"));
    let mib = |kib: u64| kib as f64 / 1024.0;
    println!(
        "memory ({label}): VmRSS {:.1} MiB (anonymous {:.1}, file-backed {:.1}), peak VmHWM {:.1} MiB, {threads} threads",
        mib(rss),
        mib(anon),
        mib(file),
        mib(hwm)
    );
    if std::env::var_os("IDLE_MEMORY_SMAPS").is_some() {
        // Diagnostics: resident (and of it, anonymous) size of every mapping over 64 KiB.
        let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap();
        let kib = |v: &str| v.trim().trim_end_matches(" kB").parse::<u64>().unwrap();
        let (mut header, mut rss) = (String::new(), 0);
        for line in smaps.lines() {
            if line.contains('-') && !line.starts_with(char::is_uppercase) {
                header = line.to_owned();
            } else if let Some(kb) = line.strip_prefix("Rss:") {
                rss = kib(kb);
            } else if let Some(kb) = line.strip_prefix("Anonymous:")
                && rss > 64
            {
                println!("{rss:>8} kB ({:>5} anon)  {header}", kib(kb));
            }
        }
    }
    child.kill().await.unwrap();
}
