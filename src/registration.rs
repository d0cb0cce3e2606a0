//! The appservice registration file (`registration.yaml`): generated from the config, loaded at
//! start, and checked against the config so a mismatch is reported before the homeserver
//! silently sends transactions elsewhere.
//!
//! The file is ruma's [`Registration`] as YAML; the tokens live only here, never in
//! `config.toml`, so the config can be shared or committed without leaking them.
//!
//! **Reading.** [`parse`] reads the text with serde-saphyr (a full YAML reader: comments, block
//! and flow style, quotes, anchors and aliases, merge keys, tags such as `!!str`, CRLF, a BOM,
//! `---`/`...` markers) into a private `File` in which every value keeps the line it was
//! written on. Each value is then checked the way Synapse checks the file, which it reads with
//! PyYAML (YAML 1.1), so that the bridge never takes a value Synapse reads differently:
//! - Text keys (`id`, `url`, the tokens, `sender_localpart`, regexes, protocols) must read as
//!   text. An unquoted `12345` or `yes` reads as a number or a boolean, which Synapse refuses
//!   ("Required string field"), so it is refused here, naming the key and saying to quote it.
//!   serde-saphyr's numbers (YAML 1.2) include a few spellings that YAML 1.1 reads as text
//!   (`1e5`, `0o17`): those get the same advice, which is harmless. The other way round, YAML
//!   1.1 dates and base-60 numbers (`2001-12-14`, `1:20`) are text here while Synapse refuses
//!   them with its own error; a generated (hexadecimal) token never looks like either.
//! - Boolean keys (`exclusive`, `rate_limited`, `receive_ephemeral` and the unstable flags)
//!   take only PyYAML's booleans: `true`/`false`, `yes`/`no`, `on`/`off`, each in lower, Title
//!   or UPPER case. serde-saphyr also reads `y`, `n` and any casing as booleans, which PyYAML
//!   reads as text, so those are refused with "write true or false", as is anything else
//!   (Synapse would take any value as true for some of these keys; a boolean says what is meant).
//! - A key written twice is refused with its line. PyYAML keeps the last one silently; a
//!   doubled token is nearly always an editing slip, and saying so costs one line of fixing.
//!
//! **Writing.** [`write()`] serialises a private `Written`, whose fields are in the spec's order,
//! with serde-saphyr, which quotes every string YAML could read as something else (`"12345"`,
//! `"@st2_.*"`), so Synapse reads back exactly what was written.

use std::{fmt::Write as _, io::Write as _, path::Path, sync::Arc};

use rand::RngCore;
use ruma::{
    UserId,
    api::appservice::{Namespace, Namespaces, Registration, RegistrationInit},
};
use serde::{Deserialize, Serialize};
use serde_saphyr::{MessageFormatter as _, Spanned};

use st2_alias::pyre;

use crate::config::Config;

/// The registration key that makes Synapse add device lists and one-time-key counts to
/// transactions (MSC3202), which the bot's encryption needs.
pub const MSC3202_KEY: &str = "org.matrix.msc3202";
/// MSC2409's older name for `receive_ephemeral`, which Synapse also accepts.
const MSC2409_KEY: &str = "de.sorunome.msc2409.push_ephemeral";

/// Why a registration file could not be written, read or trusted.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The output exists and `--force` was not given.
    #[error(
        "{0} already exists; pass --force to overwrite it (the homeserver must then load the new tokens)"
    )]
    Exists(String),
    /// Reading or writing failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The YAML does not describe a registration Synapse would read the same way.
    #[error("{path}{}: {message}", line.map(|l| format!(" line {l}")).unwrap_or_default())]
    Parse {
        /// The file ("registration" when [`parse`] was given text rather than a file).
        path: String,
        /// The 1-based line of the value or construct at fault, when there is one.
        line: Option<u64>,
        /// What is wrong and what to write instead.
        message: String,
    },
    /// The registration and the config disagree.
    #[error("{path} does not match the config: {message}")]
    Mismatch {
        /// The file.
        path: String,
        /// Which field, and what to change.
        message: String,
    },
}

/// A freshly generated registration for `config`, with random tokens.
pub fn generate(config: &Config) -> Registration {
    let users = Namespace::new(true, user_namespace_regex(config));
    let mut namespaces = Namespaces::new();
    namespaces.users = vec![users];
    let mut registration = Registration::from(RegistrationInit {
        id: config.appservice.id.clone(),
        url: Some(
            config
                .appservice
                .url
                .as_str()
                .trim_end_matches('/')
                .to_owned(),
        ),
        as_token: random_token(),
        hs_token: random_token(),
        sender_localpart: config.appservice.bot_localpart.clone(),
        namespaces,
        rate_limited: Some(false),
        protocols: None,
    });
    // To-device messages (room keys) reach an appservice only with ephemeral events on.
    registration.receive_ephemeral = config.encryption.enabled;
    registration
}

/// `@<prefix>.*:<server name>`, with regex metacharacters of both parts escaped.
fn user_namespace_regex(config: &Config) -> String {
    format!(
        "@{}.*:{}",
        escape(&config.appservice.user_prefix),
        escape(config.homeserver.server_name.as_str())
    )
}

