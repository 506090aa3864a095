//! The FUSE protocol as the kernel speaks it (`include/uapi/linux/fuse.h`):
//! requests decoded from the bytes the kernel hands over, replies encoded as
//! the bytes it expects. Independent of how the bytes travel (`/dev/fuse`
//! reads and writes, or the buffers of an io_uring queue entry, which split a
//! request into its fixed-size arguments and the rest).

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::time::{Duration, SystemTime};

/// The protocol version this side speaks; the kernel's when it is older.
pub(crate) const KERNEL_VERSION: u32 = 7;
pub(crate) const KERNEL_MINOR: u32 = 44;
/// Older kernels lack what the mounts rely on (readdirplus, atomic O_TRUNC...).
pub(crate) const OLDEST_MINOR: u32 = 31;

pub(crate) const IN_HEADER_LEN: usize = 40;
pub(crate) const OUT_HEADER_LEN: usize = 16;

pub(crate) mod opcode {
    pub const LOOKUP: u32 = 1;
    pub const FORGET: u32 = 2;
    pub const GETATTR: u32 = 3;
    pub const SETATTR: u32 = 4;
    pub const READLINK: u32 = 5;
    pub const SYMLINK: u32 = 6;
    pub const MKNOD: u32 = 8;
    pub const MKDIR: u32 = 9;
    pub const UNLINK: u32 = 10;
    pub const RMDIR: u32 = 11;
    pub const RENAME: u32 = 12;
    pub const LINK: u32 = 13;
    pub const OPEN: u32 = 14;
    pub const READ: u32 = 15;
    pub const WRITE: u32 = 16;
    pub const STATFS: u32 = 17;
    pub const RELEASE: u32 = 18;
    pub const FSYNC: u32 = 20;
    pub const SETXATTR: u32 = 21;
    pub const GETXATTR: u32 = 22;
    pub const LISTXATTR: u32 = 23;
    pub const REMOVEXATTR: u32 = 24;
    pub const FLUSH: u32 = 25;
    pub const INIT: u32 = 26;
    pub const OPENDIR: u32 = 27;
    pub const READDIR: u32 = 28;
    pub const RELEASEDIR: u32 = 29;
    pub const FSYNCDIR: u32 = 30;
    pub const GETLK: u32 = 31;
    pub const SETLK: u32 = 32;
    pub const SETLKW: u32 = 33;
    pub const ACCESS: u32 = 34;
    pub const CREATE: u32 = 35;
    pub const INTERRUPT: u32 = 36;
    pub const DESTROY: u32 = 38;
    pub const BATCH_FORGET: u32 = 42;
    pub const FALLOCATE: u32 = 43;
    pub const READDIRPLUS: u32 = 44;
    pub const RENAME2: u32 = 45;
    pub const LSEEK: u32 = 46;
    pub const COPY_FILE_RANGE: u32 = 47;
}

/// `FUSE_INIT` capability bits (flags, then flags2 shifted by 32).
pub(crate) mod init {
    pub const ASYNC_READ: u64 = 1 << 0;
    pub const POSIX_LOCKS: u64 = 1 << 1;
    pub const FLOCK_LOCKS: u64 = 1 << 10;
    pub const BIG_WRITES: u64 = 1 << 5;
    pub const DO_READDIRPLUS: u64 = 1 << 13;
    pub const PARALLEL_DIROPS: u64 = 1 << 18;
    pub const POSIX_ACL: u64 = 1 << 20;
    pub const MAX_PAGES: u64 = 1 << 22;
    pub const AUTO_INVAL_DATA: u64 = 1 << 12;
    pub const DONT_MASK: u64 = 1 << 6;
    pub const INIT_EXT: u64 = 1 << 30;
    pub const HANDLE_KILLPRIV_V2: u64 = 1 << 28;
    pub const PASSTHROUGH: u64 = 1 << 37;
    pub const OVER_IO_URING: u64 = 1 << 41;
}

pub(crate) const FOPEN_PASSTHROUGH: u32 = 1 << 7;
pub(crate) const FOPEN_NOFLUSH: u32 = 1 << 5;
pub(crate) const FOPEN_KEEP_CACHE: u32 = 1 << 1;
pub(crate) const FOPEN_CACHE_DIR: u32 = 1 << 3;

