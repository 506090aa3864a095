//! Pack files: blocks and trees appended one after another, each record
//! self-describing so the index can be rebuilt from the packs alone.
//!
//! File: magic `HOODYPK1`, then records. Record: `kind u8, codec u8,
//! stored_len u32 LE, raw_len u32 LE, hash [32]`, then `stored_len` bytes. The
//! hash is of the raw (uncompressed) bytes, checked on every read.

use std::fs::File;
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;

use super::BlockHash;

pub const PACK_MAGIC: &[u8; 8] = b"HOODYPK1";
pub const RECORD_HEADER: usize = 42;

/// What an object is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum ObjectKind {
    Block = 1,
    Tree = 2,
}

/// How an object's bytes are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Codec {
    Raw = 0,
    Zstd = 1,
}

impl ObjectKind {
    pub fn from_u8(v: u8) -> Option<Self> {
        match v {
            1 => Some(ObjectKind::Block),
            2 => Some(ObjectKind::Tree),
            _ => None,
        }
    }
}

impl Codec {
    pub fn from_u8(v: u8) -> Option<Self> {
        match v {
            0 => Some(Codec::Raw),
            1 => Some(Codec::Zstd),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordHeader {
    pub kind: ObjectKind,
    pub codec: Codec,
    pub stored_len: u32,
    pub raw_len: u32,
    pub hash: BlockHash,
}

impl RecordHeader {
    pub fn encode(&self) -> [u8; RECORD_HEADER] {
        let mut out = [0u8; RECORD_HEADER];
        out[0] = self.kind as u8;
        out[1] = self.codec as u8;
        out[2..6].copy_from_slice(&self.stored_len.to_le_bytes());
        out[6..10].copy_from_slice(&self.raw_len.to_le_bytes());
        out[10..42].copy_from_slice(&self.hash.0);
        out
    }

    pub fn decode(b: &[u8; RECORD_HEADER]) -> Option<Self> {
        Some(RecordHeader {
            kind: ObjectKind::from_u8(b[0])?,
            codec: Codec::from_u8(b[1])?,
            stored_len: u32::from_le_bytes(b[2..6].try_into().ok()?),
            raw_len: u32::from_le_bytes(b[6..10].try_into().ok()?),
            hash: BlockHash(b[10..42].try_into().ok()?),
        })
    }
}

/// Turns stored bytes back into raw bytes and checks them against `hash`.
pub fn decode_stored(codec: Codec, stored: &[u8], raw_len: u32, hash: &BlockHash) -> io::Result<Vec<u8>> {
    let raw = match codec {
        Codec::Raw => stored.to_vec(),
        Codec::Zstd => zstd::bulk::decompress(stored, raw_len as usize).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("zstd: {e}")))?,
    };
    if raw.len() != raw_len as usize || BlockHash::of(&raw) != *hash {
        return Err(io::Error::new(io::ErrorKind::InvalidData, format!("object {hash} does not match its hash")));
    }
    Ok(raw)
}

thread_local! {
    /// One compression context per thread: making one per block costs more
    /// than compressing a small block.
    static COMPRESSOR: std::cell::RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> = const { std::cell::RefCell::new(None) };
}

/// Compresses `raw` unless that does not pay (incompressible data is kept raw).
pub fn encode_stored(raw: &[u8], level: i32) -> (Codec, Vec<u8>) {
    if raw.len() >= 128 {
        let z = COMPRESSOR.with(|c| {
            let mut c = c.borrow_mut();
            if c.as_ref().is_none_or(|(l, _)| *l != level) {
                *c = zstd::bulk::Compressor::new(level).ok().map(|z| (level, z));
            }
            c.as_mut().and_then(|(_, z)| z.compress(raw).ok())
        });
        if let Some(z) = z {
            if z.len() + z.len() / 32 < raw.len() {
                return (Codec::Zstd, z);
            }
        }
    }
    (Codec::Raw, raw.to_vec())
}

/// Appends records to one pack file.
pub struct PackWriter {
    pub id: u32,
    out: BufWriter<File>,
    /// Length of the file once everything buffered is written.
    len: u64,
    /// Where the kernel was last asked to start writing back.
    kicked: u64,
}

/// Writeback is started every this many appended bytes, so the fsync of a
/// commit finds little left to write.
const WRITEBACK_EVERY: u64 = 16 << 20;

impl PackWriter {
    /// Opens pack `id` for appending, creating it with its magic when new.
    /// `valid_len` is where the last known-good record ends (a torn tail beyond it is cut).
    pub fn open(path: &Path, id: u32, valid_len: Option<u64>) -> io::Result<Self> {
        let mut file = std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(false).mode(crate::layout::PRIVATE_FILE).open(path)?;
        let mut len = file.metadata()?.len();
        if len == 0 {
            file.write_all(PACK_MAGIC)?;
            len = PACK_MAGIC.len() as u64;
            // The commits' fsyncs make the pack's content durable, not its
            // name: a power cut could otherwise lose a whole new pack.
            file.sync_all()?;
            crate::durable::sync_parent(path)?;
        } else if let Some(valid) = valid_len {
            if valid < len {
                file.set_len(valid)?;
                len = valid;
            }
        }
        file.seek(SeekFrom::Start(len))?;
        Ok(PackWriter { id, out: BufWriter::with_capacity(4 << 20, file), len, kicked: len })
    }

