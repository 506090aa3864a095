//! The answers of the adapter, one type per kind of request, each consumed by
//! the one answer it gives (or an errno, through [`ReplyError`], so that one
//! helper, [`crate::mount_state::Shared::fail`], answers every failure).

use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::time::Duration;

use crate::device::{open_backing, BackingId};
use crate::request::Replier;
use crate::wire::{self, FileAttr, Out, FOPEN_PASSTHROUGH};

/// Kernel inode number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct INodeNo(pub(crate) u64);

/// The kernel's name of an open file or directory of the adapter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct FileHandle(pub(crate) u64);

/// `FOPEN_*` flags of an open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct FopenFlags(pub(crate) u32);

impl FopenFlags {
    pub(crate) const NOFLUSH: FopenFlags = FopenFlags(wire::FOPEN_NOFLUSH);
    pub(crate) const KEEP_CACHE: FopenFlags = FopenFlags(wire::FOPEN_KEEP_CACHE);
    pub(crate) const CACHE_DIR: FopenFlags = FopenFlags(wire::FOPEN_CACHE_DIR);

    pub(crate) fn with(self, other: FopenFlags) -> Self {
        FopenFlags(self.0 | other.0)
    }

    pub(crate) fn empty() -> Self {
        FopenFlags(0)
    }
}

/// Replies that can carry an errno.
pub(crate) trait ReplyError {
    fn error(self, errno: i32);
}

macro_rules! replies {
    ($($name:ident),* $(,)?) => {
        $(
            pub(crate) struct $name(pub(crate) Replier);

            impl ReplyError for $name {
                fn error(self, errno: i32) {
                    self.0.send(Err(errno));
                }
            }
        )*
    };
}

replies!(ReplyEntry, ReplyAttr, ReplyData, ReplyEmpty, ReplyOpen, ReplyCreate, ReplyWrite, ReplyStatfs, ReplyXattr, ReplyLseek, ReplyLock);

impl ReplyEntry {
    pub(crate) fn entry(self, ttl: &Duration, attr: &FileAttr, generation: u64) {
        let mut out = Out::default();
        out.entry(*ttl, attr, generation);
        self.0.send(Ok(&out.bytes));
    }
}

impl ReplyAttr {
    pub(crate) fn attr(self, ttl: &Duration, attr: &FileAttr) {
        let mut out = Out::default();
        out.attr_out(*ttl, attr);
        self.0.send(Ok(&out.bytes));
    }
}

impl ReplyData {
    pub(crate) fn data(self, data: &[u8]) {
        self.0.send(Ok(data));
    }
}

impl ReplyEmpty {
    pub(crate) fn ok(self) {
        self.0.send(Ok(&[]));
    }
}

/// `fuse_open_out`'s flags and backing id: passthrough where there is a backing.
fn open_flags(flags: FopenFlags, backing: Option<&BackingId>) -> (u32, u32) {
    backing.map_or((flags.0, 0), |backing| (flags.0 | FOPEN_PASSTHROUGH, backing.id))
}

/// A reply that is one size (`fuse_write_out`, `fuse_getxattr_out`: a `u32` and padding).
fn send_size(replier: Replier, size: u32) {
    let mut out = [0u8; 8];
    out[..4].copy_from_slice(&size.to_ne_bytes());
    replier.send(Ok(&out));
}

/// Registers `fd` as the passthrough backing of a file about to be opened.
fn backing_of(replier: &Replier, fd: &OwnedFd) -> io::Result<BackingId> {
    open_backing(replier.device(), fd.as_fd())
}

impl ReplyOpen {
    pub(crate) fn open_backing(&self, fd: &OwnedFd) -> io::Result<BackingId> {
        backing_of(&self.0, fd)
    }

    /// Opened, passed through to `backing` if given.
    pub(crate) fn opened(self, fh: FileHandle, flags: FopenFlags, backing: Option<&BackingId>) {
        let (flags, backing_id) = open_flags(flags, backing);
        let mut out = Out::default();
        out.open(fh.0, flags, backing_id);
        self.0.send(Ok(&out.bytes));
    }
}