/// Python's `re.escape` for the characters that are special in a pattern.
fn escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len() + 4);
    for c in text.chars() {
        if ".^$*+?{}[]\\|()".contains(c) {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    bytes.iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// The registration as it is written: the fields in the spec's order, most important first,
/// which is the order serde-saphyr writes them in.
#[derive(Serialize)]
struct Written<'a> {
    id: &'a str,
    url: Option<&'a str>,
    as_token: &'a str,
    hs_token: &'a str,
    sender_localpart: &'a str,
    namespaces: WrittenNamespaces<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rate_limited: Option<bool>,
    #[serde(skip_serializing_if = "is_false")]
    receive_ephemeral: bool,
    #[serde(rename = "org.matrix.msc3202", skip_serializing_if = "is_false")]
    msc3202: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    protocols: Option<&'a [String]>,
}

/// `namespaces`, each list left out when empty (as ruma does).
#[derive(Serialize)]
struct WrittenNamespaces<'a> {
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    users: &'a [Namespace],
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    aliases: &'a [Namespace],
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    rooms: &'a [Namespace],
}

fn is_false(value: &bool) -> bool {
    !value
}

/// Writes `registration` to `path` (mode 0600: it holds the tokens), with `org.matrix.msc3202:
/// true` when `msc3202` (encryption on). Refuses to overwrite an existing file unless `force`.
pub fn write(
    registration: &Registration,
    path: &Path,
    force: bool,
    msc3202: bool,
) -> Result<(), Error> {
    let display = path.display().to_string();
    let written = Written {
        id: &registration.id,
        url: registration.url.as_deref(),
        as_token: &registration.as_token,
        hs_token: &registration.hs_token,
        sender_localpart: &registration.sender_localpart,
        namespaces: WrittenNamespaces {
            users: &registration.namespaces.users,
            aliases: &registration.namespaces.aliases,
            rooms: &registration.namespaces.rooms,
        },
        rate_limited: registration.rate_limited,
        receive_ephemeral: registration.receive_ephemeral,
        msc3202,
        protocols: registration.protocols.as_deref(),
    };
    let yaml = serde_saphyr::to_string(&written).map_err(|e| Error::Parse {
        path: display.clone(),
        line: None,
        message: format!("cannot be written: {e}"),
    })?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true);
    if force {
        options.create(true).truncate(true);
    } else {
        options.create_new(true);
    }
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).map_err(|source| {
        if source.kind() == std::io::ErrorKind::AlreadyExists {
            Error::Exists(display.clone())
        } else {
            Error::Io {
                path: display.clone(),
                source,
            }
        }
    })?;
    let header = "# Appservice registration for st2-matrix, made by `st2-matrix generate-registration`.\n\
                  # Give this file to the homeserver (Synapse: app_service_config_files) and keep it secret.\n";
    file.write_all(header.as_bytes())
        .and_then(|()| file.write_all(yaml.as_bytes()))
        .map_err(|source| Error::Io {
            path: display,
            source,
        })
}

/// Reads and parses the registration file.
pub fn load(path: &Path) -> Result<Registration, Error> {
    Ok(read(path)?.registration)
}

/// Parses registration text (a whole `registration.yaml`) as Synapse would read it; see the
/// module documentation for what is refused and why. Errors name the file "registration"
/// ([`load`] puts in the path).
pub fn parse(text: &str) -> Result<Registration, Error> {
    Ok(parse_file(text)?.registration)
}

/// What the registration at `path` lacks for the bot's encryption: the lines to add. Empty
/// when it has everything.
pub fn missing_for_encryption(path: &Path) -> Result<Vec<&'static str>, Error> {
    let parsed = read(path)?;
    let mut missing = Vec::new();
    // `registration.receive_ephemeral` already counts MSC2409's older name.
    if !parsed.registration.receive_ephemeral {
        missing.push("receive_ephemeral: true");
    }
    if !parsed.msc3202 {
        missing.push("org.matrix.msc3202: true");
    }
    Ok(missing)
}

/// A registration as read, with the one key ruma's type has no field for.
struct Parsed {
    registration: Registration,
    /// `org.matrix.msc3202: true`.
    msc3202: bool,
}

/// Reads the file at `path` and parses it, naming the file in errors.
fn read(path: &Path) -> Result<Parsed, Error> {
    let display = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: display.clone(),
        source,
    })?;
    parse_file(&text).map_err(|e| match e {
        Error::Parse { line, message, .. } => Error::Parse {
            path: display,
            line,
            message,
        },
        other => other,
    })
}

/// The registration file as YAML holds it: every value with the place it was written, so that
/// a value Synapse would refuse is reported at its line, naming its key. A key that is absent
/// is `None`; an explicit `null` is `Some` of [`Scalar::Null`] (Synapse tells them apart for
/// `url`). Unknown keys are ignored, as Synapse ignores them.
#[derive(Deserialize)]
struct File {
    #[serde(default, deserialize_with = "present")]
    id: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    url: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    as_token: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    hs_token: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    sender_localpart: Option<Value>,
    #[serde(default)]
    namespaces: Option<FileNamespaces>,
    #[serde(default, deserialize_with = "present")]
    rate_limited: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    receive_ephemeral: Option<Value>,
    #[serde(
        default,
        deserialize_with = "present",
        rename = "de.sorunome.msc2409.push_ephemeral"
    )]
    push_ephemeral: Option<Value>,
    #[serde(default, deserialize_with = "present", rename = "org.matrix.msc3202")]
    msc3202: Option<Value>,
    #[serde(default)]
    protocols: Option<Vec<Value>>,
}

