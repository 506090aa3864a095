//! The target's side of a remote share: every `FsBackend` call becomes one
//! [`FsOp`] sent to the share's source node, with a deadline, so a dead or
//! cut-off source turns into `EIO` in bounded time instead of a hung process.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use hoody_fuse::{Attr, CacheInvalidator, Caller, DirEntry, FileLock, FsBackend, FsError, FsResult, HandleId, LockKind, LockOwner, NodeId, Opened, SetAttr, StatFs};

use super::wire::{Answer, FsOp, FsReply, WAttr, WLock};

/// How long one call may take before the access fails with `EIO`.
pub const OP_DEADLINE: Duration = Duration::from_secs(4);
/// The most one kernel request waits, re-attaching and reviving included.
const ASK_DEADLINE: Duration = Duration::from_secs(12);
/// How often a waiting lock is tried again on the source.
const LOCK_RETRY: Duration = Duration::from_millis(20);
const LOCK_RETRY_MAX: Duration = Duration::from_millis(200);

/// Carries calls to the source of one share (the QUIC link in the daemon; a
/// direct call in tests).
#[async_trait]
pub trait ShareChannel: Send + Sync + 'static {
    /// The source's answer, or `Err` when it could not be reached in time.
    async fn call(&self, op: FsOp, deadline: Duration) -> Result<Answer, FsError>;
}

pub struct RemoteBackend {
    channel: Arc<dyn ShareChannel>,
    /// Bumped by each attach; one re-attach serves every call that found the session gone.
    attached: std::sync::atomic::AtomicU64,
    reattaching: tokio::sync::Mutex<()>,
    takes_locks: bool,
    /// False while the source container is stopped: fail fast with `EIO`.
    available: Arc<AtomicBool>,
    kernel: OnceLock<CacheInvalidator>,
}

impl std::fmt::Debug for RemoteBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteBackend").finish_non_exhaustive()
    }
}

fn attr_of(a: WAttr) -> FsResult<Attr> {
    a.to_attr().map_err(FsError::from_errno)
}

fn unexpected(reply: FsReply) -> FsError {
    tracing::warn!(?reply, "a share source answered with the wrong reply");
    FsError::Os(libc::EPROTO)
}

impl RemoteBackend {
    /// Starts (or restarts) this target's session on the source.
    pub async fn attach(channel: Arc<dyn ShareChannel>) -> FsResult<RemoteBackend> {
        match channel.call(FsOp::Attach, OP_DEADLINE).await?.map_err(FsError::from_errno)? {
            FsReply::Attached { takes_locks, .. } => {
                Ok(RemoteBackend { channel, attached: Default::default(), reattaching: Default::default(), takes_locks, available: Arc::new(AtomicBool::new(true)), kernel: OnceLock::new() })
            }
            other => Err(unexpected(other)),
        }
    }

