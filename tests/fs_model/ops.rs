//! The operations of the model and how random sequences of them are drawn:
//! a handful of names one and two levels deep, so that operations keep
//! meeting each other's files (renaming over them, linking them, removing the
//! directories they live in).

use proptest::prelude::*;
use proptest::sample::select;

/// Every path an operation may name, relative to the case's directory.
const PATHS: &[&str] = &["a", "b", "d", "e", "d/a", "d/b", "d/e", "e/a", "d/e/a", "d/e/b"];
/// Symlink targets: inside the tree, dangling, through a file, and one level up
/// (which leaves the case's directory only to find nothing there).
const SYMLINK_TARGETS: &[&str] = &["a", "b", "d", "d/a", "e/a", "../a", "nowhere", "a/x"];
const XATTR_NAMES: &[&str] = &["user.a", "user.b"];
/// Open descriptors an operation sequence can hold at once.
pub const SLOTS: usize = 2;

/// Bytes to write: `len` times `fill`, printed short in failing sequences.
#[derive(Debug, Clone, Copy)]
pub struct Fill {
    pub byte: u8,
    pub len: usize,
}

impl Fill {
    pub fn bytes(self) -> Vec<u8> {
        vec![self.byte; self.len]
    }
}

/// A time for `utimensat`; `None` in an `Option<Time>` leaves it alone (`UTIME_OMIT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Time {
    pub secs: i64,
    pub nanos: i64,
}

#[derive(Debug, Clone, Copy)]
pub enum OpenAccess {
    Read,
    Write,
    ReadWrite,
}

#[derive(Debug, Clone)]
pub enum Op {
    // By path, each a complete system call (opened files are closed again).
    Create {
        path: &'static str,
        mode: u32,
        exclusive: bool,
    },
    Write {
        path: &'static str,
        offset: u64,
        data: Fill,
        append: bool,
        truncate: bool,
    },
    Read {
        path: &'static str,
        offset: u64,
        len: usize,
    },
    Truncate {
        path: &'static str,
        size: u64,
    },
    Fallocate {
        path: &'static str,
        mode: i32,
        offset: u64,
        len: u64,
    },
    Rename {
        from: &'static str,
        to: &'static str,
        flags: u32,
    },
    Unlink {
        path: &'static str,
    },
    Mkdir {
        path: &'static str,
        mode: u32,
    },
    Rmdir {
        path: &'static str,
    },
    Link {
        from: &'static str,
        to: &'static str,
    },
    Symlink {
        target: &'static str,
        path: &'static str,
    },
    Readlink {
        path: &'static str,
    },
    /// A FIFO or a socket (`mknod`).
    MakeSpecial {
        path: &'static str,
        file_type: u32,
        mode: u32,
    },
    /// A character or block device: refused by shares, see the model.
    MakeDevice {
        path: &'static str,
        file_type: u32,
    },
    Chmod {
        path: &'static str,
        mode: u32,
    },
    Chown {
        path: &'static str,
        uid: u32,
        gid: u32,
    },
    SetTimes {
        path: &'static str,
        atime: Option<Time>,
        mtime: Option<Time>,
        follow: bool,
    },
    SetXattr {
        path: &'static str,
        name: &'static str,
        value: Fill,
        flags: i32,
    },
    GetXattr {
        path: &'static str,
        name: &'static str,
    },
    RemoveXattr {
        path: &'static str,
        name: &'static str,
    },
    ListXattr {
        path: &'static str,
    },
    Stat {
        path: &'static str,
        follow: bool,
    },
    ReadDir {
        path: &'static str,
    },
    // Through a descriptor kept open across other operations.
    Open {
        slot: usize,
        path: &'static str,
        access: OpenAccess,
        append: bool,
        truncate: bool,
        create: bool,
    },
    /// `offset: None` writes at the descriptor's position (`write`, not `pwrite`).
    FdWrite {
        slot: usize,
        offset: Option<u64>,
        data: Fill,
    },
    FdRead {
        slot: usize,
        offset: Option<u64>,
        len: usize,
    },
    FdTruncate {
        slot: usize,
        size: u64,
    },
    FdFallocate {
        slot: usize,
        mode: i32,
        offset: u64,
        len: u64,
    },
    FdStat {
        slot: usize,
    },
    FdSync {
        slot: usize,
    },
    Close {
        slot: usize,
    },
    /// `op` run as uid and gid `id`, without supplementary groups or the
    /// capabilities root has over files (filesystem credentials of the thread).
    AsUser {
        id: u32,
        op: Box<Op>,
    },
}