const FATTR_MODE: u32 = 1 << 0;
const FATTR_UID: u32 = 1 << 1;
const FATTR_GID: u32 = 1 << 2;
const FATTR_SIZE: u32 = 1 << 3;
const FATTR_ATIME: u32 = 1 << 4;
const FATTR_MTIME: u32 = 1 << 5;
const FATTR_FH: u32 = 1 << 6;
const FATTR_ATIME_NOW: u32 = 1 << 7;
const FATTR_MTIME_NOW: u32 = 1 << 8;
const FATTR_KILL_SUIDGID: u32 = 1 << 11;
const GETATTR_FH: u32 = 1 << 0;
const WRITE_KILL_SUIDGID: u32 = 1 << 2;
const FSYNC_FDATASYNC: u32 = 1 << 0;
const LK_FLOCK: u32 = 1 << 0;

/// How many bytes of fixed-size arguments each operation has: what io_uring
/// puts in the entry's operation header, the rest going to its payload.
pub(crate) fn fixed_args_len(op: u32) -> usize {
    use opcode::*;
    match op {
        FORGET | LINK | RENAME | INTERRUPT | MKDIR | OPEN | OPENDIR | GETXATTR | LISTXATTR | ACCESS | BATCH_FORGET | SETXATTR => 8,
        GETATTR | FSYNC | FSYNCDIR | RENAME2 | CREATE | MKNOD => 16,
        RELEASE | RELEASEDIR | FLUSH | LSEEK => 24,
        FALLOCATE => 32,
        GETLK | SETLK | SETLKW => 48,
        READ | WRITE | READDIR | READDIRPLUS => 40,
        COPY_FILE_RANGE => 56,
        INIT => 64,
        SETATTR => 88,
        _ => 0,
    }
}

/// A time the kernel asks to set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TimeOrNow {
    Now,
    At(SystemTime),
}

/// The kernel's `(secs, nsecs)`: `secs + nsecs/1e9`, nanoseconds counting
/// forward even before the epoch.
fn system_time(secs: u64, nsecs: u32) -> SystemTime {
    let secs = secs as i64;
    if secs >= 0 {
        SystemTime::UNIX_EPOCH + Duration::new(secs as u64, nsecs)
    } else {
        SystemTime::UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs()) + Duration::from_nanos(u64::from(nsecs))
    }
}

/// `(secs, nsecs)` of `time` as the kernel counts them (see [`system_time`]).
fn kernel_time(time: SystemTime) -> (u64, u32) {
    match time.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(after) => (after.as_secs(), after.subsec_nanos()),
        Err(before) => {
            let before = before.duration();
            let (secs, nanos) = (before.as_secs() as i64, before.subsec_nanos());
            if nanos == 0 {
                ((-secs) as u64, 0)
            } else {
                ((-secs - 1) as u64, 1_000_000_000 - nanos)
            }
        }
    }
}

/// A byte range lock as the kernel's `fuse_file_lock` carries it: `typ` is
/// `F_RDLCK`, `F_WRLCK` or `F_UNLCK`; `end` is inclusive, the kernel's
/// `OFFSET_MAX` ([`crate::LOCK_TO_END`]) for "to any end of file".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FileLockIn {
    pub(crate) start: u64,
    pub(crate) end: u64,
    pub(crate) typ: u32,
    pub(crate) pid: u32,
}

/// Who asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header {
    pub(crate) opcode: u32,
    pub(crate) unique: u64,
    pub(crate) nodeid: u64,
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    pub(crate) pid: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SetAttrIn {
    pub(crate) mode: Option<u32>,
    pub(crate) uid: Option<u32>,
    pub(crate) gid: Option<u32>,
    pub(crate) size: Option<u64>,
    pub(crate) atime: Option<TimeOrNow>,
    pub(crate) mtime: Option<TimeOrNow>,
    pub(crate) fh: Option<u64>,
    pub(crate) kill_suidgid: bool,
}

