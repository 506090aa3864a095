//! Work on a container's root filesystem by descriptors, from its root down.
//!
//! A container's processes own the names inside its rootfs and can re-point
//! any of them while the daemon works: swap a directory for a symlink to `/`,
//! mount something over a path. So capture, restore and delete never hand a
//! path string of the rootfs to the kernel. Each directory is opened from its
//! parent's descriptor with `openat2(RESOLVE_BENEATH | RESOLVE_NO_XDEV |
//! RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS)`, so a walk can neither leave
//! the tree it started in, nor follow a link a container planted, nor cross a
//! mount point (a share at `/hoody/shares/…`, or anything else mounted
//! inside); every other call is an `*at` call on such a descriptor that does
//! not follow a final symlink. What a walk finds mounted, it leaves alone.
//!
//! The root itself is the operator's or the daemon's path (never a
//! container's), opened once without following a final symlink.

use std::ffi::{CStr, CString, OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::Path;

use crate::shares::{syscalls, xattrs};

fn check(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

fn cstr(name: &OsStr) -> io::Result<CString> {
    CString::new(name.as_bytes()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

/// The attributes of one file, from `statx`, with the mount it is on.
#[derive(Clone, Copy)]
pub struct Stat {
    st: libc::statx,
}

impl std::fmt::Debug for Stat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stat").field("ino", &self.ino()).field("mode", &self.mode()).field("mount_id", &self.mount_id()).finish()
    }
}

impl Stat {
    pub fn ino(&self) -> u64 {
        self.st.stx_ino
    }
    pub fn dev(&self) -> u64 {
        libc::makedev(self.st.stx_dev_major, self.st.stx_dev_minor)
    }
    pub fn rdev(&self) -> u64 {
        libc::makedev(self.st.stx_rdev_major, self.st.stx_rdev_minor)
    }
    pub fn mode(&self) -> u32 {
        u32::from(self.st.stx_mode)
    }
    pub fn uid(&self) -> u32 {
        self.st.stx_uid
    }
    pub fn gid(&self) -> u32 {
        self.st.stx_gid
    }
    pub fn nlink(&self) -> u64 {
        u64::from(self.st.stx_nlink)
    }
    pub fn size(&self) -> u64 {
        self.st.stx_size
    }
    pub fn atime(&self) -> i64 {
        self.st.stx_atime.tv_sec
    }
    pub fn atime_nsec(&self) -> i64 {
        i64::from(self.st.stx_atime.tv_nsec)
    }
    pub fn mtime(&self) -> i64 {
        self.st.stx_mtime.tv_sec
    }
    pub fn mtime_nsec(&self) -> i64 {
        i64::from(self.st.stx_mtime.tv_nsec)
    }
    pub fn ctime(&self) -> i64 {
        self.st.stx_ctime.tv_sec
    }
    pub fn ctime_nsec(&self) -> i64 {
        i64::from(self.st.stx_ctime.tv_nsec)
    }
    /// The mount the file is on (`STATX_MNT_ID`): a name whose file is on
    /// another mount than its directory is a mount point.
    pub fn mount_id(&self) -> u64 {
        self.st.stx_mnt_id
    }
    fn format(&self) -> u32 {
        self.mode() & libc::S_IFMT
    }
    pub fn is_dir(&self) -> bool {
        self.format() == libc::S_IFDIR
    }
    pub fn is_file(&self) -> bool {
        self.format() == libc::S_IFREG
    }
    pub fn is_symlink(&self) -> bool {
        self.format() == libc::S_IFLNK
    }
}

const STATX_WANTED: u32 = libc::STATX_BASIC_STATS | libc::STATX_MNT_ID;

/// `statx` of `name` in `dir` (or of `dir` itself for an empty name), never
/// following a final symlink. `AT_STATX_DONT_SYNC`: a share mounted inside a
/// rootfs whose source is stopped answers from the kernel's cache instead of
/// failing the walk (local file systems ignore the flag).
fn statx(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<Stat> {
    // SAFETY: plain data, filled on success.
    let mut st: libc::statx = unsafe { std::mem::zeroed() };
    let mut flags = libc::AT_SYMLINK_NOFOLLOW | libc::AT_NO_AUTOMOUNT | libc::AT_STATX_DONT_SYNC;
    if name.is_empty() {
        flags |= libc::AT_EMPTY_PATH;
    }
    // SAFETY: valid descriptor, NUL-terminated name and out pointer.
    check(unsafe { libc::statx(dir.as_raw_fd(), name.as_ptr(), flags, STATX_WANTED, &mut st) })?;
    if st.stx_mask & libc::STATX_MNT_ID == 0 {
        // Kernels before 5.8: without a mount id, no mount point could be told.
        return Err(io::Error::new(io::ErrorKind::Unsupported, "statx gives no mount id (Linux 5.8 or later is needed)"));
    }
    Ok(Stat { st })
}

#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

/// Every component beneath the directory, on its mount, and no link of any kind.
const RESOLVE_STRICT: u64 = libc::RESOLVE_BENEATH | libc::RESOLVE_NO_XDEV | libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_NO_MAGICLINKS;

/// `openat2` of `rel` (one or more components) beneath `dir` with [`RESOLVE_STRICT`].
/// `EXDEV`: a mount point on the way; `ELOOP`: a symlink on the way or at the end.
fn open_strict(dir: BorrowedFd<'_>, rel: &CStr, flags: libc::c_int, mode: u32) -> io::Result<OwnedFd> {
    let flags = flags | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    let how = OpenHow { flags: flags as u64, mode: if flags & libc::O_CREAT != 0 { u64::from(mode) } else { 0 }, resolve: RESOLVE_STRICT };
    loop {
        // SAFETY: valid descriptor and path; `how` outlives the call and its size is passed.
        let rc = unsafe { libc::syscall(libc::SYS_openat2, dir.as_raw_fd(), rel.as_ptr(), &how, std::mem::size_of::<OpenHow>()) };
        match check(rc as libc::c_int) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            // SAFETY: a descriptor just opened, owned by no one else.
            other => return other.map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
        }
    }
}

/// Whether an error says the name is not (or no longer) what the walk expected:
/// gone, a symlink, not a directory, or a mount point.
pub fn is_moved(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ELOOP) | Some(libc::ENOTDIR) | Some(libc::EXDEV))
}

