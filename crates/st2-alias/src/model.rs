//! Serde types for action aliases as StackStorm's API returns them (`GET /api/v1/actionalias`),
//! plus st2's normalisation of their formats (`normalise_alias_format_string`,
//! `list_format_strings_from_aliases`, `get_format_strings`).
//!
//! Deserialisation is deliberately lenient: absent, `null` and `{}` are treated alike for the
//! object fields, unknown fields are ignored, and a malformed format item is kept (as
//! [`FormatSpec::Invalid`]) so that one bad alias cannot make the whole list unreadable.

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

/// One action alias.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Alias {
    /// Database id (Mongo ObjectId hex).
    #[serde(default, deserialize_with = "null_as_default")]
    pub id: Option<String>,
    /// `action_alias:<pack>:<name>`.
    #[serde(default, deserialize_with = "null_as_default")]
    pub uid: Option<String>,
    /// `<pack>.<name>`; see [`Alias::reference`] when it is absent.
    #[serde(rename = "ref", default, deserialize_with = "null_as_default")]
    pub reference: Option<String>,
    /// Alias name (unique within its pack).
    #[serde(default, deserialize_with = "null_as_default")]
    pub name: String,
    /// Pack the alias belongs to.
    #[serde(default, deserialize_with = "null_as_default")]
    pub pack: Option<String>,
    /// Help text.
    #[serde(default, deserialize_with = "null_as_default")]
    pub description: Option<String>,
    /// Disabled aliases are skipped by matching and help (default true).
    #[serde(default = "default_true", deserialize_with = "null_as_true")]
    pub enabled: bool,
    /// The action the alias runs.
    #[serde(default, deserialize_with = "null_as_default")]
    pub action_ref: String,
    /// The formats, in order.
    #[serde(default, deserialize_with = "null_as_default")]
    pub formats: Vec<FormatSpec>,
    /// Acknowledgement settings.
    #[serde(default, deserialize_with = "null_as_default")]
    pub ack: Ack,
    /// Result rendering settings.
    #[serde(default, deserialize_with = "null_as_default")]
    pub result: ResultSpec,
    /// Adapter-specific settings (free-form).
    #[serde(default, deserialize_with = "null_as_default")]
    pub extra: Map<String, Value>,
    /// Parameters merged into every execution.
    #[serde(default, deserialize_with = "null_as_default")]
    pub immutable_parameters: Map<String, Value>,
    /// Path of the alias file inside its pack.
    #[serde(default, deserialize_with = "null_as_default")]
    pub metadata_file: Option<String>,
}

/// The alias's `ack` object.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Ack {
    /// `false` disables the acknowledgement; absent means enabled.
    #[serde(default, deserialize_with = "null_as_default")]
    pub enabled: Option<bool>,
    /// Jinja template of the acknowledgement message.
    #[serde(default, deserialize_with = "null_as_default")]
    pub format: Option<String>,
    /// Jinja-rendered extra values.
    #[serde(default, deserialize_with = "null_as_default")]
    pub extra: Map<String, Value>,
    /// Whether clients append the execution URL.
    #[serde(default, deserialize_with = "null_as_default")]
    pub append_url: Option<bool>,
}

impl Ack {
    /// Clients treat a missing `enabled` as true.
    pub fn is_enabled(&self) -> bool {
        self.enabled != Some(false)
    }
}

/// The alias's `result` object.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ResultSpec {
    /// `false` disables result messages; absent means enabled.
    #[serde(default, deserialize_with = "null_as_default")]
    pub enabled: Option<bool>,
    /// Jinja template of the result message.
    #[serde(default, deserialize_with = "null_as_default")]
    pub format: Option<String>,
    /// Jinja-rendered extra values.
    #[serde(default, deserialize_with = "null_as_default")]
    pub extra: Map<String, Value>,
}

impl ResultSpec {
    /// Clients treat a missing `enabled` as true.
    pub fn is_enabled(&self) -> bool {
        self.enabled != Some(false)
    }
}

