//! Share links and console sessions, both signed with this service's share key.
//!
//! A share link is a console path and its query with an expiry, signed with HMAC-SHA-256:
//! `/console/clusters/{id}?exp=1767225600&sig=…`. It opens that one page, read-only, without a
//! token, until it expires. Links carry no state: nothing is stored per link, so any
//! instance holding the key can check one, and rotating the key (a new `SHARE_KEY`, or a new
//! `<data-dir>/share.key`) revokes every link at once. Console sessions are signed with the
//! same key under another purpose, so a rotation ends them too.
//!
//! The key is kept like the encryption key: configured, or a file in the data directory
//! created on first start. It never leaves this module: no `Debug` of it, no accessor.

use std::path::{Path, PathBuf};

use anyhow::Context;
use base64::Engine;
use base64::engine::general_purpose::{STANDARD as B64, URL_SAFE_NO_PAD as B64URL};
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::model::Secret;

/// Bytes of a link's signature: 128 bits, as long as a URL needs and no longer.
const LINK_SIG_BYTES: usize = 16;
/// The key file in the data directory.
pub const KEY_FILE: &str = "share.key";

/// The service's share key.
pub struct ShareKey {
    key: [u8; 32],
}

impl std::fmt::Debug for ShareKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ShareKey(…)")
    }
}

/// Why a share link does not open its page.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    #[error("this link has expired")]
    Expired,
    #[error("this link is not valid: it was changed, or the service's share key was rotated")]
    Invalid,
}

impl ShareKey {
    pub fn new(bytes: [u8; 32]) -> Self {
        ShareKey { key: bytes }
    }

    /// A random key for this process only (tests, throwaway stores): its links die with it.
    pub fn ephemeral() -> Self {
        ShareKey::new(random_key())
    }

    /// The configured key (base64 of 32 bytes), or `<data-dir>/share.key`, created on first
    /// use. Instances behind one address must share it: set SHARE_KEY.
    pub fn from_config(key: Option<&Secret>, data_dir: &Path) -> anyhow::Result<Self> {
        if let Some(k) = key {
            return Ok(ShareKey::new(crate::crypto::parse_key(k.expose()).context("SHARE_KEY")?));
        }
        let path = data_dir.join(KEY_FILE);
        if let Ok(text) = std::fs::read_to_string(&path) {
            let bytes = crate::crypto::parse_key(&text).with_context(|| format!("{}", path.display()))?;
            return Ok(ShareKey::new(bytes));
        }
        let key = write_key_file(data_dir, false)?;
        tracing::warn!(
            path = %path.display(),
            "no SHARE_KEY set: created a share key file; instances behind one address need the same key"
        );
        Ok(key)
    }

    /// Replaces `<data-dir>/share.key` with a new key: every share link and console session
    /// signed with the old one stops working once the service restarts.
    pub fn rotate_file(data_dir: &Path) -> anyhow::Result<PathBuf> {
        write_key_file(data_dir, true)?;
        Ok(data_dir.join(KEY_FILE))
    }

    /// HMAC-SHA-256 of `data` for one `purpose`, so a tag made for one use never passes as
    /// another (a session is not a link).
    pub fn tag(&self, purpose: &str, data: &[u8]) -> [u8; 32] {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.key).expect("HMAC takes any key length");
        mac.update(purpose.as_bytes());
        mac.update(&[0]);
        mac.update(data);
        mac.finalize().into_bytes().into()
    }

    /// Whether `tag` is `purpose`'s tag of `data`, compared in constant time.
    pub fn check(&self, purpose: &str, data: &[u8], tag: &[u8]) -> bool {
        let want = self.tag(purpose, data);
        tag.len() <= want.len() && !tag.is_empty() && bool::from(want[..tag.len()].ct_eq(tag))
    }

    /// `path_and_query` (a console path, with or without a query) made into a share link
    /// that opens it until `expires`.
    pub fn sign_link(&self, path_and_query: &str, expires: DateTime<Utc>) -> String {
        let sep = if path_and_query.contains('?') { '&' } else { '?' };
        let signed = format!("{path_and_query}{sep}exp={}", expires.timestamp());
        let tag = self.tag("share-link", signed.as_bytes());
        format!("{signed}&sig={}", B64URL.encode(&tag[..LINK_SIG_BYTES]))
    }

    /// Checks a request's path and raw query as a share link: `sig` must be the last
    /// parameter and sign everything before it, `exp` included. Returns the expiry.
    pub fn verify_link(&self, path: &str, query: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, LinkError> {
        let (signed_query, sig) = match query.rsplit_once("&sig=") {
            Some(parts) => parts,
            None => return Err(LinkError::Invalid),
        };
        let sig = B64URL.decode(sig).map_err(|_| LinkError::Invalid)?;
        if sig.len() != LINK_SIG_BYTES {
            return Err(LinkError::Invalid);
        }
        let signed = format!("{path}?{signed_query}");
        if !self.check("share-link", signed.as_bytes(), &sig) {
            return Err(LinkError::Invalid);
        }
        let exp = signed_query
            .split('&')
            .filter_map(|p| p.strip_prefix("exp="))
            .next_back()
            .and_then(|s| s.parse::<i64>().ok())
            .and_then(|s| DateTime::from_timestamp(s, 0))
            .ok_or(LinkError::Invalid)?;
        if exp <= now {
            return Err(LinkError::Expired);
        }
        Ok(exp)
    }
}