/// An open directory of a tree being walked, with the mount it is on.
#[derive(Debug)]
pub struct Dir {
    fd: OwnedFd,
    mount_id: u64,
}

impl AsFd for Dir {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// What [`Dir::remove`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removed {
    /// The name is gone (or was never there).
    All,
    /// The name is, or holds, a mount point: what is mounted and the
    /// directories leading to it stay.
    KeptMounts,
}

impl Dir {
    /// Opens the root of a walk: a path of the operator's or the daemon's, not a
    /// container's. A final symlink is refused.
    pub fn open_root(path: &Path) -> io::Result<Dir> {
        let c = CString::new(path.as_os_str().as_bytes()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
        // SAFETY: valid NUL-terminated path.
        let fd = check(unsafe { libc::open(c.as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC) })?;
        // SAFETY: just opened, owned by no one else.
        Self::adopt(unsafe { OwnedFd::from_raw_fd(fd) })
    }

    fn adopt(fd: OwnedFd) -> io::Result<Dir> {
        let mount_id = statx(fd.as_fd(), c"")?.mount_id();
        Ok(Dir { fd, mount_id })
    }

    /// The mount this directory is on.
    pub fn mount_id(&self) -> u64 {
        self.mount_id
    }

    /// The directory's own attributes.
    pub fn stat_self(&self) -> io::Result<Stat> {
        statx(self.fd.as_fd(), c"")
    }

    /// The attributes of `name` in this directory (a symlink's own). A mount
    /// point shows the mounted root's, whose [`Stat::mount_id`] differs from
    /// [`Dir::mount_id`]: see [`Dir::is_mount_point`].
    pub fn stat(&self, name: &OsStr) -> io::Result<Stat> {
        statx(self.fd.as_fd(), &cstr(name)?)
    }

    /// Whether `st`, the attributes of a name in this directory, are of another mount.
    pub fn is_mount_point(&self, st: &Stat) -> bool {
        st.mount_id() != self.mount_id
    }

    /// The directory `rel` (one or more components) beneath this one, on the
    /// same mount, reached through no link.
    pub fn open_dir(&self, rel: &OsStr) -> io::Result<Dir> {
        let fd = open_strict(self.fd.as_fd(), &cstr(rel)?, libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
        let dir = Self::adopt(fd)?;
        if dir.mount_id != self.mount_id {
            return Err(io::Error::from_raw_os_error(libc::EXDEV)); // RESOLVE_NO_XDEV already says so; never trusted alone
        }
        Ok(dir)
    }

    /// The regular file `rel` beneath this directory, opened with `flags`
    /// (`O_NONBLOCK` added, so a FIFO swapped in for the file never blocks the
    /// daemon). Anything but a regular file is `ELOOP`/`ENOTDIR`-like: `EINVAL`.
    pub fn open_file(&self, rel: &OsStr, flags: libc::c_int) -> io::Result<File> {
        let fd = open_strict(self.fd.as_fd(), &cstr(rel)?, flags | libc::O_NONBLOCK, 0)?;
        if !statx(fd.as_fd(), c"")?.is_file() {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        let file = File::from(fd);
        // Back to blocking reads and writes, as any regular file does anyway.
        // SAFETY: valid descriptor.
        let fl = check(unsafe { libc::fcntl(file.as_raw_fd(), libc::F_GETFL) })?;
        // SAFETY: valid descriptor.
        check(unsafe { libc::fcntl(file.as_raw_fd(), libc::F_SETFL, fl & !libc::O_NONBLOCK) })?;
        Ok(file)
    }

    /// A regular file for reading, without touching its atime where allowed.
    pub fn open_read_noatime(&self, rel: &OsStr) -> io::Result<File> {
        match self.open_file(rel, libc::O_RDONLY | libc::O_NOATIME) {
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => self.open_file(rel, libc::O_RDONLY),
            other => other,
        }
    }

    /// An `O_PATH` descriptor of `rel` itself (a symlink's own), for the calls
    /// that take a descriptor: owners, modes, times, xattrs.
    pub fn open_path(&self, rel: &OsStr) -> io::Result<OwnedFd> {
        open_strict(self.fd.as_fd(), &cstr(rel)?, libc::O_PATH, 0)
    }

    /// A new regular file `name` for writing; fails if the name exists.
    pub fn create_file(&self, name: &OsStr, mode: u32) -> io::Result<File> {
        open_strict(self.fd.as_fd(), &cstr(name)?, libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL, mode).map(File::from)
    }

    /// The names in this directory, `.` and `..` left out.
    pub fn names(&self) -> io::Result<Vec<OsString>> {
        // Read from a new descriptor of its own: the position is per open file.
        let fd = open_strict(self.fd.as_fd(), c".", libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
        let mut names = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let len = syscalls::getdents(fd.as_fd(), &mut buf)?;
            if len == 0 {
                return Ok(names);
            }
            let mut at = 0;
            while at + 19 <= len {
                // linux_dirent64: d_ino u64, d_off i64, d_reclen u16, d_type u8, d_name.
                let reclen = u16::from_ne_bytes([buf[at + 16], buf[at + 17]]) as usize;
                let name = &buf[at + 19..at + reclen];
                let name = &name[..name.iter().position(|b| *b == 0).unwrap_or(name.len())];
                if name != b"." && name != b".." {
                    names.push(OsString::from_vec(name.to_vec()));
                }
                at += reclen;
            }
        }
    }

    /// The target of the symlink `name`.
    pub fn read_link(&self, name: &OsStr) -> io::Result<Vec<u8>> {
        let name = cstr(name)?;
        let mut buf = vec![0u8; 256];
        loop {
            // SAFETY: valid descriptor, name, buffer and length.
            let len = syscalls::check_size(unsafe { libc::readlinkat(self.fd.as_raw_fd(), name.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) })?;
            if len < buf.len() {
                buf.truncate(len);
                return Ok(buf);
            }
            buf.resize(buf.len() * 2, 0);
        }
    }

    pub fn mkdir(&self, name: &OsStr, mode: u32) -> io::Result<()> {
        syscalls::mkdir(self.fd.as_fd(), &cstr(name)?, mode)
    }

    pub fn symlink(&self, target: &[u8], name: &OsStr) -> io::Result<()> {
        syscalls::symlink(&cstr(OsStr::from_bytes(target))?, self.fd.as_fd(), &cstr(name)?)
    }

    pub fn mknod(&self, name: &OsStr, mode: u32, rdev: u64) -> io::Result<()> {
        syscalls::mknod(self.fd.as_fd(), &cstr(name)?, mode, rdev)
    }

    /// A new name `to_name` in `to` for the file `name` here (a symlink is linked itself).
    pub fn hard_link(&self, name: &OsStr, to: &Dir, to_name: &OsStr) -> io::Result<()> {
        let (from, dest) = (cstr(name)?, cstr(to_name)?);
        // SAFETY: valid descriptors and names; flags 0 never follows a symlink.
        check(unsafe { libc::linkat(self.fd.as_raw_fd(), from.as_ptr(), to.fd.as_raw_fd(), dest.as_ptr(), 0) }).map(drop)
    }

    pub fn rename(&self, name: &OsStr, to: &Dir, to_name: &OsStr) -> io::Result<()> {
        syscalls::rename(self.fd.as_fd(), &cstr(name)?, to.fd.as_fd(), &cstr(to_name)?, 0)
    }

    /// Removes `name` whatever it is, a directory with everything in it, by
    /// descriptors: never descending into a mount nor following a link. A
    /// mount point, and the directories that lead to one, stay.
    pub fn remove(&self, name: &OsStr) -> io::Result<Removed> {
        let st = match self.stat(name) {
            Ok(st) => st,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Removed::All),
            Err(e) => return Err(e),
        };
        if self.is_mount_point(&st) {
            return Ok(Removed::KeptMounts);
        }
        let cname = cstr(name)?;
        if !st.is_dir() {
            return match syscalls::unlink(self.fd.as_fd(), &cname, 0) {
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Removed::All),
                // Swapped for a directory since the stat: removed as one.
                Err(e) if e.raw_os_error() == Some(libc::EISDIR) => self.remove_dir(name, &cname),
                other => other.map(|()| Removed::All),
            };
        }
        self.remove_dir(name, &cname)
    }

    fn remove_dir(&self, name: &OsStr, cname: &CStr) -> io::Result<Removed> {
        let sub = match self.open_dir(name) {
            Ok(sub) => sub,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Removed::All),
            Err(e) if e.raw_os_error() == Some(libc::EXDEV) => return Ok(Removed::KeptMounts),
            // Swapped for a symlink or a file since the stat: that is unlinked itself.
            Err(e) if matches!(e.raw_os_error(), Some(libc::ELOOP) | Some(libc::ENOTDIR)) => {
                return match syscalls::unlink(self.fd.as_fd(), cname, 0) {
                    Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Removed::All),
                    other => other.map(|()| Removed::All),
                };
            }
            Err(e) => return Err(e),
        };
        let mut removed = Removed::All;
        for child in sub.names()? {
            if sub.remove(&child)? == Removed::KeptMounts {
                removed = Removed::KeptMounts;
            }
        }
        if removed == Removed::KeptMounts {
            return Ok(removed);
        }
        match syscalls::unlink(self.fd.as_fd(), cname, libc::AT_REMOVEDIR) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Removed::All),
            // Something new appeared inside (the container still writes): once more.
            Err(e) if e.raw_os_error() == Some(libc::ENOTEMPTY) => {
                for child in sub.names()? {
                    if sub.remove(&child)? == Removed::KeptMounts {
                        return Ok(Removed::KeptMounts);
                    }
                }
                syscalls::unlink(self.fd.as_fd(), cname, libc::AT_REMOVEDIR).map(|()| Removed::All)
            }
            other => other.map(|()| Removed::All),
        }
    }

    /// Removes the directory `name` if it is empty.
    pub fn remove_empty_dir(&self, name: &OsStr) -> io::Result<()> {
        syscalls::unlink(self.fd.as_fd(), &cstr(name)?, libc::AT_REMOVEDIR)
    }

    /// Removes everything inside this directory (see [`Dir::remove`]).
    pub fn clear(&self) -> io::Result<Removed> {
        let mut removed = Removed::All;
        for child in self.names()? {
            if self.remove(&child)? == Removed::KeptMounts {
                removed = Removed::KeptMounts;
            }
        }
        Ok(removed)
    }

    /// Flushes the directory's entries to disk.
    pub fn sync(&self) -> io::Result<()> {
        syscalls::fsync(self.fd.as_fd(), false)
    }
}

