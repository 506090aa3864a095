//! Per container: what each regular file looked like at the last snapshot or
//! restore (inode, size, mtime, ctime) and its extents, so the next snapshot
//! reads only files whose stat changed and a restore writes only what differs.
//! Node-local state: `<data>/state/statcache/<container>.bin`.

use std::collections::HashMap;
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use crate::beneath::Stat;

use super::tree::{decode_extents_from, encode_extents, Extent, Timestamp};

const MAGIC: &[u8; 8] = b"HOODYSC2";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedFile {
    pub ino: u64,
    pub size: u64,
    pub mtime: Timestamp,
    pub ctime: Timestamp,
    pub extents: Vec<Extent>,
    /// Extended attributes at that stat (unchanged while ctime is).
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

impl CachedFile {
    pub fn matches(&self, st: &Stat) -> bool {
        self.ino == st.ino()
            && self.size == st.size()
            && self.mtime == Timestamp { sec: st.mtime(), nsec: st.mtime_nsec() as u32 }
            && self.ctime == Timestamp { sec: st.ctime(), nsec: st.ctime_nsec() as u32 }
    }

    pub fn from_stat(st: &Stat, extents: Vec<Extent>, xattrs: Vec<(Vec<u8>, Vec<u8>)>) -> Self {
        CachedFile {
            ino: st.ino(),
            size: st.size(),
            mtime: Timestamp { sec: st.mtime(), nsec: st.mtime_nsec() as u32 },
            ctime: Timestamp { sec: st.ctime(), nsec: st.ctime_nsec() as u32 },
            extents,
            xattrs,
        }
    }
}

/// Relative path (bytes) → cached file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatCache {
    pub files: HashMap<Vec<u8>, CachedFile>,
}

impl StatCache {
    /// An empty cache with room for `n` files (a capture's new cache holds about as many as the old).
    pub fn with_capacity(n: usize) -> StatCache {
        StatCache { files: HashMap::with_capacity(n) }
    }

    /// Frees the cache on a thread of its own: a cache of tens of thousands
    /// of files takes longer to free than a snapshot request should wait.
    pub fn drop_in_background(self) {
        // Should the thread not start, the closure (and the cache) is dropped here.
        let _ = std::thread::Builder::new().name("statcache-drop".into()).spawn(move || drop(self));
    }

    /// Loads the cache at `path`; a missing or unreadable cache is an empty one
    /// (it only makes the next snapshot read more).
    pub fn load(path: &Path) -> StatCache {
        std::fs::read(path).ok().and_then(|b| Self::decode(&b)).unwrap_or_default()
    }

    /// Replaces the cache file by rename, without fsync: a cache lost in a crash
    /// (or torn: it then fails to decode) only makes the next snapshot read more.
    pub fn save(&self, path: &Path) -> io::Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = path.with_extension("tmp");
        // Private like every file of the data dir: it lists a container's paths.
        let _ = std::fs::remove_file(&tmp);
        let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(crate::layout::PRIVATE_FILE).open(&tmp)?;
        file.write_all(&self.encode())?;
        drop(file);
        std::fs::rename(&tmp, path)
    }

    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&(self.files.len() as u64).to_le_bytes());
        for (path, f) in &self.files {
            out.extend_from_slice(&(path.len() as u32).to_le_bytes());
            out.extend_from_slice(path);
            out.extend_from_slice(&f.ino.to_le_bytes());
            out.extend_from_slice(&f.size.to_le_bytes());
            for t in [f.mtime, f.ctime] {
                out.extend_from_slice(&t.sec.to_le_bytes());
                out.extend_from_slice(&t.nsec.to_le_bytes());
            }
            encode_extents(&mut out, &f.extents);
            out.extend_from_slice(&(f.xattrs.len() as u32).to_le_bytes());
            for (k, v) in &f.xattrs {
                out.extend_from_slice(&(k.len() as u32).to_le_bytes());
                out.extend_from_slice(k);
                out.extend_from_slice(&(v.len() as u32).to_le_bytes());
                out.extend_from_slice(v);
            }
        }
        out
    }

    /// The exact size of `encode`'s output: growing a buffer of megabytes as it
    /// fills copied it over and over.
    fn encoded_len(&self) -> usize {
        let extents = |f: &CachedFile| 4 + f.extents.iter().map(|e| 12 + e.chunks.len() * 36).sum::<usize>();
        let xattrs = |f: &CachedFile| 4 + f.xattrs.iter().map(|(k, v)| 8 + k.len() + v.len()).sum::<usize>();
        16 + self.files.iter().map(|(p, f)| 4 + p.len() + 40 + extents(f) + xattrs(f)).sum::<usize>()
    }

    fn decode(b: &[u8]) -> Option<StatCache> {
        if b.len() < 16 || &b[..8] != MAGIC {
            return None;
        }
        let n = u64::from_le_bytes(b[8..16].try_into().ok()?) as usize;
        let mut cur = Cursor { b, pos: 16 };
        let mut files = HashMap::with_capacity(n.min(1 << 20));
        for _ in 0..n {
            let plen = cur.u32()? as usize;
            let path = cur.take(plen)?.to_vec();
            let (ino, size) = (cur.u64()?, cur.u64()?);
            let mtime = Timestamp { sec: cur.u64()? as i64, nsec: cur.u32()? };
            let ctime = Timestamp { sec: cur.u64()? as i64, nsec: cur.u32()? };
            let (extents, used) = decode_extents_from(b.get(cur.pos..)?)?;
            cur.pos += used;
            let n = cur.u32()? as usize;
            let mut xattrs = Vec::with_capacity(n.min(64));
            for _ in 0..n {
                let k = cur.u32()? as usize;
                let k = cur.take(k)?.to_vec();
                let v = cur.u32()? as usize;
                xattrs.push((k, cur.take(v)?.to_vec()));
            }
            files.insert(path, CachedFile { ino, size, mtime, ctime, extents, xattrs });
        }
        Some(StatCache { files })
    }
}

struct Cursor<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, len: usize) -> Option<&'a [u8]> {
        let s = self.b.get(self.pos..self.pos + len)?;
        self.pos += len;
        Some(s)
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::BlockHash;

    #[test]
    fn round_trips_through_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = StatCache::default();
        c.files.insert(
            b"a/b".to_vec(),
            CachedFile {
                ino: 7,
                size: 9,
                mtime: Timestamp { sec: 1, nsec: 2 },
                ctime: Timestamp { sec: 3, nsec: 4 },
                extents: vec![Extent { offset: 0, chunks: vec![(BlockHash::of(b"x"), 9)] }],
                xattrs: vec![(b"user.a".to_vec(), b"1".to_vec())],
            },
        );
        assert_eq!(c.encode().len(), c.encoded_len());
        let path = dir.path().join("c.bin");
        c.save(&path).unwrap();
        assert_eq!(StatCache::load(&path), c);
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600, "private from the start");
        assert_eq!(StatCache::load(&dir.path().join("missing")), StatCache::default());
    }
}
