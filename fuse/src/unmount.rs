//! Taking a FUSE mount down without ever hanging, even when it is busy.
//!
//! A clean unmount is tried first; a busy mount is detached lazily (gone from
//! the namespace at once). A connection that outlives its mount can then be
//! aborted through fusectl, so that processes still inside get `ENOTCONN`
//! instead of a share that lingers after it was disabled, and the session
//! thread can end.

use std::ffi::CString;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const FUSECTL_DIR: &str = "/sys/fs/fuse/connections";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unmounted {
    /// Unmounted, or found already gone.
    Clean,
    /// Detached from the namespace while still in use.
    Detached,
}

/// The fusectl name of the FUSE connection mounted at `mountpoint` (the kernel's
/// device number of the mount), read from `/proc/self/mountinfo`.
pub(crate) fn connection_id(mountpoint: &Path) -> Option<u32> {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").ok()?;
    let mut found = None;
    for line in mountinfo.lines() {
        let Some((mount, fs_type)) = line.split_once(" - ") else { continue };
        let fields: Vec<&str> = mount.split(' ').collect();
        if fields.len() < 5 || !fs_type.starts_with("fuse") || unescape(fields[4]) != mountpoint {
            continue;
        }
        if let Some((major, minor)) =
            fields[2].split_once(':').and_then(|(ma, mi)| Some((ma.parse::<u32>().ok()?, mi.parse::<u32>().ok()?)))
        {
            // The kernel's dev_t layout (MKDEV), which fusectl uses for directory names.
            found = Some((major << 20) | minor);
        }
    }
    found
}

/// Mountinfo escapes space, tab, newline and backslash as octal.
fn unescape(field: &str) -> PathBuf {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).and_then(|digits| std::str::from_utf8(digits).ok()).and_then(|d| u8::from_str_radix(d, 8).ok());
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
    PathBuf::from(<std::ffi::OsString as std::os::unix::ffi::OsStringExt>::from_vec(out))
}

/// Unmounts the FUSE mount of `connection` at `mountpoint`, lazily if busy.
pub(crate) fn unmount(mountpoint: &Path, connection: Option<u32>) -> io::Result<Unmounted> {
    // The mount may already be gone (unmounted by hand): never unmount whatever
    // is mounted there now.
    if connection.is_some() && connection_id(mountpoint) != connection {
        return Ok(Unmounted::Clean);
    }
    let path = CString::new(mountpoint.as_os_str().as_bytes())?;
    // SAFETY: `path` is a valid NUL-terminated string.
    if unsafe { libc::umount2(path.as_ptr(), 0) } == 0 {
        return Ok(Unmounted::Clean);
    }
    let err = io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::EINVAL) | Some(libc::ENOENT) => return Ok(Unmounted::Clean),
        Some(libc::EPERM) if fusermount(&["-u"], mountpoint) => return Ok(Unmounted::Clean),
        Some(libc::EBUSY) | Some(libc::EPERM) => {}
        _ => return Err(err),
    }
    if !fusermount(&["-u", "-z"], mountpoint) {
        // SAFETY: as above.
        if unsafe { libc::umount2(path.as_ptr(), libc::MNT_DETACH) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(Unmounted::Detached)
}

fn fusermount(args: &[&str], mountpoint: &Path) -> bool {
    Command::new("fusermount3")
        .args(args)
        .arg(mountpoint)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes_are_decoded() {
        assert_eq!(unescape(r"/tmp/a\040b\134c"), PathBuf::from("/tmp/a b\\c"));
        assert_eq!(unescape("/plain"), PathBuf::from("/plain"));
        assert_eq!(unescape(r"/trailing\04"), PathBuf::from(r"/trailing\04"));
    }

    #[test]
    fn unknown_mountpoint_has_no_connection() {
        assert_eq!(connection_id(Path::new("/nonexistent/hoody/mount")), None);
    }
}
