//! Taking a FUSE mount down without ever hanging, even when it is busy.
//!
//! A mount is detached through the descriptor `fsmount` gave for it (its
//! `/proc/self/fd` link names exactly that mount, whatever a container did to
//! the path meanwhile), so it is gone from the namespace at once. The
//! connection then ends with its last user; one that outlives a grace period
//! is aborted through fusectl, so that processes still inside get `ENOTCONN`
//! instead of a share that lingers after it was disabled, and the session
//! thread can end.

use std::ffi::CString;
use std::fs;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::path::Path;

const FUSECTL_DIR: &str = "/sys/fs/fuse/connections";

/// The fusectl name of the FUSE connection whose mount root `mount` is: the
/// kernel's device number of its superblock (`MKDEV` layout). Asked with
/// `AT_STATX_DONT_SYNC`, which sends the connection no request: it is read
/// before anything serves the connection's `FUSE_INIT`.
pub(crate) fn connection_of(mount: BorrowedFd<'_>) -> Option<u32> {
    // SAFETY: plain data, filled on success.
    let mut st: libc::statx = unsafe { std::mem::zeroed() };
    let flags = libc::AT_EMPTY_PATH | libc::AT_STATX_DONT_SYNC;
    // SAFETY: valid descriptor, empty path and out pointer.
    if unsafe { libc::statx(mount.as_raw_fd(), c"".as_ptr(), flags, 0, &mut st) } != 0 {
        return None;
    }
    Some((st.stx_dev_major << 20) | st.stx_dev_minor)
}

/// Detaches the mount behind `mount` from the namespace (`MNT_DETACH`: never
/// waits on a busy or dead connection). Already unmounted is fine.
pub(crate) fn detach(mount: BorrowedFd<'_>) -> io::Result<()> {
    let link = CString::new(format!("/proc/self/fd/{}", mount.as_raw_fd())).expect("no NUL in a number");
    // SAFETY: a valid NUL-terminated path.
    if unsafe { libc::umount2(link.as_ptr(), libc::MNT_DETACH) } == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    match err.raw_os_error() {
        // No longer mounted (unmounted by hand): nothing to do.
        Some(libc::EINVAL) | Some(libc::ENOENT) => Ok(()),
        _ => Err(err),
    }
}

/// Aborts a FUSE connection: every pending and future request fails.
pub(crate) fn abort(connection: u32) -> io::Result<()> {
    let abort_file = Path::new(FUSECTL_DIR).join(connection.to_string()).join("abort");
    if !abort_file.exists() {
        mount_fusectl()?;
    }
    fs::write(&abort_file, b"1")
}

fn mount_fusectl() -> io::Result<()> {
    let (source, target) = (CString::new("fusectl")?, CString::new(FUSECTL_DIR)?);
    // SAFETY: valid NUL-terminated strings; no mount data.
    let rc = unsafe { libc::mount(source.as_ptr(), target.as_ptr(), source.as_ptr(), 0, std::ptr::null()) };
    match rc {
        0 => Ok(()),
        _ if io::Error::last_os_error().raw_os_error() == Some(libc::EBUSY) => Ok(()),
        _ => Err(io::Error::last_os_error()),
    }
}