impl ReplyCreate {
    pub(crate) fn open_backing(&self, fd: &OwnedFd) -> io::Result<BackingId> {
        backing_of(&self.0, fd)
    }

    /// Created and opened, passed through to `backing` if given.
    pub(crate) fn created(self, ttl: &Duration, attr: &FileAttr, generation: u64, fh: FileHandle, flags: FopenFlags, backing: Option<&BackingId>) {
        let (flags, backing_id) = open_flags(flags, backing);
        let mut out = Out::default();
        out.entry(*ttl, attr, generation).open(fh.0, flags, backing_id);
        self.0.send(Ok(&out.bytes));
    }
}

impl ReplyWrite {
    pub(crate) fn written(self, size: u32) {
        send_size(self.0, size);
    }
}

impl ReplyStatfs {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn statfs(self, blocks: u64, bfree: u64, bavail: u64, files: u64, ffree: u64, bsize: u32, namelen: u32, frsize: u32) {
        let mut out = Out::default();
        out.u64(blocks).u64(bfree).u64(bavail).u64(files).u64(ffree).u32(bsize).u32(namelen).u32(frsize).u32(0);
        out.bytes.resize(80, 0);
        self.0.send(Ok(&out.bytes));
    }
}

impl ReplyXattr {
    pub(crate) fn size(self, size: u32) {
        send_size(self.0, size);
    }

    pub(crate) fn data(self, data: &[u8]) {
        self.0.send(Ok(data));
    }
}

impl ReplyLock {
    pub(crate) fn lock(self, lock: &wire::FileLockIn) {
        let mut out = Out::default();
        out.lock(lock);
        self.0.send(Ok(&out.bytes));
    }
}

impl ReplyLseek {
    pub(crate) fn offset(self, offset: i64) {
        self.0.send(Ok(&offset.to_ne_bytes()));
    }
}

/// A `readdir` or `readdirplus` answer filled up to the size the kernel asked.
pub(crate) struct ReplyDirectory {
    replier: Replier,
    size: usize,
    out: Out,
    plus: bool,
}

impl ReplyError for ReplyDirectory {
    fn error(self, errno: i32) {
        self.replier.send(Err(errno));
    }
}

impl ReplyDirectory {
    pub(crate) fn new(replier: Replier, size: u32, plus: bool) -> Self {
        ReplyDirectory { replier, size: size as usize, out: Out::default(), plus }
    }

    /// Entries the kernel's buffer holds if their names are of a typical
    /// length (16 bytes): a directory of short names fits in one answer
    /// instead of a few growing ones (a round trip each).
    pub(crate) fn room_for_typical_names(&self) -> usize {
        (self.size / self.entry_len(&[b'n'; 16])).max(1)
    }

    /// Whether another entry named `name` would still fit.
    pub(crate) fn fits(&self, name: &OsStr) -> bool {
        self.out.bytes.len() + self.entry_len(name.as_bytes()) <= self.size
    }

    /// The bytes an entry named `name` takes in this answer.
    fn entry_len(&self, name: &[u8]) -> usize {
        if self.plus {
            wire::direntplus_len(name)
        } else {
            wire::dirent_len(name)
        }
    }

    /// Adds an entry unless the buffer is full; true when it was full.
    pub(crate) fn add(&mut self, ino: u64, offset: u64, mode: u32, name: &OsStr) -> bool {
        if !self.fits(name) {
            return true;
        }
        self.out.dirent(ino, offset, mode >> 12, name.as_bytes());
        false
    }

    /// Adds an entry with its attributes (readdirplus) unless the buffer is full.
    pub(crate) fn add_plus(&mut self, offset: u64, name: &OsStr, ttl: &Duration, attr: &FileAttr, generation: u64) -> bool {
        if !self.fits(name) {
            return true;
        }
        self.out.entry(*ttl, attr, generation).dirent(attr.ino, offset, attr.mode >> 12, name.as_bytes());
        false
    }

    pub(crate) fn ok(self) {
        self.replier.send(Ok(&self.out.bytes));
    }
}
