//! The backend of a share whose source lives on this node: the trait's
//! asynchronous face over [`SourceTree`], each call on a blocking thread so
//! that filesystem syscalls never stall the async workers.

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Once};

use async_trait::async_trait;
use hoody_fuse::{
    Attr, CacheInvalidator, Caller, DirEntry, FileLock, FsBackend, FsError, FsResult, HandleId, LockOwner, NodeId, Opened, SetAttr, StatFs,
};

use super::source_tree::{NewMode, SourceTree};
use super::syscalls::{open_beneath, raise_open_files_limit};
use super::ShareMode;

/// The directory `source_path` of a container whose root is `rootfs`, as an
/// `O_PATH` descriptor: resolved one component at a time beneath the rootfs,
/// following no symlink and no `..`. The one way a share's source is found,
/// to check it at creation and to serve it.
pub fn open_source_dir(rootfs: &Path, source_path: &Path) -> io::Result<OwnedFd> {
    let mut dir = open_dir_path(rootfs)?;
    for part in source_path.components() {
        match part {
            std::path::Component::RootDir | std::path::Component::CurDir => {}
            std::path::Component::Normal(name) => {
                let name = std::ffi::CString::new(name.as_bytes()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
                dir = open_beneath(std::os::fd::AsFd::as_fd(&dir), &name, libc::O_PATH | libc::O_DIRECTORY, 0)?;
            }
            std::path::Component::ParentDir | std::path::Component::Prefix(_) => {
                return Err(io::Error::new(io::ErrorKind::InvalidInput, "a share's source path may not contain `..`"));
            }
        }
    }
    Ok(dir)
}

/// Serves one source directory. One instance per mount.
pub struct LocalBackend {
    tree: Arc<SourceTree>,
    /// False while the source container is stopped: every operation then fails
    /// at once with `EIO` instead of serving a container that is not running.
    available: Arc<std::sync::atomic::AtomicBool>,
}

impl std::fmt::Debug for LocalBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalBackend").field("mode", &self.tree.mode()).finish_non_exhaustive()
    }
}

fn open_dir_path(path: &Path) -> io::Result<OwnedFd> {
    let path = std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: valid NUL-terminated path.
    let fd = unsafe { libc::open(path.as_ptr(), libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just opened and is owned by no one else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

impl LocalBackend {
    /// Serves the directory at `source`, a path the daemon trusts as it is.
    pub fn open(source: &Path, mode: ShareMode) -> io::Result<Self> {
        Self::from_root(open_dir_path(source)?, mode)
    }

    /// Serves `source_path` as seen inside a container whose root filesystem is
    /// `rootfs`: each component is resolved beneath `rootfs` without following
    /// symlinks, so a container cannot point its share outside its own files.
    pub fn open_in_container(rootfs: &Path, source_path: &Path, mode: ShareMode) -> io::Result<Self> {
        Self::from_root(open_source_dir(rootfs, source_path)?, mode)
    }

    fn from_root(root: OwnedFd, mode: ShareMode) -> io::Result<Self> {
        static RAISE_LIMIT: Once = Once::new();
        RAISE_LIMIT.call_once(raise_open_files_limit);
        Ok(LocalBackend { tree: Arc::new(SourceTree::new(root, mode)?), available: Arc::new(std::sync::atomic::AtomicBool::new(true)) })
    }

    pub fn mode(&self) -> ShareMode {
        self.tree.mode()
    }

    /// The switch that makes the share answer (true) or fail fast (false).
    pub fn availability(&self) -> Arc<std::sync::atomic::AtomicBool> {
        self.available.clone()
    }

    /// Directories whose listing was served from what the mount's reader read
    /// ahead of a walker (`FsBackend::idle_step`).
    pub fn directories_read_ahead(&self) -> u64 {
        self.tree.directories_read_ahead()
    }

    /// Files the kernel holds references to (one open descriptor each).
    pub fn referenced_nodes(&self) -> usize {
        self.tree.referenced_nodes()
    }

    /// Runs `op` right here: for operations on a local file's metadata, a few
    /// microseconds, cheaper than any hand-off to another thread.
    fn run_inline<T>(&self, op: impl FnOnce(&SourceTree) -> FsResult<T>) -> FsResult<T> {
        if !self.available.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(FsError::Unavailable);
        }
        op(&self.tree)
    }

    async fn run<T, F>(&self, op: F) -> FsResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&SourceTree) -> FsResult<T> + Send + 'static,
    {
        if !self.available.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(FsError::Unavailable);
        }
        let tree = self.tree.clone();
        match tokio::task::spawn_blocking(move || op(&tree)).await {
            Ok(result) => result,
            Err(err) if err.is_panic() => std::panic::resume_unwind(err.into_panic()),
            Err(_) => Err(FsError::Unavailable),
        }
    }
}

