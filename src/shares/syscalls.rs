//! Thin safe wrappers over the descriptor-relative system calls the local
//! backend uses. Nothing here resolves a path of more than one component, and
//! nothing follows a symlink, except the `/proc/self/fd` links that reopen a
//! descriptor this process already holds.

use std::ffi::{CStr, CString, OsStr};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hoody_fuse::SetTime;

use super::proc_fd;

fn check(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

pub(crate) fn check_size(rc: isize) -> io::Result<usize> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc as usize)
    }
}

fn retry_interrupted<T>(mut call: impl FnMut() -> io::Result<T>) -> io::Result<T> {
    loop {
        match call() {
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

fn owned(fd: libc::c_int) -> OwnedFd {
    // SAFETY: `fd` was just returned by a successful open and is owned by no one else.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

const EMPTY: &CStr = c"";

/// `/proc/self/fd/N`: the kernel's own name for a descriptor we hold.
fn proc_fd_path(fd: BorrowedFd<'_>) -> CString {
    proc_fd::link(fd).path()
}

pub(crate) fn cstring(name: &OsStr) -> io::Result<CString> {
    CString::new(name.as_bytes()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

pub(crate) fn stat(fd: BorrowedFd<'_>) -> io::Result<libc::stat64> {
    // SAFETY: `stat64` is plain data; fstatat fills it on success.
    let mut st: libc::stat64 = unsafe { std::mem::zeroed() };
    // SAFETY: valid descriptor, NUL-terminated empty path, valid out pointer.
    check(unsafe { libc::fstatat64(fd.as_raw_fd(), EMPTY.as_ptr(), &mut st, libc::AT_EMPTY_PATH | libc::AT_SYMLINK_NOFOLLOW) })?;
    Ok(st)
}

#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

/// Opens `name` (one component) in `dir` without following any symlink, magic
/// link or `..` out of `dir`. With `O_PATH | O_NOFOLLOW` a symlink itself is opened.
pub(crate) fn open_beneath(dir: BorrowedFd<'_>, name: &CStr, flags: libc::c_int, mode: u32) -> io::Result<OwnedFd> {
    let flags = flags | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    let how = OpenHow {
        flags: flags as u64,
        mode: if flags & libc::O_CREAT != 0 { u64::from(mode) } else { 0 },
        resolve: libc::RESOLVE_BENEATH | libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_NO_MAGICLINKS,
    };
    let opened = retry_interrupted(|| {
        // SAFETY: valid descriptor and path; `how` outlives the call and its size is passed.
        let rc = unsafe { libc::syscall(libc::SYS_openat2, dir.as_raw_fd(), name.as_ptr(), &how, std::mem::size_of::<OpenHow>()) };
        check(rc as libc::c_int)
    });
    match opened {
        Ok(fd) => Ok(owned(fd)),
        // Kernels before 5.6: one component with O_NOFOLLOW cannot leave `dir` either.
        Err(err) if err.raw_os_error() == Some(libc::ENOSYS) => {
            // SAFETY: valid descriptor and path.
            let fd = retry_interrupted(|| check(unsafe { libc::openat(dir.as_raw_fd(), name.as_ptr(), flags, mode) }))?;
            Ok(owned(fd))
        }
        Err(err) => Err(err),
    }
}

/// The parent of directory `dir`, as an `O_PATH` descriptor.
pub(crate) fn open_parent(dir: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    // SAFETY: valid descriptor and path.
    let fd = check(unsafe { libc::openat(dir.as_raw_fd(), c"..".as_ptr(), libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC) })?;
    Ok(owned(fd))
}

/// A new open of the file behind `fd` (typically an `O_PATH` descriptor) with `flags`.
pub(crate) fn reopen(fd: BorrowedFd<'_>, flags: libc::c_int) -> io::Result<OwnedFd> {
    let link = proc_fd::link(fd);
    // SAFETY: valid directory and NUL-terminated name.
    let fd = retry_interrupted(|| check(unsafe { libc::openat(link.dir(), link.name().as_ptr(), flags | libc::O_CLOEXEC) }))?;
    Ok(owned(fd))
}

/// Where the kernel currently sees the file behind `fd` (`d_path`).
pub(crate) fn fd_path(fd: BorrowedFd<'_>) -> io::Result<Vec<u8>> {
    let link = proc_fd::link(fd);
    let mut buf = [0u8; libc::PATH_MAX as usize + 1];
    // SAFETY: valid directory, name, buffer and length.
    let len = check_size(unsafe { libc::readlinkat(link.dir(), link.name().as_ptr(), buf.as_mut_ptr().cast(), buf.len()) })?;
    if len == buf.len() {
        return Err(io::Error::from_raw_os_error(libc::ENAMETOOLONG));
    }
    Ok(buf[..len].to_vec())
}

pub(crate) fn chmod(fd: BorrowedFd<'_>, mode: u32) -> io::Result<()> {
    // SAFETY: valid descriptor and path.
    let rc = unsafe { libc::syscall(libc::SYS_fchmodat2, fd.as_raw_fd(), EMPTY.as_ptr(), mode, libc::AT_EMPTY_PATH) };
    match check(rc as libc::c_int) {
        // Kernels before 6.6; only reached for non-symlinks, which the magic link names exactly.
        Err(err) if err.raw_os_error() == Some(libc::ENOSYS) => {
            let path = proc_fd_path(fd);
            // SAFETY: valid path.
            check(unsafe { libc::chmod(path.as_ptr(), mode) }).map(drop)
        }
        other => other.map(drop),
    }
}

pub(crate) fn chown(fd: BorrowedFd<'_>, uid: Option<u32>, gid: Option<u32>) -> io::Result<()> {
    let (uid, gid) = (uid.unwrap_or(u32::MAX), gid.unwrap_or(u32::MAX));
    // SAFETY: valid descriptor and path; u32::MAX (-1) leaves an id unchanged.
    check(unsafe { libc::fchownat(fd.as_raw_fd(), EMPTY.as_ptr(), uid, gid, libc::AT_EMPTY_PATH | libc::AT_SYMLINK_NOFOLLOW) }).map(drop)
}

fn timespec(time: Option<SetTime>) -> libc::timespec {
    let (tv_sec, tv_nsec) = match time {
        None => (0, libc::UTIME_OMIT),
        Some(SetTime::Now) => (0, libc::UTIME_NOW),
        Some(SetTime::At(at)) => match at.duration_since(UNIX_EPOCH) {
            Ok(after) => (after.as_secs() as i64, i64::from(after.subsec_nanos())),
            Err(before) => {
                let before = before.duration();
                let (secs, nanos) = (before.as_secs() as i64, i64::from(before.subsec_nanos()));
                if nanos == 0 {
                    (-secs, 0)
                } else {
                    (-secs - 1, 1_000_000_000 - nanos)
                }
            }
        },
    };
    libc::timespec { tv_sec, tv_nsec }
}

pub(crate) fn set_times(fd: BorrowedFd<'_>, atime: Option<SetTime>, mtime: Option<SetTime>) -> io::Result<()> {
    let times = [timespec(atime), timespec(mtime)];
    // SAFETY: valid descriptor, path and a two-element array.
    check(unsafe { libc::utimensat(fd.as_raw_fd(), EMPTY.as_ptr(), times.as_ptr(), libc::AT_EMPTY_PATH | libc::AT_SYMLINK_NOFOLLOW) })
        .map(drop)
}

pub(crate) fn system_time(secs: i64, nanos: i64) -> SystemTime {
    let nanos = Duration::from_nanos(nanos.clamp(0, 999_999_999) as u64);
    if secs >= 0 {
        UNIX_EPOCH + Duration::from_secs(secs as u64) + nanos
    } else {
        UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs()) + nanos
    }
}

pub(crate) fn truncate(fd: BorrowedFd<'_>, size: u64) -> io::Result<()> {
    let size = i64::try_from(size).map_err(|_| io::Error::from_raw_os_error(libc::EFBIG))?;
    // SAFETY: valid descriptor.
    retry_interrupted(|| check(unsafe { libc::ftruncate64(fd.as_raw_fd(), size) })).map(drop)
}

pub(crate) fn mkdir(dir: BorrowedFd<'_>, name: &CStr, mode: u32) -> io::Result<()> {
    // SAFETY: valid descriptor and path.
    check(unsafe { libc::mkdirat(dir.as_raw_fd(), name.as_ptr(), mode) }).map(drop)
}

pub(crate) fn mknod(dir: BorrowedFd<'_>, name: &CStr, mode: u32, rdev: u64) -> io::Result<()> {
    // SAFETY: valid descriptor and path.
    check(unsafe { libc::mknodat(dir.as_raw_fd(), name.as_ptr(), mode, rdev) }).map(drop)
}

pub(crate) fn symlink(target: &CStr, dir: BorrowedFd<'_>, name: &CStr) -> io::Result<()> {
    // SAFETY: valid paths and descriptor.
    check(unsafe { libc::symlinkat(target.as_ptr(), dir.as_raw_fd(), name.as_ptr()) }).map(drop)
}

/// A new name `name` in `dir` for the file behind `fd`.
pub(crate) fn link(fd: BorrowedFd<'_>, dir: BorrowedFd<'_>, name: &CStr) -> io::Result<()> {
    // SAFETY: valid descriptors and paths.
    let linked = check(unsafe { libc::linkat(fd.as_raw_fd(), EMPTY.as_ptr(), dir.as_raw_fd(), name.as_ptr(), libc::AT_EMPTY_PATH) });
    match linked {
        // AT_EMPTY_PATH needs CAP_DAC_READ_SEARCH; the magic link does not.
        Err(err) if matches!(err.raw_os_error(), Some(libc::ENOENT) | Some(libc::EPERM)) => {
            let path = proc_fd_path(fd);
            // SAFETY: valid paths and descriptor.
            check(unsafe { libc::linkat(libc::AT_FDCWD, path.as_ptr(), dir.as_raw_fd(), name.as_ptr(), libc::AT_SYMLINK_FOLLOW) }).map(drop)
        }
        other => other.map(drop),
    }
}

pub(crate) fn unlink(dir: BorrowedFd<'_>, name: &CStr, flags: libc::c_int) -> io::Result<()> {
    // SAFETY: valid descriptor and path.
    check(unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), flags) }).map(drop)
}

pub(crate) fn rename(from_dir: BorrowedFd<'_>, from: &CStr, to_dir: BorrowedFd<'_>, to: &CStr, flags: u32) -> io::Result<()> {
    // SAFETY: valid descriptors and paths.
    check(unsafe { libc::renameat2(from_dir.as_raw_fd(), from.as_ptr(), to_dir.as_raw_fd(), to.as_ptr(), flags) }).map(drop)
}

/// The target of the symlink behind `fd`.
pub(crate) fn readlink(fd: BorrowedFd<'_>) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; 256];
    loop {
        // SAFETY: valid descriptor, path, buffer and length.
        let len = check_size(unsafe { libc::readlinkat(fd.as_raw_fd(), EMPTY.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) })?;
        if len < buf.len() {
            buf.truncate(len);
            return Ok(buf);
        }
        buf.resize(buf.len() * 2, 0);
    }
}

pub(crate) fn statfs(fd: BorrowedFd<'_>) -> io::Result<libc::statfs64> {
    // SAFETY: plain data, filled on success.
    let mut st: libc::statfs64 = unsafe { std::mem::zeroed() };
    // SAFETY: valid descriptor and out pointer.
    check(unsafe { libc::fstatfs64(fd.as_raw_fd(), &mut st) })?;
    Ok(st)
}

pub(crate) fn read_at(fd: BorrowedFd<'_>, offset: u64, size: usize) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; size];
    let mut done = 0;
    while done < size {
        let at = i64::try_from(offset + done as u64).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
        // SAFETY: the range buf[done..] is valid for writes.
        let read =
            retry_interrupted(|| check_size(unsafe { libc::pread64(fd.as_raw_fd(), buf[done..].as_mut_ptr().cast(), size - done, at) }))?;
        if read == 0 {
            break;
        }
        done += read;
    }
    buf.truncate(done);
    Ok(buf)
}

pub(crate) fn write_at(fd: BorrowedFd<'_>, offset: u64, data: &[u8]) -> io::Result<usize> {
    let mut done = 0;
    while done < data.len() {
        let at = i64::try_from(offset + done as u64).map_err(|_| io::Error::from_raw_os_error(libc::EFBIG))?;
        // SAFETY: the range data[done..] is valid for reads.
        let written = retry_interrupted(|| {
            check_size(unsafe { libc::pwrite64(fd.as_raw_fd(), data[done..].as_ptr().cast(), data.len() - done, at) })
        })?;
        if written == 0 {
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        done += written;
    }
    Ok(done)
}

pub(crate) fn fsync(fd: BorrowedFd<'_>, datasync: bool) -> io::Result<()> {
    // SAFETY: valid descriptor.
    retry_interrupted(|| {
        check(unsafe {
            if datasync {
                libc::fdatasync(fd.as_raw_fd())
            } else {
                libc::fsync(fd.as_raw_fd())
            }
        })
    })
    .map(drop)
}

pub(crate) fn fallocate(fd: BorrowedFd<'_>, mode: i32, offset: u64, length: u64) -> io::Result<()> {
    let (offset, length) = (i64::try_from(offset), i64::try_from(length));
    let (Ok(offset), Ok(length)) = (offset, length) else { return Err(io::Error::from_raw_os_error(libc::EFBIG)) };
    // SAFETY: valid descriptor.
    retry_interrupted(|| check(unsafe { libc::fallocate64(fd.as_raw_fd(), mode, offset, length) })).map(drop)
}

pub(crate) fn seek(fd: BorrowedFd<'_>, offset: u64, whence: i32) -> io::Result<u64> {
    let offset = i64::try_from(offset).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: valid descriptor.
    let found = unsafe { libc::lseek64(fd.as_raw_fd(), offset, whence) };
    if found < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(found as u64)
    }
}

pub(crate) fn copy_range(from: BorrowedFd<'_>, from_offset: u64, to: BorrowedFd<'_>, to_offset: u64, length: u64) -> io::Result<u64> {
    let invalid = || io::Error::from_raw_os_error(libc::EINVAL);
    let mut from_offset = i64::try_from(from_offset).map_err(|_| invalid())?;
    let mut to_offset = i64::try_from(to_offset).map_err(|_| invalid())?;
    let length = usize::try_from(length).map_err(|_| invalid())?;
    // SAFETY: valid descriptors and offset pointers.
    let copied = unsafe { libc::copy_file_range(from.as_raw_fd(), &mut from_offset, to.as_raw_fd(), &mut to_offset, length, 0) };
    check_size(copied).map(|copied| copied as u64)
}

/// One batch of `getdents64` records from the directory's current position.
pub(crate) fn getdents(dir: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: valid descriptor and buffer.
    let rc = retry_interrupted(|| {
        check_size(unsafe { libc::syscall(libc::SYS_getdents64, dir.as_raw_fd(), buf.as_mut_ptr(), buf.len()) } as isize)
    })?;
    Ok(rc)
}

/// Raises the soft limit of open descriptors to the hard limit: the local
/// backend keeps one descriptor per file the kernel remembers.
/// How many descriptors the shares' node tables may hold together: three
/// quarters of the open files limit, the rest is for everything else.
pub(crate) fn descriptor_budget() -> usize {
    static BUDGET: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *BUDGET.get_or_init(|| {
        raise_open_files_limit();
        // SAFETY: plain data.
        let mut limit: libc::rlimit64 = unsafe { std::mem::zeroed() };
        // SAFETY: valid out pointer.
        let soft = if unsafe { libc::getrlimit64(libc::RLIMIT_NOFILE, &mut limit) } == 0 { limit.rlim_cur } else { 1024 };
        usize::try_from(soft / 4 * 3).unwrap_or(usize::MAX)
    })
}

/// Each file a target's kernel holds costs the daemon one `O_PATH` descriptor,
/// so the limit goes as high as the system allows: `fs.nr_open` where the
/// daemon may raise its hard limit (root), else the hard limit.
/// `HOODY_MAX_OPEN_FILES` sets the limit instead (never above the hard limit).
pub(crate) fn raise_open_files_limit() {
    // SAFETY: plain data.
    let mut limit: libc::rlimit64 = unsafe { std::mem::zeroed() };
    // SAFETY: valid out pointer.
    if unsafe { libc::getrlimit64(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return;
    }
    if let Some(wanted) = std::env::var("HOODY_MAX_OPEN_FILES").ok().and_then(|v| v.parse::<u64>().ok()) {
        limit.rlim_cur = wanted.min(limit.rlim_max);
        // SAFETY: valid pointer.
        if unsafe { libc::setrlimit64(libc::RLIMIT_NOFILE, &limit) } != 0 {
            tracing::warn!(error = %io::Error::last_os_error(), "cannot set the open files limit");
        }
        return;
    }
    let system_max = std::fs::read_to_string("/proc/sys/fs/nr_open").ok().and_then(|text| text.trim().parse::<u64>().ok());
    if let Some(system_max) = system_max.filter(|&max| max > limit.rlim_max) {
        let raised = libc::rlimit64 { rlim_cur: system_max, rlim_max: system_max };
        // SAFETY: valid pointer.
        if unsafe { libc::setrlimit64(libc::RLIMIT_NOFILE, &raised) } == 0 {
            return;
        }
    }
    if limit.rlim_cur < limit.rlim_max {
        limit.rlim_cur = limit.rlim_max;
        // SAFETY: valid pointer.
        if unsafe { libc::setrlimit64(libc::RLIMIT_NOFILE, &limit) } != 0 {
            tracing::warn!(error = %io::Error::last_os_error(), "cannot raise the open files limit");
        }
    }
}
