//! The kernel side of a share mount: each FUSE request becomes one backend call,
//! run as a task on the tokio runtime, and one reply sent from that task, so
//! many requests are in flight while a single thread reads them from the kernel.
//!
//! This module holds no filesystem logic. It translates numbers (inode numbers
//! ↔ nodes, `fh` ↔ backend handles), attributes and errors, and it must never
//! block the thread that reads requests.

use std::ffi::{OsStr, OsString};
use std::future::Future;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::mount_state::{file_mode, Shared, GENERATION};
use crate::open_handles::OpenDir;
use crate::reply::{
    FileHandle, INodeNo, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyError, ReplyLock,
    ReplyLseek, ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr,
};
use crate::request::{Handler, InitConfig, Replier};
use crate::wire::{init, FileLockIn, Header, Op, SetAttrIn, TimeOrNow};
use crate::{Attr, Caller, DirEntry, FileLock, FsError, FsResult, LockKind, LockOwner, SetAttr, SetTime};

fn set_time(time: Option<TimeOrNow>) -> Option<SetTime> {
    time.map(|time| match time {
        TimeOrNow::Now => SetTime::Now,
        TimeOrNow::At(at) => SetTime::At(at),
    })
}

fn caller(req: &Header) -> Caller {
    Caller { uid: req.uid, gid: req.gid }
}

fn file_lock(lock: FileLockIn) -> FsResult<FileLock> {
    let kind = LockKind::from_fcntl(lock.typ as i32).ok_or(FsError::InvalidArgument)?;
    Ok(FileLock { kind, start: lock.start, end: lock.end, pid: lock.pid })
}

fn lock_in(lock: &FileLock) -> FileLockIn {
    FileLockIn { start: lock.start, end: lock.end, typ: lock.kind.to_fcntl() as u32, pid: lock.pid }
}

fn is_dot_or_dotdot(name: &OsStr) -> bool {
    name == "." || name == ".."
}

/// The size of an xattr value or name list, or the bytes themselves when they fit.
fn reply_xattr(shared: &Shared, op: &'static str, reply: ReplyXattr, size: u32, bytes: &[u8]) {
    if size == 0 {
        match u32::try_from(bytes.len()) {
            Ok(len) => reply.size(len),
            Err(_) => shared.fail(op, reply, FsError::Range),
        }
    } else if bytes.len() > size as usize {
        shared.fail(op, reply, FsError::Range);
    } else {
        reply.data(bytes);
    }
}

/// The request handler of one mount.
pub(crate) struct ShareFs {
    shared: Arc<Shared>,
}

/// The next entries of an open directory, as many as its hint and the kernel's
/// buffer allow, with that number (for `OpenDir::learn`).
async fn listing(s: Arc<Shared>, ino: INodeNo, fh: FileHandle, offset: u64, room: usize) -> FsResult<(Arc<OpenDir>, Vec<DirEntry>, usize)> {
    let dir = s.handles.dir(fh.0)?;
    let asked = dir.entries_hint().min(room);
    let entries = s.backend.readdirplus(s.node(ino)?, dir.handle, offset, asked).await?;
    Ok((dir, entries, asked))
}

impl ShareFs {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        ShareFs { shared }
    }

    /// Runs `call` as a task and answers with `answer` or, on failure, an errno.
    fn dispatch<R, T, F>(
        &self,
        op: &'static str,
        reply: R,
        call: impl FnOnce(Arc<Shared>) -> F,
        answer: impl FnOnce(&Arc<Shared>, R, T) + Send + 'static,
    ) where
        R: ReplyError + Send + 'static,
        T: Send + 'static,
        F: Future<Output = FsResult<T>> + Send + 'static,
    {
        let shared = self.shared.clone();
        tracing::trace!(op, "share request");
        shared.counters.requests.fetch_add(1, Ordering::Relaxed);
        shared.counters.in_flight.fetch_add(1, Ordering::Relaxed);
        let call = call(shared.clone());
        // A backend that answers without waiting (the metadata of a local file)
        // is answered here, on the thread that read the request.
        self.shared.run_here_or_spawn(async move {
            match call.await {
                Ok(value) => answer(&shared, reply, value),
                Err(err) => shared.fail(op, reply, err),
            }
            shared.counters.in_flight.fetch_sub(1, Ordering::Relaxed);
        });
    }

    fn ok_empty(_: &Arc<Shared>, reply: ReplyEmpty, _: ()) {
        reply.ok();
    }

    /// The answer of requests that hand the kernel a node as `name` in `parent`.
    fn entry(parent: INodeNo, name: &OsStr) -> impl FnOnce(&Arc<Shared>, ReplyEntry, Attr) + Send + 'static {
        let name = name.to_owned();
        move |shared, reply, attr| shared.reply_entry(reply, &attr, parent.0, &name)
    }
}

