//! Encryption at rest of the StackStorm tokens the bridge stores (its own, and each linked
//! person's): ChaCha20-Poly1305 with a random nonce per value, keyed by a 256-bit key that comes
//! from the config or the environment, never from the database.
//!
//! Each value is bound to its owner through the AEAD's associated data, so a token copied onto
//! another row of the database does not decrypt.

use std::{
    io::Write as _,
    path::{Path, PathBuf},
};

use base64::{Engine as _, engine::general_purpose::STANDARD as B64};
use ring::{
    aead::{Aad, CHACHA20_POLY1305, LessSafeKey, NONCE_LEN, Nonce, UnboundKey},
    rand::{SecureRandom, SystemRandom},
};

use crate::{config::Config, secret::Secret};

/// Why the key could not be loaded or a value not opened.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configured key is not 32 bytes of base64.
    #[error(
        "{source_name}: the secrets key must be 32 bytes, base64-encoded (e.g. `openssl rand -base64 32`)"
    )]
    BadKey {
        /// Where the key came from.
        source_name: String,
    },
    /// The key file could not be read or created.
    #[error("key file {path}: {error}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        error: std::io::Error,
    },
    /// A stored value does not decrypt with this key (wrong key, or tampered with).
    #[error("a stored secret cannot be decrypted: was the secrets key changed?")]
    Open,
    /// The system random source failed.
    #[error("the system random number generator failed")]
    Random,
}

/// Seals and opens stored secrets, and derives the keys of other stores from the same secret.
pub struct SecretBox {
    key: LessSafeKey,
    /// HKDF-SHA256 of the secret, for [`SecretBox::derive_key`]: other stores get keys of their
    /// own, so none of them holds the key that seals the tokens.
    prk: ring::hkdf::Prk,
    rng: SystemRandom,
}

impl std::fmt::Debug for SecretBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretBox([key redacted])")
    }
}

impl SecretBox {
    /// The key from `[secrets] key` if set, else from `key_file`, which is created with a
    /// random key (mode 0600) when missing.
    pub fn load_or_create(config: &Config) -> Result<SecretBox, Error> {
        if let Some(key) = &config.secrets.key {
            return Self::from_base64(key.expose(), "secrets.key");
        }
        let path = config.resolve(&config.secrets.key_file);
        match std::fs::read_to_string(&path) {
            Ok(text) => Self::from_base64(text.trim(), &path.display().to_string()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = Self::create_key_file(&path)?;
                tracing::info!(path = %path.display(), "created a new secrets key file; keep it with the database");
                Ok(key)
            }
            Err(error) => Err(Error::Io { path, error }),
        }
    }

    fn create_key_file(path: &Path) -> Result<SecretBox, Error> {
        let rng = SystemRandom::new();
        let mut bytes = [0u8; 32];
        rng.fill(&mut bytes).map_err(|_| Error::Random)?;
        let encoded = B64.encode(bytes);
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let io = |error| Error::Io {
            path: path.to_owned(),
            error,
        };
        let mut file = options.open(path).map_err(io)?;
        file.write_all(format!("{encoded}\n").as_bytes())
            .map_err(io)?;
        file.sync_all().map_err(io)?;
        Self::from_bytes(&bytes)
    }

    /// A box keyed by `encoded` (base64 of 32 bytes).
    pub fn from_base64(encoded: &str, source_name: &str) -> Result<SecretBox, Error> {
        let bytes = B64.decode(encoded).map_err(|_| Error::BadKey {
            source_name: source_name.to_owned(),
        })?;
        if bytes.len() != 32 {
            return Err(Error::BadKey {
                source_name: source_name.to_owned(),
            });
        }
        Self::from_bytes(&bytes)
    }

    fn from_bytes(bytes: &[u8]) -> Result<SecretBox, Error> {
        let key = UnboundKey::new(&CHACHA20_POLY1305, bytes).map_err(|_| Error::BadKey {
            source_name: "key".into(),
        })?;
        Ok(SecretBox {
            key: LessSafeKey::new(key),
            prk: ring::hkdf::Salt::new(ring::hkdf::HKDF_SHA256, b"st2-matrix").extract(bytes),
            rng: SystemRandom::new(),
        })
    }

