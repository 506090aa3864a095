//! Writing so that a crash or a power cut keeps either the old or the new:
//! the daemon's one way to make a file and its name durable. The block store's
//! packs and indexes, the restore journal, the node's identity, tokens and
//! keys all go through here (or fsync as [`sync_parent`] says).

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Writes `bytes` to `path` atomically (temp file, fsync, rename) with `mode`.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(mode).open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    sync_parent(path)
}

/// Makes the entry of `path` in its directory durable (a new or renamed
/// file's name: the file's own fsync does not keep it).
pub fn sync_parent(path: &Path) -> std::io::Result<()> {
    match path.parent() {
        Some(dir) => std::fs::File::open(dir)?.sync_all(),
        None => Ok(()),
    }
}
