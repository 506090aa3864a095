//! Dropping setuid, setgid and file capabilities when someone who may not keep
//! them changes a file's contents, as the kernel does for a local file
//! (`file_remove_privs`, `do_truncate`). The daemon writes with its own
//! privileges, which would keep them, so a share drops them explicitly.

use std::io;
use std::os::fd::BorrowedFd;

use hoody_fuse::Caller;

use super::syscalls::{self, stat};
use super::xattrs;

const CAPABILITY: &std::ffi::CStr = c"security.capability";

/// `st`'s permission bits without the privileges a write by `writer` drops:
/// setuid always; setgid when the file is group-executable (otherwise it marks
/// mandatory locking) or the writer is not of the file's group.
fn mode_after_write(st: &libc::stat64, writer: Caller) -> u32 {
    let mut mode = st.st_mode & 0o7777 & !libc::S_ISUID;
    if st.st_mode & libc::S_IXGRP != 0 || writer.gid != st.st_gid {
        mode &= !libc::S_ISGID;
    }
    mode
}

fn is_regular(st: &libc::stat64) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFREG
}

/// Drops what a write by `writer` drops from the file behind `fd` (any
/// descriptor, `O_PATH` too). Returns the file's status when something changed.
pub(super) fn drop_for(fd: BorrowedFd<'_>, writer: Caller) -> io::Result<Option<libc::stat64>> {
    let st = stat(fd)?;
    if !is_regular(&st) {
        return Ok(None);
    }
    let mut changed = false;
    let mode = mode_after_write(&st, writer);
    if mode != st.st_mode & 0o7777 {
        syscalls::chmod(fd, mode)?;
        changed = true;
    }
    match xattrs::remove(fd, CAPABILITY) {
        Ok(()) => changed = true,
        Err(err) if matches!(err.raw_os_error(), Some(libc::ENODATA) | Some(libc::EOPNOTSUPP)) => {}
        Err(err) => return Err(err),
    }
    Ok(changed.then_some(st))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(mode: u32, gid: u32) -> libc::stat64 {
        // SAFETY: plain data.
        let mut st: libc::stat64 = unsafe { std::mem::zeroed() };
        st.st_mode = libc::S_IFREG | mode;
        st.st_gid = gid;
        st
    }

    #[test]
    fn a_write_drops_setuid_and_setgid_as_the_kernel_does() {
        let writer = Caller { uid: 1000, gid: 1000 };
        // (mode, the file's group) -> mode after the write
        for ((mode, gid), after) in [
            ((0o4755, 1000), 0o755),
            ((0o2775, 1000), 0o775), // group-executable setgid goes
            ((0o6777, 1000), 0o777),
            ((0o2664, 1000), 0o2664), // mandatory-locking mark stays for the group...
            ((0o2666, 0), 0o666),     // ...not for others
            ((0o1777, 0), 0o1777),
        ] {
            assert_eq!(mode_after_write(&file(mode, gid), writer), after, "{mode:o} of group {gid}");
        }
    }
}
