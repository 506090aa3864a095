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
//! kernel's current path of the descriptor must start with the source's. A
//! file can also leave by a link made outside and its inside name removed,
//! which leaves its path as it was, marked deleted: such a file must have no
//! link left, or be named by that path still.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use hoody_fuse::{FsError, FsResult};
use parking_lot::Mutex;

use super::syscalls::{fd_path, open_beneath, stat};

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
        let Some(root_len) = self.root_len_above(&path)? else {
            tracing::debug!(path = %String::from_utf8_lossy(&path), "file left the share's source");
            return Err(FsError::Stale);
        };
        if path.ends_with(DELETED) && self.lives_on_elsewhere(fd, &path[root_len..])? {
            tracing::debug!(path = %String::from_utf8_lossy(&path), "file left the share's source by a link made elsewhere");
            return Err(FsError::Stale);
        }
        Ok(())
    }

    /// The length of the source's path if `path` lies beneath it: checked
    /// against the path last seen, then against the source's current one.
    fn root_len_above(&self, path: &[u8]) -> FsResult<Option<usize>> {
        {
            let root_path = self.root_path.lock();
            if is_beneath(path, &root_path) {
                return Ok(Some(root_path.len()));
            }
        }
        let root_path = fd_path(self.root.as_fd()).map_err(FsError::from)?;
        let beneath = is_beneath(path, &root_path).then_some(root_path.len());
        *self.root_path.lock() = root_path;
        Ok(beneath)
    }

    /// Whether the file behind `fd`, whose path (`below_root`, from the
    /// source) the kernel marked deleted, has links left that the path does
    /// not name: a link made outside and the name inside removed move a file
    /// out as surely as a rename, while its descriptor keeps its old path.
    /// A file with no link left is simply deleted and stays answered for, as
    /// POSIX wants; a name that merely ends like a deleted file's is looked up.
    fn lives_on_elsewhere(&self, fd: BorrowedFd<'_>, below_root: &[u8]) -> FsResult<bool> {
        let st = stat(fd).map_err(FsError::from)?;
        let name = below_root.strip_prefix(b"/").unwrap_or(below_root);
        if st.st_nlink == 0 || name.is_empty() {
            return Ok(false);
        }
        let Ok(name) = CString::new(name) else { return Ok(true) };
        let named_there = open_beneath(self.root.as_fd(), &name, libc::O_PATH, 0)
            .and_then(|there| stat(there.as_fd()))
            .is_ok_and(|there| there.st_dev == st.st_dev && there.st_ino == st.st_ino);
        Ok(!named_there)
    }
}

/// What the kernel appends to the path of a file whose name was removed.
const DELETED: &[u8] = b" (deleted)";

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