/// `namespaces` as written; each list is optional, as in Synapse.
#[derive(Deserialize)]
struct FileNamespaces {
    #[serde(default)]
    users: Vec<Spanned<FileNamespace>>,
    #[serde(default)]
    aliases: Vec<Spanned<FileNamespace>>,
    #[serde(default)]
    rooms: Vec<Spanned<FileNamespace>>,
}

/// One namespace entry as written.
#[derive(Deserialize)]
struct FileNamespace {
    #[serde(default, deserialize_with = "present")]
    exclusive: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    regex: Option<Value>,
}

/// A value and where it was written.
type Value = Spanned<Scalar>;

/// A present key's value, `null` included (serde's `Option` would turn `null` into `None`).
fn present<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(deserializer).map(Some)
}

/// A plain value as YAML resolved it. Numbers keep no text: they are refused wherever they
/// appear, and a token must not be echoed into logs.
#[derive(Debug)]
enum Scalar {
    Text(String),
    Bool(bool),
    Number,
    Null,
}

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Scalar;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a single value, not a list or mapping")
            }
            fn visit_str<E>(self, v: &str) -> Result<Scalar, E> {
                Ok(Scalar::Text(v.to_owned()))
            }
            fn visit_string<E>(self, v: String) -> Result<Scalar, E> {
                Ok(Scalar::Text(v))
            }
            fn visit_bool<E>(self, v: bool) -> Result<Scalar, E> {
                Ok(Scalar::Bool(v))
            }
            fn visit_i64<E>(self, _: i64) -> Result<Scalar, E> {
                Ok(Scalar::Number)
            }
            fn visit_u64<E>(self, _: u64) -> Result<Scalar, E> {
                Ok(Scalar::Number)
            }
            fn visit_i128<E>(self, _: i128) -> Result<Scalar, E> {
                Ok(Scalar::Number)
            }
            fn visit_u128<E>(self, _: u128) -> Result<Scalar, E> {
                Ok(Scalar::Number)
            }
            fn visit_f64<E>(self, _: f64) -> Result<Scalar, E> {
                Ok(Scalar::Number)
            }
            fn visit_unit<E>(self) -> Result<Scalar, E> {
                Ok(Scalar::Null)
            }
            fn visit_none<E>(self) -> Result<Scalar, E> {
                Ok(Scalar::Null)
            }
        }
        // "Any": YAML decides what the plain value is, as PyYAML does for Synapse.
        deserializer.deserialize_any(Visitor)
    }
}

/// The spellings PyYAML (YAML 1.1) reads as booleans; every other plain word is text to it.
const PYYAML_BOOLEANS: &[&str] = &[
    "true", "True", "TRUE", "false", "False", "FALSE", "yes", "Yes", "YES", "no", "No", "NO", "on",
    "On", "ON", "off", "Off", "OFF",
];

/// An error about the text being parsed (the caller puts in the file's path).
fn parse_error(line: Option<u64>, message: String) -> Error {
    Error::Parse {
        path: "registration".to_owned(),
        line,
        message,
    }
}

/// The line `value` was written on; for an alias (`*a`), the line of the alias, where the
/// value is used.
fn line_of(value: &Value) -> Option<u64> {
    Some(value.referenced.line()).filter(|&line| line > 0)
}

/// Reads values out of [`File`], checking each as Synapse would.
struct Checker<'a> {
    text: &'a str,
}

impl Checker<'_> {
    /// A value that must be text.
    fn text(&self, value: &Value, key: &str) -> Result<String, Error> {
        let read_as = match &value.value {
            Scalar::Text(text) => return Ok(text.clone()),
            Scalar::Bool(_) => "true or false",
            Scalar::Number => "a number",
            Scalar::Null => {
                return Err(parse_error(
                    line_of(value),
                    format!("`{key}` is empty: give it a value"),
                ));
            }
        };
        Err(parse_error(
            line_of(value),
            format!(
                "`{key}` reads as {read_as}, not text, and Synapse refuses it: put the value in \
                 quotes, e.g. {key}: '...'"
            ),
        ))
    }

    /// A key Synapse requires as text.
    fn required_text(&self, value: Option<&Value>, key: &str) -> Result<String, Error> {
        match value {
            Some(value) => self.text(value, key),
            None => Err(parse_error(
                None,
                format!("`{key}` is missing: add it (Synapse requires it)"),
            )),
        }
    }

    /// A value that must be a boolean PyYAML would read as one.
    fn flag(&self, value: &Value, key: &str) -> Result<bool, Error> {
        let refused = || {
            parse_error(
                line_of(value),
                format!(
                    "`{key}` must be true or false (Synapse's YAML reader takes true/false, \
                     yes/no or on/off, in lower, Title or UPPER case): write true or false"
                ),
            )
        };
        let Scalar::Bool(flag) = value.value else {
            return Err(refused());
        };
        // serde-saphyr also reads `y`, `n` and odd casings as booleans; PyYAML reads them as
        // text. The written word is where the value was defined (an alias points there).
        let span = value.defined.span();
        let written = span
            .byte_offset()
            .zip(span.byte_len())
            .and_then(|(start, len)| {
                let start = usize::try_from(start).ok()?;
                self.text
                    .get(start..start.checked_add(usize::try_from(len).ok()?)?)
            });
        match written {
            Some(word) if !PYYAML_BOOLEANS.contains(&word) => Err(refused()),
            _ => Ok(flag),
        }
    }

    /// An optional boolean key.
    fn optional_flag(&self, value: Option<&Value>, key: &str) -> Result<Option<bool>, Error> {
        match value {
            None
            | Some(Spanned {
                value: Scalar::Null,
                ..
            }) => Ok(None),
            Some(value) => self.flag(value, key).map(Some),
        }
    }

    fn namespaces(
        &self,
        list: &[Spanned<FileNamespace>],
        key: &str,
    ) -> Result<Vec<Namespace>, Error> {
        list.iter()
            .map(|entry| {
                let line = Some(entry.referenced.line()).filter(|&line| line > 0);
                let missing = |field: &str| {
                    parse_error(
                        line,
                        format!("this `{key}` namespace has no `{field}`: add it"),
                    )
                };
                let exclusive = entry
                    .value
                    .exclusive
                    .as_ref()
                    .ok_or_else(|| missing("exclusive"))?;
                let regex = entry.value.regex.as_ref().ok_or_else(|| missing("regex"))?;
                Ok(Namespace::new(
                    self.flag(exclusive, "exclusive")?,
                    self.text(regex, "regex")?,
                ))
            })
            .collect()
    }
}

