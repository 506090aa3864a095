//! Extended attributes of a file held by an `O_PATH` descriptor.
//!
//! The classic calls do not take `O_PATH` descriptors, so a file is named by its
//! `/proc/self/fd` link, which the kernel resolves to exactly that file; for a
//! symlink, the symlink itself (the jump through the magic link is final).
//! Reads go through `getxattrat`/`listxattrat` (Linux 6.13) relative to
//! `/proc/self/fd`, one component to resolve instead of four; older kernels
//! take the whole path.

use std::ffi::CStr;
use std::io;
use std::os::fd::BorrowedFd;
use std::sync::atomic::{AtomicU8, Ordering};

use super::proc_fd::{self, FdLink};
use super::syscalls::check_size;

/// The same on every architecture since Linux 5.1's common numbering.
const SYS_GETXATTRAT: libc::c_long = 464;
const SYS_LISTXATTRAT: libc::c_long = 465;

#[repr(C)]
struct XattrArgs {
    value: u64,
    size: u32,
    flags: u32,
}

/// Whether the `*xattrat` calls are usable: unknown, yes, no. Decided once by
/// a probe with a known answer, since a sandbox may refuse a call it does not
/// know with `EPERM` rather than the kernel's `ENOSYS`.
static XATTRAT: AtomicU8 = AtomicU8::new(UNKNOWN);
const UNKNOWN: u8 = 0;
const USABLE: u8 = 1;
const UNUSABLE: u8 = 2;

fn xattrat_usable() -> bool {
    match XATTRAT.load(Ordering::Relaxed) {
        USABLE => true,
        UNUSABLE => false,
        _ => {
            let mut args = XattrArgs { value: 0, size: 0, flags: 0 };
            // SAFETY: constant NUL-terminated strings and a valid argument block; asks a size only.
            let rc = unsafe {
                libc::syscall(SYS_GETXATTRAT, libc::AT_FDCWD, c"/".as_ptr(), 0, c"user.hoody-probe".as_ptr(), &mut args, std::mem::size_of::<XattrArgs>())
            };
            let usable = rc >= 0 || matches!(io::Error::last_os_error().raw_os_error(), Some(libc::ENODATA) | Some(libc::EOPNOTSUPP));
            XATTRAT.store(if usable { USABLE } else { UNUSABLE }, Ordering::Relaxed);
            usable
        }
    }
}

/// Calls `at` where the `*xattrat` calls are usable, else `classic`.
fn at_or_classic(at: impl FnOnce() -> isize, classic: impl FnOnce() -> isize) -> isize {
    if xattrat_usable() {
        at()
    } else {
        classic()
    }
}

/// Most values are short: the first call offers this much, so that one call
/// answers; only a larger value costs a call asking its size.
const FIRST_GUESS: usize = 256;

/// Fills a buffer with what `call` answers, growing it to the size the value
/// has (asked with an empty buffer) while it does not fit (`ERANGE`).
fn read_sized(mut call: impl FnMut(*mut libc::c_void, usize) -> isize) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; FIRST_GUESS];
    loop {
        match check_size(call(buf.as_mut_ptr().cast(), buf.len())) {
            Ok(len) => {
                buf.truncate(len);
                return Ok(buf);
            }
            Err(err) if err.raw_os_error() == Some(libc::ERANGE) => {
                let size = check_size(call(std::ptr::null_mut(), 0))?;
                buf = vec![0u8; size.max(buf.len() + 1)];
            }
            Err(err) => return Err(err),
        }
    }
}

fn getxattr(link: &FdLink<'_>, name: &CStr, value: *mut libc::c_void, size: usize) -> isize {
    at_or_classic(
        || {
            let mut args = XattrArgs { value: value as u64, size: size as u32, flags: 0 };
            // SAFETY: valid directory, names and argument block; `value`/`size` describe a buffer or are null/0.
            unsafe {
                libc::syscall(SYS_GETXATTRAT, link.dir(), link.name().as_ptr(), 0, name.as_ptr(), &mut args, std::mem::size_of::<XattrArgs>())
                    as isize
            }
        },
        // SAFETY: as above, with the whole path.
        || unsafe { libc::getxattr(link.path().as_ptr(), name.as_ptr(), value, size) },
    )
}