/// How long a waiting lock request sleeps between tries, at first and at
/// most: a lock given up is taken within a few ms, and a long wait costs a
/// wake-up every 10 ms. Tries rather than a blocking `F_OFD_SETLKW`, so that a
/// wait ends the moment its caller is interrupted and can never be granted
/// after (a thread blocked in the kernel cannot be called back).
const LOCK_RETRY_FIRST: std::time::Duration = std::time::Duration::from_micros(200);
const LOCK_RETRY_MAX: std::time::Duration = std::time::Duration::from_millis(10);

/// Closes on a blocking thread what the tree found slow to close.
fn close_elsewhere<T: Send + 'static>(slow_to_close: Option<T>) {
    if let Some(slow) = slow_to_close {
        tokio::task::spawn_blocking(move || drop(slow));
    }
}

#[async_trait]
impl FsBackend for LocalBackend {
    async fn root(&self) -> FsResult<Attr> {
        self.run(|tree| tree.root()).await
    }

    async fn lookup(&self, parent: NodeId, name: &OsStr) -> FsResult<Attr> {
        self.run_inline(|tree| tree.lookup(parent, name))
    }

    async fn forget(&self, node: NodeId, count: u64) {
        // Forgets come in bursts; only the rare slow close goes to a blocking thread.
        close_elsewhere(self.tree.forget(node, count));
    }

    async fn getattr(&self, node: NodeId, handle: Option<HandleId>) -> FsResult<Attr> {
        self.run_inline(|tree| tree.getattr(node, handle))
    }

    async fn setattr(&self, node: NodeId, handle: Option<HandleId>, changes: SetAttr) -> FsResult<Attr> {
        // Truncating may free many blocks; owners, modes and times are quick.
        match changes.size {
            None => self.run_inline(|tree| tree.setattr(node, handle, changes)),
            Some(_) => self.run(move |tree| tree.setattr(node, handle, changes)).await,
        }
    }

    async fn opendir(&self, dir: NodeId) -> FsResult<HandleId> {
        self.run_inline(|tree| tree.opendir(dir))
    }

    async fn readdirplus(&self, _dir: NodeId, handle: HandleId, offset: u64, max_entries: usize) -> FsResult<Vec<DirEntry>> {
        // One kernel buffer of entries (a few dozen lookups) at a time: served
        // in place, a walk of a cold tree is a fifth faster than when each
        // batch goes to a blocking thread and back.
        self.run_inline(|tree| tree.readdirplus(handle, offset, max_entries))
    }

    /// Even while the source is stopped, as `release`.
    async fn releasedir(&self, handle: HandleId) -> FsResult<()> {
        self.tree.releasedir(handle)
    }

    async fn fsyncdir(&self, handle: HandleId, datasync: bool) -> FsResult<()> {
        self.run(move |tree| tree.fsyncdir(handle, datasync)).await
    }

    async fn open(&self, node: NodeId, flags: i32, caller: Caller) -> FsResult<Opened> {
        self.run(move |tree| tree.open(node, flags, caller)).await
    }

    async fn create(&self, parent: NodeId, name: &OsStr, mode: u32, umask: u32, flags: i32, caller: Caller) -> FsResult<(Attr, Opened)> {
        self.run_inline(|tree| tree.create(parent, name, NewMode::asked(mode, umask), flags, caller))
    }

    async fn read(&self, handle: HandleId, offset: u64, size: u32) -> FsResult<Vec<u8>> {
        self.run(move |tree| tree.read(handle, offset, size)).await
    }

    async fn write(&self, handle: HandleId, offset: u64, data: Vec<u8>, drop_privileges: Option<Caller>) -> FsResult<u32> {
        self.run(move |tree| tree.write(handle, offset, &data, drop_privileges)).await
    }

    async fn flush(&self, _handle: HandleId) -> FsResult<()> {
        Ok(())
    }

    fn idle_step(&self) -> bool {
        self.available.load(std::sync::atomic::Ordering::Relaxed) && self.tree.read_ahead_step()
    }

    fn idle_end(&self) {
        self.tree.read_ahead_pause();
    }

    /// Writes go straight to the source file; nothing is held back to report.
    fn writes_land_at_once(&self) -> bool {
        true
    }

    /// Even while the source is stopped: the kernel forgets the handle
    /// whatever the answer, and the file's descriptor and its locks on the
    /// source must go with it.
    async fn release(&self, handle: HandleId) -> FsResult<()> {
        close_elsewhere(self.tree.release(handle)?);
        Ok(())
    }