/// One request, borrowing names and data from the buffer it came in.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Op<'a> {
    Init { major: u32, minor: u32, max_readahead: u32, flags: u64 },
    Destroy,
    Lookup { name: &'a OsStr },
    Forget { nlookup: u64 },
    BatchForget { nodes: Vec<(u64, u64)> },
    GetAttr { fh: Option<u64> },
    SetAttr(SetAttrIn),
    ReadLink,
    Symlink { name: &'a OsStr, target: &'a OsStr },
    MkNod { name: &'a OsStr, mode: u32, rdev: u32, umask: u32 },
    MkDir { name: &'a OsStr, mode: u32, umask: u32 },
    Unlink { name: &'a OsStr },
    RmDir { name: &'a OsStr },
    Rename { name: &'a OsStr, newdir: u64, newname: &'a OsStr, flags: u32 },
    Link { oldnodeid: u64, newname: &'a OsStr },
    Open { flags: i32 },
    Read { fh: u64, offset: u64, size: u32 },
    Write { fh: u64, offset: u64, data: &'a [u8], kill_suidgid: bool },
    StatFs,
    Release { fh: u64 },
    Fsync { fh: u64, datasync: bool },
    SetXattr { name: &'a OsStr, value: &'a [u8], flags: i32 },
    GetXattr { name: &'a OsStr, size: u32 },
    ListXattr { size: u32 },
    RemoveXattr { name: &'a OsStr },
    Flush { fh: u64 },
    OpenDir,
    ReadDir { fh: u64, offset: u64, size: u32 },
    ReadDirPlus { fh: u64, offset: u64, size: u32 },
    ReleaseDir { fh: u64 },
    FsyncDir { fh: u64, datasync: bool },
    Access,
    Create { name: &'a OsStr, mode: u32, umask: u32, flags: i32 },
    /// The caller of request `unique` was interrupted by a signal.
    Interrupt { unique: u64 },
    /// `owner`: the POSIX lock owner (the caller's file table); `flock`: a
    /// `flock(2)` lock of the open file rather than a record lock of `owner`.
    GetLk { fh: u64, owner: u64, lock: FileLockIn },
    SetLk { fh: u64, owner: u64, lock: FileLockIn, flock: bool, wait: bool },
    Fallocate { fh: u64, offset: u64, length: u64, mode: i32 },
    Lseek { fh: u64, offset: i64, whence: i32 },
    CopyFileRange { fh_in: u64, off_in: u64, fh_out: u64, off_out: u64, len: u64 },
    /// Anything else: answered `ENOSYS`, which the kernel remembers for most.
    Unsupported,
}

/// A malformed request: too short, or a name without its NUL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Malformed;

/// Reads fixed-size fields and NUL-terminated names in order.
struct Fields<'a> {
    bytes: &'a [u8],
}

impl<'a> Fields<'a> {
    fn take(&mut self, len: usize) -> Result<&'a [u8], Malformed> {
        if self.bytes.len() < len {
            return Err(Malformed);
        }
        let (head, rest) = self.bytes.split_at(len);
        self.bytes = rest;
        Ok(head)
    }

    fn u32(&mut self) -> Result<u32, Malformed> {
        Ok(u32::from_ne_bytes(self.take(4)?.try_into().expect("4 bytes")))
    }

    fn u64(&mut self) -> Result<u64, Malformed> {
        Ok(u64::from_ne_bytes(self.take(8)?.try_into().expect("8 bytes")))
    }

    fn name(&mut self) -> Result<&'a OsStr, Malformed> {
        let end = self.bytes.iter().position(|&b| b == 0).ok_or(Malformed)?;
        let name = &self.bytes[..end];
        self.bytes = &self.bytes[end + 1..];
        Ok(OsStr::from_bytes(name))
    }

    fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.bytes)
    }
}

pub(crate) fn decode_header(bytes: &[u8]) -> Result<Header, Malformed> {
    let mut f = Fields { bytes };
    let _len = f.u32()?;
    let opcode = f.u32()?;
    let unique = f.u64()?;
    let nodeid = f.u64()?;
    let (uid, gid, pid) = (f.u32()?, f.u32()?, f.u32()?);
    Ok(Header { opcode, unique, nodeid, uid, gid, pid })
}

/// The operation of `header`, from its fixed-size arguments and the rest of
/// the request (for `/dev/fuse`, consecutive parts of one buffer).
pub(crate) fn decode_op<'a>(opcode_: u32, fixed: &'a [u8], rest: &'a [u8]) -> Result<Op<'a>, Malformed> {
    use opcode::*;
    let mut f = Fields { bytes: fixed };
    let mut r = Fields { bytes: rest };
    let op = match opcode_ {
        INIT => {
            let (major, minor, max_readahead, flags) = (f.u32()?, f.u32()?, f.u32()?, f.u32()?);
            // flags2 arrived with 7.36; absent, the request is shorter.
            let flags2 = if minor >= 36 { f.u32().unwrap_or(0) } else { 0 };
            Op::Init { major, minor, max_readahead, flags: u64::from(flags) | (u64::from(flags2) << 32) }
        }
        DESTROY => Op::Destroy,
        LOOKUP => Op::Lookup { name: r.name()? },
        FORGET => Op::Forget { nlookup: f.u64()? },
        BATCH_FORGET => {
            let count = f.u32()? as usize;
            let mut nodes = Vec::with_capacity(count.min(4096));
            for _ in 0..count {
                nodes.push((r.u64()?, r.u64()?));
            }
            Op::BatchForget { nodes }
        }
        GETATTR => {
            let flags = f.u32()?;
            let _dummy = f.u32()?;
            let fh = f.u64()?;
            Op::GetAttr { fh: (flags & GETATTR_FH != 0).then_some(fh) }
        }
        SETATTR => {
            let valid = f.u32()?;
            let _padding = f.u32()?;
            let (fh, size, _lock_owner, atime, mtime, _ctime) = (f.u64()?, f.u64()?, f.u64()?, f.u64()?, f.u64()?, f.u64()?);
            let (atimensec, mtimensec, _ctimensec, mode, _unused, uid, gid) = (f.u32()?, f.u32()?, f.u32()?, f.u32()?, f.u32()?, f.u32()?, f.u32()?);
            let set = |bit: u32| valid & bit != 0;
            let time = |bit: u32, now: u32, secs: u64, nsecs: u32| match (set(now), set(bit)) {
                (true, _) => Some(TimeOrNow::Now),
                (false, true) => Some(TimeOrNow::At(system_time(secs, nsecs))),
                _ => None,
            };
            Op::SetAttr(SetAttrIn {
                mode: set(FATTR_MODE).then_some(mode),
                uid: set(FATTR_UID).then_some(uid),
                gid: set(FATTR_GID).then_some(gid),
                size: set(FATTR_SIZE).then_some(size),
                atime: time(FATTR_ATIME, FATTR_ATIME_NOW, atime, atimensec),
                mtime: time(FATTR_MTIME, FATTR_MTIME_NOW, mtime, mtimensec),
                fh: set(FATTR_FH).then_some(fh),
                kill_suidgid: set(FATTR_KILL_SUIDGID),
            })
        }
        READLINK => Op::ReadLink,
        SYMLINK => Op::Symlink { name: r.name()?, target: r.name()? },
        MKNOD => {
            let (mode, rdev, umask) = (f.u32()?, f.u32()?, f.u32()?);
            Op::MkNod { name: r.name()?, mode, rdev, umask }
        }
        MKDIR => {
            let (mode, umask) = (f.u32()?, f.u32()?);
            Op::MkDir { name: r.name()?, mode, umask }
        }
        UNLINK => Op::Unlink { name: r.name()? },
        RMDIR => Op::RmDir { name: r.name()? },
        RENAME => {
            let newdir = f.u64()?;
            Op::Rename { name: r.name()?, newdir, newname: r.name()?, flags: 0 }
        }
        RENAME2 => {
            let (newdir, flags) = (f.u64()?, f.u32()?);
            Op::Rename { name: r.name()?, newdir, newname: r.name()?, flags }
        }
        LINK => {
            let oldnodeid = f.u64()?;
            Op::Link { oldnodeid, newname: r.name()? }
        }
        OPEN => Op::Open { flags: f.u32()? as i32 },
        OPENDIR => Op::OpenDir,
        READ | READDIR | READDIRPLUS => {
            let (fh, offset, size) = (f.u64()?, f.u64()?, f.u32()?);
            match opcode_ {
                READ => Op::Read { fh, offset, size },
                READDIR => Op::ReadDir { fh, offset, size },
                _ => Op::ReadDirPlus { fh, offset, size },
            }
        }
        WRITE => {
            let (fh, offset, size, write_flags) = (f.u64()?, f.u64()?, f.u32()? as usize, f.u32()?);
            let data = r.rest();
            Op::Write { fh, offset, data: data.get(..size).ok_or(Malformed)?, kill_suidgid: write_flags & WRITE_KILL_SUIDGID != 0 }
        }
        STATFS => Op::StatFs,
        RELEASE => Op::Release { fh: f.u64()? },
        RELEASEDIR => Op::ReleaseDir { fh: f.u64()? },
        FLUSH => Op::Flush { fh: f.u64()? },
        FSYNC | FSYNCDIR => {
            let (fh, flags) = (f.u64()?, f.u32()?);
            let datasync = flags & FSYNC_FDATASYNC != 0;
            if opcode_ == FSYNC {
                Op::Fsync { fh, datasync }
            } else {
                Op::FsyncDir { fh, datasync }
            }
        }
        SETXATTR => {
            let (size, flags) = (f.u32()? as usize, f.u32()? as i32);
            let name = r.name()?;
            Op::SetXattr { name, value: r.rest().get(..size).ok_or(Malformed)?, flags }
        }
        GETXATTR => {
            let size = f.u32()?;
            Op::GetXattr { name: r.name()?, size }
        }
        LISTXATTR => Op::ListXattr { size: f.u32()? },
        REMOVEXATTR => Op::RemoveXattr { name: r.name()? },
        ACCESS => Op::Access,
        CREATE => {
            let (flags, mode, umask) = (f.u32()? as i32, f.u32()?, f.u32()?);
            Op::Create { name: r.name()?, mode, umask, flags }
        }
        INTERRUPT => Op::Interrupt { unique: f.u64()? },
        GETLK | SETLK | SETLKW => {
            let (fh, owner) = (f.u64()?, f.u64()?);
            let lock = FileLockIn { start: f.u64()?, end: f.u64()?, typ: f.u32()?, pid: f.u32()? };
            let lk_flags = f.u32()?;
            match opcode_ {
                GETLK => Op::GetLk { fh, owner, lock },
                _ => Op::SetLk { fh, owner, lock, flock: lk_flags & LK_FLOCK != 0, wait: opcode_ == SETLKW },
            }
        }
        FALLOCATE => {
            let (fh, offset, length, mode) = (f.u64()?, f.u64()?, f.u64()?, f.u32()? as i32);
            Op::Fallocate { fh, offset, length, mode }
        }
        LSEEK => {
            let (fh, offset, whence) = (f.u64()?, f.u64()? as i64, f.u32()? as i32);
            Op::Lseek { fh, offset, whence }
        }
        COPY_FILE_RANGE => {
            let (fh_in, off_in, _nodeid_out, fh_out, off_out, len) = (f.u64()?, f.u64()?, f.u64()?, f.u64()?, f.u64()?, f.u64()?);
            Op::CopyFileRange { fh_in, off_in, fh_out, off_out, len }
        }
        _ => Op::Unsupported,
    };
    Ok(op)
}

/// Whether the kernel expects no answer.
pub(crate) fn is_unanswered(opcode_: u32) -> bool {
    matches!(opcode_, opcode::FORGET | opcode::BATCH_FORGET | opcode::INTERRUPT)
}

/// Attributes as the kernel's `fuse_attr` wants them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FileAttr {
    pub(crate) ino: u64,
    pub(crate) size: u64,
    pub(crate) blocks: u64,
    pub(crate) atime: SystemTime,
    pub(crate) mtime: SystemTime,
    pub(crate) ctime: SystemTime,
    /// Type and permission bits, as `st_mode`.
    pub(crate) mode: u32,
    pub(crate) nlink: u32,
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    pub(crate) rdev: u32,
    pub(crate) blksize: u32,
}

/// Appends little pieces of a reply.
pub(crate) struct Out {
    pub(crate) bytes: Vec<u8>,
}

impl Default for Out {
    /// Room for the largest fixed-size reply (`fuse_entry_out` with
    /// `fuse_open_out`: 144 bytes), so that a reply is one allocation.
    fn default() -> Self {
        Out { bytes: Vec::with_capacity(144) }
    }
}

impl Out {
    pub(crate) fn u16(&mut self, v: u16) -> &mut Self {
        self.bytes.extend_from_slice(&v.to_ne_bytes());
        self
    }

    pub(crate) fn u32(&mut self, v: u32) -> &mut Self {
        self.bytes.extend_from_slice(&v.to_ne_bytes());
        self
    }

    pub(crate) fn u64(&mut self, v: u64) -> &mut Self {
        self.bytes.extend_from_slice(&v.to_ne_bytes());
        self
    }

    /// `fuse_attr` (88 bytes).
    pub(crate) fn attr(&mut self, a: &FileAttr) -> &mut Self {
        let (at, atn) = kernel_time(a.atime);
        let (mt, mtn) = kernel_time(a.mtime);
        let (ct, ctn) = kernel_time(a.ctime);
        self.u64(a.ino).u64(a.size).u64(a.blocks).u64(at).u64(mt).u64(ct);
        self.u32(atn).u32(mtn).u32(ctn).u32(a.mode).u32(a.nlink).u32(a.uid).u32(a.gid).u32(a.rdev).u32(a.blksize).u32(0)
    }

    /// `fuse_entry_out` (128 bytes).
    pub(crate) fn entry(&mut self, ttl: Duration, attr: &FileAttr, generation: u64) -> &mut Self {
        self.u64(attr.ino).u64(generation).u64(ttl.as_secs()).u64(ttl.as_secs()).u32(ttl.subsec_nanos()).u32(ttl.subsec_nanos()).attr(attr)
    }

    /// `fuse_attr_out` (104 bytes).
    pub(crate) fn attr_out(&mut self, ttl: Duration, attr: &FileAttr) -> &mut Self {
        self.u64(ttl.as_secs()).u32(ttl.subsec_nanos()).u32(0).attr(attr)
    }

    /// `fuse_lk_out` (24 bytes).
    pub(crate) fn lock(&mut self, lock: &FileLockIn) -> &mut Self {
        self.u64(lock.start).u64(lock.end).u32(lock.typ).u32(lock.pid)
    }

    /// `fuse_open_out` (16 bytes).
    pub(crate) fn open(&mut self, fh: u64, open_flags: u32, backing_id: u32) -> &mut Self {
        self.u64(fh).u32(open_flags).u32(backing_id)
    }

    /// One `fuse_dirent` (without attributes) padded to 8 bytes.
    pub(crate) fn dirent(&mut self, ino: u64, offset: u64, kind: u32, name: &[u8]) -> &mut Self {
        self.u64(ino).u64(offset).u32(name.len() as u32).u32(kind);
        self.bytes.extend_from_slice(name);
        let padded = self.bytes.len().next_multiple_of(8);
        self.bytes.resize(padded, 0);
        self
    }
}

/// Bytes of one directory entry in a `readdir` answer.
pub(crate) fn dirent_len(name: &[u8]) -> usize {
    (24 + name.len()).next_multiple_of(8)
}

/// Bytes of one directory entry in a `readdirplus` answer.
pub(crate) fn direntplus_len(name: &[u8]) -> usize {
    128 + dirent_len(name)
}

/// `fuse_out_header` of an answer of `body_len` bytes, or of an error.
pub(crate) fn out_header(unique: u64, error: i32, body_len: usize) -> [u8; OUT_HEADER_LEN] {
    let mut header = [0u8; OUT_HEADER_LEN];
    header[..4].copy_from_slice(&((OUT_HEADER_LEN + body_len) as u32).to_ne_bytes());
    header[4..8].copy_from_slice(&(-error).to_ne_bytes());
    header[8..].copy_from_slice(&unique.to_ne_bytes());
    header
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header_bytes(opcode: u32, unique: u64, nodeid: u64, len: usize) -> Vec<u8> {
        let mut out = Out::default();
        out.u32(len as u32).u32(opcode).u64(unique).u64(nodeid).u32(1000).u32(100).u32(42).u32(0);
        out.bytes
    }

    #[test]
    fn a_lookup_names_its_parent_and_name() {
        let bytes = header_bytes(opcode::LOOKUP, 7, 9, IN_HEADER_LEN + 4);
        let header = decode_header(&bytes).unwrap();
        assert_eq!(header, Header { opcode: opcode::LOOKUP, unique: 7, nodeid: 9, uid: 1000, gid: 100, pid: 42 });
        assert_eq!(decode_op(opcode::LOOKUP, &[], b"abc\0").unwrap(), Op::Lookup { name: OsStr::new("abc") });
        assert_eq!(decode_op(opcode::LOOKUP, &[], b"abc"), Err(Malformed));
    }

    #[test]
    fn lock_requests_carry_owner_range_and_kind() {
        let mut fixed = Out::default();
        fixed.u64(3).u64(0xfeed).u64(10).u64(crate::LOCK_TO_END).u32(libc::F_WRLCK as u32).u32(77).u32(LK_FLOCK).u32(0);
        assert_eq!(fixed.bytes.len(), fixed_args_len(opcode::SETLKW));
        let lock = FileLockIn { start: 10, end: crate::LOCK_TO_END, typ: libc::F_WRLCK as u32, pid: 77 };
        assert_eq!(decode_op(opcode::SETLKW, &fixed.bytes, &[]).unwrap(), Op::SetLk { fh: 3, owner: 0xfeed, lock, flock: true, wait: true });
        assert_eq!(decode_op(opcode::GETLK, &fixed.bytes, &[]).unwrap(), Op::GetLk { fh: 3, owner: 0xfeed, lock });
        assert_eq!(decode_op(opcode::INTERRUPT, &5u64.to_ne_bytes(), &[]).unwrap(), Op::Interrupt { unique: 5 });
        assert_eq!(Out::default().lock(&lock).bytes.len(), 24);
    }

    #[test]
    fn setattr_keeps_only_what_is_valid_and_times_before_the_epoch() {
        let mut fixed = Out::default();
        let valid = FATTR_MODE | FATTR_MTIME | FATTR_ATIME_NOW | FATTR_KILL_SUIDGID;
        fixed.u32(valid).u32(0).u64(0).u64(0).u64(0).u64(0).u64((-1i64) as u64).u64(0);
        fixed.u32(0).u32(1).u32(0).u32(0o4755).u32(0).u32(5).u32(6).u32(0);
        assert_eq!(fixed.bytes.len(), fixed_args_len(opcode::SETATTR));
        let Op::SetAttr(set) = decode_op(opcode::SETATTR, &fixed.bytes, &[]).unwrap() else { panic!() };
        assert_eq!(set.mode, Some(0o4755));
        assert_eq!((set.uid, set.gid, set.size, set.fh), (None, None, None, None));
        assert_eq!(set.atime, Some(TimeOrNow::Now));
        // (-1 s, 1 ns) is 0.999999999 s before the epoch.
        assert_eq!(set.mtime, Some(TimeOrNow::At(SystemTime::UNIX_EPOCH - Duration::new(0, 999_999_999))));
        assert!(set.kill_suidgid);
        assert_eq!(kernel_time(SystemTime::UNIX_EPOCH - Duration::new(0, 999_999_999)), ((-1i64) as u64, 1));
    }

    #[test]
    fn a_write_carries_its_data_and_a_rename_both_names() {
        let mut fixed = Out::default();
        fixed.u64(3).u64(4096).u32(5).u32(WRITE_KILL_SUIDGID).u64(0).u32(0).u32(0);
        let op = decode_op(opcode::WRITE, &fixed.bytes, b"hello").unwrap();
        assert_eq!(op, Op::Write { fh: 3, offset: 4096, data: b"hello", kill_suidgid: true });
        let mut fixed = Out::default();
        fixed.u64(12).u32(1).u32(0);
        let op = decode_op(opcode::RENAME2, &fixed.bytes, b"a\0b\0").unwrap();
        assert_eq!(op, Op::Rename { name: OsStr::new("a"), newdir: 12, newname: OsStr::new("b"), flags: 1 });
    }

    #[test]
    fn entries_and_attributes_have_the_kernels_sizes() {
        let attr = FileAttr {
            ino: 5,
            size: 1,
            blocks: 8,
            atime: SystemTime::UNIX_EPOCH,
            mtime: SystemTime::UNIX_EPOCH,
            ctime: SystemTime::UNIX_EPOCH,
            mode: 0o100644,
            nlink: 1,
            uid: 0,
            gid: 0,
            rdev: 0,
            blksize: 4096,
        };
        let mut out = Out::default();
        out.entry(Duration::from_secs(1), &attr, 0);
        assert_eq!(out.bytes.len(), 128);
        let mut out = Out::default();
        out.attr_out(Duration::from_secs(1), &attr);
        assert_eq!(out.bytes.len(), 104);
        let mut out = Out::default();
        out.dirent(5, 1, 8, b"abc");
        assert_eq!(out.bytes.len(), dirent_len(b"abc"));
        assert_eq!(direntplus_len(b"abc"), 128 + 32);
    }
}
