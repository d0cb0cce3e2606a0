//! StackStorm action-alias matching, done locally exactly as StackStorm's server does it.
//!
//! People type `!st2 <command>` in a room; the bridge must find the one alias format the command
//! matches and the parameters st2 would extract. st2's formats are Python regexes with
//! `{{param}}` placeholders, so this module carries its own Python-compatible regex engine:
//!
//! - [`pyre`]: the Python 3.11 `re` dialect (parser, compiler, backtracking VM).
//! - [`mod@format`]: st2's `ActionAliasFormatParser` on top of it ([`Format`], [`Params`]).
//! - [`model`]: serde types for aliases as the st2 API returns them ([`Alias`], [`FormatSpec`]).
//! - [`matcher`]: st2's `/actionalias/match` algorithm over thousands of aliases ([`Matcher`]).
//! - [`cli`]: the `parse-alias` subcommand ([`parse_alias_cli`]).

pub mod cli;
pub mod format;
pub mod matcher;
pub mod model;
pub mod pyre;

pub use cli::{CliOutput, parse_alias, parse_alias_cli};
pub use format::{Command, Format, FormatError, Params, ParseError};
pub use matcher::{
    AliasMatch, Candidate, FormatFailure, MAX_SUGGESTIONS, MatchOutcome, MatchParams, Matcher,
};
pub use model::{
    Ack, Alias, FormatObject, FormatPattern, FormatSpec, NormalisedFormat, ResultSpec,
};