    /// Whether the source answers now (a cheap call, short deadline): `Err`
    /// says why not, for the share's status.
    pub async fn probe(&self, deadline: Duration) -> Result<(), String> {
        match tokio::time::timeout(deadline, self.ask(FsOp::Root)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(FsError::Unavailable)) if !self.available.load(Ordering::Relaxed) => Ok(()),
            Ok(Err(FsError::Unavailable)) | Err(_) => Err("the source's server cannot be reached: access fails with EIO until it is back".into()),
            Ok(Err(e)) => Err(format!("the source refuses this mount: {e}")),
        }
    }

    pub fn availability(&self) -> Arc<AtomicBool> {
        self.available.clone()
    }

    /// The mount's kernel caches, for invalidations the source pushes.
    pub fn kernel(&self) -> Option<CacheInvalidator> {
        self.kernel.get().cloned()
    }

    async fn ask(&self, op: FsOp) -> FsResult<FsReply> {
        if !self.available.load(Ordering::Relaxed) {
            return Err(FsError::Unavailable);
        }
        // Whatever happens below (a re-attach, bringing nodes back), the
        // caller in the container gets an answer in bounded time.
        tokio::time::timeout(ASK_DEADLINE, self.ask_unbounded(op)).await.map_err(|_| FsError::Unavailable)?
    }

    async fn ask_unbounded(&self, op: FsOp) -> FsResult<FsReply> {
        let generation = self.attached.load(Ordering::Acquire);
        match self.channel.call(op.clone(), OP_DEADLINE).await? {
            // The source lost this mount's session (it restarted): attach
            // again, once for all the calls that found it gone, and retry.
            Err(super::server::NO_SESSION) => {
                self.reattach(generation).await?;
                self.channel.call(op, OP_DEADLINE).await?.map_err(FsError::from_errno)
            }
            answer => answer.map_err(FsError::from_errno),
        }
    }

    async fn reattach(&self, seen: u64) -> FsResult<()> {
        let _one = self.reattaching.lock().await;
        if self.attached.load(Ordering::Acquire) != seen {
            return Ok(());
        }
        match self.channel.call(FsOp::Attach, OP_DEADLINE).await?.map_err(FsError::from_errno)? {
            FsReply::Attached { .. } => {
                self.attached.fetch_add(1, Ordering::AcqRel);
                tracing::info!("remote share session attached again");
                // Whatever changed while the source was away was never pushed.
                if let Some(kernel) = self.kernel.get().cloned() {
                    std::thread::spawn(move || kernel.invalidate_everything());
                }
                Ok(())
            }
            other => Err(unexpected(other)),
        }
    }

    async fn attr(&self, op: FsOp) -> FsResult<Attr> {
        match self.ask(op).await? {
            FsReply::Attr(a) => attr_of(a),
            other => Err(unexpected(other)),
        }
    }

    async fn done(&self, op: FsOp) -> FsResult<()> {
        match self.ask(op).await? {
            FsReply::Done => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    async fn try_lock(&self, handle: HandleId, owner: LockOwner, lock: FileLock) -> FsResult<()> {
        self.done(FsOp::Setlk { handle: handle.0, owner: owner.into(), lock: lock.into() }).await
    }
}

fn bytes(name: &OsStr) -> Vec<u8> {
    name.as_bytes().to_vec()
}

/// Undoes a lock attempt whose answer never came back because the caller
/// went away (interrupted): the source may have granted it meanwhile.
struct UnlockIfAbandoned {
    channel: Arc<dyn ShareChannel>,
    handle: HandleId,
    owner: LockOwner,
    lock: FileLock,
    armed: bool,
}

impl Drop for UnlockIfAbandoned {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let channel = self.channel.clone();
        let unlock = FileLock { kind: LockKind::Unlock, ..self.lock };
        let op = FsOp::Setlk { handle: self.handle.0, owner: self.owner.into(), lock: unlock.into() };
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let _ = channel.call(op, OP_DEADLINE).await;
            });
        }
    }
}

#[async_trait]
impl FsBackend for RemoteBackend {
    async fn root(&self) -> FsResult<Attr> {
        self.attr(FsOp::Root).await
    }

    async fn lookup(&self, parent: NodeId, name: &OsStr) -> FsResult<Attr> {
        self.attr(FsOp::Lookup { parent: parent.0, name: bytes(name) }).await
    }

    async fn forget(&self, node: NodeId, count: u64) {
        // The kernel does not wait for forgets: neither do we.
        let channel = self.channel.clone();
        tokio::spawn(async move {
            let _ = channel.call(FsOp::Forget { node: node.0, count }, OP_DEADLINE).await;
        });
    }

    async fn getattr(&self, node: NodeId, handle: Option<HandleId>) -> FsResult<Attr> {
        self.attr(FsOp::Getattr { node: node.0, handle: handle.map(|h| h.0) }).await
    }

    async fn setattr(&self, node: NodeId, handle: Option<HandleId>, changes: SetAttr) -> FsResult<Attr> {
        self.attr(FsOp::Setattr { node: node.0, handle: handle.map(|h| h.0), changes: (&changes).into() }).await
    }

    async fn opendir(&self, dir: NodeId) -> FsResult<HandleId> {
        match self.ask(FsOp::Opendir { dir: dir.0 }).await? {
            FsReply::Handle(h) => Ok(HandleId(h)),
            other => Err(unexpected(other)),
        }
    }

    async fn readdirplus(&self, dir: NodeId, handle: HandleId, offset: u64, max_entries: usize) -> FsResult<Vec<DirEntry>> {
        match self.ask(FsOp::Readdirplus { dir: dir.0, handle: handle.0, offset, max_entries: max_entries.min(u32::MAX as usize) as u32 }).await? {
            FsReply::Entries(es) => es.into_iter().map(|e| e.to_entry().map_err(FsError::from_errno)).collect(),
            other => Err(unexpected(other)),
        }
    }