impl ShareFs {
    fn lookup(&self, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let answer = Self::entry(parent, name);
        let name = name.to_owned();
        self.dispatch("lookup", reply, move |s| async move { s.backend.lookup(s.node(parent)?, &name).await }, answer);
    }

    fn forget(&self, ino: INodeNo, nlookup: u64) {
        self.shared.forget(ino.0, nlookup);
    }

    fn getattr(&self, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        self.dispatch(
            "getattr",
            reply,
            move |s| async move { s.backend.getattr(s.node(ino)?, s.optional_file_handle(fh)).await },
            move |s, reply, attr| reply.attr(&s.tuning.attr_ttl, &s.file_attr(ino.0, &attr)),
        );
    }

    fn setattr(&self, req: &Header, ino: INodeNo, set: SetAttrIn, reply: ReplyAttr) {
        let SetAttrIn { mode, uid, gid, size, atime, mtime, fh, .. } = set;
        let fh = fh.map(FileHandle);
        let (atime, mtime) = (set_time(atime), set_time(mtime));
        // With FUSE_HANDLE_KILLPRIV_V2 the kernel leaves dropping privileges to
        // the filesystem: on truncate by a caller without CAP_FSETID (the flag
        // saying so does not reach us; the caller's uid stands in), and on a
        // write's `file_remove_privs`, which arrives as a setattr changing nothing.
        let changes_nothing = mode.is_none() && uid.is_none() && gid.is_none() && size.is_none() && atime.is_none() && mtime.is_none();
        let caller = caller(req);
        let drop_privileges = (!caller.may_keep_privileges() && (size.is_some() || changes_nothing)).then_some(caller);
        let changes = SetAttr { mode, uid, gid, size, atime, mtime, drop_privileges };
        self.dispatch(
            "setattr",
            reply,
            move |s| async move { s.backend.setattr(s.node(ino)?, s.optional_file_handle(fh), changes).await },
            move |s, reply, attr| reply.attr(&s.tuning.attr_ttl, &s.file_attr(ino.0, &attr)),
        );
    }

    fn readlink(&self, ino: INodeNo, reply: ReplyData) {
        self.dispatch(
            "readlink",
            reply,
            move |s| async move { s.backend.readlink(s.node(ino)?).await },
            |_, reply, target| reply.data(target.as_os_str().as_bytes()),
        );
    }

    #[allow(clippy::too_many_arguments)] // the fields of the kernel's request
    fn mknod(&self, req: &Header, parent: INodeNo, name: &OsStr, mode: u32, umask: u32, rdev: u32, reply: ReplyEntry) {
        let answer = Self::entry(parent, name);
        let (name, caller) = (name.to_owned(), caller(req));
        self.dispatch("mknod", reply, move |s| async move { s.backend.mknod(s.node(parent)?, &name, mode, umask, rdev, caller).await }, answer);
    }

    fn mkdir(&self, req: &Header, parent: INodeNo, name: &OsStr, mode: u32, umask: u32, reply: ReplyEntry) {
        let answer = Self::entry(parent, name);
        let (name, caller) = (name.to_owned(), caller(req));
        self.dispatch("mkdir", reply, move |s| async move { s.backend.mkdir(s.node(parent)?, &name, mode, umask, caller).await }, answer);
    }

