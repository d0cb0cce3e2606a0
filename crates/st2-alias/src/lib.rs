//! StackStorm action-alias matching, done locally exactly as StackStorm's server does it.
//!
//! A crate of its own: it has no Matrix, no I/O and no async, so the bridge, its StackStorm
//! test double and the fuzz targets all use this one parser. The bridge's `parse-alias`
//! subcommand prints what it finds.
//!
//! People type `!st2 <command>` in a room; the bridge must find the one alias format the command
//! matches and the parameters st2 would extract. st2's formats are Python regexes with
//! `{{param}}` placeholders, so this module carries its own Python-compatible regex engine:
//!
//! - [`pyre`]: the Python 3.11 `re` dialect (parser, compiler, backtracking VM).
//! - [`mod@format`]: st2's `ActionAliasFormatParser` on top of it ([`Format`], [`Params`]).
//! - [`model`]: serde types for aliases as the st2 API returns them ([`Alias`], [`FormatSpec`]).
//! - [`matcher`]: st2's `/actionalias/match` algorithm over thousands of aliases ([`Matcher`]).

pub mod format;
pub mod matcher;
pub mod model;
pub mod pyre;

pub use format::{Command, Format, FormatError, Params, ParseError};
pub use matcher::{
    AliasMatch, Candidate, FormatFailure, MAX_SUGGESTIONS, MatchOutcome, MatchParams, Matcher,
};
pub use model::{
    Ack, Alias, FormatObject, FormatPattern, FormatSpec, NormalisedFormat, ResultSpec,
};
