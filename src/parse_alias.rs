//! `st2-matrix parse-alias`: run StackStorm's parser on one format and command from the shell.
//!
//! Exit codes: 0 with the parameters as JSON on stdout (an object, or a list of objects with
//! `--multiple`); 1 when the command does not match (st2's `ParseException`, reason on stderr);
//! 2 when the format itself is unusable (st2 would answer HTTP 500).

use std::io::Write as _;
use std::process::ExitCode;

use st2_alias::{Format, ParseError};

/// What the subcommand prints and how it exits; [`CliOutput::emit`] does the printing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CliOutput {
    /// Process exit status.
    pub code: u8,
    /// Text for standard output (JSON and a newline on success).
    pub stdout: String,
    /// Text for standard error (the reason on failure).
    pub stderr: String,
}

impl CliOutput {
    fn ok(json: String) -> Self {
        Self {
            code: 0,
            stdout: format!("{json}\n"),
            stderr: String::new(),
        }
    }

    fn fail(code: u8, reason: &str) -> Self {
        Self {
            code,
            stdout: String::new(),
            stderr: format!("{reason}\n"),
        }
    }

    /// Prints stdout/stderr and returns the exit code for `main`.
    pub fn emit(self) -> ExitCode {
        // A closed pipe (e.g. `| head`) is not worth a panic; the exit code still tells.
        let _ = std::io::stdout().write_all(self.stdout.as_bytes());
        let _ = std::io::stderr().write_all(self.stderr.as_bytes());
        ExitCode::from(self.code)
    }
}

/// Parses `command` with `format` as st2's `extract_parameters` would.
pub fn parse_alias(format: &str, command: &str, multiple: bool) -> CliOutput {
    let compiled = match Format::compile(format) {
        Ok(f) => f,
        Err(e) => return CliOutput::fail(2, &e.to_string()),
    };
    let json = if multiple {
        compiled
            .parse_multiple(command)
            .map(|list| serde_json::to_string(&list))
    } else {
        compiled.parse(command).map(|p| serde_json::to_string(&p))
    };
    match json {
        Ok(Ok(text)) => CliOutput::ok(text),
        // Serialising a map of strings cannot fail; report it as an internal error anyway.
        Ok(Err(e)) => CliOutput::fail(2, &format!("internal error: {e}")),
        Err(e @ ParseError::MissingGroup { .. }) => CliOutput::fail(2, &e.to_string()),
        Err(e) => CliOutput::fail(1, &e.to_string()),
    }
}

/// [`parse_alias`], printed; the value to return from `main`.
pub fn parse_alias_cli(format: &str, command: &str, multiple: bool) -> ExitCode {
    parse_alias(format, command, multiple).emit()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn match_prints_json_and_exits_zero() {
        let out = parse_alias("run {{cmd}} on {{hosts}}", "run date on web1 k=v", false);
        assert_eq!(out.code, 0);
        assert_eq!(
            out.stdout,
            "{\"cmd\":\"date\",\"hosts\":\"web1\",\"k\":\"v\"}\n"
        );
    }

    #[test]
    fn unmatched_alternative_prints_null() {
        let out = parse_alias("a|b {{x}}", "a", false);
        assert_eq!(out.stdout, "{\"x\":null}\n");
    }

    #[test]
    fn no_match_exits_one_with_st2_message() {
        let out = parse_alias("run {{cmd}}", "RUN date", false);
        assert_eq!(out.code, 1);
        assert_eq!(
            out.stderr,
            "Command \"RUN date\" doesn't match format string \"run {{cmd}}\"\n"
        );
    }

    #[test]
    fn invalid_format_exits_two() {
        assert_eq!(parse_alias("(?i)run {{cmd}}", "run x", false).code, 2);
    }

    #[test]
    fn multiple_prints_a_list() {
        let out = parse_alias(
            r"(?:\b|^)ticket (?P<id>[0-9]+)(?:\b|$)",
            "ticket 1 and ticket 2",
            true,
        );
        assert_eq!(out.code, 0);
        assert_eq!(out.stdout, "[{\"id\":\"1\"},{\"id\":\"2\"}]\n");
    }
}
