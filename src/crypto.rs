//! Encryption at rest of the credentials inspections hold (AWS secret keys, session tokens).
//!
//! AES-256-GCM with a random 96-bit nonce per value and the row's id as associated data, so
//! a sealed value copied onto another row does not open. Every sealed value names the key
//! that sealed it (`kid`, a hash prefix of the key), so keys can be rotated: configure the new
//! key as current and the old ones as "old"; values open with whichever key sealed them and
//! are sealed again with the current key when written (`cloudtrail-inspector rotate-secrets`
//! rewrites them all at once).

use std::path::Path;

use aes_gcm::aead::{Aead, KeyInit, OsRng, Payload};
use aes_gcm::{AeadCore, Aes256Gcm, Nonce};
use anyhow::Context;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::model::Secret;

/// A value as stored: which key sealed it, the nonce and the ciphertext (with its tag).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sealed {
    pub kid: String,
    pub nonce: String,
    pub data: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OpenError {
    #[error("sealed with key {0}, which is not configured (was ENCRYPTION_KEY changed without OLD_ENCRYPTION_KEYS?)")]
    UnknownKey(String),
    #[error("the sealed value is damaged or belongs to another row")]
    Damaged,
}

struct Key {
    kid: String,
    cipher: Aes256Gcm,
}

impl Key {
    fn new(bytes: &[u8; 32]) -> Self {
        let kid = hex::encode(&Sha256::digest(bytes)[..6]);
        Key { kid, cipher: Aes256Gcm::new(bytes.into()) }
    }
}

/// The keys of this process: one to seal with, any number to open with.
pub struct SecretBox {
    current: Key,
    old: Vec<Key>,
    /// The key file this process created because none was configured, if it did.
    created: Option<std::path::PathBuf>,
}

impl std::fmt::Debug for SecretBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretBox").field("current_kid", &self.current.kid).field("old_keys", &self.old.len()).finish()
    }
}

/// Decodes a configured key: base64 of exactly 32 bytes (`openssl rand -base64 32`).
pub fn parse_key(text: &str) -> anyhow::Result<[u8; 32]> {
    let bytes = B64.decode(text.trim()).context("an encryption key must be base64 (e.g. `openssl rand -base64 32`)")?;
    bytes
        .try_into()
        .map_err(|b: Vec<u8>| anyhow::anyhow!("an encryption key must be 32 bytes, this one is {}", b.len()))
}

impl SecretBox {
    pub fn new(current: &[u8; 32], old: &[[u8; 32]]) -> Self {
        SecretBox { current: Key::new(current), old: old.iter().map(Key::new).collect(), created: None }
    }

    /// A box with a random key that lives as long as the process (for throwaway stores).
    pub fn ephemeral() -> Self {
        let key: [u8; 32] = Aes256Gcm::generate_key(&mut OsRng).into();
        SecretBox::new(&key, &[])
    }

    /// The configured key, or the key file in the data directory, created on first use so a
    /// default install still encrypts (several instances sharing Postgres must share a key:
    /// set ENCRYPTION_KEY).
    pub fn from_config(key: Option<&Secret>, old: &[Secret], data_dir: &Path) -> anyhow::Result<Self> {
        let old: Vec<[u8; 32]> =
            old.iter().map(|k| parse_key(k.expose())).collect::<anyhow::Result<_>>().context("OLD_ENCRYPTION_KEYS")?;
        if let Some(k) = key {
            return Ok(SecretBox::new(&parse_key(k.expose()).context("ENCRYPTION_KEY")?, &old));
        }
        let path = data_dir.join("encryption.key");
        if let Ok(text) = std::fs::read_to_string(&path) {
            return Ok(SecretBox::new(&parse_key(&text).with_context(|| format!("{}", path.display()))?, &old));
        }
        std::fs::create_dir_all(data_dir).with_context(|| format!("creating {}", data_dir.display()))?;
        let key: [u8; 32] = Aes256Gcm::generate_key(&mut OsRng).into();
        write_private(&path, &B64.encode(key)).with_context(|| format!("writing {}", path.display()))?;
        tracing::warn!(
            path = %path.display(),
            "no ENCRYPTION_KEY set: created a key file; keep it with the database, and give every instance the same key"
        );
        Ok(SecretBox { created: Some(path), ..SecretBox::new(&key, &old) })
    }

