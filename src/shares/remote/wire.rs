//! The messages of remote shares: one [`FsOp`] per `FsBackend` call, sent by
//! the target's node to the source's node, answered by an [`FsReply`] or an
//! errno; and the invalidations the source pushes back.
//!
//! Frames: kind [`kind::SHARE_OP`] carries a [`ShareCall`] and its answer
//! (`Result<FsReply, i32>`); kind [`kind::SHARE_INVALIDATE`] a [`Pushed`] from
//! the source, answered by an empty frame. Bodies are postcard; byte fields
//! (names, data) are length-prefixed bytes, never UTF-8 strings, since file
//! names are bytes. A field is only ever added at the end of a message. The
//! golden tests pin the bytes.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hoody_fuse::{Attr, Caller, DirEntry, FileKind, FileLock, LockKind, LockOwner, NodeId, SetAttr, SetTime, StatFs};
use serde::{Deserialize, Serialize};

pub mod kind {
    pub const SHARE_OP: u16 = 64;
    pub const SHARE_INVALIDATE: u16 = 65;
}

/// A call of a target's mount on its share's source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShareCall {
    pub share_id: String,
    pub target_id: String,
    pub op: FsOp,
}

/// What a source pushes to the node of a target's mount.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pushed {
    pub share_id: String,
    pub target_id: String,
    pub invalidation: Invalidation,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Invalidation {
    Data { node: u64, offset: i64, len: i64 },
    Entry { parent: u64, #[serde(with = "serde_bytes")] name: Vec<u8> },
    Everything,
    Shed { count: u64 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WTime {
    pub secs: i64,
    pub nanos: u32,
}

impl From<SystemTime> for WTime {
    fn from(t: SystemTime) -> Self {
        match t.duration_since(UNIX_EPOCH) {
            Ok(d) => WTime { secs: d.as_secs() as i64, nanos: d.subsec_nanos() },
            Err(e) => {
                let d = e.duration();
                // Before the epoch: floor to whole seconds below, nanos forward.
                let (secs, nanos) = if d.subsec_nanos() == 0 { (-(d.as_secs() as i64), 0) } else { (-(d.as_secs() as i64) - 1, 1_000_000_000 - d.subsec_nanos()) };
                WTime { secs, nanos }
            }
        }
    }
}

impl From<WTime> for SystemTime {
    fn from(t: WTime) -> Self {
        let nanos = Duration::from_nanos(u64::from(t.nanos.min(999_999_999)));
        if t.secs >= 0 {
            UNIX_EPOCH + Duration::from_secs(t.secs as u64) + nanos
        } else {
            UNIX_EPOCH - Duration::from_secs(t.secs.unsigned_abs()) + nanos
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WAttr {
    pub node: u64,
    pub kind: u8,
    pub perm: u16,
    pub nlink: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub blocks: u64,
    pub rdev: u32,
    pub atime: WTime,
    pub mtime: WTime,
    pub ctime: WTime,
}

fn kind_code(k: FileKind) -> u8 {
    match k {
        FileKind::File => 0,
        FileKind::Directory => 1,
        FileKind::Symlink => 2,
        FileKind::Fifo => 3,
        FileKind::Socket => 4,
        FileKind::CharDevice => 5,
        FileKind::BlockDevice => 6,
    }
}

fn kind_of(code: u8) -> Result<FileKind, i32> {
    Ok(match code {
        0 => FileKind::File,
        1 => FileKind::Directory,
        2 => FileKind::Symlink,
        3 => FileKind::Fifo,
        4 => FileKind::Socket,
        5 => FileKind::CharDevice,
        6 => FileKind::BlockDevice,
        _ => return Err(libc::EPROTO),
    })
}

impl From<&Attr> for WAttr {
    fn from(a: &Attr) -> Self {
        WAttr {
            node: a.node.0,
            kind: kind_code(a.kind),
            perm: a.perm,
            nlink: a.nlink,
            uid: a.uid,
            gid: a.gid,
            size: a.size,
            blocks: a.blocks,
            rdev: a.rdev,
            atime: a.atime.into(),
            mtime: a.mtime.into(),
            ctime: a.ctime.into(),
        }
    }
}

impl WAttr {
    pub fn to_attr(&self) -> Result<Attr, i32> {
        Ok(Attr {
            node: NodeId(self.node),
            kind: kind_of(self.kind)?,
            perm: self.perm,
            nlink: self.nlink,
            uid: self.uid,
            gid: self.gid,
            size: self.size,
            blocks: self.blocks,
            rdev: self.rdev,
            atime: self.atime.into(),
            mtime: self.mtime.into(),
            ctime: self.ctime.into(),
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WDirEntry {
    #[serde(with = "serde_bytes")]
    pub name: Vec<u8>,
    pub offset: u64,
    pub attr: WAttr,
}

impl From<&DirEntry> for WDirEntry {
    fn from(e: &DirEntry) -> Self {
        WDirEntry { name: e.name.as_bytes().to_vec(), offset: e.offset, attr: (&e.attr).into() }
    }
}

impl WDirEntry {
    pub fn to_entry(self) -> Result<DirEntry, i32> {
        Ok(DirEntry { name: OsString::from_vec(self.name), offset: self.offset, attr: self.attr.to_attr()? })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WCaller {
    pub uid: u32,
    pub gid: u32,
}

impl From<Caller> for WCaller {
    fn from(c: Caller) -> Self {
        WCaller { uid: c.uid, gid: c.gid }
    }
}

impl From<WCaller> for Caller {
    fn from(c: WCaller) -> Self {
        Caller { uid: c.uid, gid: c.gid }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum WSetTime {
    Now,
    At(WTime),
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WSetAttr {
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub size: Option<u64>,
    pub atime: Option<WSetTime>,
    pub mtime: Option<WSetTime>,
    pub drop_privileges: Option<WCaller>,
}

fn wset_time(t: SetTime) -> WSetTime {
    match t {
        SetTime::Now => WSetTime::Now,
        SetTime::At(at) => WSetTime::At(at.into()),
    }
}

fn set_time(t: WSetTime) -> SetTime {
    match t {
        WSetTime::Now => SetTime::Now,
        WSetTime::At(at) => SetTime::At(at.into()),
    }
}

impl From<&SetAttr> for WSetAttr {
    fn from(s: &SetAttr) -> Self {
        WSetAttr {
            mode: s.mode,
            uid: s.uid,
            gid: s.gid,
            size: s.size,
            atime: s.atime.map(wset_time),
            mtime: s.mtime.map(wset_time),
            drop_privileges: s.drop_privileges.map(Into::into),
        }
    }
}

impl From<WSetAttr> for SetAttr {
    fn from(s: WSetAttr) -> Self {
        SetAttr {
            mode: s.mode,
            uid: s.uid,
            gid: s.gid,
            size: s.size,
            atime: s.atime.map(set_time),
            mtime: s.mtime.map(set_time),
            drop_privileges: s.drop_privileges.map(Into::into),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WStatFs {
    pub blocks: u64,
    pub bfree: u64,
    pub bavail: u64,
    pub files: u64,
    pub ffree: u64,
    pub bsize: u32,
    pub frsize: u32,
    pub namelen: u32,
}

impl From<StatFs> for WStatFs {
    fn from(s: StatFs) -> Self {
        WStatFs { blocks: s.blocks, bfree: s.bfree, bavail: s.bavail, files: s.files, ffree: s.ffree, bsize: s.bsize, frsize: s.frsize, namelen: s.namelen }
    }
}

impl From<WStatFs> for StatFs {
    fn from(s: WStatFs) -> Self {
        StatFs { blocks: s.blocks, bfree: s.bfree, bavail: s.bavail, files: s.files, ffree: s.ffree, bsize: s.bsize, frsize: s.frsize, namelen: s.namelen }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WLock {
    /// `F_RDLCK`, `F_WRLCK`, `F_UNLCK`.
    pub kind: i32,
    pub start: u64,
    pub end: u64,
    pub pid: u32,
}

impl From<FileLock> for WLock {
    fn from(l: FileLock) -> Self {
        WLock { kind: l.kind.to_fcntl(), start: l.start, end: l.end, pid: l.pid }
    }
}

impl WLock {
    pub fn to_lock(self) -> Result<FileLock, i32> {
        Ok(FileLock { kind: LockKind::from_fcntl(self.kind).ok_or(libc::EINVAL)?, start: self.start, end: self.end, pid: self.pid })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum WLockOwner {
    Process(u64),
    OpenFile,
}

impl From<LockOwner> for WLockOwner {
    fn from(o: LockOwner) -> Self {
        match o {
            LockOwner::Process(p) => WLockOwner::Process(p),
            LockOwner::OpenFile => WLockOwner::OpenFile,
        }
    }
}

impl From<WLockOwner> for LockOwner {
    fn from(o: WLockOwner) -> Self {
        match o {
            WLockOwner::Process(p) => LockOwner::Process(p),
            WLockOwner::OpenFile => LockOwner::OpenFile,
        }
    }
}

/// One `FsBackend` call. Names and paths are bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum FsOp {
    /// A target's mount starts (again): the source drops what an earlier
    /// mount of this target left and answers the root.
    Attach,
    Root,
    Lookup { parent: u64, #[serde(with = "serde_bytes")] name: Vec<u8> },
    Forget { node: u64, count: u64 },
    Getattr { node: u64, handle: Option<u64> },
    Setattr { node: u64, handle: Option<u64>, changes: WSetAttr },
    Opendir { dir: u64 },
    Readdirplus { dir: u64, handle: u64, offset: u64, max_entries: u32 },
    Releasedir { handle: u64 },
    Fsyncdir { handle: u64, datasync: bool },
    Open { node: u64, flags: i32, caller: WCaller },
    Create { parent: u64, #[serde(with = "serde_bytes")] name: Vec<u8>, mode: u32, umask: u32, flags: i32, caller: WCaller },
    Read { handle: u64, offset: u64, size: u32 },
    Write { handle: u64, offset: u64, #[serde(with = "serde_bytes")] data: Vec<u8>, drop_privileges: Option<WCaller> },
    Flush { handle: u64 },
    Release { handle: u64 },
    Fsync { handle: u64, datasync: bool },
    Fallocate { handle: u64, offset: u64, length: u64, mode: i32 },
    Lseek { handle: u64, offset: u64, whence: i32 },
    CopyFileRange { from: u64, from_offset: u64, to: u64, to_offset: u64, length: u64 },
    Mkdir { parent: u64, #[serde(with = "serde_bytes")] name: Vec<u8>, mode: u32, umask: u32, caller: WCaller },
    Mknod { parent: u64, #[serde(with = "serde_bytes")] name: Vec<u8>, mode: u32, umask: u32, rdev: u32, caller: WCaller },
    Symlink { parent: u64, #[serde(with = "serde_bytes")] name: Vec<u8>, #[serde(with = "serde_bytes")] target: Vec<u8>, caller: WCaller },
    Link { node: u64, new_parent: u64, #[serde(with = "serde_bytes")] new_name: Vec<u8> },
    Unlink { parent: u64, #[serde(with = "serde_bytes")] name: Vec<u8> },
    Rmdir { parent: u64, #[serde(with = "serde_bytes")] name: Vec<u8> },
    Rename { parent: u64, #[serde(with = "serde_bytes")] name: Vec<u8>, new_parent: u64, #[serde(with = "serde_bytes")] new_name: Vec<u8>, flags: u32 },
    Readlink { node: u64 },
    Statfs,
    Getxattr { node: u64, #[serde(with = "serde_bytes")] name: Vec<u8> },
    Setxattr { node: u64, #[serde(with = "serde_bytes")] name: Vec<u8>, #[serde(with = "serde_bytes")] value: Vec<u8>, flags: i32 },
    Listxattr { node: u64 },
    Removexattr { node: u64, #[serde(with = "serde_bytes")] name: Vec<u8> },
    Getlk { handle: u64, owner: u64, lock: WLock },
    /// Never waits on the source: a waiting lock is retried by the target.
    Setlk { handle: u64, owner: WLockOwner, lock: WLock },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WName(#[serde(with = "serde_bytes")] pub Vec<u8>);

/// The answer of one [`FsOp`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum FsReply {
    Attached { root: WAttr, takes_locks: bool },
    Attr(WAttr),
    Done,
    Handle(u64),
    Entries(Vec<WDirEntry>),
    Created { attr: WAttr, handle: u64 },
    Data(#[serde(with = "serde_bytes")] Vec<u8>),
    Written(u32),
    Offset(u64),
    Bytes(#[serde(with = "serde_bytes")] Vec<u8>),
    Names(Vec<WName>),
    StatFs(WStatFs),
    Lock(Option<WLock>),
}

/// The answer frame's body: the reply, or an errno.
pub type Answer = Result<FsReply, i32>;

pub fn encode<T: Serialize>(message: &T) -> Vec<u8> {
    postcard::to_stdvec(message).expect("share messages always serialize")
}

pub fn decode<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, String> {
    postcard::from_bytes(body).map_err(|e| format!("malformed share message: {e}"))
}

pub fn name(bytes: &[u8]) -> &OsStr {
    OsStr::from_bytes(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn golden_bytes_of_share_messages() {
        let call = ShareCall { share_id: "s".into(), target_id: "t".into(), op: FsOp::Lookup { parent: 1, name: b"a".to_vec() } };
        // share id, target id, variant 2 (Lookup), parent 1, name "a".
        assert_eq!(encode(&call), b"\x01s\x01t\x02\x01\x01a");
        let read = FsOp::Read { handle: 7, offset: 300, size: 1 << 20 };
        assert_eq!(encode(&read), b"\x0c\x07\xac\x02\x80\x80\x40");
        let answer: Answer = Ok(FsReply::Data(vec![9, 9]));
        assert_eq!(encode(&answer), b"\x00\x06\x02\x09\x09");
        let refused: Answer = Err(libc::ENOENT);
        assert_eq!(encode(&refused), b"\x01\x04");
        let pushed = Pushed { share_id: "s".into(), target_id: "t".into(), invalidation: Invalidation::Entry { parent: 1, name: b"x".to_vec() } };
        assert_eq!(encode(&pushed), b"\x01s\x01t\x01\x01\x01x");
        let attr = WAttr { node: 1, kind: 1, perm: 0o755, nlink: 2, uid: 0, gid: 0, size: 4096, blocks: 8, rdev: 0, atime: WTime { secs: 1, nanos: 2 }, mtime: WTime { secs: -1, nanos: 0 }, ctime: WTime { secs: 0, nanos: 0 } };
        assert_eq!(encode(&FsReply::Attr(attr)), b"\x01\x01\x01\xed\x03\x02\x00\x00\x80\x20\x08\x00\x02\x02\x01\x00\x00\x00");
    }

    #[test]
    fn times_before_and_after_the_epoch_survive() {
        for t in [UNIX_EPOCH, UNIX_EPOCH + Duration::new(5, 7), UNIX_EPOCH - Duration::new(5, 7), UNIX_EPOCH - Duration::from_secs(3)] {
            assert_eq!(SystemTime::from(WTime::from(t)), t);
        }
    }

    proptest! {
        #[test]
        fn decoders_survive_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode::<ShareCall>(&bytes);
            let _ = decode::<Answer>(&bytes);
            let _ = decode::<Pushed>(&bytes);
        }

        #[test]
        fn writes_round_trip(handle in any::<u64>(), offset in any::<u64>(), data in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let op = FsOp::Write { handle, offset, data, drop_privileges: None };
            prop_assert_eq!(decode::<FsOp>(&encode(&op)).unwrap(), op);
        }
    }
}