/// The text parsed and checked (see the module documentation).
fn parse_file(text: &str) -> Result<Parsed, Error> {
    let options = serde_saphyr::options! {
        // Our errors are one line, "registration.yaml line 7: ...", not a source excerpt.
        with_snippet: false,
    };
    let file: Option<File> =
        serde_saphyr::from_str_with_options(text, options).map_err(|e| yaml_error(&e))?;
    let check = Checker { text };
    // An empty file, one of comments only and an explicit empty document (`---` then `...`)
    // hold no key at all; PyYAML reads them as None, which Synapse cannot use either.
    let file = file.filter(|f| f.id.is_some() || f.as_token.is_some() || f.namespaces.is_some());
    let Some(file) = file else {
        return Err(parse_error(
            None,
            "the file holds no registration (it is empty, only comments, or none of `id`, \
             `as_token` and `namespaces` is there): `st2-matrix generate-registration` writes one"
                .to_owned(),
        ));
    };
    let id = check.required_text(file.id.as_ref(), "id")?;
    // Synapse requires `url` but takes an explicit null (no traffic).
    let url = match &file.url {
        None => {
            return Err(parse_error(
                None,
                "`url` is missing: add it (the bridge's address, or null for no traffic)"
                    .to_owned(),
            ));
        }
        Some(Spanned {
            value: Scalar::Null,
            ..
        }) => None,
        Some(url) => Some(check.text(url, "url")?),
    };
    let as_token = check.required_text(file.as_token.as_ref(), "as_token")?;
    let hs_token = check.required_text(file.hs_token.as_ref(), "hs_token")?;
    let sender_localpart =
        check.required_text(file.sender_localpart.as_ref(), "sender_localpart")?;
    let Some(namespaces) = &file.namespaces else {
        return Err(parse_error(
            None,
            "`namespaces` is missing: add it, with the bridge's exclusive `users` namespace"
                .to_owned(),
        ));
    };
    let mut ruma_namespaces = Namespaces::new();
    ruma_namespaces.users = check.namespaces(&namespaces.users, "users")?;
    ruma_namespaces.aliases = check.namespaces(&namespaces.aliases, "aliases")?;
    ruma_namespaces.rooms = check.namespaces(&namespaces.rooms, "rooms")?;
    let protocols = file
        .protocols
        .as_ref()
        .map(|list| list.iter().map(|p| check.text(p, "protocols")).collect())
        .transpose()?;
    let mut registration = Registration::from(RegistrationInit {
        id,
        url,
        as_token,
        hs_token,
        sender_localpart,
        namespaces: ruma_namespaces,
        rate_limited: check.optional_flag(file.rate_limited.as_ref(), "rate_limited")?,
        protocols,
    });
    // Synapse honours either name.
    registration.receive_ephemeral = check
        .optional_flag(file.receive_ephemeral.as_ref(), "receive_ephemeral")?
        .unwrap_or(false)
        || check
            .optional_flag(file.push_ephemeral.as_ref(), MSC2409_KEY)?
            .unwrap_or(false);
    let msc3202 = check
        .optional_flag(file.msc3202.as_ref(), MSC3202_KEY)?
        .unwrap_or(false);
    Ok(Parsed {
        registration,
        msc3202,
    })
}

