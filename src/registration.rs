//! The appservice registration file (`registration.yaml`): generated from the config, loaded at
//! start, and checked against the config so a mismatch is reported before the homeserver
//! silently sends transactions elsewhere.
//!
//! The file is ruma's [`Registration`] serialised as YAML (read and written by [`yaml`], a
//! reader for the YAML registration files are written in); the tokens live only here, never in
//! `config.toml`, so the config can be shared or committed without leaking them.

use std::{fmt::Write as _, io::Write as _, path::Path, sync::Arc};

use rand::RngCore;
use ruma::{
    UserId,
    api::appservice::{Namespace, Namespaces, Registration, RegistrationInit},
};

use st2_alias::pyre;

use crate::config::Config;

mod yaml;

/// The order keys are written in: the spec's, most important first.
const KEY_ORDER: &[&str] = &[
    "id",
    "url",
    "as_token",
    "hs_token",
    "sender_localpart",
    "namespaces",
    "users",
    "aliases",
    "rooms",
    "exclusive",
    "regex",
    "rate_limited",
    "receive_ephemeral",
    MSC3202_KEY,
    "protocols",
];

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
    /// The YAML does not describe a registration.
    #[error("{path} is not a valid appservice registration: {message}")]
    Parse {
        /// The file.
        path: String,
        /// What is wrong.
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

/// Writes `registration` to `path` (mode 0600: it holds the tokens), with `org.matrix.msc3202:
/// true` when `msc3202` (encryption on). Refuses to overwrite an existing file unless `force`.
pub fn write(
    registration: &Registration,
    path: &Path,
    force: bool,
    msc3202: bool,
) -> Result<(), Error> {
    let display = path.display().to_string();
    let yaml = match serde_json::to_value(registration) {
        Ok(serde_json::Value::Object(mut fields)) => {
            if msc3202 {
                fields.insert(MSC3202_KEY.to_owned(), serde_json::Value::Bool(true));
            }
            yaml::emit(&fields, KEY_ORDER)
        }
        other => {
            return Err(Error::Parse {
                path: display,
                message: format!("cannot be written: {other:?}"),
            });
        }
    };
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
    let display = path.display().to_string();
    let value = load_value(path)?;
    serde_json::from_value(value).map_err(|e| Error::Parse {
        path: display,
        message: e.to_string(),
    })
}

/// Parses registration YAML text: [`load`] without the file read (the fuzz target's entry).
pub fn parse(text: &str) -> Result<Registration, Error> {
    let parse_error = |message: String| Error::Parse {
        path: "<registration>".to_owned(),
        message,
    };
    let value = yaml::parse(text).map_err(|e| parse_error(e.to_string()))?;
    serde_json::from_value(value).map_err(|e| parse_error(e.to_string()))
}

/// What the registration at `path` lacks for the bot's encryption: the lines to add. Empty
/// when it has everything.
pub fn missing_for_encryption(path: &Path) -> Result<Vec<&'static str>, Error> {
    let value = load_value(path)?;
    let on = |key: &str| value.get(key).and_then(serde_json::Value::as_bool) == Some(true);
    let mut missing = Vec::new();
    if !on("receive_ephemeral") && !on(MSC2409_KEY) {
        missing.push("receive_ephemeral: true");
    }
    if !on(MSC3202_KEY) {
        missing.push("org.matrix.msc3202: true");
    }
    Ok(missing)
}

/// The registration file as a JSON value.
fn load_value(path: &Path) -> Result<serde_json::Value, Error> {
    let display = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: display.clone(),
        source,
    })?;
    let parse_error = |message: String| Error::Parse {
        path: display.clone(),
        message,
    };
    yaml::parse(&text).map_err(|e| parse_error(e.to_string()))
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
}