fn path() -> impl Strategy<Value = &'static str> {
    select(PATHS)
}

fn slot() -> impl Strategy<Value = usize> {
    0..SLOTS
}

/// Mostly small, sometimes across a page or far beyond the end.
fn offset() -> impl Strategy<Value = u64> {
    prop_oneof![4 => 0..64u64, 2 => 0..600u64, 1 => Just(4095u64), 1 => Just(8192u64)]
}

fn fill() -> impl Strategy<Value = Fill> {
    (any::<u8>(), prop_oneof![3 => 0..48usize, 1 => Just(4097usize)]).prop_map(|(byte, len)| Fill { byte, len })
}

fn mode() -> impl Strategy<Value = u32> {
    select(&[0o644, 0o600, 0o755, 0o777, 0o000, 0o4755, 0o2755, 0o1777, 0o2644][..])
}

fn fallocate_mode() -> impl Strategy<Value = i32> {
    select(
        &[
            0,
            libc::FALLOC_FL_KEEP_SIZE,
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            libc::FALLOC_FL_ZERO_RANGE,
            libc::FALLOC_FL_ZERO_RANGE | libc::FALLOC_FL_KEEP_SIZE,
        ][..],
    )
}

fn time() -> impl Strategy<Value = Option<Time>> {
    let secs = select(&[0i64, 1, 1_000_000_000, 1 << 31, (1 << 32) + 7, -1][..]);
    let nanos = select(&[0i64, 1, 123_456_789, 999_999_999][..]);
    prop::option::weighted(0.8, (secs, nanos).prop_map(|(secs, nanos)| Time { secs, nanos }))
}

fn open_access() -> impl Strategy<Value = OpenAccess> {
    prop_oneof![Just(OpenAccess::Read), Just(OpenAccess::Write), Just(OpenAccess::ReadWrite)]
}

fn creating() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (path(), mode(), any::<bool>()).prop_map(|(path, mode, exclusive)| Op::Create { path, mode, exclusive }),
        4 => (path(), mode()).prop_map(|(path, mode)| Op::Mkdir { path, mode }),
        2 => (select(SYMLINK_TARGETS), path()).prop_map(|(target, path)| Op::Symlink { target, path }),
        2 => (path(), path()).prop_map(|(from, to)| Op::Link { from, to }),
        1 => (path(), select(&[libc::S_IFIFO, libc::S_IFSOCK][..]), mode())
            .prop_map(|(path, file_type, mode)| Op::MakeSpecial { path, file_type, mode }),
        1 => (path(), select(&[libc::S_IFCHR, libc::S_IFBLK][..])).prop_map(|(path, file_type)| Op::MakeDevice { path, file_type }),
    ]
}

fn changing() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (path(), offset(), fill(), any::<bool>(), prop::bool::weighted(0.2))
            .prop_map(|(path, offset, data, append, truncate)| Op::Write { path, offset, data, append, truncate }),
        2 => (path(), offset()).prop_map(|(path, size)| Op::Truncate { path, size }),
        1 => (path(), fallocate_mode(), offset(), offset()).prop_map(|(path, mode, offset, len)| Op::Fallocate { path, mode, offset, len }),
        3 => (path(), path(), select(&[0, libc::RENAME_NOREPLACE, libc::RENAME_EXCHANGE][..]))
            .prop_map(|(from, to, flags)| Op::Rename { from, to, flags }),
        2 => path().prop_map(|path| Op::Unlink { path }),
        2 => path().prop_map(|path| Op::Rmdir { path }),
    ]
}