    fn unlink(&self, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let name = name.to_owned();
        self.dispatch("unlink", reply, move |s| async move { s.backend.unlink(s.node(parent)?, &name).await }, Self::ok_empty);
    }

    fn rmdir(&self, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let name = name.to_owned();
        self.dispatch("rmdir", reply, move |s| async move { s.backend.rmdir(s.node(parent)?, &name).await }, Self::ok_empty);
    }

    fn symlink(&self, req: &Header, parent: INodeNo, link_name: &OsStr, target: &Path, reply: ReplyEntry) {
        let answer = Self::entry(parent, link_name);
        let (name, target, caller) = (link_name.to_owned(), target.to_owned(), caller(req));
        self.dispatch("symlink", reply, move |s| async move { s.backend.symlink(s.node(parent)?, &name, &target, caller).await }, answer);
    }

    fn rename(&self, parent: INodeNo, name: &OsStr, newparent: INodeNo, newname: &OsStr, flags: u32, reply: ReplyEmpty) {
        let (name, newname) = (name.to_owned(), newname.to_owned());
        self.dispatch(
            "rename",
            reply,
            move |s| async move { s.backend.rename(s.node(parent)?, &name, s.node(newparent)?, &newname, flags).await },
            Self::ok_empty,
        );
    }

    fn link(&self, ino: INodeNo, newparent: INodeNo, newname: &OsStr, reply: ReplyEntry) {
        let answer = Self::entry(newparent, newname);
        let newname = newname.to_owned();
        self.dispatch("link", reply, move |s| async move { s.backend.link(s.node(ino)?, s.node(newparent)?, &newname).await }, answer);
    }

    fn open(&self, req: &Header, ino: INodeNo, flags: i32, reply: ReplyOpen) {
        let caller = caller(req);
        self.dispatch(
            "open",
            reply,
            move |s| async move { s.backend.open(s.node(ino)?, flags, caller).await },
            move |s, reply, opened| {
                let (fh, backing) = s.open_file(ino.0, &opened, |fd| reply.open_backing(fd));
                reply.opened(fh, s.file_open_flags(), backing.as_deref())
            },
        );
    }

    fn read(&self, fh: FileHandle, offset: u64, size: u32, reply: ReplyData) {
        self.dispatch(
            "read",
            reply,
            move |s| async move { s.backend.read(s.file_handle(fh)?, offset, size).await },
            |_, reply, data| reply.data(&data),
        );
    }

    fn write(&self, req: &Header, fh: FileHandle, offset: u64, data: &[u8], kill_suidgid: bool, reply: ReplyWrite) {
        let data = data.to_vec();
        // The kernel says whether the writer lacks CAP_FSETID (FUSE_HANDLE_KILLPRIV_V2).
        let drop_privileges = kill_suidgid.then(|| caller(req));
        self.dispatch(
            "write",
            reply,
            move |s| async move { s.backend.write(s.file_handle(fh)?, offset, data, drop_privileges).await },
            |_, reply, written| reply.written(written),
        );
    }

    fn flush(&self, fh: FileHandle, reply: ReplyEmpty) {
        self.dispatch("flush", reply, move |s| async move { s.backend.flush(s.file_handle(fh)?).await }, Self::ok_empty);
    }

    fn release(&self, fh: FileHandle, reply: ReplyEmpty) {
        self.dispatch("release", reply, move |s| async move { s.backend.release(s.handles.remove_file(fh.0)?).await }, Self::ok_empty);
    }

    fn fsync(&self, fh: FileHandle, datasync: bool, reply: ReplyEmpty) {
        self.dispatch("fsync", reply, move |s| async move { s.backend.fsync(s.file_handle(fh)?, datasync).await }, Self::ok_empty);
    }

    fn opendir(&self, ino: INodeNo, reply: ReplyOpen) {
        self.dispatch(
            "opendir",
            reply,
            move |s| async move { s.backend.opendir(s.node(ino)?).await },
            |s, reply, handle| reply.opened(FileHandle(s.handles.insert_dir(handle)), s.dir_open_flags(), None),
        );
    }

