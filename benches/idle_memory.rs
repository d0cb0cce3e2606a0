//! Idle resident memory of the running bridge: starts the release binary against a homeserver
//! double, waits until `/ready`, lets it idle, and reads VmRSS/VmHWM from /proc. Prints the
//! figures; it asserts nothing (numbers belong in the README, not in pass/fail tests).
//!
//! `cargo bench --bench idle_memory`

use std::{process::Stdio, time::Duration};

use st2_matrix::{config::Config, registration};
use st2_matrix_testkit::homeserver::HomeserverDouble;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo bench -- --list` and friends: nothing to enumerate.
    }
    st2_matrix::tls::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let bind = listener.local_addr().unwrap();
    drop(listener);
    let write_config = |hs_url: &str| {
        let text = format!(
            "[homeserver]\nurl = \"{hs_url}\"\nserver_name = \"example.org\"\n[appservice]\nbind = \"{bind}\"\n\
             url = \"http://{bind}\"\n[database]\nurl = \"sqlite://{}\"\n[log]\nfilter = \"warn\"\n",
            dir.path().join("bridge.db").display()
        );
        std::fs::write(dir.path().join("config.toml"), text).unwrap();
    };
    write_config("http://127.0.0.1:1");
    let config = Config::load(&dir.path().join("config.toml")).unwrap();
    let reg = registration::generate(&config);
    registration::write(&reg, &dir.path().join("registration.yaml"), false).unwrap();
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
    for _ in 0..200 {
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
        "idle_memory: VmRSS {:.1} MiB (anonymous {:.1}, file-backed {:.1}), peak VmHWM {:.1} MiB, {threads} threads, after 5 s idle",
        mib(rss),
        mib(anon),
        mib(file),
        mib(hwm)
    );
    if std::env::var_os("IDLE_MEMORY_SMAPS").is_some() {
        // Diagnostics: resident size of every mapping over 256 KiB.
        let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap();
        let mut header = String::new();
        for line in smaps.lines() {
            if line.contains('-') && !line.starts_with(char::is_uppercase) {
                header = line.to_owned();
            } else if let Some(kb) = line.strip_prefix("Rss:") {
                let kb: u64 = kb.trim().trim_end_matches(" kB").parse().unwrap();
                if kb > 256 {
                    println!("{kb:>8} kB  {header}");
                }
            }
        }
    }
    child.kill().await.unwrap();
}
