//! Keeping every access of the local backend beneath the share's source.
//!
//! Paths are never resolved as strings: a name is one component, opened
//! relative to its parent's descriptor with `openat2(RESOLVE_BENEATH |
//! RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS)`, and a symlink is opened as
//! itself, never followed. `..` of the root is the root.
//!
//! A descriptor keeps naming its file across renames, so a directory the
//! source moves out of the share would take our descriptor along. Hence every
//! descriptor is checked, before use, to still lie beneath the source: the
//! kernel's current path of the descriptor must start with the source's.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use hoody_fuse::{FsError, FsResult};
use parking_lot::Mutex;

use super::syscalls::fd_path;

pub(super) struct Containment {
    root: OwnedFd,
    /// The source's path as the kernel last reported it (it moves if the
    /// source directory itself is renamed).
    root_path: Mutex<Vec<u8>>,
}

impl Containment {
    pub(super) fn new(root: OwnedFd) -> io::Result<Self> {
        let root_path = fd_path(root.as_fd())?;
        Ok(Containment { root, root_path: Mutex::new(root_path) })
    }

    pub(super) fn root(&self) -> BorrowedFd<'_> {
        self.root.as_fd()
    }

    /// `Stale` unless the file behind `fd` is still beneath the source.
    pub(super) fn check(&self, fd: BorrowedFd<'_>) -> FsResult<()> {
        // A path too long for the kernel to spell out cannot be checked: refused.
        let path = fd_path(fd).map_err(FsError::from)?;
        if is_beneath(&path, &self.root_path.lock()) {
            return Ok(());
        }
        let root_path = fd_path(self.root.as_fd()).map_err(FsError::from)?;
        let beneath = is_beneath(&path, &root_path);
        *self.root_path.lock() = root_path;
        if beneath {
            Ok(())
        } else {
            tracing::debug!(path = %String::from_utf8_lossy(&path), "file left the share's source");
            Err(FsError::Stale)
        }
    }
}

fn is_beneath(path: &[u8], root: &[u8]) -> bool {
    if root == b"/" {
        return true;
    }
    match path.strip_prefix(root) {
        Some(rest) => rest.is_empty() || rest.starts_with(b"/"),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::is_beneath;

    #[test]
    fn beneath_means_below_a_component_boundary() {
        assert!(is_beneath(b"/src", b"/src"));
        assert!(is_beneath(b"/src/a/b", b"/src"));
        assert!(is_beneath(b"/src/gone (deleted)", b"/src"));
        assert!(!is_beneath(b"/src2/a", b"/src"));
        assert!(!is_beneath(b"/sr", b"/src"));
        assert!(!is_beneath(b"/etc/passwd", b"/src"));
        assert!(is_beneath(b"/anything", b"/"));
    }
}