    pub fn current_kid(&self) -> &str {
        &self.current.kid
    }

    /// Whether a value sealed with key `kid` opens with the keys of this box.
    pub fn holds(&self, kid: &str) -> bool {
        std::iter::once(&self.current).chain(&self.old).any(|k| k.kid == kid)
    }

    /// The key file [`SecretBox::from_config`] created, when no key was configured or found.
    /// A start that then finds credentials sealed with another key removes it again, so the
    /// key file that sealed them can be put back where it was.
    pub fn created_key_file(&self) -> Option<&Path> {
        self.created.as_deref()
    }

    pub fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Sealed {
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        let data = self
            .current
            .cipher
            .encrypt(&nonce, Payload { msg: plaintext, aad })
            .expect("AES-GCM encryption of an in-memory buffer cannot fail");
        Sealed { kid: self.current.kid.clone(), nonce: B64.encode(nonce), data: B64.encode(data) }
    }

    pub fn open(&self, aad: &[u8], sealed: &Sealed) -> Result<Vec<u8>, OpenError> {
        let key = std::iter::once(&self.current)
            .chain(&self.old)
            .find(|k| k.kid == sealed.kid)
            .ok_or_else(|| OpenError::UnknownKey(sealed.kid.clone()))?;
        let nonce = B64.decode(&sealed.nonce).map_err(|_| OpenError::Damaged)?;
        if nonce.len() != 12 {
            return Err(OpenError::Damaged);
        }
        let data = B64.decode(&sealed.data).map_err(|_| OpenError::Damaged)?;
        key.cipher.decrypt(Nonce::from_slice(&nonce), Payload { msg: &data, aad }).map_err(|_| OpenError::Damaged)
    }
}

/// Writes a new key file readable by its owner only (the share key's too); never overwrites.
#[cfg(unix)]
pub(crate) fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    f.write_all(text.as_bytes())
}

#[cfg(not(unix))]
pub(crate) fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    std::fs::write(path, text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_and_open() {
        let b = SecretBox::new(&[7; 32], &[]);
        let s = b.seal(b"row-1", b"wJalrXUtnFEMI");
        assert!(!s.data.contains("wJalr"));
        assert_eq!(b.open(b"row-1", &s).unwrap(), b"wJalrXUtnFEMI");
        assert_eq!(b.open(b"row-2", &s), Err(OpenError::Damaged), "bound to its row");
        let other = b.seal(b"row-1", b"wJalrXUtnFEMI");
        assert_ne!(s.nonce, other.nonce, "a fresh nonce each time");
    }

    #[test]
    fn rotation_opens_old_values_and_seals_with_the_new_key() {
        let old = SecretBox::new(&[1; 32], &[]);
        let sealed_old = old.seal(b"r", b"x");
        let rotated = SecretBox::new(&[2; 32], &[[1; 32]]);
        assert_eq!(rotated.open(b"r", &sealed_old).unwrap(), b"x");
        assert_ne!(rotated.seal(b"r", b"x").kid, sealed_old.kid);
        let without_old = SecretBox::new(&[2; 32], &[]);
        assert!(matches!(without_old.open(b"r", &sealed_old), Err(OpenError::UnknownKey(_))));
    }

    #[test]
    fn tampering_is_detected() {
        let b = SecretBox::new(&[3; 32], &[]);
        let mut s = b.seal(b"r", b"secret");
        let mut raw = B64.decode(&s.data).unwrap();
        raw[0] ^= 1;
        s.data = B64.encode(raw);
        assert_eq!(b.open(b"r", &s), Err(OpenError::Damaged));
    }

    #[test]
    fn keys_are_checked_and_generated_once() {
        assert!(parse_key("short").is_err());
        assert!(parse_key(&B64.encode([0u8; 16])).is_err());
        let dir = tempfile::tempdir().unwrap();
        let a = SecretBox::from_config(None, &[], dir.path()).unwrap();
        let b = SecretBox::from_config(None, &[], dir.path()).unwrap();
        assert_eq!(a.current_kid(), b.current_kid(), "the key file is reused");
        assert!(a.created_key_file().is_some() && b.created_key_file().is_none());
        assert!(b.holds(a.current_kid()) && !b.holds("000000000000"));
        let sealed = a.seal(b"r", b"v");
        assert_eq!(b.open(b"r", &sealed).unwrap(), b"v");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join("encryption.key")).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