/// One item of `formats`: a plain string (both help text and pattern) or an object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum FormatSpec {
    /// A plain format string.
    Plain(String),
    /// `{display?, representation?, match_multiple?}`.
    Object(FormatObject),
    /// Anything else; st2 fails with `TypeError` on it, we report it as a broken format.
    Invalid(Value),
}

/// The object form of a format.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FormatObject {
    /// Help text only (often with `<placeholders>`).
    #[serde(default, deserialize_with = "null_as_default")]
    pub display: Option<String>,
    /// The patterns actually matched; a single string is accepted like st2 does.
    #[serde(default, deserialize_with = "one_or_many")]
    pub representation: Vec<String>,
    /// `true`: every regex hit in a command becomes one execution.
    #[serde(default, deserialize_with = "null_as_default")]
    pub match_multiple: Option<bool>,
}

/// A format after st2's `normalise_alias_format_string`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NormalisedFormat<'a> {
    /// Help text (`None` for representation-only objects).
    pub display: Option<&'a str>,
    /// Patterns to match.
    pub representations: &'a [String],
    /// The object's `match_multiple` flag.
    pub match_multiple: bool,
}

/// One (display, representation) pair that st2 tries when matching a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FormatPattern<'a> {
    /// Help text of the format, if any.
    pub display: Option<&'a str>,
    /// The format string matched (and sent to `/aliasexecution` as `format`).
    pub representation: &'a str,
    /// Whether the format is a `match_multiple` one.
    pub match_multiple: bool,
}

impl FormatSpec {
    /// `normalise_alias_format_string`; `None` for [`FormatSpec::Invalid`].
    pub fn normalise(&self) -> Option<NormalisedFormat<'_>> {
        match self {
            FormatSpec::Plain(s) => Some(NormalisedFormat {
                display: Some(s),
                representations: std::slice::from_ref(s),
                match_multiple: false,
            }),
            FormatSpec::Object(o) => Some(NormalisedFormat {
                display: o.display.as_deref(),
                representations: &o.representation,
                match_multiple: o.match_multiple == Some(true),
            }),
            FormatSpec::Invalid(_) => None,
        }
    }

    /// The (display, representation) pairs st2's `list_format_strings_from_aliases` yields: one
    /// per representation, or, for a display-only object, the display with representation `""`
    /// (which matches an empty command or one made only of `key=value` extras).
    pub fn patterns(&self) -> Vec<FormatPattern<'_>> {
        self.pattern_iter().collect()
    }

    /// [`FormatSpec::patterns`] without collecting them (the matcher visits every pattern of
    /// every alias twice per build).
    pub(crate) fn pattern_iter(&self) -> impl Iterator<Item = FormatPattern<'_>> {
        let (display_only, representations, display, match_multiple) = match self.normalise() {
            None => (None, &[][..], None, false),
            Some(n) if n.representations.is_empty() => {
                let only = n.display.filter(|d| !d.is_empty()).map(|d| FormatPattern {
                    display: Some(d),
                    representation: "",
                    match_multiple: n.match_multiple,
                });
                (only, &[][..], None, false)
            }
            Some(n) => (None, n.representations, n.display, n.match_multiple),
        };
        display_only
            .into_iter()
            .chain(representations.iter().map(move |r| FormatPattern {
                display,
                representation: r,
                match_multiple,
            }))
    }

    /// Whether this item makes its alias take part in the first (non-`match_multiple`) pass:
    /// st2 selects aliases with `formats.match_multiple` null or false, which holds for plain
    /// strings and objects without `match_multiple: true`.
    pub(crate) fn selects_normal_pass(&self) -> bool {
        match self {
            FormatSpec::Object(o) => o.match_multiple != Some(true),
            FormatSpec::Plain(_) | FormatSpec::Invalid(_) => true,
        }
    }

    /// Whether this item makes its alias take part in the `match_multiple` pass.
    pub(crate) fn selects_multiple_pass(&self) -> bool {
        matches!(self, FormatSpec::Object(o) if o.match_multiple == Some(true))
    }
}

impl Alias {
    /// The alias reference: `ref` when present, else `<pack>.<name>` (or the bare name).
    pub fn reference(&self) -> String {
        let mut out = String::new();
        self.write_reference(&mut out);
        out
    }

