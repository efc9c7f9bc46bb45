//! Who this service instance is, across restarts.
//!
//! Runs record their owner as `<instance id>/<host>/<pid>`. When an instance starts, any run
//! still active under its instance id was left by an earlier process of the same instance
//! that died (SIGKILL, OOM, a power cut): no live process can hold it, so it is marked
//! `interrupted` at once instead of after the heartbeat timeout. That is only safe while two
//! live processes never share an instance id, so the id kept in the data directory is locked
//! for as long as the process runs: a second process on the same data directory is refused.
//! Instances on one Postgres each need their own data directory or their own `INSTANCE_ID`;
//! an instance that comes back with a new identity (an empty data directory) leaves its dead
//! runs to the heartbeat timeout, as before.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::Path;

use anyhow::Context;

const FILE: &str = "instance-id";

/// The instance id, and the lock that proves this process is its only holder (released when
/// the process ends, however it ends).
#[derive(Debug)]
pub struct Identity {
    pub id: String,
    _lock: Option<File>,
}

/// The configured id, or the one kept in `<data_dir>/instance-id` (created on first start).
pub fn identity(configured: Option<&str>, data_dir: &Path) -> anyhow::Result<Identity> {
    if let Some(id) = configured {
        return Ok(Identity { id: id.to_string(), _lock: None });
    }
    std::fs::create_dir_all(data_dir).with_context(|| format!("creating the data directory {}", data_dir.display()))?;
    let path = data_dir.join(FILE);
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    if !try_lock(&file).with_context(|| format!("locking {}", path.display()))? {
        anyhow::bail!(
            "another process of this instance is running (it holds {}): give each instance its own DATA_DIR \
             or INSTANCE_ID",
            path.display()
        );
    }
    let mut text = String::new();
    file.read_to_string(&mut text).with_context(|| format!("reading {}", path.display()))?;
    let id = text.trim().to_string();
    let id = if valid_instance_id(&id) {
        id
    } else {
        let id = uuid::Uuid::new_v4().simple().to_string();
        file.set_len(0)?;
        file.rewind()?;
        writeln!(file, "{id}").with_context(|| format!("writing {}", path.display()))?;
        file.sync_all()?;
        id
    };
    Ok(Identity { id, _lock: Some(file) })
}

/// An exclusive, non-blocking `flock`: false when another open file holds it. The kernel
/// drops it when the process ends, however it ends, so a crash never leaves it behind.
#[cfg(unix)]
fn try_lock(file: &File) -> std::io::Result<bool> {
    match rustix::fs::flock(file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(true),
        Err(e) if e == rustix::io::Errno::WOULDBLOCK => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Elsewhere the id is kept but not locked: keep one process per data directory.
#[cfg(not(unix))]
fn try_lock(_: &File) -> std::io::Result<bool> {
    Ok(true)
}

/// Instance ids end up in the runs' owner column, prefix-matched: 1–64 plain characters.
pub fn valid_instance_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_id_is_kept_and_locked() {
        let dir = tempfile::tempdir().unwrap();
        let first = identity(None, dir.path()).unwrap();
        assert_eq!(first.id.len(), 32);
        let err = identity(None, dir.path()).unwrap_err().to_string();
        assert!(err.contains("another process"), "{err}");
        let id = first.id.clone();
        drop(first);
        assert_eq!(identity(None, dir.path()).unwrap().id, id, "the same id after a restart");
        assert_eq!(identity(Some("pod-1"), dir.path()).unwrap().id, "pod-1");
    }
}