    fn readdir(&self, ino: INodeNo, fh: FileHandle, offset: u64, reply: ReplyDirectory) {
        let room = reply.room_for_typical_names();
        // Only used when the kernel lacks readdirplus: plain entries carry no
        // reference, so each one the backend counted is handed back at once.
        self.dispatch(
            "readdir",
            reply,
            move |s| listing(s, ino, fh, offset, room),
            move |s, mut reply, (dir, entries, asked)| {
                let (mut taken, mut full) = (0, false);
                for entry in entries {
                    let dot = is_dot_or_dotdot(&entry.name);
                    let entry_ino = if dot { ino.0 } else { s.inodes.ino(entry.attr.node).unwrap_or(entry.attr.node.0) };
                    if !full {
                        full = reply.add(entry_ino, entry.offset, file_mode(entry.attr.kind), &entry.name);
                        taken += usize::from(!full);
                    }
                    if !dot {
                        s.forget_node(entry.attr.node, 1);
                    }
                }
                dir.learn(asked, taken, full);
                reply.ok();
            },
        );
    }

    fn readdirplus(&self, ino: INodeNo, fh: FileHandle, offset: u64, reply: ReplyDirectory) {
        let room = reply.room_for_typical_names();
        self.dispatch(
            "readdirplus",
            reply,
            move |s| listing(s, ino, fh, offset, room),
            move |s, mut reply, (dir, entries, asked)| {
                let (mut taken, mut full) = (0, false);
                for entry in entries {
                    let dot = is_dot_or_dotdot(&entry.name);
                    if full || !reply.fits(&entry.name) {
                        full = true;
                        // The backend counted a reference the kernel never got.
                        if !dot {
                            s.forget_node(entry.attr.node, 1);
                        }
                        continue;
                    }
                    // The kernel takes no reference on `.` and `..`.
                    let entry_ino = if dot { ino.0 } else { s.inodes.remember_named(entry.attr.node, ino.0, &entry.name) };
                    let attr = s.file_attr(entry_ino, &entry.attr);
                    reply.add_plus(entry.offset, &entry.name, &s.tuning.entry_ttl, &attr, GENERATION);
                    taken += 1;
                }
                dir.learn(asked, taken, full);
                reply.ok();
            },
        );
    }

    fn releasedir(&self, fh: FileHandle, reply: ReplyEmpty) {
        self.dispatch(
            "releasedir",
            reply,
            move |s| async move { s.backend.releasedir(s.handles.remove_dir(fh.0)?.handle).await },
            Self::ok_empty,
        );
    }

    fn fsyncdir(&self, fh: FileHandle, datasync: bool, reply: ReplyEmpty) {
        self.dispatch(
            "fsyncdir",
            reply,
            move |s| async move { s.backend.fsyncdir(s.handles.dir(fh.0)?.handle, datasync).await },
            Self::ok_empty,
        );
    }

    fn statfs(&self, reply: ReplyStatfs) {
        self.dispatch(
            "statfs",
            reply,
            |s| async move { s.backend.statfs().await },
            |_, reply, st| reply.statfs(st.blocks, st.bfree, st.bavail, st.files, st.ffree, st.bsize, st.namelen, st.frsize),
        );
    }

    fn setxattr(&self, ino: INodeNo, name: &OsStr, value: &[u8], flags: i32, reply: ReplyEmpty) {
        let (name, value) = (name.to_owned(), value.to_vec());
        self.dispatch(
            "setxattr",
            reply,
            move |s| async move { s.backend.setxattr(s.node(ino)?, &name, &value, flags).await },
            Self::ok_empty,
        );
    }

    fn getxattr(&self, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let name = name.to_owned();
        self.dispatch(
            "getxattr",
            reply,
            move |s| async move { s.backend.getxattr(s.node(ino)?, &name).await },
            move |s, reply, value| reply_xattr(s, "getxattr", reply, size, &value),
        );
    }