fn metadata() -> impl Strategy<Value = Op> {
    let id = || select(&[0u32, 1000, 65534][..]);
    prop_oneof![
        2 => (path(), mode()).prop_map(|(path, mode)| Op::Chmod { path, mode }),
        1 => (path(), id(), id()).prop_map(|(path, uid, gid)| Op::Chown { path, uid, gid }),
        1 => (path(), time(), time(), any::<bool>()).prop_map(|(path, atime, mtime, follow)| Op::SetTimes { path, atime, mtime, follow }),
        2 => (path(), select(XATTR_NAMES), fill(), select(&[0, libc::XATTR_CREATE, libc::XATTR_REPLACE][..]))
            .prop_map(|(path, name, value, flags)| Op::SetXattr { path, name, value: Fill { len: value.len.min(32), ..value }, flags }),
        1 => (path(), select(XATTR_NAMES)).prop_map(|(path, name)| Op::GetXattr { path, name }),
        1 => (path(), select(XATTR_NAMES)).prop_map(|(path, name)| Op::RemoveXattr { path, name }),
        1 => path().prop_map(|path| Op::ListXattr { path }),
    ]
}

fn looking() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => (path(), offset(), 0..64usize).prop_map(|(path, offset, len)| Op::Read { path, offset, len }),
        1 => path().prop_map(|path| Op::Readlink { path }),
        2 => (path(), any::<bool>()).prop_map(|(path, follow)| Op::Stat { path, follow }),
        1 => path().prop_map(|path| Op::ReadDir { path }),
    ]
}

fn through_descriptors() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (slot(), path(), open_access(), any::<bool>(), prop::bool::weighted(0.2), any::<bool>())
            .prop_map(|(slot, path, access, append, truncate, create)| Op::Open { slot, path, access, append, truncate, create }),
        3 => (slot(), prop::option::of(offset()), fill()).prop_map(|(slot, offset, data)| Op::FdWrite { slot, offset, data }),
        2 => (slot(), prop::option::of(offset()), 0..64usize).prop_map(|(slot, offset, len)| Op::FdRead { slot, offset, len }),
        1 => (slot(), offset()).prop_map(|(slot, size)| Op::FdTruncate { slot, size }),
        1 => (slot(), fallocate_mode(), offset(), offset())
            .prop_map(|(slot, mode, offset, len)| Op::FdFallocate { slot, mode, offset, len }),
        2 => slot().prop_map(|slot| Op::FdStat { slot }),
        1 => slot().prop_map(|slot| Op::FdSync { slot }),
        1 => slot().prop_map(|slot| Op::Close { slot }),
    ]
}

fn as_root() -> impl Strategy<Value = Op> {
    prop_oneof![4 => creating(), 4 => changing(), 2 => metadata(), 2 => looking(), 3 => through_descriptors()]
}

pub fn op() -> impl Strategy<Value = Op> {
    let user = (select(&[1000u32, 65534][..]), as_root()).prop_map(|(id, op)| Op::AsUser { id, op: Box::new(op) });
    prop_oneof![5 => as_root(), 1 => user]
}

/// The tree every sequence starts from, built by the model's own operations
/// so that most generated operations find something to act on.
pub fn seed() -> Vec<Op> {
    let data = |byte, len| Fill { byte, len };
    vec![
        Op::Mkdir { path: "d", mode: 0o755 },
        Op::Mkdir { path: "e", mode: 0o755 },
        Op::Mkdir { path: "d/e", mode: 0o755 },
        Op::Create { path: "a", mode: 0o644, exclusive: true },
        Op::Write { path: "a", offset: 0, data: data(b'a', 10), append: false, truncate: false },
        Op::Create { path: "d/a", mode: 0o644, exclusive: true },
        Op::Write { path: "d/a", offset: 0, data: data(b'd', 100), append: false, truncate: false },
        Op::Create { path: "d/e/b", mode: 0o600, exclusive: true },
        Op::Symlink { target: "d/a", path: "e/a" },
        Op::SetXattr { path: "d/a", name: "user.a", value: data(b'x', 3), flags: 0 },
        Op::Open { slot: 0, path: "a", access: OpenAccess::ReadWrite, append: false, truncate: false, create: false },
        Op::Open { slot: 1, path: "d/e/b", access: OpenAccess::Write, append: true, truncate: false, create: false },
    ]
}

pub fn sequence(max_len: usize) -> impl Strategy<Value = Vec<Op>> {
    prop::collection::vec(op(), 1..=max_len)
}
