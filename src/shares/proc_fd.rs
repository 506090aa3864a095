//! A descriptor's `/proc/self/fd` magic link: the kernel's name for exactly the
//! file we hold, for the calls that take a path rather than a descriptor (or
//! refuse `O_PATH` descriptors). The directory `/proc/self/fd` is opened once,
//! so each call resolves one component from it instead of walking
//! `/proc/self/fd/N` from `/` — which cost a fifth of a `getxattr` request.

use std::ffi::{CStr, CString};
use std::marker::PhantomData;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::sync::OnceLock;

/// `/proc/self/fd` of this process (its threads share the descriptor table).
fn fd_dir() -> Option<&'static OwnedFd> {
    static DIR: OnceLock<Option<OwnedFd>> = OnceLock::new();
    DIR.get_or_init(|| {
        // SAFETY: constant NUL-terminated path.
        let fd = unsafe { libc::open(c"/proc/self/fd".as_ptr(), libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC) };
        // SAFETY: a descriptor just opened and owned by no one else.
        (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd) })
    })
    .as_ref()
}

/// The link of one descriptor, as (directory, name) for the `*at` calls and as
/// a whole path for the others.
pub(crate) struct FdLink<'fd> {
    /// The link names whatever has this number: it must not outlive the descriptor.
    descriptor: PhantomData<BorrowedFd<'fd>>,
    number: i32,
    dir: libc::c_int,
    name: CString,
}

pub(crate) fn link(fd: BorrowedFd<'_>) -> FdLink<'_> {
    let number = fd.as_raw_fd();
    match fd_dir() {
        Some(dir) => FdLink { descriptor: PhantomData, number, dir: dir.as_raw_fd(), name: CString::new(number.to_string()).expect("no NUL in a number") },
        // No /proc/self/fd to start from: the whole path, from anywhere.
        None => FdLink { descriptor: PhantomData, number, dir: libc::AT_FDCWD, name: whole_path(number) },
    }
}

fn whole_path(number: i32) -> CString {
    CString::new(format!("/proc/self/fd/{number}")).expect("no NUL in a number")
}

impl FdLink<'_> {
    pub(crate) fn dir(&self) -> libc::c_int {
        self.dir
    }

    /// Relative to [`FdLink::dir`].
    pub(crate) fn name(&self) -> &CStr {
        &self.name
    }

    /// `/proc/self/fd/N`, for calls with no `*at` form.
    pub(crate) fn path(&self) -> CString {
        whole_path(self.number)
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsFd;

    use super::*;

    #[test]
    fn the_link_reaches_the_file_held() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("f"), b"x").unwrap();
        let file = std::fs::File::open(dir.path().join("f")).unwrap();
        let link = link(file.as_fd());
        let mut buf = [0u8; 4096];
        // SAFETY: valid directory, name and buffer.
        let len = unsafe { libc::readlinkat(link.dir(), link.name().as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        assert!(len > 0);
        assert_eq!(&buf[..len as usize], dir.path().join("f").as_os_str().as_encoded_bytes());
        assert_eq!(link.path().to_str().unwrap(), format!("/proc/self/fd/{}", file.as_raw_fd()));
    }
}