    fn listxattr(&self, ino: INodeNo, size: u32, reply: ReplyXattr) {
        self.dispatch(
            "listxattr",
            reply,
            move |s| async move { s.backend.listxattr(s.node(ino)?).await },
            move |s, reply, names: Vec<OsString>| {
                let mut list = Vec::new();
                for name in &names {
                    list.extend_from_slice(name.as_bytes());
                    list.push(0);
                }
                reply_xattr(s, "listxattr", reply, size, &list);
            },
        );
    }

    fn removexattr(&self, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let name = name.to_owned();
        self.dispatch("removexattr", reply, move |s| async move { s.backend.removexattr(s.node(ino)?, &name).await }, Self::ok_empty);
    }

    #[allow(clippy::too_many_arguments)] // the fields of the kernel's request
    fn create(&self, req: &Header, parent: INodeNo, name: &OsStr, mode: u32, umask: u32, flags: i32, reply: ReplyCreate) {
        let (name, caller) = (name.to_owned(), caller(req));
        let created_name = name.clone();
        self.dispatch(
            "create",
            reply,
            move |s| async move { s.backend.create(s.node(parent)?, &name, mode, umask, flags, caller).await },
            move |s, reply, (attr, opened)| {
                let ino = s.inodes.remember_named(attr.node, parent.0, &created_name);
                let file_attr = s.file_attr(ino, &attr);
                let ttl = s.tuning.entry_ttl;
                let (fh, backing) = s.open_file(ino, &opened, |fd| reply.open_backing(fd));
                reply.created(&ttl, &file_attr, GENERATION, fh, s.file_open_flags(), backing.as_deref());
            },
        );
    }

    fn fallocate(&self, fh: FileHandle, offset: u64, length: u64, mode: i32, reply: ReplyEmpty) {
        self.dispatch(
            "fallocate",
            reply,
            move |s| async move { s.backend.fallocate(s.file_handle(fh)?, offset, length, mode).await },
            Self::ok_empty,
        );
    }

    fn lseek(&self, fh: FileHandle, offset: i64, whence: i32, reply: ReplyLseek) {
        self.dispatch(
            "lseek",
            reply,
            move |s| async move {
                let offset = u64::try_from(offset).map_err(|_| FsError::InvalidArgument)?;
                let found = s.backend.lseek(s.file_handle(fh)?, offset, whence).await?;
                i64::try_from(found).map_err(|_| FsError::InvalidArgument)
            },
            |_, reply, offset| reply.offset(offset),
        );
    }

    fn getlk(&self, fh: FileHandle, owner: u64, asked: FileLockIn, reply: ReplyLock) {
        self.dispatch(
            "getlk",
            reply,
            move |s| async move { s.backend.getlk(s.file_handle(fh)?, owner, file_lock(asked)?).await },
            // No conflict: the asked range, unlocked.
            move |_, reply, found: Option<FileLock>| {
                reply.lock(&found.map_or(FileLockIn { typ: libc::F_UNLCK as u32, pid: 0, ..asked }, |found| lock_in(&found)))
            },
        );
    }

    /// A waiting request ends with `EINTR` when its caller gets a signal.
    fn setlk(&self, req: &Header, fh: FileHandle, owner: LockOwner, lock: FileLockIn, wait: bool, reply: ReplyEmpty) {
        let unique = req.unique;
        let interrupted = wait.then(|| self.shared.lock_waits.register(unique));
        self.dispatch(
            "setlk",
            reply,
            move |s| async move {
                let taking = s.backend.setlk(s.file_handle(fh)?, owner, file_lock(lock)?, wait);
                let Some(interrupted) = interrupted else { return taking.await };
                // The interrupt first: a wait granted in the same poll as its
                // caller's signal is dropped ungranted.
                let outcome = tokio::select! {
                    biased;
                    _ = interrupted => Err(FsError::Interrupted),
                    outcome = taking => outcome,
                };
                s.lock_waits.done(unique);
                outcome
            },
            Self::ok_empty,
        );
    }

