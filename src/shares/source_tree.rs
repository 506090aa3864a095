//! The local share's filesystem logic: every operation of the backend trait on
//! the source directory, synchronous, with the containment and readonly rules.
//! Callers run these on blocking threads, never on the async workers.

use std::ffi::{CStr, CString, OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use hoody_fuse::{
    Attr, CacheInvalidator, Caller, DirEntry, FileKind, FileLock, FsError, FsResult, HandleId, IdMap, LockOwner, NodeId, Opened, SetAttr, StatFs,
};
use parking_lot::Mutex;

use super::containment::Containment;
use super::dir_stream::{dir_times, DirStream};
use super::file_locks::FileLocks;
use super::mount_watch::MountWatch;
use super::node_table::{names_hold, held_descriptors, node_id, Node, NodeTable};
use super::privileges;
use super::syscalls::{self, descriptor_budget, open_beneath, stat};
use super::walk_ahead::WalkAhead;
use super::xattrs;
use super::ShareMode;

/// Open flags passed on to the source file. Creation flags are handled
/// explicitly, and `O_DIRECT` would impose the source's alignment on callers.
const PASSED_OPEN_FLAGS: i32 =
    libc::O_ACCMODE | libc::O_APPEND | libc::O_TRUNC | libc::O_SYNC | libc::O_DSYNC | libc::O_NOATIME | libc::O_NONBLOCK;
/// Whiteouts (device nodes overlayfs uses) are not for shares.
const RENAME_FLAGS: u32 = libc::RENAME_NOREPLACE | libc::RENAME_EXCHANGE;
const NAME_MAX: usize = 255;

enum Component {
    Dot,
    DotDot,
    Name(CString),
}

/// A name from the kernel: exactly one path component.
fn component(name: &OsStr) -> FsResult<Component> {
    let bytes = name.as_bytes();
    match bytes {
        b"." => Ok(Component::Dot),
        b".." => Ok(Component::DotDot),
        _ if bytes.is_empty() || bytes.contains(&b'/') || bytes.contains(&0) => Err(FsError::InvalidArgument),
        _ if bytes.len() > NAME_MAX => Err(FsError::NameTooLong),
        _ => Ok(Component::Name(CString::new(bytes).map_err(|_| FsError::InvalidArgument)?)),
    }
}

/// A name to create or remove: `.` and `..` are never one.
fn entry_name(name: &OsStr) -> FsResult<CString> {
    match component(name)? {
        Component::Name(name) => Ok(name),
        Component::Dot | Component::DotDot => Err(FsError::InvalidArgument),
    }
}

fn kind_of(mode: u32) -> FileKind {
    match mode & libc::S_IFMT {
        libc::S_IFDIR => FileKind::Directory,
        libc::S_IFLNK => FileKind::Symlink,
        libc::S_IFIFO => FileKind::Fifo,
        libc::S_IFSOCK => FileKind::Socket,
        libc::S_IFCHR => FileKind::CharDevice,
        libc::S_IFBLK => FileKind::BlockDevice,
        _ => FileKind::File,
    }
}

/// The kernel's encoding of a device number in FUSE attributes (`new_encode_dev`).
fn fuse_rdev(rdev: u64) -> u32 {
    let (major, minor) = (libc::major(rdev), libc::minor(rdev));
    (minor & 0xff) | (major << 8) | ((minor & !0xff) << 12)
}

/// Closing the last descriptor of an unlinked file frees its blocks, which
/// can take long for a big file: such closes are left to a blocking thread.
fn slow_to_close(fd: BorrowedFd<'_>) -> bool {
    !matches!(stat(fd), Ok(st) if st.st_nlink > 0)
}

/// Closes descriptors of entries opened ahead of a walker and not served,
/// those slow to close on a thread of their own (this may be the mount's
/// reader, which must not wait for a big file's blocks to be freed).
fn close_opened_ahead(fds: Vec<OwnedFd>) {
    let slow: Vec<OwnedFd> = fds.into_iter().filter(|fd| slow_to_close(fd.as_fd())).collect();
    if !slow.is_empty() {
        // Should no thread start, they close here.
        let _ = std::thread::Builder::new().name("share-close".into()).spawn(move || drop(slow));
    }
}

/// Refuses the attributes a share does not carry (see `xattrs::carried`).
fn carried(name: &OsStr) -> FsResult<()> {
    if xattrs::carried(name.as_bytes()) {
        Ok(())
    } else {
        Err(FsError::Unsupported)
    }
}

fn wants_write(flags: i32) -> bool {
    flags & libc::O_ACCMODE != libc::O_RDONLY || flags & libc::O_TRUNC != 0
}

/// The permission bits a caller asks for a new file, and its umask.
#[derive(Debug, Clone, Copy)]
pub(super) struct NewMode {
    /// The `S_IFMT` bits, for `mknod`.
    file_type: u32,
    mode: u32,
    umask: u32,
}

impl NewMode {
    pub(super) fn asked(mode: u32, umask: u32) -> Self {
        NewMode { file_type: mode & libc::S_IFMT, mode: mode & 0o7777, umask: umask & 0o777 }
    }
}

/// How a new file's permission bits come about, decided by its directory.
#[derive(Debug, Clone, Copy)]
enum Permissions {
    /// Exactly these: the asked mode less the umask.
    Exact(u32),
    /// The directory's default ACL shapes them from the asked mode, and the
    /// umask does not apply: the kernel does it while creating.
    FromDefaultAcl(u32),
}

impl Permissions {
    fn of(dir: BorrowedFd<'_>, asked: NewMode) -> Self {
        match xattrs::get(dir, c"system.posix_acl_default") {
            Ok(_) => Permissions::FromDefaultAcl(asked.mode),
            Err(_) => Permissions::Exact(asked.mode & !asked.umask),
        }
    }

    /// The mode to create with: `private` until the file belongs to its
    /// caller, unless a default ACL must see the asked bits. Never setuid or
    /// setgid while the daemon owns it.
    fn to_create_with(self, private: u32) -> u32 {
        match self {
            Permissions::Exact(_) => private,
            Permissions::FromDefaultAcl(mode) => mode & 0o777,
        }
    }
}

pub(super) struct SourceTree {
    containment: Containment,
    root_id: NodeId,
    source_dev: u64,
    mode: ShareMode,
    nodes: Arc<NodeTable>,
    files: Mutex<IdMap<u64, Arc<OwnedFd>>>,
    dirs: Mutex<IdMap<u64, Arc<DirStream>>>,
    next_handle: AtomicU64,
    /// Keeps the mount's kernel caches fresh; set once the mount exists.
    watch: OnceLock<MountWatch>,
    /// Held while a directory's watch is added or removed with its node's
    /// first reference or last forget, so that the two, on different threads,
    /// cannot leave a held directory unwatched.
    watching: Mutex<()>,
    /// The mount's kernel caches, to make it forget files when the daemon
    /// holds too many; set once the mount exists.
    kernel: OnceLock<CacheInvalidator>,
    /// Directories read ahead of a walker, in the reader's idle time.
    ahead: Mutex<WalkAhead>,
    locks: Arc<FileLocks>,
}

impl SourceTree {
    /// `root`: an `O_PATH` descriptor of the source directory.
    pub(super) fn new(root: OwnedFd, mode: ShareMode) -> io::Result<Self> {
        let st = stat(root.as_fd())?;
        if kind_of(st.st_mode) != FileKind::Directory {
            return Err(io::Error::from_raw_os_error(libc::ENOTDIR));
        }
        let source_dev = st.st_dev;
        let root_id = node_id(st.st_dev, st.st_ino, source_dev);
        let root_node = Node { fd: Arc::new(root.try_clone()?), kind: FileKind::Directory };
        Ok(SourceTree {
            containment: Containment::new(root)?,
            root_id,
            source_dev,
            mode,
            nodes: Arc::new(NodeTable::new(root_id, root_node)),
            files: Mutex::new(IdMap::default()),
            dirs: Mutex::new(IdMap::default()),
            next_handle: AtomicU64::new(1),
            watch: OnceLock::new(),
            watching: Mutex::new(()),
            kernel: OnceLock::new(),
            ahead: Mutex::default(),
            locks: Arc::default(),
        })
    }

    pub(super) fn mode(&self) -> ShareMode {
        self.mode
    }

    /// The mount exists: its caches are dropped when the source changes behind
    /// it, and trimmed when the daemon holds too many files.
    pub(super) fn attach(&self, invalidator: CacheInvalidator) {
        let _ = self.kernel.set(invalidator.clone());
        let Some(watch) = MountWatch::start(invalidator, self.source_dev, Arc::downgrade(&self.nodes)) else { return };
        let _ = self.watch.set(watch);
        let Some(watch) = self.watch.get() else { return };
        // The kernel asks from FUSE_INIT on, before this: the directories it
        // took meanwhile (and the root) are watched now, later ones by `adopt`.
        let _watching = self.watching.lock();
        let watched = self.nodes.held_directories().into_iter().fold(true, |all, (dir, fd)| watch.dir_referenced(dir, fd) && all);
        // Xattr names are kept only while the watcher sees every change.
        if watched {
            self.nodes.keep_xattr_names(true);
        }
    }

    pub(super) fn referenced_nodes(&self) -> usize {
        self.nodes.len()
    }

    fn writable(&self) -> FsResult<()> {
        match self.mode {
            ShareMode::ReadWrite => Ok(()),
            ShareMode::ReadOnly => Err(FsError::ReadOnly),
        }
    }

    fn attr(&self, st: &libc::stat64) -> Attr {
        Attr {
            node: node_id(st.st_dev, st.st_ino, self.source_dev),
            kind: kind_of(st.st_mode),
            perm: (st.st_mode & 0o7777) as u16,
            nlink: u32::try_from(st.st_nlink).unwrap_or(u32::MAX),
            uid: st.st_uid,
            gid: st.st_gid,
            size: st.st_size as u64,
            blocks: st.st_blocks as u64,
            rdev: fuse_rdev(st.st_rdev),
            atime: syscalls::system_time(st.st_atime, st.st_atime_nsec),
            mtime: syscalls::system_time(st.st_mtime, st.st_mtime_nsec),
            ctime: syscalls::system_time(st.st_ctime, st.st_ctime_nsec),
        }
    }

    fn stat_attr(&self, fd: BorrowedFd<'_>) -> FsResult<Attr> {
        Ok(self.attr(&stat(fd)?))
    }

    /// A node the kernel named, still beneath the source.
    fn node(&self, id: NodeId) -> FsResult<Node> {
        let node = self.nodes.get(id)?;
        self.containment.check(node.fd.as_fd())?;
        Ok(node)
    }

    fn dir(&self, id: NodeId) -> FsResult<Node> {
        let node = self.node(id)?;
        match node.kind {
            FileKind::Directory => Ok(node),
            _ => Err(FsError::NotDirectory),
        }
    }

    /// Takes a reference to the file behind the freshly opened `fd`.
    fn adopt(&self, fd: OwnedFd) -> FsResult<Attr> {
        self.adopt_keeping(fd).map(|(attr, _)| attr)
    }

    /// [`SourceTree::adopt`], handing back the descriptor the node keeps.
    fn adopt_keeping(&self, fd: OwnedFd) -> FsResult<(Attr, Arc<OwnedFd>)> {
        let attr = self.stat_attr(fd.as_fd())?;
        let fd = Arc::new(fd);
        let first = self.nodes.reference(attr.node, Node { fd: fd.clone(), kind: attr.kind });
        if let (true, FileKind::Directory, Some(watch)) = (first, attr.kind, self.watch.get()) {
            let _watching = self.watching.lock();
            if !watch.dir_referenced(attr.node, fd.clone()) {
                // A directory unwatched: changes in it would go unseen.
                self.nodes.keep_xattr_names(false);
            }
        }
        if first {
            self.trim_if_over_budget();
        }
        Ok((attr, fd))
    }

    /// Every file the kernel holds costs an open descriptor. Past the budget,
    /// this mount's kernel is asked to forget the files it got longest ago
    /// (those still in use are simply looked up again).
    fn trim_if_over_budget(&self) {
        let (held, budget) = (held_descriptors(), descriptor_budget());
        if held > budget {
            if let Some(kernel) = self.kernel.get() {
                kernel.shed((held - budget * 4 / 5).min(self.nodes.len()));
            }
        }
    }

    /// Opens `name` beneath `dir` as a node to hand to the kernel. Out of
    /// descriptors, it asks the kernel to forget some and fails at once: this
    /// runs on the mount's only reader thread, the one that would read the
    /// kernel's forgets, so waiting here could not help. The budget trimming
    /// of `adopt` keeps this from happening in the first place.
    fn open_node(&self, dir: BorrowedFd<'_>, name: &CString) -> FsResult<OwnedFd> {
        match open_beneath(dir, name, libc::O_PATH, 0) {
            Err(err) if err.raw_os_error() == Some(libc::EMFILE) => {
                if let Some(kernel) = self.kernel.get() {
                    kernel.shed(self.nodes.len() / 4);
                }
                Err(err.into())
            }
            other => Ok(other?),
        }
    }

    fn new_handle(&self) -> u64 {
        self.next_handle.fetch_add(1, Ordering::Relaxed)
    }

    fn insert_file(&self, fd: Arc<OwnedFd>) -> HandleId {
        let handle = self.new_handle();
        self.files.lock().insert(handle, fd);
        HandleId(handle)
    }

    fn file(&self, handle: HandleId) -> FsResult<Arc<OwnedFd>> {
        self.files.lock().get(&handle.0).cloned().ok_or(FsError::BadHandle)
    }

    fn dir_stream(&self, handle: HandleId) -> FsResult<Arc<DirStream>> {
        self.dirs.lock().get(&handle.0).cloned().ok_or(FsError::BadHandle)
    }

    /// Opens what this thread just made as `name` in `dir`, to give it to the
    /// caller. A process of the source may have put another file under the
    /// name meanwhile, which the chown and chmod that follow would hand to the
    /// caller: what the daemon made is of the kind asked and its own, and
    /// anything else is refused (`ESTALE`; the kernel tries once more and
    /// finds the name taken).
    fn open_made(dir: BorrowedFd<'_>, name: &CStr, kind: libc::mode_t) -> FsResult<OwnedFd> {
        let made = open_beneath(dir, name, libc::O_PATH, 0)?;
        let st = stat(made.as_fd())?;
        // SAFETY: geteuid has no arguments and cannot fail.
        let daemons = st.st_uid == unsafe { libc::geteuid() };
        if st.st_mode & libc::S_IFMT != kind || !daemons {
            tracing::debug!(name = ?name, "another file took the name of one just made");
            return Err(FsError::Stale);
        }
        Ok(made)
    }


    /// Makes a file created by the daemon the caller's, with the permissions
    /// decided (the daemon's umask must not apply). A setgid directory passes
    /// on its group, and its setgid bit to subdirectories, as the kernel would.
    fn give_to_caller(fd: BorrowedFd<'_>, caller: Caller, parent: &libc::stat64, permissions: Option<Permissions>, is_dir: bool) -> io::Result<()> {
        let inherit_group = parent.st_mode & libc::S_ISGID != 0;
        let gid = if inherit_group { parent.st_gid } else { caller.gid };
        // Owner first: chown clears setuid and setgid bits.
        syscalls::chown(fd, Some(caller.uid), Some(gid))?;
        let inherited_setgid = if is_dir && inherit_group { libc::S_ISGID } else { 0 };
        match permissions {
            None => {}
            Some(Permissions::Exact(mode)) => syscalls::chmod(fd, mode | inherited_setgid)?,
            // The ACL set the rest; a chmod of the same bits leaves it alone.
            Some(Permissions::FromDefaultAcl(mode)) if (mode & 0o7000) | inherited_setgid != 0 => {
                syscalls::chmod(fd, (stat(fd)?.st_mode & 0o777) | (mode & 0o7000) | inherited_setgid)?
            }
            Some(Permissions::FromDefaultAcl(_)) => {}
        }
        Ok(())
    }

    pub(super) fn root(&self) -> FsResult<Attr> {
        self.stat_attr(self.containment.root())
    }

    pub(super) fn lookup(&self, parent: NodeId, name: &OsStr) -> FsResult<Attr> {
        let dir = self.dir(parent)?;
        match component(name)? {
            Component::Dot => {
                let attr = self.stat_attr(dir.fd.as_fd())?;
                self.nodes.reference(attr.node, dir);
                Ok(attr)
            }
            Component::DotDot if parent == self.root_id => self.root(),
            Component::DotDot => {
                let up = syscalls::open_parent(dir.fd.as_fd())?;
                self.containment.check(up.as_fd())?;
                self.adopt(up)
            }
            Component::Name(name) => self.adopt(self.open_node(dir.fd.as_fd(), &name)?),
        }
    }

    /// Hands back the descriptor to close elsewhere when closing it may be slow.
    pub(super) fn forget(&self, node: NodeId, count: u64) -> Option<Node> {
        let dropped = self.nodes.forget(node, count)?;
        if let (FileKind::Directory, Some(watch)) = (dropped.kind, self.watch.get()) {
            let _watching = self.watching.lock();
            // Looked up again meanwhile (on another thread): that lookup found
            // the watch still there and kept it, so it stays.
            if self.nodes.get(node).is_err() {
                watch.dir_forgotten(node);
            }
        }
        slow_to_close(dropped.fd.as_fd()).then_some(dropped)
    }

    pub(super) fn getattr(&self, node: NodeId, handle: Option<HandleId>) -> FsResult<Attr> {
        match handle {
            Some(handle) => self.stat_attr(self.file(handle)?.as_fd()),
            None => match self.node(node) {
                Ok(node) => self.stat_attr(node.fd.as_fd()),
                Err(FsError::Stale) => self.stat_through_open_file(node),
                Err(e) => Err(e),
            },
        }
    }

    /// The attributes of a node that failed the containment check, read
    /// through a file the target opened on it while it was inside. `fstat`
    /// reaches the daemon without the handle; a descriptor whose reads and
    /// writes keep working when the name it was opened by is removed
    /// (docs/SEMANTICS.md) answers `fstat` too. Without an open file it stays
    /// `ESTALE`. Scans the open files: only ever on this rare path.
    fn stat_through_open_file(&self, node: NodeId) -> FsResult<Attr> {
        let held = self.nodes.get(node)?;
        let st = stat(held.fd.as_fd())?;
        let open = self.files.lock().values().find(|fd| stat(fd.as_fd()).is_ok_and(|o| o.st_dev == st.st_dev && o.st_ino == st.st_ino)).cloned();
        match open {
            Some(fd) => self.stat_attr(fd.as_fd()),
            None => Err(FsError::Stale),
        }
    }

    pub(super) fn setattr(&self, node: NodeId, handle: Option<HandleId>, changes: SetAttr) -> FsResult<Attr> {
        self.writable()?;
        // A mode change rewrites an access ACL; an owner change or a dropping
        // of privileges removes file capabilities.
        self.nodes.forget_xattr_names(node);
        let target = self.node(node)?;
        let fd = target.fd.as_fd();
        if changes.uid.is_some() || changes.gid.is_some() {
            syscalls::chown(fd, changes.uid, changes.gid)?;
        }
        if let Some(mode) = changes.mode {
            syscalls::chmod(fd, mode & 0o7777)?;
        }
        if let Some(size) = changes.size {
            match target.kind {
                FileKind::File => self.truncate(&target, handle, size)?,
                FileKind::Directory => return Err(FsError::IsDirectory),
                _ => return Err(FsError::InvalidArgument),
            }
        }
        if changes.atime.is_some() || changes.mtime.is_some() {
            syscalls::set_times(fd, changes.atime, changes.mtime)?;
        }
        // An explicit mode is the caller's word on the bits.
        if let (Some(caller), None) = (changes.drop_privileges, changes.mode) {
            privileges::drop_for(fd, caller)?;
        }
        self.stat_attr(fd)
    }

    /// Through the caller's open file when it is writable, else a fresh open.
    fn truncate(&self, target: &Node, handle: Option<HandleId>, size: u64) -> FsResult<()> {
        if let Some(handle) = handle {
            match syscalls::truncate(self.file(handle)?.as_fd(), size) {
                Err(err) if matches!(err.raw_os_error(), Some(libc::EBADF) | Some(libc::EINVAL)) => {}
                other => return Ok(other?),
            }
        }
        let writable = syscalls::reopen(target.fd.as_fd(), libc::O_WRONLY)?;
        Ok(syscalls::truncate(writable.as_fd(), size)?)
    }

    pub(super) fn opendir(&self, dir: NodeId) -> FsResult<HandleId> {
        let node = self.dir(dir)?;
        let mut closed = Vec::new();
        let ahead = self.ahead.lock().take(dir, &node.fd, &mut closed);
        close_opened_ahead(closed);
        let stream = match ahead {
            Some(stream) => stream,
            None => DirStream::open(node.fd.as_fd())?,
        };
        let handle = self.new_handle();
        self.dirs.lock().insert(handle, Arc::new(stream));
        Ok(HandleId(handle))
    }

    pub(super) fn readdirplus(&self, handle: HandleId, offset: u64, max_entries: usize) -> FsResult<Vec<DirEntry>> {
        let stream = self.dir_stream(handle)?;
        self.containment.check(stream.fd())?;
        let dir_st = stat(stream.fd())?;
        // Entries opened ahead name what their names named while the
        // directory's times stay as they were then.
        close_opened_ahead(stream.opened_unless_unchanged(dir_times(&dir_st)));
        let dir_attr = self.attr(&dir_st);
        let mut entries = Vec::new();
        // The subdirectories listed, for reading ahead of a walker.
        let mut dirs = Vec::new();
        let mut offset = offset;
        // Entries that vanish between reading and opening are skipped; an empty
        // answer would end the listing, so read on until something is left.
        while entries.is_empty() {
            let raw = stream.read_from(offset, max_entries.max(1))?;
            let Some(last) = raw.last() else { break };
            offset = last.offset;
            for entry in raw {
                let attr = match entry.name.as_bytes() {
                    b"." | b".." => dir_attr.clone(),
                    _ => match entry.opened.map_or_else(|| self.open_node(stream.fd(), &entry.name), Ok).and_then(|fd| self.adopt_keeping(fd)) {
                        Ok((attr, fd)) => {
                            if attr.kind == FileKind::Directory {
                                dirs.push((attr.node, fd));
                            }
                            attr
                        }
                        // Out of descriptors: what is listed so far goes back, and
                        // the kernel asks again from there; never a silent gap.
                        Err(FsError::Os(libc::EMFILE | libc::ENFILE)) if !entries.is_empty() => return Ok(entries),
                        Err(err @ FsError::Os(libc::EMFILE | libc::ENFILE)) => return Err(err),
                        Err(err) => {
                            tracing::debug!(name = ?entry.name, error = %err, "directory entry skipped");
                            continue;
                        }
                    },
                };
                entries.push(DirEntry { name: OsString::from_vec(entry.name.into_bytes()), offset: entry.offset, attr });
            }
        }
        self.walker_listed(dirs);
        Ok(entries)
    }

    /// A walker will likely open the subdirectories it was just given.
    fn walker_listed(&self, dirs: Vec<(NodeId, Arc<OwnedFd>)>) {
        if !dirs.is_empty() {
            self.ahead.lock().listed(dirs.into_iter());
        }
    }

    /// One short step of reading ahead of a walker; false when there is nothing to do.
    pub(super) fn read_ahead_step(&self) -> bool {
        let mut closed = Vec::new();
        let stepped = self.ahead.lock().step(&mut closed);
        close_opened_ahead(closed);
        stepped
    }

    /// The mount went idle: what was read ahead is dropped.
    pub(super) fn read_ahead_pause(&self) {
        let closed = self.ahead.lock().clear();
        close_opened_ahead(closed);
    }

    /// Directories whose listing was served from what was read ahead.
    pub(super) fn directories_read_ahead(&self) -> u64 {
        self.ahead.lock().served()
    }

    pub(super) fn releasedir(&self, handle: HandleId) -> FsResult<()> {
        let stream = self.dirs.lock().remove(&handle.0).ok_or(FsError::BadHandle)?;
        close_opened_ahead(stream.take_opened());
        Ok(())
    }

    pub(super) fn fsyncdir(&self, handle: HandleId, datasync: bool) -> FsResult<()> {
        Ok(syscalls::fsync(self.dir_stream(handle)?.fd(), datasync)?)
    }

    pub(super) fn open(&self, node: NodeId, flags: i32, caller: Caller) -> FsResult<Opened> {
        let target = self.node(node)?;
        let write = wants_write(flags);
        if write {
            self.writable()?;
        }
        let fd = match target.kind {
            FileKind::File => syscalls::reopen(target.fd.as_fd(), flags & PASSED_OPEN_FLAGS)?,
            FileKind::Directory if !write => syscalls::reopen(target.fd.as_fd(), libc::O_RDONLY | libc::O_DIRECTORY)?,
            FileKind::Directory => return Err(FsError::IsDirectory),
            FileKind::Symlink => return Err(FsError::Os(libc::ELOOP)),
            // The kernel serves special files itself; opening a FIFO here would block.
            _ => return Err(FsError::Unsupported),
        };
        self.drop_privileges_on_truncate(&fd, flags, caller)?;
        let fd = Arc::new(fd);
        let handle = self.insert_file(fd.clone());
        Ok(Opened { handle, passthrough: (target.kind == FileKind::File).then_some(fd) })
    }

    /// An `O_TRUNC` open by someone who may not keep the file's privileges
    /// drops them, as a truncate does. (Their writes, passed through or not,
    /// come with the kernel's request to drop them: see `write` and `setattr`.)
    fn drop_privileges_on_truncate(&self, file: &OwnedFd, flags: i32, caller: Caller) -> FsResult<()> {
        if flags & libc::O_TRUNC != 0 && !caller.may_keep_privileges() {
            self.drop_privileges(file.as_fd(), caller)?;
        }
        Ok(())
    }

    /// Drops what a write by `writer` drops, and the kernel's copy of the
    /// file's mode with it: the reply to the write carries no attributes.
    fn drop_privileges(&self, fd: BorrowedFd<'_>, writer: Caller) -> FsResult<()> {
        if let Some(st) = privileges::drop_for(fd, writer)? {
            // Attributes only: no page lock is taken, so this is safe while the
            // kernel waits for our answer to a request on the same file.
            if let Some(kernel) = self.kernel.get() {
                let _ = kernel.invalidate_attrs(node_id(st.st_dev, st.st_ino, self.source_dev));
            }
        }
        Ok(())
    }

    pub(super) fn create(&self, parent: NodeId, name: &OsStr, mode: NewMode, flags: i32, caller: Caller) -> FsResult<(Attr, Opened)> {
        self.writable()?;
        let dir = self.dir(parent)?;
        let name = entry_name(name)?;
        let open_flags = flags & PASSED_OPEN_FLAGS;
        let permissions = Permissions::of(dir.fd.as_fd(), mode);
        let create_with = permissions.to_create_with(0o600);
        let file = match open_beneath(dir.fd.as_fd(), &name, open_flags | libc::O_CREAT | libc::O_EXCL, create_with) {
            Ok(file) => {
                Self::give_to_caller(file.as_fd(), caller, &stat(dir.fd.as_fd())?, Some(permissions), false)?;
                file
            }
            // It appeared meanwhile and the caller did not ask for O_EXCL: open it,
            // a regular file only (opening a FIFO would block).
            Err(err) if err.raw_os_error() == Some(libc::EEXIST) && flags & libc::O_EXCL == 0 => {
                let existing = open_beneath(dir.fd.as_fd(), &name, libc::O_PATH, 0)?;
                match kind_of(stat(existing.as_fd())?.st_mode) {
                    FileKind::File => syscalls::reopen(existing.as_fd(), open_flags)?,
                    FileKind::Directory => return Err(FsError::IsDirectory),
                    _ => return Err(FsError::Exists),
                }
            }
            Err(err) => return Err(err.into()),
        };
        self.drop_privileges_on_truncate(&file, open_flags, caller)?;
        let attr = self.adopt(syscalls::reopen(file.as_fd(), libc::O_PATH)?)?;
        let file = Arc::new(file);
        let handle = self.insert_file(file.clone());
        Ok((attr, Opened { handle, passthrough: Some(file) }))
    }

    pub(super) fn read(&self, handle: HandleId, offset: u64, size: u32) -> FsResult<Vec<u8>> {
        Ok(syscalls::read_at(self.file(handle)?.as_fd(), offset, size as usize)?)
    }

    pub(super) fn write(&self, handle: HandleId, offset: u64, data: &[u8], drop_privileges: Option<Caller>) -> FsResult<u32> {
        self.writable()?;
        let file = self.file(handle)?;
        if let Some(writer) = drop_privileges {
            self.drop_privileges(file.as_fd(), writer)?;
        }
        let written = syscalls::write_at(file.as_fd(), offset, data)?;
        u32::try_from(written).map_err(|_| FsError::InvalidArgument)
    }

    /// Hands back the descriptor to close elsewhere when closing it may be slow.
    pub(super) fn release(&self, handle: HandleId) -> FsResult<Option<Arc<OwnedFd>>> {
        let file = self.files.lock().remove(&handle.0).ok_or(FsError::BadHandle)?;
        self.locks.released(handle, file.as_fd());
        Ok(slow_to_close(file.as_fd()).then_some(file))
    }

    pub(super) fn getlk(&self, handle: HandleId, owner: u64, lock: FileLock) -> FsResult<Option<FileLock>> {
        self.locks.getlk(self.file(handle)?.as_fd(), owner, &lock)
    }

    /// Never waits: a lock held by another is [`FsError::WouldBlock`].
    pub(super) fn setlk(&self, handle: HandleId, owner: LockOwner, lock: FileLock) -> FsResult<()> {
        let file = self.file(handle)?;
        match owner {
            LockOwner::Process(owner) => self.locks.set_record(handle, file.as_fd(), owner, &lock, self.writable().is_ok()),
            LockOwner::OpenFile => self.locks.set_flock(handle, file.as_fd(), lock.kind),
        }
    }

    pub(super) fn fsync(&self, handle: HandleId, datasync: bool) -> FsResult<()> {
        Ok(syscalls::fsync(self.file(handle)?.as_fd(), datasync)?)
    }

    pub(super) fn fallocate(&self, handle: HandleId, offset: u64, length: u64, mode: i32) -> FsResult<()> {
        self.writable()?;
        Ok(syscalls::fallocate(self.file(handle)?.as_fd(), mode, offset, length)?)
    }

    pub(super) fn lseek(&self, handle: HandleId, offset: u64, whence: i32) -> FsResult<u64> {
        Ok(syscalls::seek(self.file(handle)?.as_fd(), offset, whence)?)
    }

    pub(super) fn copy_file_range(&self, from: HandleId, from_offset: u64, to: HandleId, to_offset: u64, length: u64) -> FsResult<u64> {
        self.writable()?;
        Ok(syscalls::copy_range(self.file(from)?.as_fd(), from_offset, self.file(to)?.as_fd(), to_offset, length)?)
    }

    pub(super) fn mkdir(&self, parent: NodeId, name: &OsStr, mode: NewMode, caller: Caller) -> FsResult<Attr> {
        self.writable()?;
        let dir = self.dir(parent)?;
        let name = entry_name(name)?;
        let permissions = Permissions::of(dir.fd.as_fd(), mode);
        syscalls::mkdir(dir.fd.as_fd(), &name, permissions.to_create_with(0o700))?;
        let created = Self::open_made(dir.fd.as_fd(), &name, libc::S_IFDIR)?;
        Self::give_to_caller(created.as_fd(), caller, &stat(dir.fd.as_fd())?, Some(permissions), true)?;
        self.adopt(created)
    }

    pub(super) fn mknod(&self, parent: NodeId, name: &OsStr, mode: NewMode, caller: Caller) -> FsResult<Attr> {
        self.writable()?;
        let file_type = match mode.file_type {
            0 | libc::S_IFREG => libc::S_IFREG,
            kind @ (libc::S_IFIFO | libc::S_IFSOCK) => kind,
            // A device node in a share would hand the caller a device of this node.
            libc::S_IFCHR | libc::S_IFBLK => return Err(FsError::NotPermitted),
            _ => return Err(FsError::InvalidArgument),
        };
        let dir = self.dir(parent)?;
        let name = entry_name(name)?;
        let permissions = Permissions::of(dir.fd.as_fd(), mode);
        syscalls::mknod(dir.fd.as_fd(), &name, file_type | permissions.to_create_with(0o600), 0)?;
        let created = Self::open_made(dir.fd.as_fd(), &name, file_type)?;
        Self::give_to_caller(created.as_fd(), caller, &stat(dir.fd.as_fd())?, Some(permissions), false)?;
        self.adopt(created)
    }

    pub(super) fn symlink(&self, parent: NodeId, name: &OsStr, target: &Path, caller: Caller) -> FsResult<Attr> {
        self.writable()?;
        let dir = self.dir(parent)?;
        let name = entry_name(name)?;
        let target = syscalls::cstring(target.as_os_str())?;
        syscalls::symlink(&target, dir.fd.as_fd(), &name)?;
        let created = Self::open_made(dir.fd.as_fd(), &name, libc::S_IFLNK)?;
        Self::give_to_caller(created.as_fd(), caller, &stat(dir.fd.as_fd())?, None, false)?;
        self.adopt(created)
    }

    /// Both ends are nodes of this share, so no link can reach a file outside it.
    pub(super) fn link(&self, node: NodeId, new_parent: NodeId, new_name: &OsStr) -> FsResult<Attr> {
        self.writable()?;
        let target = self.node(node)?;
        if target.kind == FileKind::Directory {
            return Err(FsError::NotPermitted);
        }
        let dir = self.dir(new_parent)?;
        let name = entry_name(new_name)?;
        syscalls::link(target.fd.as_fd(), dir.fd.as_fd(), &name)?;
        self.adopt(open_beneath(dir.fd.as_fd(), &name, libc::O_PATH, 0)?)
    }

    pub(super) fn unlink(&self, parent: NodeId, name: &OsStr) -> FsResult<()> {
        self.writable()?;
        Ok(syscalls::unlink(self.dir(parent)?.fd.as_fd(), &entry_name(name)?, 0)?)
    }

    pub(super) fn rmdir(&self, parent: NodeId, name: &OsStr) -> FsResult<()> {
        self.writable()?;
        Ok(syscalls::unlink(self.dir(parent)?.fd.as_fd(), &entry_name(name)?, libc::AT_REMOVEDIR)?)
    }

    pub(super) fn rename(&self, parent: NodeId, name: &OsStr, new_parent: NodeId, new_name: &OsStr, flags: u32) -> FsResult<()> {
        self.writable()?;
        if flags & !RENAME_FLAGS != 0 {
            return Err(FsError::InvalidArgument);
        }
        let (from, to) = (self.dir(parent)?, self.dir(new_parent)?);
        Ok(syscalls::rename(from.fd.as_fd(), &entry_name(name)?, to.fd.as_fd(), &entry_name(new_name)?, flags)?)
    }

    pub(super) fn readlink(&self, node: NodeId) -> FsResult<PathBuf> {
        let target = self.node(node)?;
        if target.kind != FileKind::Symlink {
            return Err(FsError::InvalidArgument);
        }
        Ok(PathBuf::from(OsString::from_vec(syscalls::readlink(target.fd.as_fd())?)))
    }

    pub(super) fn statfs(&self) -> FsResult<StatFs> {
        let st = syscalls::statfs(self.containment.root())?;
        Ok(StatFs {
            blocks: st.f_blocks,
            bfree: st.f_bfree,
            bavail: st.f_bavail,
            files: st.f_files,
            ffree: st.f_ffree,
            bsize: st.f_bsize as u32,
            frsize: st.f_frsize as u32,
            namelen: st.f_namelen as u32,
        })
    }

    /// A name the file has not is answered from its kept names, without a
    /// system call (nor the containment check); the first ask lists and keeps
    /// them (see `NodeTable`).
    pub(super) fn getxattr(&self, node: NodeId, name: &OsStr) -> FsResult<Vec<u8>> {
        carried(name)?;
        let name = syscalls::cstring(name)?;
        let kept = self.nodes.xattr_names(node);
        let lacks = |names: &[u8]| !names_hold(names, name.as_bytes());
        if kept.as_deref().is_some_and(|names| lacks(names)) {
            return Err(FsError::NoAttribute);
        }
        let target = self.node(node)?;
        if kept.is_none() && self.list_and_keep_xattr_names(node, &target)?.is_some_and(|names| lacks(&names)) {
            return Err(FsError::NoAttribute);
        }
        Ok(xattrs::get(target.fd.as_fd(), &name)?)
    }

    /// Lists `target`'s xattr names and keeps them, where they may be kept.
    fn list_and_keep_xattr_names(&self, node: NodeId, target: &Node) -> FsResult<Option<Arc<Vec<u8>>>> {
        let Some(generation) = self.nodes.xattr_generation(node) else { return Ok(None) };
        let names = Arc::new(xattrs::list(target.fd.as_fd())?);
        self.nodes.keep_xattr_names_of(node, generation, names.clone());
        Ok(Some(names))
    }

    pub(super) fn setxattr(&self, node: NodeId, name: &OsStr, value: &[u8], flags: i32) -> FsResult<()> {
        self.writable()?;
        carried(name)?;
        let set = xattrs::set(self.node(node)?.fd.as_fd(), &syscalls::cstring(name)?, value, flags);
        self.nodes.forget_xattr_names(node);
        Ok(set?)
    }

    pub(super) fn listxattr(&self, node: NodeId) -> FsResult<Vec<OsString>> {
        let list = match self.nodes.xattr_names(node) {
            Some(names) => names,
            None => {
                let target = self.node(node)?;
                match self.list_and_keep_xattr_names(node, &target)? {
                    Some(names) => names,
                    None => Arc::new(xattrs::list(target.fd.as_fd())?),
                }
            }
        };
        Ok(list.split(|&byte| byte == 0).filter(|name| !name.is_empty() && xattrs::carried(name)).map(|name| OsString::from_vec(name.to_vec())).collect())
    }

    pub(super) fn removexattr(&self, node: NodeId, name: &OsStr) -> FsResult<()> {
        self.writable()?;
        carried(name)?;
        let removed = xattrs::remove(self.node(node)?.fd.as_fd(), &syscalls::cstring(name)?);
        self.nodes.forget_xattr_names(node);
        Ok(removed?)
    }
}