/// serde-saphyr's error as ours: its line, its message without the "at line.., column.."
/// suffix, and what to do.
fn yaml_error(error: &serde_saphyr::Error) -> Error {
    let error = error.without_snippet();
    let line = error.location().map(|l| l.line()).filter(|&line| line > 0);
    // The message is rendered for people, with any control characters (which could be in a
    // quoted key) made harmless for a terminal or a log.
    let message: String = serde_saphyr::UserMessageFormatter
        .format_message(error)
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let message = match error {
        serde_saphyr::Error::DuplicateMappingKey { key: Some(key), .. } => format!(
            "`{}` appears twice: keep one (Synapse would silently take the last)",
            key.chars().filter(|c| !c.is_control()).collect::<String>()
        ),
        serde_saphyr::Error::Eof { .. } => format!(
            "{message}: the file is empty or cut short (`st2-matrix generate-registration` \
             writes a complete one)"
        ),
        serde_saphyr::Error::MultipleDocuments { .. } => {
            "a second YAML document (after a `---` line): Synapse reads only one; keep one"
                .to_owned()
        }
        serde_saphyr::Error::SerdeInvalidType { .. }
        | serde_saphyr::Error::SerdeInvalidValue { .. }
        | serde_saphyr::Error::SerdeInvalidLength { .. }
        | serde_saphyr::Error::NonFiniteFloat { .. } => message,
        _ => format!(
            "{message}: fix the YAML there (quote a value that starts with @, `, *, &, ! or %, \
             or that holds \": \" or \" #\"; indent with spaces, not tabs)"
        ),
    };
    parse_error(line, message)
}
/// Checks that `registration` is usable with `config`: same id, bot and URL, non-empty distinct
/// tokens, and an exclusive user namespace that covers the configured prefix.
pub fn validate(registration: &Registration, config: &Config, path: &Path) -> Result<(), Error> {
    let mismatch = |message: String| Error::Mismatch {
        path: path.display().to_string(),
        message,
    };
    if registration.id != config.appservice.id {
        return Err(mismatch(format!(
            "id is {:?} but appservice.id is {:?}",
            registration.id, config.appservice.id
        )));
    }
    if registration.sender_localpart != config.appservice.bot_localpart {
        return Err(mismatch(format!(
            "sender_localpart is {:?} but appservice.bot_localpart is {:?}",
            registration.sender_localpart, config.appservice.bot_localpart
        )));
    }
    let configured = config.appservice.url.as_str().trim_end_matches('/');
    match registration.url.as_deref().map(|u| u.trim_end_matches('/')) {
        Some(url) if url == configured => {}
        other => {
            return Err(mismatch(format!(
                "url is {other:?} but appservice.url is {configured:?}: the homeserver would send \
                 transactions elsewhere; fix one of them (and restart the homeserver if the file changes)"
            )));
        }
    }
    if registration.as_token.trim().is_empty() || registration.hs_token.trim().is_empty() {
        return Err(mismatch("as_token and hs_token must not be empty".into()));
    }
    if registration.as_token == registration.hs_token {
        return Err(mismatch("as_token and hs_token must differ".into()));
    }
    let namespace = UserNamespace::from_registration(registration).map_err(mismatch)?;
    let sample = format!(
        "@{}x:{}",
        config.appservice.user_prefix, config.homeserver.server_name
    );
    let sample = UserId::parse(&sample).map_err(|e| mismatch(format!("{sample}: {e}")))?;
    if !namespace.contains(&sample) {
        return Err(mismatch(format!(
            "no exclusive user namespace covers appservice.user_prefix {:?} (e.g. {sample})",
            config.appservice.user_prefix
        )));
    }
    Ok(())
}

/// The exclusive user namespaces of the registration, compiled: events from these users are
/// the bridge's own and are ignored.
///
/// The homeserver reads these regexes with Python's `re` (Synapse), so they are compiled by
/// the same Python-compatible engine the alias formats use: a pattern means here what it means
/// to the homeserver.
#[derive(Debug, Clone)]
pub struct UserNamespace {
    regexes: Arc<[pyre::Regex]>,
}

