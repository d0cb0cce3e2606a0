//! The `st2-matrix` binary: parses the command line and hands over to [`st2_matrix::cli`].

use clap::Parser as _;

fn main() -> std::process::ExitCode {
    st2_matrix::cli::main(st2_matrix::cli::Cli::parse())
}