    /// A 256-bit key for `purpose` (e.g. the crypto store's), derived from the secret with
    /// HKDF-SHA256: the same secret and purpose always give the same key, different purposes
    /// unrelated keys.
    pub fn derive_key(&self, purpose: &str) -> [u8; 32] {
        struct Len;
        impl ring::hkdf::KeyType for Len {
            fn len(&self) -> usize {
                32
            }
        }
        let info = [purpose.as_bytes()];
        let mut out = [0u8; 32];
        self.prk
            .expand(&info, Len)
            .and_then(|okm| okm.fill(&mut out))
            .expect("32 bytes is a valid HKDF-SHA256 output length");
        out
    }

    /// Encrypts `plaintext` for `owner` (e.g. `bot`, or a user id); returns base64 of
    /// nonce ‖ ciphertext ‖ tag.
    pub fn seal(&self, owner: &str, plaintext: &str) -> Result<String, Error> {
        let mut nonce = [0u8; NONCE_LEN];
        self.rng.fill(&mut nonce).map_err(|_| Error::Random)?;
        let mut buffer = plaintext.as_bytes().to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(owner.as_bytes()),
                &mut buffer,
            )
            .map_err(|_| Error::Random)?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&buffer);
        Ok(B64.encode(out))
    }

    /// Decrypts a value sealed for `owner`.
    pub fn open(&self, owner: &str, sealed: &str) -> Result<Secret, Error> {
        let bytes = B64.decode(sealed).map_err(|_| Error::Open)?;
        if bytes.len() < NONCE_LEN {
            return Err(Error::Open);
        }
        let (nonce, rest) = bytes.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| Error::Open)?;
        let mut buffer = rest.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(owner.as_bytes()), &mut buffer)
            .map_err(|_| Error::Open)?;
        String::from_utf8(plain.to_vec())
            .map(Secret::new)
            .map_err(|_| Error::Open)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn boxed() -> SecretBox {
        SecretBox::from_base64(&B64.encode([7u8; 32]), "test").unwrap()
    }

    #[test]
    fn a_sealed_value_opens_for_its_owner_only() {
        let b = boxed();
        let sealed = b.seal("bot", "token-123").unwrap();
        assert!(!sealed.contains("token-123"));
        assert_eq!(b.open("bot", &sealed).unwrap().expose(), "token-123");
        assert!(matches!(b.open("@alice:x", &sealed), Err(Error::Open)));
    }

    #[test]
    fn sealing_twice_gives_different_ciphertexts() {
        let b = boxed();
        assert_ne!(b.seal("bot", "t").unwrap(), b.seal("bot", "t").unwrap());
    }

    #[test]
    fn another_key_or_tampering_does_not_open() {
        let sealed = boxed().seal("bot", "t").unwrap();
        let other = SecretBox::from_base64(&B64.encode([8u8; 32]), "test").unwrap();
        assert!(other.open("bot", &sealed).is_err());
        let mut bytes = B64.decode(&sealed).unwrap();
        *bytes.last_mut().unwrap() ^= 1;
        assert!(boxed().open("bot", &B64.encode(bytes)).is_err());
        assert!(boxed().open("bot", "not base64!").is_err());
    }

    #[test]
    fn derived_keys_are_stable_per_purpose_and_differ_between_purposes() {
        let a = boxed().derive_key("crypto-store");
        assert_eq!(a, boxed().derive_key("crypto-store"));
        assert_ne!(a, boxed().derive_key("other"));
        assert_ne!(a, [7u8; 32], "never the secret itself");
        let other = SecretBox::from_base64(&B64.encode([8u8; 32]), "test").unwrap();
        assert_ne!(a, other.derive_key("crypto-store"));
    }

    #[test]
    fn a_bad_key_is_refused_with_a_hint() {
        let err = SecretBox::from_base64("c2hvcnQ=", "secrets.key").unwrap_err();
        assert!(err.to_string().contains("openssl rand -base64 32"));
    }

    #[test]
    fn a_missing_key_file_is_created_private_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let text = "[homeserver]\nurl = \"http://x\"\nserver_name = \"x.org\"\n[appservice]\n";
        let config = Config::parse(text, &dir.path().join("c.toml"), std::iter::empty()).unwrap();
        let first = SecretBox::load_or_create(&config).unwrap();
        let sealed = first.seal("bot", "t").unwrap();
        let again = SecretBox::load_or_create(&config).unwrap();
        assert_eq!(again.open("bot", &sealed).unwrap().expose(), "t");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join("st2-matrix.key"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