    async fn fsync(&self, handle: HandleId, datasync: bool) -> FsResult<()> {
        self.run(move |tree| tree.fsync(handle, datasync)).await
    }

    async fn fallocate(&self, handle: HandleId, offset: u64, length: u64, mode: i32) -> FsResult<()> {
        self.run(move |tree| tree.fallocate(handle, offset, length, mode)).await
    }

    async fn lseek(&self, handle: HandleId, offset: u64, whence: i32) -> FsResult<u64> {
        self.run(move |tree| tree.lseek(handle, offset, whence)).await
    }

    async fn copy_file_range(&self, from: HandleId, from_offset: u64, to: HandleId, to_offset: u64, length: u64) -> FsResult<u64> {
        self.run(move |tree| tree.copy_file_range(from, from_offset, to, to_offset, length)).await
    }

    async fn mkdir(&self, parent: NodeId, name: &OsStr, mode: u32, umask: u32, caller: Caller) -> FsResult<Attr> {
        self.run_inline(|tree| tree.mkdir(parent, name, NewMode::asked(mode, umask), caller))
    }

    async fn mknod(&self, parent: NodeId, name: &OsStr, mode: u32, umask: u32, _rdev: u32, caller: Caller) -> FsResult<Attr> {
        self.run_inline(|tree| tree.mknod(parent, name, NewMode::asked(mode, umask), caller))
    }

    async fn symlink(&self, parent: NodeId, name: &OsStr, target: &Path, caller: Caller) -> FsResult<Attr> {
        self.run_inline(|tree| tree.symlink(parent, name, target, caller))
    }

    async fn link(&self, node: NodeId, new_parent: NodeId, new_name: &OsStr) -> FsResult<Attr> {
        self.run_inline(|tree| tree.link(node, new_parent, new_name))
    }

    async fn unlink(&self, parent: NodeId, name: &OsStr) -> FsResult<()> {
        let name = name.to_owned();
        self.run(move |tree| tree.unlink(parent, &name)).await
    }

    async fn rmdir(&self, parent: NodeId, name: &OsStr) -> FsResult<()> {
        self.run_inline(|tree| tree.rmdir(parent, name))
    }

    async fn rename(&self, parent: NodeId, name: &OsStr, new_parent: NodeId, new_name: &OsStr, flags: u32) -> FsResult<()> {
        let (name, new_name) = (name.to_owned(), new_name.to_owned());
        self.run(move |tree| tree.rename(parent, &name, new_parent, &new_name, flags)).await
    }

    async fn readlink(&self, node: NodeId) -> FsResult<PathBuf> {
        self.run_inline(|tree| tree.readlink(node))
    }

    async fn statfs(&self) -> FsResult<StatFs> {
        self.run_inline(|tree| tree.statfs())
    }

    async fn getxattr(&self, node: NodeId, name: &OsStr) -> FsResult<Vec<u8>> {
        self.run_inline(|tree| tree.getxattr(node, name))
    }

    async fn setxattr(&self, node: NodeId, name: &OsStr, value: &[u8], flags: i32) -> FsResult<()> {
        let (name, value) = (name.to_owned(), value.to_vec());
        self.run(move |tree| tree.setxattr(node, &name, &value, flags)).await
    }

    async fn listxattr(&self, node: NodeId) -> FsResult<Vec<OsString>> {
        self.run_inline(|tree| tree.listxattr(node))
    }

    async fn removexattr(&self, node: NodeId, name: &OsStr) -> FsResult<()> {
        let name = name.to_owned();
        self.run(move |tree| tree.removexattr(node, &name)).await
    }

    /// Locks go on the source file, but for a readonly share, whose readers
    /// may not hold up the source's writers.
    fn takes_locks(&self) -> bool {
        self.tree.mode() == ShareMode::ReadWrite
    }

    async fn getlk(&self, handle: HandleId, owner: u64, lock: FileLock) -> FsResult<Option<FileLock>> {
        self.run_inline(|tree| tree.getlk(handle, owner, lock))
    }

    async fn setlk(&self, handle: HandleId, owner: LockOwner, lock: FileLock, wait: bool) -> FsResult<()> {
        let mut pause = LOCK_RETRY_FIRST;
        loop {
            match self.run_inline(|tree| tree.setlk(handle, owner, lock)) {
                // Each try either takes the lock or leaves nothing behind: the
                // future may be dropped at the sleep.
                Err(FsError::WouldBlock) if wait => {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(LOCK_RETRY_MAX);
                }
                outcome => return outcome,
            }
        }
    }

    fn attach_invalidator(&self, invalidator: CacheInvalidator) {
        self.tree.attach(invalidator);
    }
}