    /// Appends [`Alias::reference`] to `out` (no intermediate string).
    pub(crate) fn write_reference(&self, out: &mut String) {
        match (&self.reference, &self.pack) {
            (Some(r), _) if !r.is_empty() => out.push_str(r),
            (_, Some(pack)) if !pack.is_empty() => {
                out.push_str(pack);
                out.push('.');
                out.push_str(&self.name);
            }
            _ => out.push_str(&self.name),
        }
    }

    /// Every format string that `/aliasexecution` accepts as `format` (st2's
    /// `get_format_strings`): plain strings and all representations of object formats.
    pub fn format_strings(&self) -> Vec<&str> {
        let mut out = Vec::new();
        for f in &self.formats {
            match f {
                FormatSpec::Plain(s) => out.push(s.as_str()),
                FormatSpec::Object(o) => out.extend(o.representation.iter().map(String::as_str)),
                FormatSpec::Invalid(_) => {}
            }
        }
        out
    }

    /// Help strings, as `/actionalias/help` lists them: plain strings and object displays.
    pub fn display_strings(&self) -> Vec<&str> {
        self.formats
            .iter()
            .filter_map(|f| match f {
                FormatSpec::Plain(s) => Some(s.as_str()),
                FormatSpec::Object(o) => o.display.as_deref(),
                FormatSpec::Invalid(_) => None,
            })
            .collect()
    }
}

fn default_true() -> bool {
    true
}

fn null_as_default<'de, D, T>(de: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(de)?.unwrap_or_default())
}

fn null_as_true<'de, D: Deserializer<'de>>(de: D) -> Result<bool, D::Error> {
    Ok(Option::<bool>::deserialize(de)?.unwrap_or(true))
}

/// `representation` may be a list, a single string or null. st2 does
/// `alias_format.get("representation") or []`, so an empty string means "no representation".
fn one_or_many<'de, D: Deserializer<'de>>(de: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match Option::<OneOrMany>::deserialize(de)? {
        None => Vec::new(),
        Some(OneOrMany::One(s)) if s.is_empty() => Vec::new(),
        Some(OneOrMany::One(s)) => vec![s],
        Some(OneOrMany::Many(v)) => v,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_null_and_empty_objects_are_alike() {
        let a: Alias = serde_json::from_str(
            r#"{"name": "x", "pack": "p", "ack": null, "result": {}, "extra": null,
                "enabled": null, "formats": ["run {{cmd}}"], "unknown_field": 1}"#,
        )
        .expect("valid alias");
        assert!(a.enabled);
        assert_eq!(a.ack, Ack::default());
        assert_eq!(a.reference(), "p.x");
        assert_eq!(a.formats, vec![FormatSpec::Plain("run {{cmd}}".into())]);
    }

    #[test]
    fn representation_may_be_a_single_string() {
        let f: FormatSpec =
            serde_json::from_str(r#"{"display": "d", "representation": "r {{x}}"}"#)
                .expect("valid");
        let pats = f.patterns();
        assert_eq!(pats.len(), 1);
        assert_eq!(pats[0].display, Some("d"));
        assert_eq!(pats[0].representation, "r {{x}}");
    }

    #[test]
    fn display_only_object_matches_with_empty_representation() {
        let f: FormatSpec = serde_json::from_str(r#"{"display": "help me"}"#).expect("valid");
        let pats = f.patterns();
        assert_eq!(pats.len(), 1);
        assert_eq!(pats[0].representation, "");
        let empty: FormatSpec = serde_json::from_str(r#"{"display": ""}"#).expect("valid");
        assert!(empty.patterns().is_empty());
    }

    #[test]
    fn non_string_format_items_are_kept_as_invalid() {
        let a: Alias =
            serde_json::from_str(r#"{"name": "x", "formats": [42, "ok"]}"#).expect("lenient");
        assert!(matches!(a.formats[0], FormatSpec::Invalid(_)));
        assert_eq!(a.format_strings(), vec!["ok"]);
    }
}