    async fn releasedir(&self, handle: HandleId) -> FsResult<()> {
        self.done(FsOp::Releasedir { handle: handle.0 }).await
    }

    async fn fsyncdir(&self, handle: HandleId, datasync: bool) -> FsResult<()> {
        self.done(FsOp::Fsyncdir { handle: handle.0, datasync }).await
    }

    async fn open(&self, node: NodeId, flags: i32, caller: Caller) -> FsResult<Opened> {
        match self.ask(FsOp::Open { node: node.0, flags, caller: caller.into() }).await? {
            FsReply::Handle(h) => Ok(Opened { handle: HandleId(h), passthrough: None }),
            other => Err(unexpected(other)),
        }
    }

    async fn create(&self, parent: NodeId, name: &OsStr, mode: u32, umask: u32, flags: i32, caller: Caller) -> FsResult<(Attr, Opened)> {
        match self.ask(FsOp::Create { parent: parent.0, name: bytes(name), mode, umask, flags, caller: caller.into() }).await? {
            FsReply::Created { attr, handle } => Ok((attr_of(attr)?, Opened { handle: HandleId(handle), passthrough: None })),
            other => Err(unexpected(other)),
        }
    }

    async fn read(&self, handle: HandleId, offset: u64, size: u32) -> FsResult<Vec<u8>> {
        match self.ask(FsOp::Read { handle: handle.0, offset, size }).await? {
            FsReply::Data(d) => Ok(d),
            other => Err(unexpected(other)),
        }
    }

    async fn write(&self, handle: HandleId, offset: u64, data: Vec<u8>, drop_privileges: Option<Caller>) -> FsResult<u32> {
        match self.ask(FsOp::Write { handle: handle.0, offset, data, drop_privileges: drop_privileges.map(Into::into) }).await? {
            FsReply::Written(n) => Ok(n),
            other => Err(unexpected(other)),
        }
    }

    async fn flush(&self, handle: HandleId) -> FsResult<()> {
        self.done(FsOp::Flush { handle: handle.0 }).await
    }

    async fn release(&self, handle: HandleId) -> FsResult<()> {
        self.done(FsOp::Release { handle: handle.0 }).await
    }

    async fn fsync(&self, handle: HandleId, datasync: bool) -> FsResult<()> {
        self.done(FsOp::Fsync { handle: handle.0, datasync }).await
    }

    async fn fallocate(&self, handle: HandleId, offset: u64, length: u64, mode: i32) -> FsResult<()> {
        self.done(FsOp::Fallocate { handle: handle.0, offset, length, mode }).await
    }

    async fn lseek(&self, handle: HandleId, offset: u64, whence: i32) -> FsResult<u64> {
        match self.ask(FsOp::Lseek { handle: handle.0, offset, whence }).await? {
            FsReply::Offset(o) => Ok(o),
            other => Err(unexpected(other)),
        }
    }

    async fn copy_file_range(&self, from: HandleId, from_offset: u64, to: HandleId, to_offset: u64, length: u64) -> FsResult<u64> {
        match self.ask(FsOp::CopyFileRange { from: from.0, from_offset, to: to.0, to_offset, length }).await? {
            FsReply::Offset(n) => Ok(n),
            other => Err(unexpected(other)),
        }
    }

    async fn mkdir(&self, parent: NodeId, name: &OsStr, mode: u32, umask: u32, caller: Caller) -> FsResult<Attr> {
        self.attr(FsOp::Mkdir { parent: parent.0, name: bytes(name), mode, umask, caller: caller.into() }).await
    }

    async fn mknod(&self, parent: NodeId, name: &OsStr, mode: u32, umask: u32, rdev: u32, caller: Caller) -> FsResult<Attr> {
        self.attr(FsOp::Mknod { parent: parent.0, name: bytes(name), mode, umask, rdev, caller: caller.into() }).await
    }

    async fn symlink(&self, parent: NodeId, name: &OsStr, target: &Path, caller: Caller) -> FsResult<Attr> {
        self.attr(FsOp::Symlink { parent: parent.0, name: bytes(name), target: bytes(target.as_os_str()), caller: caller.into() }).await
    }