fn listxattr(link: &FdLink<'_>, list: *mut libc::c_char, size: usize) -> isize {
    at_or_classic(
        // SAFETY: valid directory and name; `list`/`size` describe a buffer or are null/0.
        || unsafe { libc::syscall(SYS_LISTXATTRAT, link.dir(), link.name().as_ptr(), 0, list, size) as isize },
        // SAFETY: as above, with the whole path.
        || unsafe { libc::listxattr(link.path().as_ptr(), list, size) },
    )
}

/// Whether a share carries the attribute `name`: every one but the labels of
/// mandatory access control (SELinux's, Smack's). A label is the source
/// host's policy, not the file's content. Under SELinux the target's kernel
/// labels a FUSE mount by its own policy and never asks the daemon; without
/// it a label means nothing to the target; and setting one through a share
/// would have the daemon, as root, relabel a file of the source container.
/// So a share has none, as an NFS mount without labeled NFS has none:
/// getting or setting one is `EOPNOTSUPP`, and lists leave them out. That
/// answer also tells `ls -l` that this file system has no labels, and it stops
/// asking for the rest of the share: one round trip less per file.
pub(crate) fn carried(name: &[u8]) -> bool {
    name != b"security.selinux" && !name.starts_with(b"security.SMACK64")
}

pub(crate) fn get(fd: BorrowedFd<'_>, name: &CStr) -> io::Result<Vec<u8>> {
    let link = proc_fd::link(fd);
    read_sized(|value, size| getxattr(&link, name, value, size))
}

/// The names, each followed by a NUL.
pub(crate) fn list(fd: BorrowedFd<'_>) -> io::Result<Vec<u8>> {
    let link = proc_fd::link(fd);
    read_sized(|list, size| listxattr(&link, list.cast(), size))
}

pub(crate) fn set(fd: BorrowedFd<'_>, name: &CStr, value: &[u8], flags: i32) -> io::Result<()> {
    let path = proc_fd::link(fd).path();
    // SAFETY: valid paths and value buffer.
    check_size(unsafe { libc::setxattr(path.as_ptr(), name.as_ptr(), value.as_ptr().cast(), value.len(), flags) } as isize).map(drop)
}

pub(crate) fn remove(fd: BorrowedFd<'_>, name: &CStr) -> io::Result<()> {
    let path = proc_fd::link(fd).path();
    // SAFETY: valid paths.
    check_size(unsafe { libc::removexattr(path.as_ptr(), name.as_ptr()) } as isize).map(drop)
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsFd;

    use super::*;

    #[test]
    fn values_short_and_long_read_whole_through_an_o_path_descriptor() {
        for usable in [USABLE, UNUSABLE] {
            // Both ways of naming the file: `*xattrat` and the whole path.
            XATTRAT.store(usable, Ordering::Relaxed);
            values_read_whole();
        }
        XATTRAT.store(UNKNOWN, Ordering::Relaxed);
    }

    fn values_read_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"").unwrap();
        let long = vec![b'x'; 3000];
        for (name, value) in [(c"user.short", &b"hi"[..]), (c"user.long", &long[..]), (c"user.empty", &b""[..])] {
            let file = std::fs::File::open(&path).unwrap();
            set(file.as_fd(), name, value, 0).unwrap();
        }
        let fd = super::super::syscalls::open_beneath(std::fs::File::open(dir.path()).unwrap().as_fd(), c"f", libc::O_PATH, 0).unwrap();
        assert_eq!(get(fd.as_fd(), c"user.short").unwrap(), b"hi");
        assert_eq!(get(fd.as_fd(), c"user.long").unwrap(), long);
        assert_eq!(get(fd.as_fd(), c"user.empty").unwrap(), b"");
        assert_eq!(get(fd.as_fd(), c"user.none").unwrap_err().raw_os_error(), Some(libc::ENODATA));
        let names = list(fd.as_fd()).unwrap();
        for name in [&b"user.short\0"[..], b"user.long\0", b"user.empty\0"] {
            assert!(names.windows(name.len()).any(|w| w == name), "{names:?}");
        }
    }
}
