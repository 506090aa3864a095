//! Extended attributes of a file held by an `O_PATH` descriptor.
//!
//! The classic calls do not take `O_PATH` descriptors, so a file is named by its
//! `/proc/self/fd` link, which the kernel resolves to exactly that file; for a
//! symlink, the symlink itself (the jump through the magic link is final).

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

fn proc_path(fd: BorrowedFd<'_>) -> CString {
    CString::new(format!("/proc/self/fd/{}", fd.as_raw_fd())).expect("no NUL in a number")
}

fn check_size(rc: isize) -> io::Result<usize> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc as usize)
    }
}

/// Asks `call` for the size first, then fills a buffer, growing it while the
/// value grows in between (`ERANGE`).
fn read_sized(mut call: impl FnMut(*mut libc::c_void, usize) -> isize) -> io::Result<Vec<u8>> {
    loop {
        let size = check_size(call(std::ptr::null_mut(), 0))?;
        let mut buf = vec![0u8; size];
        match check_size(call(buf.as_mut_ptr().cast(), buf.len())) {
            Ok(len) => {
                buf.truncate(len);
                return Ok(buf);
            }
            Err(err) if err.raw_os_error() == Some(libc::ERANGE) => continue,
            Err(err) => return Err(err),
        }
    }
}

pub(super) fn get(fd: BorrowedFd<'_>, name: &CStr) -> io::Result<Vec<u8>> {
    let path = proc_path(fd);
    // SAFETY: valid paths; `value` and `size` describe a valid buffer or are null/0.
    read_sized(|value, size| unsafe { libc::getxattr(path.as_ptr(), name.as_ptr(), value, size) })
}

/// The names, each followed by a NUL.
pub(super) fn list(fd: BorrowedFd<'_>) -> io::Result<Vec<u8>> {
    let path = proc_path(fd);
    // SAFETY: as for `get`.
    read_sized(|list, size| unsafe { libc::listxattr(path.as_ptr(), list.cast(), size) })
}

pub(super) fn set(fd: BorrowedFd<'_>, name: &CStr, value: &[u8], flags: i32) -> io::Result<()> {
    let path = proc_path(fd);
    // SAFETY: valid paths and value buffer.
    check_size(unsafe { libc::setxattr(path.as_ptr(), name.as_ptr(), value.as_ptr().cast(), value.len(), flags) } as isize).map(drop)
}

pub(super) fn remove(fd: BorrowedFd<'_>, name: &CStr) -> io::Result<()> {
    let path = proc_path(fd);
    // SAFETY: valid paths.
    check_size(unsafe { libc::removexattr(path.as_ptr(), name.as_ptr()) } as isize).map(drop)
}