/// Every extended attribute of the file behind `fd` (an `O_PATH` descriptor
/// works, a symlink's own too), sorted by name; none where the file system has none.
pub fn xattrs_of(fd: BorrowedFd<'_>) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let names = match xattrs::list(fd) {
        Ok(names) => names,
        Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for name in names.split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let cname = CString::new(name).expect("no NUL inside a split name");
        match xattrs::get(fd, &cname) {
            Ok(value) => out.push((name.to_vec(), value)),
            Err(e) if e.raw_os_error() == Some(libc::ENODATA) => {}
            Err(e) => return Err(e),
        }
    }
    out.sort();
    Ok(out)
}

/// Makes the xattrs of the file behind `fd` exactly `wanted` (sorted by name).
pub fn sync_xattrs(fd: BorrowedFd<'_>, wanted: &[(Vec<u8>, Vec<u8>)]) -> io::Result<()> {
    let current = xattrs_of(fd)?;
    if current == wanted {
        return Ok(());
    }
    let cname = |n: &[u8]| CString::new(n).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL));
    for (name, _) in &current {
        if !wanted.iter().any(|(n, _)| n == name) {
            xattrs::remove(fd, &cname(name)?)?;
        }
    }
    for (name, value) in wanted {
        if !current.iter().any(|(n, v)| n == name && v == value) {
            xattrs::set(fd, &cname(name)?, value, 0)?;
        }
    }
    Ok(())
}