/// A signer of share links with a fixed expiry, for everything rendered at one moment (the
/// links of one event all expire together).
#[derive(Debug, Clone)]
pub struct LinkSigner {
    pub key: std::sync::Arc<ShareKey>,
    pub expires: DateTime<Utc>,
}

impl LinkSigner {
    pub fn sign(&self, path_and_query: &str) -> String {
        self.key.sign_link(path_and_query, self.expires)
    }
}

/// How the links of events are made: the key and how long a link stays valid.
#[derive(Debug, Clone)]
pub struct ShareLinks {
    pub key: std::sync::Arc<ShareKey>,
    pub ttl: std::time::Duration,
}

impl ShareLinks {
    /// A signer whose links expire `ttl` after `now`.
    pub fn signer(&self, now: DateTime<Utc>) -> LinkSigner {
        let ttl = chrono::Duration::from_std(self.ttl).unwrap_or(chrono::Duration::MAX);
        LinkSigner { key: self.key.clone(), expires: now.checked_add_signed(ttl).unwrap_or(DateTime::<Utc>::MAX_UTC) }
    }
}

impl PartialEq for LinkSigner {
    /// Equal when they sign alike: the same key and expiry.
    fn eq(&self, other: &Self) -> bool {
        self.expires == other.expires && self.key.tag("eq", b"") == other.key.tag("eq", b"")
    }
}

fn random_key() -> [u8; 32] {
    let mut key = [0u8; 32];
    rand::rng().fill_bytes(&mut key);
    key
}

fn write_key_file(data_dir: &Path, replace: bool) -> anyhow::Result<ShareKey> {
    std::fs::create_dir_all(data_dir).with_context(|| format!("creating {}", data_dir.display()))?;
    let path = data_dir.join(KEY_FILE);
    let key = random_key();
    let text = B64.encode(key);
    if replace {
        // Written aside and renamed, so a reader never sees half a key.
        let tmp = data_dir.join(format!("{KEY_FILE}.new"));
        let _ = std::fs::remove_file(&tmp);
        crate::crypto::write_private(&tmp, &text).with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, &path).with_context(|| format!("replacing {}", path.display()))?;
    } else {
        crate::crypto::write_private(&path, &text).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(ShareKey::new(key))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t(h: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap() + chrono::Duration::hours(h)
    }

    fn split(link: &str) -> (&str, &str) {
        link.split_once('?').unwrap()
    }

    #[test]
    fn a_link_opens_its_page_until_it_expires() {
        let k = ShareKey::new([1; 32]);
        let link = k.sign_link("/console/clusters/abc", t(10));
        assert!(link.starts_with("/console/clusters/abc?exp=1767261600&sig="), "{link}");
        let (path, query) = split(&link);
        assert_eq!(k.verify_link(path, query, t(9)), Ok(t(10)));
        assert_eq!(k.verify_link(path, query, t(10)), Err(LinkError::Expired));
        assert_eq!(k.verify_link("/console/clusters/abd", query, t(9)), Err(LinkError::Invalid));
        let longer = query.replace("exp=1767261600", "exp=1767265200");
        assert_eq!(k.verify_link(path, &longer, t(9)), Err(LinkError::Invalid), "expiry is signed");
        let other = ShareKey::new([2; 32]);
        assert_eq!(other.verify_link(path, query, t(9)), Err(LinkError::Invalid), "a rotated key revokes");
        assert_eq!(k.verify_link(path, "exp=1767261600", t(9)), Err(LinkError::Invalid));
        assert_eq!(k.verify_link(path, &format!("{query}x"), t(9)), Err(LinkError::Invalid));
    }

    #[test]
    fn a_query_is_signed_with_its_path() {
        let k = ShareKey::new([1; 32]);
        let link = k.sign_link("/console/events?account=1&since=x", t(10));
        let (path, query) = split(&link);
        assert!(k.verify_link(path, query, t(0)).is_ok());
        let changed = query.replace("account=1", "account=2");
        assert_eq!(k.verify_link(path, &changed, t(0)), Err(LinkError::Invalid));
    }

    #[test]
    fn purposes_do_not_mix() {
        let k = ShareKey::new([1; 32]);
        let tag = k.tag("session", b"x");
        assert!(k.check("session", b"x", &tag));
        assert!(!k.check("share-link", b"x", &tag));
        assert!(!k.check("session", b"x", &[]));
        assert!(!format!("{k:?}").contains('1'));
    }

    #[test]
    fn the_key_file_is_made_once_and_replaced_on_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let a = ShareKey::from_config(None, dir.path()).unwrap();
        let b = ShareKey::from_config(None, dir.path()).unwrap();
        assert_eq!(a.tag("p", b""), b.tag("p", b""));
        ShareKey::rotate_file(dir.path()).unwrap();
        let c = ShareKey::from_config(None, dir.path()).unwrap();
        assert_ne!(a.tag("p", b""), c.tag("p", b""));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(KEY_FILE)).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let configured = Secret::new(B64.encode([9u8; 32]));
        let d = ShareKey::from_config(Some(&configured), dir.path()).unwrap();
        assert_eq!(d.tag("p", b""), ShareKey::new([9; 32]).tag("p", b""));
        assert!(ShareKey::from_config(Some(&Secret::new("short")), dir.path()).is_err());
    }
}