    async fn link(&self, node: NodeId, new_parent: NodeId, new_name: &OsStr) -> FsResult<Attr> {
        self.attr(FsOp::Link { node: node.0, new_parent: new_parent.0, new_name: bytes(new_name) }).await
    }

    async fn unlink(&self, parent: NodeId, name: &OsStr) -> FsResult<()> {
        self.done(FsOp::Unlink { parent: parent.0, name: bytes(name) }).await
    }

    async fn rmdir(&self, parent: NodeId, name: &OsStr) -> FsResult<()> {
        self.done(FsOp::Rmdir { parent: parent.0, name: bytes(name) }).await
    }

    async fn rename(&self, parent: NodeId, name: &OsStr, new_parent: NodeId, new_name: &OsStr, flags: u32) -> FsResult<()> {
        self.done(FsOp::Rename { parent: parent.0, name: bytes(name), new_parent: new_parent.0, new_name: bytes(new_name), flags }).await
    }

    async fn readlink(&self, node: NodeId) -> FsResult<PathBuf> {
        match self.ask(FsOp::Readlink { node: node.0 }).await? {
            FsReply::Bytes(b) => Ok(PathBuf::from(OsString::from_vec(b))),
            other => Err(unexpected(other)),
        }
    }

    async fn statfs(&self) -> FsResult<StatFs> {
        match self.ask(FsOp::Statfs).await? {
            FsReply::StatFs(s) => Ok(s.into()),
            other => Err(unexpected(other)),
        }
    }

    async fn getxattr(&self, node: NodeId, name: &OsStr) -> FsResult<Vec<u8>> {
        match self.ask(FsOp::Getxattr { node: node.0, name: bytes(name) }).await? {
            FsReply::Bytes(b) => Ok(b),
            other => Err(unexpected(other)),
        }
    }

    async fn setxattr(&self, node: NodeId, name: &OsStr, value: &[u8], flags: i32) -> FsResult<()> {
        self.done(FsOp::Setxattr { node: node.0, name: bytes(name), value: value.to_vec(), flags }).await
    }

    async fn listxattr(&self, node: NodeId) -> FsResult<Vec<OsString>> {
        match self.ask(FsOp::Listxattr { node: node.0 }).await? {
            FsReply::Names(names) => Ok(names.into_iter().map(|n| OsString::from_vec(n.0)).collect()),
            other => Err(unexpected(other)),
        }
    }

    async fn removexattr(&self, node: NodeId, name: &OsStr) -> FsResult<()> {
        self.done(FsOp::Removexattr { node: node.0, name: bytes(name) }).await
    }

    async fn getlk(&self, handle: HandleId, owner: u64, lock: FileLock) -> FsResult<Option<FileLock>> {
        match self.ask(FsOp::Getlk { handle: handle.0, owner, lock: lock.into() }).await? {
            FsReply::Lock(l) => l.map(|l: WLock| l.to_lock().map_err(FsError::from_errno)).transpose(),
            other => Err(unexpected(other)),
        }
    }

    /// A waiting lock is tried again and again on the source (which never
    /// waits on a remote caller's behalf): cancel-safe, since an attempt whose
    /// caller went away is undone.
    async fn setlk(&self, handle: HandleId, owner: LockOwner, lock: FileLock, wait: bool) -> FsResult<()> {
        let mut pause = LOCK_RETRY;
        loop {
            let mut guard = UnlockIfAbandoned { channel: self.channel.clone(), handle, owner, lock, armed: lock.kind != LockKind::Unlock };
            let attempt = self.try_lock(handle, owner, lock).await;
            guard.armed = false;
            match attempt {
                Err(FsError::WouldBlock) if wait => {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(LOCK_RETRY_MAX);
                }
                other => return other,
            }
        }
    }

    fn takes_locks(&self) -> bool {
        self.takes_locks
    }

    /// A write is answered once the source wrote it: no error waits for `close`.
    fn writes_land_at_once(&self) -> bool {
        true
    }

    /// The source pushes every change it sees (and a re-attach drops everything).
    fn tells_every_change(&self) -> bool {
        true
    }

    fn attach_invalidator(&self, invalidator: CacheInvalidator) {
        let _ = self.kernel.set(invalidator);
    }
}