/// Owner, mode (after the owner: a chown clears setuid), xattrs and times of
/// the file behind the `O_PATH` descriptor `fd`, set where they differ from `st`.
pub struct Meta<'a> {
    pub uid: u32,
    pub gid: u32,
    pub mode: u32,
    pub xattrs: &'a [(Vec<u8>, Vec<u8>)],
    pub atime: (i64, u32),
    pub mtime: (i64, u32),
}

pub fn set_meta(fd: BorrowedFd<'_>, st: &Stat, meta: &Meta<'_>) -> io::Result<()> {
    let symlink = st.is_symlink();
    if st.uid() != meta.uid || st.gid() != meta.gid {
        syscalls::chown(fd, Some(meta.uid), Some(meta.gid))?;
    }
    if !symlink && (st.mode() & 0o7777 != meta.mode || st.uid() != meta.uid || st.gid() != meta.gid) {
        syscalls::chmod(fd, meta.mode)?;
    }
    if !symlink || !meta.xattrs.is_empty() {
        sync_xattrs(fd, meta.xattrs)?;
    }
    if (st.atime(), st.atime_nsec() as u32) != meta.atime || (st.mtime(), st.mtime_nsec() as u32) != meta.mtime {
        let ts = |(sec, nsec): (i64, u32)| libc::timespec { tv_sec: sec, tv_nsec: i64::from(nsec) };
        let times = [ts(meta.atime), ts(meta.mtime)];
        // SAFETY: valid descriptor, empty path and a two-element array.
        check(unsafe { libc::utimensat(fd.as_raw_fd(), c"".as_ptr(), times.as_ptr(), libc::AT_EMPTY_PATH | libc::AT_SYMLINK_NOFOLLOW) })?;
    }
    Ok(())
}