    /// Appends one record; returns the offset of its header.
    pub fn append(&mut self, header: &RecordHeader, stored: &[u8]) -> io::Result<u64> {
        let offset = self.len;
        self.out.write_all(&header.encode())?;
        self.out.write_all(stored)?;
        self.len += (RECORD_HEADER + stored.len()) as u64;
        if self.len - self.kicked >= WRITEBACK_EVERY {
            self.out.flush()?;
            use std::os::fd::AsRawFd;
            // SAFETY: an advisory writeback request on a file descriptor we own.
            unsafe { libc::sync_file_range(self.out.get_ref().as_raw_fd(), self.kicked as i64, (self.len - self.kicked) as i64, libc::SYNC_FILE_RANGE_WRITE) };
            self.kicked = self.len;
        }
        Ok(offset)
    }

    /// Bytes in the pack, buffered ones included (never 0: the magic comes first).
    pub fn size(&self) -> u64 {
        self.len
    }

    /// Makes every appended record durable.
    pub fn sync(&mut self) -> io::Result<()> {
        self.out.flush()?;
        self.out.get_ref().sync_data()
    }
}

/// Reads the record at `offset` of `file`: header and stored bytes.
pub fn read_record(file: &File, offset: u64) -> io::Result<(RecordHeader, Vec<u8>)> {
    let mut hb = [0u8; RECORD_HEADER];
    file.read_exact_at(&mut hb, offset)?;
    let header = RecordHeader::decode(&hb).ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, format!("bad record header at {offset}")))?;
    let mut stored = vec![0u8; header.stored_len as usize];
    file.read_exact_at(&mut stored, offset + RECORD_HEADER as u64)?;
    Ok((header, stored))
}

/// Every complete, verified record of a pack from `from` on: `(offset, header)`,
/// and where the last good one ends. Stops at the first torn or corrupt record.
pub fn scan(path: &Path, from: u64) -> io::Result<(Vec<(u64, RecordHeader)>, u64)> {
    let mut file = File::open(path)?;
    let mut magic = [0u8; 8];
    if file.read_exact(&mut magic).is_err() || &magic != PACK_MAGIC {
        return Ok((Vec::new(), 0));
    }
    let len = file.metadata()?.len();
    let mut offset = from.max(PACK_MAGIC.len() as u64);
    let mut found = Vec::new();
    while offset + RECORD_HEADER as u64 <= len {
        let Ok((header, stored)) = read_record(&file, offset) else { break };
        if decode_stored(header.codec, &stored, header.raw_len, &header.hash).is_err() {
            break;
        }
        found.push((offset, header));
        offset += (RECORD_HEADER + stored.len()) as u64;
    }
    Ok((found, offset))
}