    fn copy_file_range(&self, fh_in: FileHandle, offset_in: u64, fh_out: FileHandle, offset_out: u64, len: u64, reply: ReplyWrite) {
        // The reply carries a u32; the kernel loops for the rest.
        let len = len.min(u64::from(u32::MAX) & !0xfff);
        self.dispatch(
            "copy_file_range",
            reply,
            move |s| async move {
                let (from, to) = (s.file_handle(fh_in)?, s.file_handle(fh_out)?);
                let copied = s.backend.copy_file_range(from, offset_in, to, offset_out, len).await?;
                u32::try_from(copied).map_err(|_| FsError::Range)
            },
            |_, reply, copied| reply.written(copied),
        );
    }
}

impl Handler for ShareFs {
    fn init_config(&self) -> InitConfig {
        let tuning = &self.shared.tuning;
        // Readdirplus saves a lookup per entry; parallel dirops lets lookups in one
        // directory run concurrently; auto inval drops cached pages when the source
        // changed a file's mtime or size. Not ATOMIC_O_TRUNC: the backend would
        // truncate at open, before the kernel's ETXTBSY check.
        // The backend drops setuid, setgid and capabilities on writes and
        // truncates (HANDLE_KILLPRIV_V2): the daemon writes with its own
        // privileges, which keep them, and passed-through writes run with them too.
        // POSIX ACLs: the kernel enforces them (cached per file) instead of
        // judging by the mode bits alone, which would let a user an ACL denies
        // through. DONT_MASK hands the umask to the backend, which must ignore
        // it beneath a directory with a default ACL.
        let mut flags = init::ASYNC_READ
            | init::BIG_WRITES
            | init::DO_READDIRPLUS
            | init::PARALLEL_DIROPS
            | init::AUTO_INVAL_DATA
            | init::HANDLE_KILLPRIV_V2
            | init::POSIX_ACL
            | init::DONT_MASK;
        if self.shared.backend.takes_locks() {
            flags |= init::POSIX_LOCKS | init::FLOCK_LOCKS;
        }
        if tuning.passthrough {
            flags |= init::PASSTHROUGH;
        }
        InitConfig {
            flags,
            max_write: tuning.max_write,
            max_readahead: tuning.max_readahead,
            max_background: tuning.max_background.max(1),
            congestion_threshold: (tuning.max_background / 4 * 3).max(1),
            // Passthrough backing files may live on a stacked filesystem
            // (overlayfs rootfs): depth 2 is the kernel's maximum.
            max_stack_depth: 2,
        }
    }

    fn initialized(&self, granted: u64) {
        self.shared.passthrough_active.store(granted & init::PASSTHROUGH != 0, Ordering::Relaxed);
        self.shared.io_uring_active.store(granted & init::OVER_IO_URING != 0, Ordering::Relaxed);
    }

    fn served_over_io_uring(&self) {
        self.shared.counters.over_io_uring.fetch_add(1, Ordering::Relaxed);
    }

    fn idle_step(&self) -> bool {
        // Over io_uring the requests are served on ring threads, which the
        // backend's idle work would hold up.
        !self.shared.io_uring_active.load(Ordering::Relaxed) && self.shared.backend.idle_step()
    }

    fn idle_end(&self) {
        self.shared.backend.idle_end()
    }

    fn ended(&self) {
        self.shared.lock_waits.end_all();
    }