/// `statx` of the file behind a descriptor.
pub fn stat_fd(fd: BorrowedFd<'_>) -> io::Result<Stat> {
    statx(fd, c"")
}

/// Mountinfo escapes space, tab, newline and backslash as octal.
fn unescape_mountinfo(field: &str) -> Vec<u8> {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).and_then(|d| std::str::from_utf8(d).ok()).and_then(|d| u8::from_str_radix(d, 8).ok());
        match (bytes[i], octal) {
            (b'\\', Some(byte)) => {
                out.push(byte);
                i += 4;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    out
}

/// Detaches every mount beneath the directory `root` (a container's
/// directory, before it is removed; a path of the daemon's or the operator's)
/// whose path relative to it starts with `only_under` (empty: every one),
/// deepest first. Each is reached from
/// `root`'s descriptor through no symlink and unmounted through that
/// descriptor only if it is still the mount the table named: a container that
/// re-points a path meanwhile can never make the daemon unmount anything
/// outside. Returns how many were detached.
pub fn unmount_all_beneath(root: &Path, only_under: &[u8]) -> io::Result<usize> {
    let root = root.canonicalize()?;
    let dir = Dir::open_root(&root)?;
    let table = std::fs::read_to_string("/proc/self/mountinfo")?;
    let prefix = root.as_os_str().as_bytes();
    let mut beneath: Vec<(u64, Vec<u8>)> = table
        .lines()
        .filter_map(|line| {
            let mut fields = line.split(' ');
            let id = fields.next()?.parse::<u64>().ok()?;
            let point = unescape_mountinfo(fields.nth(3)?);
            let rel = point.strip_prefix(prefix)?.strip_prefix(b"/")?.to_vec();
            (!rel.is_empty() && rel.starts_with(only_under)).then_some((id, rel))
        })
        .collect();
    beneath.sort_by_key(|(_, rel)| std::cmp::Reverse(rel.iter().filter(|b| **b == b'/').count()));
    let mut detached = 0;
    for (id, rel) in beneath {
        let how = OpenHow { flags: (libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC) as u64, mode: 0, resolve: libc::RESOLVE_BENEATH | libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_NO_MAGICLINKS };
        let rel = CString::new(rel).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
        // SAFETY: valid descriptor and path; `how` outlives the call.
        let rc = unsafe { libc::syscall(libc::SYS_openat2, dir.fd.as_raw_fd(), rel.as_ptr(), &how, std::mem::size_of::<OpenHow>()) };
        let Ok(fd) = check(rc as libc::c_int) else { continue }; // gone, or re-pointed: not ours to touch
        // SAFETY: just opened, owned by no one else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        if statx(fd.as_fd(), c"").map(|st| st.mount_id()).ok() != Some(id) {
            continue;
        }
        let link = crate::shares::proc_fd::link(fd.as_fd()).path();
        // SAFETY: valid path; MNT_DETACH never waits for a busy or dead mount.
        if unsafe { libc::umount2(link.as_ptr(), libc::MNT_DETACH) } == 0 {
            detached += 1;
        } else {
            tracing::warn!(mount_id = id, error = %io::Error::last_os_error(), "could not detach a mount inside a container");
        }
    }
    Ok(detached)
}

