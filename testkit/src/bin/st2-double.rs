//! `st2-double`: the StackStorm double as a process of its own, for `scripts/demo.sh` and for
//! trying the bridge by hand. Tests keep starting the double in-process (`St2Double::start`).
//!
//! ```text
//! st2-double [--bind ADDR] [--api-key KEY] [--finish-after SECS]
//! ```
//!
//! It serves StackStorm's 24 real example aliases (`fixtures/st2-aliases-real.json`) and the
//! double's asking workflow (`ask [question]`, which waits for an inquiry answer), accepts
//! `KEY` as an API key of the user `chatops_bot`, and finishes every execution it started
//! after `SECS` seconds (default 2) with a made-up successful result, so the bridge's result
//! reaches the room as it would from a real StackStorm. Nothing is ever really run.
//!
//! On start it prints `url=<base url>` and `api_key=<key>` on stdout, one per line, then runs
//! until it is killed. Exit status 2 means bad arguments.

use std::collections::HashSet;
use std::io::Write as _;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use serde_json::{Value, json};
use st2_matrix_testkit::st2::{RecordedExecution, St2Double, St2Options};
use tokio::net::TcpListener;

/// The StackStorm user the API key belongs to: what the bridge's executions run as.
const BOT_USER: &str = "chatops_bot";

/// What the command line asked for.
struct Args {
    bind: SocketAddr,
    api_key: Option<String>,
    finish_after: Duration,
}

/// Parses the arguments by hand: three flags do not justify a clap dependency in a test crate.
fn parse_args(mut argv: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut args = Args {
        bind: SocketAddr::from(([127, 0, 0, 1], 0)),
        api_key: None,
        finish_after: Duration::from_secs(2),
    };
    while let Some(flag) = argv.next() {
        let mut value = || argv.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--bind" => {
                let v = value()?;
                args.bind = v.parse().map_err(|e| format!("--bind {v}: {e}"))?;
            }
            "--api-key" => args.api_key = Some(value()?),
            "--finish-after" => {
                let v = value()?;
                let secs: f64 = v.parse().map_err(|e| format!("--finish-after {v}: {e}"))?;
                args.finish_after = Duration::try_from_secs_f64(secs)
                    .map_err(|e| format!("--finish-after {v}: {e}"))?;
            }
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(args)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(message) => {
            if !message.is_empty() {
                eprintln!("st2-double: {message}");
            }
            eprintln!("usage: st2-double [--bind ADDR] [--api-key KEY] [--finish-after SECS]");
            return ExitCode::from(2);
        }
    };
    let listener = match TcpListener::bind(args.bind).await {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("st2-double: cannot bind {}: {e}", args.bind);
            return ExitCode::FAILURE;
        }
    };
    let st2 = St2Double::start_on(listener, St2Options::default());
    st2.load_fixture_aliases();
    st2.add_ask_alias();
    let api_key = match args.api_key {
        Some(key) => {
            st2.add_api_key_value(BOT_USER, &key);
            key
        }
        None => st2.add_api_key(BOT_USER),
    };
    println!("url={}", st2.url());
    println!("api_key={api_key}");
    // stdout is a file or pipe under demo.sh, so block-buffered: flush, or the script waiting
    // for these lines never sees them.
    let _ = std::io::stdout().flush();
    eprintln!(
        "st2-double: serving {} aliases at {}; executions finish after {:?}",
        st2.aliases().len(),
        st2.url(),
        args.finish_after
    );

    // Polling is enough here: a person types the commands, and the double offers no hook for
    // "an execution was created" (tests finish executions themselves, when they choose).
    let mut finished = HashSet::new();
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tick.tick().await;
        let now = SystemTime::now();
        for execution in st2.executions() {
            let due = now
                .duration_since(execution.started_at)
                .is_ok_and(|age| age >= args.finish_after);
            // The asking workflow and its inquiry move on when the inquiry is answered.
            let runner = execution.execution["runner"]["name"].as_str();
            let asks = matches!(runner, Some("orquesta" | "inquirer"));
            if due && !asks && finished.insert(execution.id.clone()) {
                let outcome =
                    st2.finish_execution(&execution.id, "succeeded", made_up_result(&execution));
                eprintln!(
                    "st2-double: execution {} finished; announced: {}",
                    execution.id,
                    outcome
                        .skipped
                        .unwrap_or_else(|| outcome.event.unwrap_or_default())
                );
            }
        }
    }
}

/// A result shaped like the one the action's runner returns, so that the alias's result
/// template (or StackStorm's default one) has what it reads.
fn made_up_result(execution: &RecordedExecution) -> Value {
    let ex = &execution.execution;
    let params = &ex["parameters"];
    let action = ex["action"]["ref"].as_str().unwrap_or("?");
    let said = format!("(the StackStorm double ran nothing: this is a made-up result of {action})");
    let shell = |stdout: String| json!({"stdout": stdout, "stderr": "", "return_code": 0, "succeeded": true, "failed": false});
    match ex["runner"]["name"].as_str() {
        // core.remote answers per host: the examples.remote_shell_cmd template loops over them.
        Some("remote-shell-cmd") => {
            let cmd = params["cmd"].as_str().unwrap_or("");
            let hosts = params["hosts"].as_str().unwrap_or("localhost");
            let per_host = hosts
                .split(',')
                .map(str::trim)
                .filter(|h| !h.is_empty())
                .map(|h| (h.to_owned(), shell(format!("`{cmd}` on {h} {said}"))))
                .collect::<serde_json::Map<_, _>>();
            Value::Object(per_host)
        }
        Some("local-shell-cmd") => {
            let cmd = params["cmd"].as_str().unwrap_or("");
            shell(format!("`{cmd}` {said}"))
        }
        // The packs.* aliases read `result.result` as a list (search) or a map (get, show):
        // empty ones make them say "nothing found", which is true of a double.
        _ if action == "packs.search" => json!({"result": []}),
        _ if action.starts_with("packs.") => json!({"result": {}}),
        _ => {
            json!({"result": format!("{params} {said}"), "stdout": "", "stderr": "", "exit_code": 0})
        }
    }
}
