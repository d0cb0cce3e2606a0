//! The StackStorm side of a test: the double from `st2-matrix-testkit`, started inside the
//! test (each test has a runtime of its own, and the double serves from it), and the aliases
//! tests give it.
//!
//! The double answers `POST /aliasexecution` with `st2-alias`, the same port of StackStorm's
//! parser the bridge matches with, so any format reads as StackStorm reads it.

use serde_json::Value as Json;
use st2_matrix_testkit::st2::{RecordedExecution, St2Double, St2Options};

/// The StackStorm user the bridge authenticates as.
pub const BOT_USER: &str = "bot";
/// `BOT_USER`'s password, for bridges configured with username and password.
pub const BOT_PASSWORD: &str = "bot-password";

/// How a bridge authenticates to StackStorm (see `Bridge::configure_stackstorm`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum St2Auth {
    /// An API key of [`BOT_USER`]: never expires.
    ApiKey,
    /// [`BOT_USER`] and [`BOT_PASSWORD`]: the bridge obtains tokens and renews them.
    Password,
}

/// A StackStorm double started with `options`, whose only aliases are `aliases`.
pub async fn double(options: St2Options, aliases: Vec<Json>) -> St2Double {
    let st2 = St2Double::start(options).await;
    st2.set_aliases(aliases);
    st2
}

/// An alias `pack.name` running `core.local`, with one plain `format` and a `description`
/// (what help shows next to it).
pub fn alias(pack: &str, name: &str, format: &str, description: &str) -> Json {
    let mut alias = St2Double::simple_alias(pack, name, "core.local", &[format]);
    alias["description"] = description.into();
    alias
}

/// `ops.deploy`: `deploy {{service}}`, described as `Deploy a service.`: the plain alias most
/// tests run, so that they all type the same command (`!st2 deploy web`).
pub fn ops_deploy() -> Json {
    alias("ops", "deploy", "deploy {{service}}", "Deploy a service.")
}

/// The execution `st2` started last, for the command the bot answered with `answer`. Panics
/// if there is none, showing that answer: it says why the command did not run.
pub fn started_execution(st2: &St2Double, answer: &Json) -> RecordedExecution {
    st2.last_execution()
        .unwrap_or_else(|| panic!("no execution was started; the bridge answered: {answer}"))
}