/// Removes the directory `path` (a container's, the daemon's own) and
/// everything in it by descriptors, from its parent down, after detaching
/// whatever is mounted beneath it. Fails, leaving it, if a mount could not
/// be detached.
pub fn remove_dir_tree(path: &Path) -> io::Result<()> {
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    };
    let parent = Dir::open_root(parent)?;
    match parent.stat(name) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
        Ok(st) if st.is_dir() && !parent.is_mount_point(&st) => {
            unmount_all_beneath(path, b"")?;
        }
        Ok(_) => {}
    }
    match parent.remove(name)? {
        Removed::All => Ok(()),
        Removed::KeptMounts => Err(io::Error::new(io::ErrorKind::ResourceBusy, "a mount inside could not be detached")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_walk_refuses_symlinks_and_stays_beneath() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        let outside = tmp.path().join("outside");
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("secret"), b"s").unwrap();
        std::os::unix::fs::symlink(&outside, root.join("link")).unwrap();
        std::os::unix::fs::symlink("../outside", root.join("a/rel")).unwrap();
        let dir = Dir::open_root(&root).unwrap();
        assert!(dir.open_dir(OsStr::new("a/b")).is_ok());
        for bad in ["link", "a/rel", "..", "a/../..", "link/secret"] {
            let err = dir.open_dir(OsStr::new(bad)).unwrap_err();
            assert!(matches!(err.raw_os_error(), Some(libc::ELOOP) | Some(libc::EXDEV) | Some(libc::ENOTDIR)), "{bad}: {err}");
        }
        assert!(dir.open_file(OsStr::new("link/secret"), libc::O_RDONLY).is_err());
        assert!(dir.stat(OsStr::new("link")).unwrap().is_symlink());
        let mut names = dir.names().unwrap();
        names.sort();
        assert_eq!(names, ["a", "link"]);
        // Removing the tree removes the links, never what they point to.
        assert_eq!(dir.clear().unwrap(), Removed::All);
        assert!(dir.names().unwrap().is_empty());
        assert_eq!(std::fs::read(outside.join("secret")).unwrap(), b"s");
    }

    #[test]
    fn a_fifo_in_place_of_a_file_never_blocks() {
        let tmp = tempfile::tempdir().unwrap();
        let c = CString::new(tmp.path().join("f").as_os_str().as_bytes()).unwrap();
        // SAFETY: valid path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let dir = Dir::open_root(tmp.path()).unwrap();
        assert_eq!(dir.open_read_noatime(OsStr::new("f")).unwrap_err().raw_os_error(), Some(libc::EINVAL));
    }
}
