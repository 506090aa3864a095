//! One directory the model's operations run in (the plain reference, or the
//! same place inside a share), with the descriptors a sequence holds open.
//! Every operation is one or a few raw system calls, and its outcome is what a
//! program would see: a value, or the errno.

use std::ffi::CString;
use std::fmt;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::ops::{Op, OpenAccess, Time, SLOTS};

#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Errno(pub i32);

impl fmt::Debug for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "errno {} ({})", self.0, io::Error::from_raw_os_error(self.0))
    }
}

/// What `stat` shows that must not depend on where the file lives: no inode
/// numbers, no times, no directory sizes (a filesystem's own bookkeeping).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meta {
    pub file_type: u32,
    pub perm: u32,
    pub nlink: u64,
    pub uid: u32,
    pub gid: u32,
    pub size: Option<u64>,
}

impl Meta {
    pub fn of(st: &libc::stat64) -> Self {
        let file_type = st.st_mode & libc::S_IFMT;
        Meta {
            file_type,
            perm: st.st_mode & 0o7777,
            nlink: st.st_nlink,
            uid: st.st_uid,
            gid: st.st_gid,
            size: (file_type != libc::S_IFDIR).then_some(st.st_size as u64),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Done,
    Count(u64),
    Bytes(Vec<u8>),
    Names(Vec<String>),
    Meta(Meta),
    /// The times `SetTimes` set, as `stat` reads them back.
    Times(Option<(i64, i64)>, Option<(i64, i64)>),
}

pub type Outcome = Result<Value, Errno>;

fn last_errno() -> Errno {
    Errno(io::Error::last_os_error().raw_os_error().unwrap_or(libc::EIO))
}

fn check(rc: libc::c_int) -> Result<libc::c_int, Errno> {
    if rc < 0 {
        Err(last_errno())
    } else {
        Ok(rc)
    }
}

fn check_size(rc: isize) -> Result<u64, Errno> {
    if rc < 0 {
        Err(last_errno())
    } else {
        Ok(rc as u64)
    }
}

pub fn c_path(path: &Path) -> CString {
    CString::new(path.as_os_str().as_bytes()).expect("no NUL in test paths")
}

pub fn lstat(path: &Path) -> Result<libc::stat64, Errno> {
    stat_at(&c_path(path), false)
}

fn stat_at(path: &CString, follow: bool) -> Result<libc::stat64, Errno> {
    // SAFETY: plain data, filled on success.
    let mut st: libc::stat64 = unsafe { std::mem::zeroed() };
    let flags = if follow { 0 } else { libc::AT_SYMLINK_NOFOLLOW };
    // SAFETY: valid path and out pointer.
    check(unsafe { libc::fstatat64(libc::AT_FDCWD, path.as_ptr(), &mut st, flags) })?;
    Ok(st)
}

fn timespec(time: Option<Time>) -> libc::timespec {
    match time {
        Some(Time { secs, nanos }) => libc::timespec { tv_sec: secs, tv_nsec: nanos },
        None => libc::timespec { tv_sec: 0, tv_nsec: libc::UTIME_OMIT },
    }
}

/// The calling thread acting as another user until dropped: filesystem uid
/// and gid `id`, no supplementary groups. Raw system calls, which change this
/// thread only (the C library's wrappers would change every thread). Moving
/// the filesystem uid off 0 drops root's capabilities over files (CAP_FSETID,
/// CAP_DAC_OVERRIDE, CAP_FOWNER...); moving it back restores them.
struct OtherUser {
    groups: Vec<libc::gid_t>,
}

impl OtherUser {
    fn become_(id: u32) -> Self {
        let mut groups = vec![0 as libc::gid_t; 256];
        // SAFETY: valid buffer of that many entries.
        let count = unsafe { libc::getgroups(groups.len() as libc::c_int, groups.as_mut_ptr()) };
        groups.truncate(count.max(0) as usize);
        // SAFETY: plain system calls on this thread's credentials.
        unsafe {
            assert_eq!(libc::syscall(libc::SYS_setgroups, 0, std::ptr::null::<libc::gid_t>()), 0, "setgroups");
            libc::syscall(libc::SYS_setfsgid, id);
            libc::syscall(libc::SYS_setfsuid, id);
        }
        OtherUser { groups }
    }
}

impl Drop for OtherUser {
    fn drop(&mut self) {
        // SAFETY: as in `become_`, back to root.
        unsafe {
            libc::syscall(libc::SYS_setfsuid, 0);
            libc::syscall(libc::SYS_setfsgid, 0);
            libc::syscall(libc::SYS_setgroups, self.groups.len(), self.groups.as_ptr());
        }
    }
}

pub struct World {
    root: PathBuf,
    slots: [Option<OwnedFd>; SLOTS],
}

impl World {
    pub fn new(root: PathBuf) -> Self {
        World { root, slots: Default::default() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn close_all(&mut self) {
        self.slots = Default::default();
    }

    fn path(&self, relative: &str) -> CString {
        c_path(&self.root.join(relative))
    }

    /// Every open of the model is non-blocking: a FIFO must never hang the test.
    fn open(&self, relative: &str, flags: i32, mode: u32) -> Result<OwnedFd, Errno> {
        let path = self.path(relative);
        // SAFETY: valid path.
        let fd = check(unsafe { libc::open(path.as_ptr(), flags | libc::O_NONBLOCK | libc::O_CLOEXEC, mode) })?;
        // SAFETY: just opened, owned by no one else.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }

    fn slot(&self, slot: usize) -> Result<libc::c_int, Errno> {
        self.slots[slot].as_ref().map(|fd| fd.as_raw_fd()).ok_or(Errno(libc::EBADF))
    }

    pub fn apply(&mut self, op: &Op) -> Outcome {
        match *op {
            Op::AsUser { id, ref op } => {
                let _user = OtherUser::become_(id);
                self.apply(op)
            }
            Op::Create { path, mode, exclusive } => {
                let exclusive = if exclusive { libc::O_EXCL } else { 0 };
                self.open(path, libc::O_CREAT | libc::O_WRONLY | exclusive, mode).map(|_| Value::Done)
            }
            Op::Write { path, offset, data, append, truncate } => {
                let flags = libc::O_WRONLY | if append { libc::O_APPEND } else { 0 } | if truncate { libc::O_TRUNC } else { 0 };
                let fd = self.open(path, flags, 0)?;
                pwrite(fd.as_raw_fd(), &data.bytes(), Some(offset))
            }
            Op::Read { path, offset, len } => read(self.open(path, libc::O_RDONLY, 0)?.as_raw_fd(), len, Some(offset)),
            Op::Truncate { path, size } => {
                // SAFETY: valid path.
                check(unsafe { libc::truncate64(self.path(path).as_ptr(), size as i64) }).map(|_| Value::Done)
            }
            Op::Fallocate { path, mode, offset, len } => fallocate(self.open(path, libc::O_WRONLY, 0)?.as_raw_fd(), mode, offset, len),
            Op::Rename { from, to, flags } => {
                let (from, to) = (self.path(from), self.path(to));
                // SAFETY: valid paths.
                check(unsafe { libc::renameat2(libc::AT_FDCWD, from.as_ptr(), libc::AT_FDCWD, to.as_ptr(), flags) }).map(|_| Value::Done)
            }
            // SAFETY (these four): valid paths.
            Op::Unlink { path } => check(unsafe { libc::unlink(self.path(path).as_ptr()) }).map(|_| Value::Done),
            Op::Mkdir { path, mode } => check(unsafe { libc::mkdir(self.path(path).as_ptr(), mode) }).map(|_| Value::Done),
            Op::Rmdir { path } => check(unsafe { libc::rmdir(self.path(path).as_ptr()) }).map(|_| Value::Done),
            Op::Link { from, to } => {
                let (from, to) = (self.path(from), self.path(to));
                check(unsafe { libc::linkat(libc::AT_FDCWD, from.as_ptr(), libc::AT_FDCWD, to.as_ptr(), 0) }).map(|_| Value::Done)
            }
            Op::Symlink { target, path } => {
                let target = CString::new(target).expect("no NUL");
                // SAFETY: valid paths.
                check(unsafe { libc::symlink(target.as_ptr(), self.path(path).as_ptr()) }).map(|_| Value::Done)
            }
            Op::Readlink { path } => {
                let mut buf = vec![0u8; 256];
                // SAFETY: valid path and buffer.
                let len = check_size(unsafe { libc::readlink(self.path(path).as_ptr(), buf.as_mut_ptr().cast(), buf.len()) })?;
                buf.truncate(len as usize);
                Ok(Value::Bytes(buf))
            }
            Op::MakeSpecial { path, file_type, mode } => mknod(&self.path(path), file_type | mode),
            Op::MakeDevice { path, file_type } => mknod(&self.path(path), file_type | 0o644),
            Op::Chmod { path, mode } => {
                // SAFETY: valid path.
                check(unsafe { libc::chmod(self.path(path).as_ptr(), mode) }).map(|_| Value::Done)
            }
            Op::Chown { path, uid, gid } => {
                // SAFETY: valid path.
                check(unsafe { libc::lchown(self.path(path).as_ptr(), uid, gid) }).map(|_| Value::Done)
            }
            Op::SetTimes { path, atime, mtime, follow } => {
                let times = [timespec(atime), timespec(mtime)];
                let flags = if follow { 0 } else { libc::AT_SYMLINK_NOFOLLOW };
                let path = self.path(path);
                // SAFETY: valid path and a two-element array.
                check(unsafe { libc::utimensat(libc::AT_FDCWD, path.as_ptr(), times.as_ptr(), flags) })?;
                let st = stat_at(&path, follow)?;
                Ok(Value::Times(atime.map(|_| (st.st_atime, st.st_atime_nsec)), mtime.map(|_| (st.st_mtime, st.st_mtime_nsec))))
            }
            Op::SetXattr { path, name, value, flags } => {
                let (name, value) = (CString::new(name).expect("no NUL"), value.bytes());
                // SAFETY: valid path, name and value buffer.
                check(unsafe { libc::lsetxattr(self.path(path).as_ptr(), name.as_ptr(), value.as_ptr().cast(), value.len(), flags) })
                    .map(|_| Value::Done)
            }
            Op::GetXattr { path, name } => get_xattr(&self.path(path), name).map(Value::Bytes),
            Op::RemoveXattr { path, name } => {
                let name = CString::new(name).expect("no NUL");
                // SAFETY: valid path and name.
                check(unsafe { libc::lremovexattr(self.path(path).as_ptr(), name.as_ptr()) }).map(|_| Value::Done)
            }
            Op::ListXattr { path } => list_xattrs(&self.path(path)).map(Value::Names),
            Op::Stat { path, follow } => stat_at(&self.path(path), follow).map(|st| Value::Meta(Meta::of(&st))),
            Op::ReadDir { path } => read_dir(&self.root.join(path)).map(Value::Names),
            Op::Open { slot, path, access, append, truncate, create } => {
                let access = match access {
                    OpenAccess::Read => libc::O_RDONLY,
                    OpenAccess::Write => libc::O_WRONLY,
                    OpenAccess::ReadWrite => libc::O_RDWR,
                };
                let flags = access
                    | if append { libc::O_APPEND } else { 0 }
                    | if truncate { libc::O_TRUNC } else { 0 }
                    | if create { libc::O_CREAT } else { 0 };
                // The old descriptor closes first, as a program reusing the slot would.
                self.slots[slot] = None;
                self.slots[slot] = Some(self.open(path, flags, 0o640)?);
                Ok(Value::Done)
            }
            Op::FdWrite { slot, offset, data } => pwrite(self.slot(slot)?, &data.bytes(), offset),
            Op::FdRead { slot, offset, len } => read(self.slot(slot)?, len, offset),
            Op::FdTruncate { slot, size } => {
                // SAFETY: a descriptor of this world.
                check(unsafe { libc::ftruncate64(self.slot(slot)?, size as i64) }).map(|_| Value::Done)
            }
            Op::FdFallocate { slot, mode, offset, len } => fallocate(self.slot(slot)?, mode, offset, len),
            Op::FdStat { slot } => {
                // SAFETY: plain data, filled on success.
                let mut st: libc::stat64 = unsafe { std::mem::zeroed() };
                // SAFETY: a descriptor of this world and a valid out pointer.
                check(unsafe { libc::fstat64(self.slot(slot)?, &mut st) })?;
                Ok(Value::Meta(Meta::of(&st)))
            }
            Op::FdSync { slot } => {
                // SAFETY: a descriptor of this world.
                check(unsafe { libc::fsync(self.slot(slot)?) }).map(|_| Value::Done)
            }
            Op::Close { slot } => self.slots[slot].take().map(|_| Value::Done).ok_or(Errno(libc::EBADF)),
        }
    }
}

fn mknod(path: &CString, mode: u32) -> Outcome {
    // SAFETY: valid path.
    check(unsafe { libc::mknod(path.as_ptr(), mode, libc::makedev(1, 3)) }).map(|_| Value::Done)
}

fn pwrite(fd: libc::c_int, data: &[u8], offset: Option<u64>) -> Outcome {
    // SAFETY: a valid descriptor and buffer.
    let written = match offset {
        Some(offset) => unsafe { libc::pwrite64(fd, data.as_ptr().cast(), data.len(), offset as i64) },
        None => unsafe { libc::write(fd, data.as_ptr().cast(), data.len()) },
    };
    check_size(written).map(Value::Count)
}

fn read(fd: libc::c_int, len: usize, offset: Option<u64>) -> Outcome {
    let mut buf = vec![0u8; len];
    // SAFETY: a valid descriptor and buffer.
    let read = match offset {
        Some(offset) => unsafe { libc::pread64(fd, buf.as_mut_ptr().cast(), len, offset as i64) },
        None => unsafe { libc::read(fd, buf.as_mut_ptr().cast(), len) },
    };
    buf.truncate(check_size(read)? as usize);
    Ok(Value::Bytes(buf))
}

fn fallocate(fd: libc::c_int, mode: i32, offset: u64, len: u64) -> Outcome {
    // SAFETY: a valid descriptor.
    check(unsafe { libc::fallocate64(fd, mode, offset as i64, len as i64) }).map(|_| Value::Done)
}

pub fn get_xattr(path: &CString, name: &str) -> Result<Vec<u8>, Errno> {
    let name = CString::new(name).expect("no NUL");
    let mut buf = vec![0u8; 4096];
    // SAFETY: valid path, name and buffer.
    let len = check_size(unsafe { libc::lgetxattr(path.as_ptr(), name.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) })?;
    buf.truncate(len as usize);
    Ok(buf)
}

/// The `user.` attributes, sorted: the only namespace the model writes.
pub fn list_xattrs(path: &CString) -> Result<Vec<String>, Errno> {
    let mut buf = vec![0u8; 4096];
    // SAFETY: valid path and buffer.
    let len = check_size(unsafe { libc::llistxattr(path.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) })?;
    buf.truncate(len as usize);
    let mut names: Vec<String> = buf
        .split(|&byte| byte == 0)
        .filter(|name| name.starts_with(b"user."))
        .map(|name| String::from_utf8_lossy(name).into_owned())
        .collect();
    names.sort();
    Ok(names)
}

pub fn read_dir(path: &Path) -> Result<Vec<String>, Errno> {
    let errno = |err: io::Error| Errno(err.raw_os_error().unwrap_or(libc::EIO));
    let mut names = Vec::new();
    for entry in std::fs::read_dir(path).map_err(errno)? {
        names.push(entry.map_err(errno)?.file_name().to_string_lossy().into_owned());
    }
    names.sort();
    Ok(names)
}