impl UserNamespace {
    /// Compiles the registration's user namespace regexes, anchored at both ends: a user
    /// belongs to the bridge only if the whole ID matches.
    pub fn from_registration(registration: &Registration) -> Result<Self, String> {
        let regexes = registration
            .namespaces
            .users
            .iter()
            .map(|ns| {
                pyre::Regex::new(&format!("(?:{})\\Z", ns.regex), 0).map_err(|e| {
                    format!(
                        "user namespace regex {:?} is invalid: {}",
                        ns.regex,
                        e.message()
                    )
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { regexes })
    }

    /// Whether `user` belongs to the bridge. A pattern that exhausts the engine's step budget
    /// (a pathological regex) does not claim the user.
    pub fn contains(&self, user: &UserId) -> bool {
        let input: Vec<char> = user.as_str().chars().collect();
        let mut cache = pyre::Cache::new();
        self.regexes.iter().any(|regex| {
            let mut budget = pyre::DEFAULT_STEP_LIMIT;
            matches!(
                regex.match_at(&input, 0, &mut cache, &mut budget),
                Ok(Some(_))
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        let text = include_str!("../config.example.toml");
        Config::parse(text, Path::new("/tmp/config.toml"), std::iter::empty()).unwrap()
    }

    #[test]
    fn generated_registration_round_trips_and_validates() {
        let config = config();
        let registration = generate(&config);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("registration.yaml");
        write(&registration, &path, false, true).unwrap();
        let loaded = load(&path).unwrap();
        validate(&loaded, &config, &path).unwrap();
        assert_eq!(loaded.as_token, registration.as_token);
        assert_eq!(loaded.as_token.len(), 64);
        assert_ne!(loaded.as_token, loaded.hs_token);
        assert_eq!(loaded.rate_limited, Some(false));
        assert_eq!(loaded.url.as_deref(), Some("http://127.0.0.1:9000"));
        assert_eq!(loaded.namespaces.users[0].regex, r"@st2_.*:example\.org");
        assert!(loaded.namespaces.users[0].exclusive);
    }

    #[test]
    fn with_encryption_the_registration_asks_for_to_device_and_device_lists() {
        let config = config();
        assert!(config.encryption.enabled, "encryption is on by default");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("registration.yaml");
        write(&generate(&config), &path, false, true).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("receive_ephemeral: true"), "{text}");
        assert!(text.contains("org.matrix.msc3202: true"), "{text}");
        assert!(missing_for_encryption(&path).unwrap().is_empty());
        assert!(load(&path).unwrap().receive_ephemeral);
    }

    #[test]
    fn a_registration_without_the_encryption_keys_says_which_are_missing() {
        let mut config = config();
        config.encryption.enabled = false;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("registration.yaml");
        write(&generate(&config), &path, false, false).unwrap();
        assert_eq!(
            missing_for_encryption(&path).unwrap(),
            ["receive_ephemeral: true", "org.matrix.msc3202: true"]
        );
        let mut text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains("receive_ephemeral: true"), "{text}");
        text.push_str("de.sorunome.msc2409.push_ephemeral: true\n");
        std::fs::write(&path, text).unwrap();
        assert_eq!(
            missing_for_encryption(&path).unwrap(),
            ["org.matrix.msc3202: true"]
        );
    }

    #[test]
    fn existing_file_is_not_overwritten_without_force() {
        let config = config();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("registration.yaml");
        write(&generate(&config), &path, false, true).unwrap();
        let err = write(&generate(&config), &path, false, true).unwrap_err();
        assert!(matches!(err, Error::Exists(_)), "{err}");
        write(&generate(&config), &path, true, true).unwrap();
    }

    #[cfg(unix)]
    #[test]
    fn registration_file_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.yaml");
        write(&generate(&config()), &path, false, true).unwrap();
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }

    #[test]
    fn mismatched_url_is_reported() {
        let config = config();
        let mut registration = generate(&config);
        registration.url = Some("http://elsewhere:1".into());
        let err = validate(&registration, &config, Path::new("r.yaml")).unwrap_err();
        assert!(err.to_string().contains("url"), "{err}");
    }

    #[test]
    fn namespace_must_cover_the_prefix() {
        let config = config();
        let mut registration = generate(&config);
        registration.namespaces.users =
            vec![Namespace::new(true, "@other_.*:example\\.org".into())];
        let err = validate(&registration, &config, Path::new("r.yaml")).unwrap_err();
        assert!(err.to_string().contains("user_prefix"), "{err}");
    }

    #[test]
    fn namespace_membership_is_a_full_match() {
        let registration = generate(&config());
        let ns = UserNamespace::from_registration(&registration).unwrap();
        assert!(ns.contains(&UserId::parse("@st2_alice:example.org").unwrap()));
        assert!(!ns.contains(&UserId::parse("@st2_alice:example.org.evil").unwrap()));
        assert!(!ns.contains(&UserId::parse("@alice:example.org").unwrap()));
    }

    #[test]
    fn namespaces_are_python_regexes() {
        // A lookahead: Python's `re` (the homeserver's) has it, the `regex` crate does not.
        let mut registration = generate(&config());
        registration.namespaces.users = vec![Namespace::new(
            true,
            r"@st2_(?!admin).*:example\.org".into(),
        )];
        let ns = UserNamespace::from_registration(&registration).unwrap();
        assert!(ns.contains(&UserId::parse("@st2_alice:example.org").unwrap()));
        assert!(!ns.contains(&UserId::parse("@st2_admin:example.org").unwrap()));
        registration.namespaces.users = vec![Namespace::new(true, "@st2_(.*".into())];
        let err = UserNamespace::from_registration(&registration).unwrap_err();
        assert!(err.contains("invalid"), "{err}");
    }

    #[test]
    fn escaping_keeps_the_prefix_and_server_literal() {
        assert_eq!(escape("a.b-c_d/e=f"), r"a\.b-c_d/e=f");
        assert_eq!(escape("[::1]:8448"), r"\[::1\]:8448");
    }

    #[test]
    fn the_committed_example_registration_matches_the_example_config() {
        let path = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/registration.yaml"));
        let registration = load(path).unwrap();
        validate(&registration, &config(), path).unwrap();
    }

    /// A registration as operators write it by hand, in block style.
    const BASE: &str = "id: st2-matrix\nurl: http://127.0.0.1:9000\nas_token: a1b2\n\
        hs_token: c3d4\nsender_localpart: st2bot\nnamespaces:\n  users:\n  \
        - exclusive: true\n    regex: '@st2_.*:example\\.org'\n";

    /// `BASE` with `from` replaced by `to` (which must be there).
    fn base_with(from: &str, to: &str) -> String {
        assert!(BASE.contains(from), "{from}");
        BASE.replace(from, to)
    }

    /// The registration as JSON, to compare two readings field by field.
    fn read(text: &str) -> serde_json::Value {
        let registration = parse(text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        serde_json::to_value(registration).unwrap()
    }

    /// The line and the message of the error `text` is refused with.
    fn refused(text: &str) -> (Option<u64>, String) {
        match parse(text) {
            Err(Error::Parse { line, message, .. }) => (line, message),
            Err(other) => panic!("{other}"),
            Ok(r) => panic!("{text:?} was read as {r:?}"),
        }
    }

    #[test]
    fn registration_styles_in_the_wild_read_alike() {
        let expected = read(BASE);
        // As Synapse's documentation and many generators write it: a document marker, lists
        // indented, double quotes, comments everywhere, an end marker with text after it.
        let documented = "---\n# the bridge\nid: \"st2-matrix\"   # the id\n\
            url: \"http://127.0.0.1:9000\"\nas_token: \"a1b2\"\nhs_token: 'c3d4'\n\
            sender_localpart: st2bot\n\nnamespaces:\n    users:   # ours\n        \
            - exclusive: yes\n          regex: \"@st2_.*:example\\\\.org\"\n    aliases: [ ]\n    \
            rooms: []\n...\n";
        // Flow style, and an entry's keys on their own lines.
        let flow = "{id: st2-matrix, url: 'http://127.0.0.1:9000', as_token: a1b2,\n \
            hs_token: c3d4, sender_localpart: st2bot,\n namespaces: {users: [\n  \
            {exclusive: True, regex: '@st2_.*:example\\.org'}]}}\n";
        let entry_below_dash = "id: st2-matrix\nurl: http://127.0.0.1:9000\nas_token: a1b2\n\
            hs_token: c3d4\nsender_localpart: st2bot\nnamespaces:\n  users:\n    -\n      \
            exclusive: on\n      regex: '@st2_.*:example\\.org'\n";
        // As a Helm or Ansible template renders it: anchors, `!!str` tags, a folded block
        // scalar, a merge key.
        let templated = "x-defaults: &ns {exclusive: true}\nid: !!str st2-matrix\n\
            url: >-\n  http://127.0.0.1:9000\nas_token: &tok !!str a1b2\nhs_token: !!str c3d4\n\
            sender_localpart: st2bot\nnamespaces:\n  users:\n  - <<: *ns\n    \
            regex: '@st2_.*:example\\.org'\n";
        for text in [documented, flow, entry_below_dash, templated] {
            assert_eq!(read(text), expected, "{text}");
        }
    }

    #[test]
    fn crlf_and_a_byte_order_mark_read_like_plain_lines() {
        let windows = format!("\u{feff}---\r\n{}", BASE.replace('\n', "\r\n"));
        assert_eq!(read(&windows), read(BASE));
        // And a syntax error still has the right line.
        let broken = windows.replace("as_token: a1b2", "as_token: 'a1b2' x");
        assert_eq!(refused(&broken).0, Some(4), "{broken:?}");
    }

    #[test]
    fn comments_anchors_and_aliases_read_as_synapse_reads_them() {
        let text = format!(
            "# made by hand\n{}  aliases:\n  - exclusive: &no false # shared\n    \
             regex: '#st2_.*:example\\.org'\nprotocols: [irc] # one\nrate_limited: *no\n",
            base_with("hs_token: c3d4", "hs_token: 'c3d4' # not a comment: c3d4")
        );
        let registration = parse(&text).unwrap();
        assert_eq!(registration.hs_token, "c3d4");
        assert_eq!(
            registration.namespaces.aliases[0].regex,
            "#st2_.*:example\\.org"
        );
        assert!(!registration.namespaces.aliases[0].exclusive);
        assert_eq!(registration.rate_limited, Some(false));
        assert_eq!(
            registration.protocols.as_deref(),
            Some(&["irc".to_owned()][..])
        );
    }

    #[test]
    fn a_duplicate_key_is_refused_with_its_line() {
        // PyYAML (Synapse) would silently keep the second token.
        let (line, message) = refused(&format!("{BASE}hs_token: other\n"));
        assert_eq!(line, Some(10));
        assert!(message.contains("`hs_token` appears twice"), "{message}");
    }

    #[test]
    fn a_token_written_as_a_number_or_boolean_is_refused_naming_the_key() {
        // PyYAML reads these as numbers or booleans and Synapse then refuses the file
        // ("Required string field"); the bridge says which key and what to write.
        for (from, to, key, read_as) in [
            ("hs_token: c3d4", "hs_token: 12345", "hs_token", "a number"),
            ("hs_token: c3d4", "hs_token: 0x1F", "hs_token", "a number"),
            ("hs_token: c3d4", "hs_token: 1_000", "hs_token", "a number"),
            (
                "as_token: a1b2",
                "as_token: yes",
                "as_token",
                "true or false",
            ),
            (
                "as_token: a1b2",
                "as_token: Off",
                "as_token",
                "true or false",
            ),
            ("id: st2-matrix", "id: 1.5", "id", "a number"),
            (
                "regex: '@st2_.*:example\\.org'",
                "regex: 42",
                "regex",
                "a number",
            ),
        ] {
            let text = base_with(from, to);
            let (line, message) = refused(&text);
            let expected_line = text.lines().position(|l| l.ends_with(to)).unwrap() + 1;
            assert_eq!(line, Some(expected_line as u64), "{to}: {message}");
            assert!(
                message.contains(&format!("`{key}` reads as {read_as}"))
                    && message.contains("quotes"),
                "{to}: {message}"
            );
        }
        // Quoted, or tagged as text, the same characters are text to both readers.
        for to in [
            "hs_token: '12345'",
            "hs_token: \"12345\"",
            "hs_token: !!str 12345",
        ] {
            assert_eq!(
                parse(&base_with("hs_token: c3d4", to)).unwrap().hs_token,
                "12345"
            );
        }
    }

    #[test]
    fn an_empty_or_missing_key_is_named() {
        let (line, message) = refused(&base_with("hs_token: c3d4", "hs_token:"));
        assert_eq!(line, Some(4));
        assert!(message.contains("`hs_token` is empty"), "{message}");
        let (line, message) = refused(&base_with("hs_token: c3d4\n", ""));
        assert_eq!(line, None);
        assert!(message.contains("`hs_token` is missing"), "{message}");
        let (_, message) = refused(&base_with("url: http://127.0.0.1:9000\n", ""));
        assert!(message.contains("`url` is missing"), "{message}");
        // Synapse takes an explicit null url: the appservice then gets no traffic.
        let registration = parse(&base_with("url: http://127.0.0.1:9000", "url: null")).unwrap();
        assert_eq!(registration.url, None);
        let (line, message) = refused(&base_with("    regex: '@st2_.*:example\\.org'\n", ""));
        assert_eq!(line, Some(8));
        assert!(message.contains("no `regex`"), "{message}");
    }

    #[test]
    fn booleans_are_the_words_pyyaml_reads_as_booleans() {
        for word in ["yes", "On", "TRUE", "true"] {
            let text = base_with("exclusive: true", &format!("exclusive: {word}"));
            assert!(
                parse(&text).unwrap().namespaces.users[0].exclusive,
                "{word}"
            );
        }
        // `y`, `tRUE` and a quoted 'true' are text to PyYAML, and Synapse refuses them.
        for word in ["y", "tRUE", "'true'", "1"] {
            let text = base_with("exclusive: true", &format!("exclusive: {word}"));
            let (line, message) = refused(&text);
            assert_eq!(line, Some(8), "{word}");
            assert!(message.contains("write true or false"), "{word}: {message}");
        }
        let (line, message) = refused(&format!("{BASE}receive_ephemeral: n\n"));
        assert_eq!(line, Some(10));
        assert!(
            message.contains("`receive_ephemeral` must be true or false"),
            "{message}"
        );
    }

    #[test]
    fn the_older_ephemeral_key_counts_as_receive_ephemeral() {
        assert!(!parse(BASE).unwrap().receive_ephemeral);
        let text = format!("{BASE}{MSC2409_KEY}: true\n");
        assert!(parse(&text).unwrap().receive_ephemeral);
    }

    #[test]
    fn a_syntax_error_names_its_line_and_what_to_do() {
        for (text, line, words) in [
            (base_with("as_token: a1b2", "as_token: 'a1b2' x"), 3, ""),
            (
                base_with("regex: '@st2_.*:example\\.org'", "regex: @st2_.*"),
                9,
                "quote",
            ),
            (base_with("  users:", "\tusers:"), 7, "tabs"),
            (base_with("as_token: a1b2", "as_token: a: b"), 3, "quote"),
            (format!("{BASE}---\nid: two\n"), 11, "keep one"),
        ] {
            let (got, message) = refused(&text);
            assert_eq!(got, Some(line), "{text:?}: {message}");
            assert!(message.contains(words), "{text:?}: {message}");
        }
        for empty in ["", "# nothing but a comment\n", "---\n...\n", "\u{feff}"] {
            let (_, message) = refused(empty);
            assert!(
                message.contains("holds no registration"),
                "{empty:?}: {message}"
            );
        }
    }

    #[test]
    fn load_errors_name_the_file_and_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("registration.yaml");
        std::fs::write(&path, base_with("hs_token: c3d4", "hs_token: 12345")).unwrap();
        let err = load(&path).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!(
                "{} line 4: `hs_token` reads as a number",
                path.display()
            )),
            "{err}"
        );
        let err = parse("id: [").unwrap_err().to_string();
        assert!(err.starts_with("registration line 1: "), "{err}");
    }

    #[test]
    fn written_registration_is_in_spec_order_and_reads_back() {
        let mut registration = parse(BASE).unwrap();
        registration.as_token = "12345".into(); // a token YAML would read as a number
        registration.hs_token = "yes".into();
        registration.rate_limited = Some(false);
        registration.receive_ephemeral = true;
        registration.protocols = Some(vec!["irc".into()]);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("registration.yaml");
        write(&registration, &path, false, true).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let body: String = text.lines().skip(2).map(|l| format!("{l}\n")).collect();
        assert_eq!(
            body,
            "id: st2-matrix\nurl: http://127.0.0.1:9000\nas_token: \"12345\"\n\
             hs_token: \"yes\"\nsender_localpart: st2bot\nnamespaces:\n  users:\n  \
             - exclusive: true\n    regex: \"@st2_.*:example\\\\.org\"\nrate_limited: false\n\
             receive_ephemeral: true\norg.matrix.msc3202: true\nprotocols:\n- irc\n"
        );
        assert_eq!(read(&text), serde_json::to_value(&registration).unwrap());
        assert!(missing_for_encryption(&path).unwrap().is_empty());
    }

    use proptest::{prelude::any, test_runner::TestCaseError};

    proptest::proptest! {
        #[test]
        fn any_text_is_written_so_that_it_reads_back(
            id in "\\PC{0,12}",
            token in any::<String>(),
            regex in "[ -~]{0,16}",
            // YAML's own punctuation, densely.
            punctuation in "[a #:'\"\\\\,\\[\\]{}&*!|>%@`-]{0,10}",
        ) {
            let mut registration = generate(&config());
            registration.id = id;
            registration.as_token = token;
            registration.hs_token = punctuation;
            registration.namespaces.users = vec![Namespace::new(false, regex)];
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("registration.yaml");
            write(&registration, &path, false, false).unwrap();
            let text = std::fs::read_to_string(&path).unwrap();
            let loaded = load(&path)
                .map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
            proptest::prop_assert_eq!(
                serde_json::to_value(loaded).unwrap(),
                serde_json::to_value(registration).unwrap()
            );
        }

        #[test]
        fn any_input_is_read_or_refused_without_panicking(
            text in "(\\PC|[ \\n\\t:#'\"\\[\\]{}&*!|>-]){0,200}",
        ) {
            let _ = parse(&text);
        }
    }
}
