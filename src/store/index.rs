//! The block index: hash → where the object lives. In memory for speed; on disk
//! as one `.idx` file per pack, appended after the pack's records are durable.
//! Any `.idx` can be rebuilt by scanning its pack.
//!
//! File: magic `HOODYIX1`, then 50-byte entries: `hash [32], offset u64 LE,
//! stored_len u32 LE, raw_len u32 LE, kind u8, codec u8`.

use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use super::pack::{Codec, ObjectKind};
use super::BlockHash;

pub const INDEX_MAGIC: &[u8; 8] = b"HOODYIX1";
pub const ENTRY_LEN: usize = 50;

/// Where one object is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    pub pack: u32,
    pub offset: u64,
    pub stored_len: u32,
    pub raw_len: u32,
    pub kind: ObjectKind,
    pub codec: Codec,
}

pub fn encode_entry(hash: &BlockHash, loc: &Location) -> [u8; ENTRY_LEN] {
    let mut out = [0u8; ENTRY_LEN];
    out[..32].copy_from_slice(&hash.0);
    out[32..40].copy_from_slice(&loc.offset.to_le_bytes());
    out[40..44].copy_from_slice(&loc.stored_len.to_le_bytes());
    out[44..48].copy_from_slice(&loc.raw_len.to_le_bytes());
    out[48] = loc.kind as u8;
    out[49] = loc.codec as u8;
    out
}

/// Reads every whole entry of an index file (a torn last entry is ignored).
pub fn read_index(path: &Path, pack: u32) -> io::Result<Vec<(BlockHash, Location)>> {
    let bytes = std::fs::read(path)?;
    if bytes.len() < INDEX_MAGIC.len() || &bytes[..8] != INDEX_MAGIC {
        return Err(io::Error::new(io::ErrorKind::InvalidData, format!("{}: not an index file", path.display())));
    }
    let mut out = Vec::with_capacity((bytes.len() - 8) / ENTRY_LEN);
    for e in bytes[8..].chunks_exact(ENTRY_LEN) {
        let (Some(kind), Some(codec)) = (ObjectKind::from_u8(e[48]), Codec::from_u8(e[49])) else {
            return Err(io::Error::new(io::ErrorKind::InvalidData, format!("{}: corrupt entry", path.display())));
        };
        let hash = BlockHash(e[..32].try_into().expect("32 bytes"));
        out.push((
            hash,
            Location {
                pack,
                offset: u64::from_le_bytes(e[32..40].try_into().expect("8 bytes")),
                stored_len: u32::from_le_bytes(e[40..44].try_into().expect("4 bytes")),
                raw_len: u32::from_le_bytes(e[44..48].try_into().expect("4 bytes")),
                kind,
                codec,
            },
        ));
    }
    Ok(out)
}

/// Appends `entries` to the index file at `path` durably, creating it if needed,
/// and cutting a torn last entry first.
pub fn append_index(path: &Path, entries: &[(BlockHash, Location)]) -> io::Result<()> {
    let mut file = std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(false).mode(crate::layout::PRIVATE_FILE).open(path)?;
    let len = file.metadata()?.len();
    let created = len == 0;
    if len < INDEX_MAGIC.len() as u64 {
        file.set_len(0)?;
        file.write_all(INDEX_MAGIC)?;
    } else {
        let whole = (len - 8) / ENTRY_LEN as u64 * ENTRY_LEN as u64 + 8;
        if whole != len {
            file.set_len(whole)?;
        }
        use std::io::Seek;
        file.seek(io::SeekFrom::Start(whole))?;
    }
    let mut buf = Vec::with_capacity(entries.len() * ENTRY_LEN);
    for (h, l) in entries {
        buf.extend_from_slice(&encode_entry(h, l));
    }
    file.write_all(&buf)?;
    file.sync_data()?;
    if created {
        // fdatasync keeps the content, not the new file's name.
        crate::durable::sync_parent(path)?;
    }
    Ok(())
}

/// Writes a whole index file atomically (rebuilds, GC rewrites).
pub fn write_index(path: &Path, entries: &[(BlockHash, Location)]) -> io::Result<()> {
    let mut buf = Vec::with_capacity(8 + entries.len() * ENTRY_LEN);
    buf.extend_from_slice(INDEX_MAGIC);
    for (h, l) in entries {
        buf.extend_from_slice(&encode_entry(h, l));
    }
    crate::durable::write_atomic(path, &buf, crate::layout::PRIVATE_FILE)
}