    fn handle(&self, req: &Header, op: Op<'_>, replier: Replier) {
        let ino = INodeNo(req.nodeid);
        match op {
            Op::Lookup { name } => self.lookup(ino, name, ReplyEntry(replier)),
            Op::Forget { nlookup } => self.forget(ino, nlookup),
            Op::BatchForget { nodes } => {
                for (node, nlookup) in nodes {
                    self.forget(INodeNo(node), nlookup);
                }
            }
            Op::GetAttr { fh } => self.getattr(ino, fh.map(FileHandle), ReplyAttr(replier)),
            Op::SetAttr(set) => self.setattr(req, ino, set, ReplyAttr(replier)),
            Op::ReadLink => self.readlink(ino, ReplyData(replier)),
            Op::Symlink { name, target } => self.symlink(req, ino, name, Path::new(target), ReplyEntry(replier)),
            Op::MkNod { name, mode, rdev, umask } => self.mknod(req, ino, name, mode, umask, rdev, ReplyEntry(replier)),
            Op::MkDir { name, mode, umask } => self.mkdir(req, ino, name, mode, umask, ReplyEntry(replier)),
            Op::Unlink { name } => self.unlink(ino, name, ReplyEmpty(replier)),
            Op::RmDir { name } => self.rmdir(ino, name, ReplyEmpty(replier)),
            Op::Rename { name, newdir, newname, flags } => self.rename(ino, name, INodeNo(newdir), newname, flags, ReplyEmpty(replier)),
            Op::Link { oldnodeid, newname } => self.link(INodeNo(oldnodeid), ino, newname, ReplyEntry(replier)),
            Op::Open { flags } => self.open(req, ino, flags, ReplyOpen(replier)),
            Op::Read { fh, offset, size } => self.read(FileHandle(fh), offset, size, ReplyData(replier)),
            Op::Write { fh, offset, data, kill_suidgid } => self.write(req, FileHandle(fh), offset, data, kill_suidgid, ReplyWrite(replier)),
            Op::StatFs => self.statfs(ReplyStatfs(replier)),
            Op::Release { fh } => self.release(FileHandle(fh), ReplyEmpty(replier)),
            Op::Fsync { fh, datasync } => self.fsync(FileHandle(fh), datasync, ReplyEmpty(replier)),
            Op::SetXattr { name, value, flags } => self.setxattr(ino, name, value, flags, ReplyEmpty(replier)),
            Op::GetXattr { name, size } => self.getxattr(ino, name, size, ReplyXattr(replier)),
            Op::ListXattr { size } => self.listxattr(ino, size, ReplyXattr(replier)),
            Op::RemoveXattr { name } => self.removexattr(ino, name, ReplyEmpty(replier)),
            Op::Flush { fh } => self.flush(FileHandle(fh), ReplyEmpty(replier)),
            Op::OpenDir => self.opendir(ino, ReplyOpen(replier)),
            Op::ReadDir { fh, offset, size } => self.readdir(ino, FileHandle(fh), offset, ReplyDirectory::new(replier, size, false)),
            Op::ReadDirPlus { fh, offset, size } => self.readdirplus(ino, FileHandle(fh), offset, ReplyDirectory::new(replier, size, true)),
            Op::ReleaseDir { fh } => self.releasedir(FileHandle(fh), ReplyEmpty(replier)),
            Op::FsyncDir { fh, datasync } => self.fsyncdir(FileHandle(fh), datasync, ReplyEmpty(replier)),
            // Reached only without `default_permissions`: the mount then trusts callers.
            Op::Access => ReplyEmpty(replier).ok(),
            Op::Create { name, mode, umask, flags } => self.create(req, ino, name, mode, umask, flags, ReplyCreate(replier)),
            Op::Fallocate { fh, offset, length, mode } => self.fallocate(FileHandle(fh), offset, length, mode, ReplyEmpty(replier)),
            Op::Lseek { fh, offset, whence } => self.lseek(FileHandle(fh), offset, whence, ReplyLseek(replier)),
            Op::CopyFileRange { fh_in, off_in, fh_out, off_out, len } => {
                self.copy_file_range(FileHandle(fh_in), off_in, FileHandle(fh_out), off_out, len, ReplyWrite(replier))
            }
            Op::Destroy => ReplyEmpty(replier).ok(),
            Op::Interrupt { unique } => self.shared.lock_waits.interrupt(unique),
            Op::GetLk { fh, owner, lock } => self.getlk(FileHandle(fh), owner, lock, ReplyLock(replier)),
            Op::SetLk { fh, owner, lock, flock, wait } => {
                let owner = if flock { LockOwner::OpenFile } else { LockOwner::Process(owner) };
                self.setlk(req, FileHandle(fh), owner, lock, wait, ReplyEmpty(replier))
            }
            // Answered by the session.
            Op::Init { .. } => replier.send(Err(libc::EIO)),
            Op::Unsupported => replier.send(Err(libc::ENOSYS)),
        }
    }
}
