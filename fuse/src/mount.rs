//! Mounting a backend: the mount options, and the handle whose drop unmounts.
//!
//! Each mount costs one thread, which reads its `/dev/fuse`; requests over
//! io_uring are served by the daemon-wide threads of one per CPU
//! ([`crate::ring_pool`]), and everything that waits runs on the tokio runtime
//! shared by all mounts, so many mounts do not mean many threads.

use std::future::Future;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;


use crate::adapter::ShareFs;
use crate::session::{self, MountSpec, Session};
use crate::inode_table::InodeTable;
use crate::invalidation::CacheInvalidator;
use crate::mount_state::{Counters, Shared, Tuning};
use crate::open_handles::OpenHandles;
use crate::unmount;
use crate::{FileKind, FsBackend};

const MIB: u32 = 1024 * 1024;

#[derive(Debug, Clone)]
pub struct MountOptions {
    /// Mount `ro`: the kernel refuses writes before they reach the backend.
    pub read_only: bool,
    /// Let every user of the node (and of containers) use the mount, not only
    /// the daemon's user.
    pub allow_other: bool,
    /// Let the kernel check permissions from the attributes. Without it every
    /// caller may do anything the daemon may.
    pub default_permissions: bool,
    /// Source column of the mount table.
    pub fs_name: String,
    /// The mount shows as type `fuse.<subtype>`.
    pub subtype: String,
    pub max_read: u32,
    pub max_write: u32,
    pub max_readahead: u32,
    /// Background requests (readahead, async reads) the kernel keeps in flight.
    pub max_background: u16,
    /// How long the kernel trusts a name → file answer, and a file's attributes.
    /// Short by default: the source may change files behind the kernel's back.
    pub entry_ttl: Duration,
    pub attr_ttl: Duration,
    /// Let the kernel read and write files the backend serves from local
    /// descriptors directly (FUSE passthrough), when the kernel allows it.
    pub passthrough: bool,
    /// Runtime the requests run on; the current one when `None`.
    pub runtime: Option<tokio::runtime::Handle>,
    /// Serve requests over FUSE-over-io_uring where the kernel has it (one
    /// queue per CPU, served on that CPU) instead of `/dev/fuse` reads, and
    /// where the `fuse` module allows it (`enable_uring`, the caller's to
    /// set: this crate writes no system parameter). Default off: on a 2-vCPU
    /// VM it measured slower than a polling `/dev/fuse` reader
    /// (docs/DESIGN.md). Without the `io-uring` feature it is ignored.
    pub io_uring: bool,
    /// How long the `/dev/fuse` reader polls for the next request after an
    /// answer while requests come in a burst (0: it always blocks). Default
    /// [`MountOptions::DEFAULT_SPIN`].
    pub spin: Duration,
}

impl Default for MountOptions {
    fn default() -> Self {
        MountOptions {
            read_only: false,
            allow_other: true,
            default_permissions: true,
            fs_name: "hoody".to_owned(),
            subtype: "hoody".to_owned(),
            max_read: MIB,
            max_write: MIB,
            max_readahead: MIB,
            max_background: 64,
            entry_ttl: Duration::from_secs(1),
            attr_ttl: Duration::from_secs(1),
            passthrough: true,
            runtime: None,
            io_uring: false,
            spin: Self::DEFAULT_SPIN,
        }
    }
}

impl MountOptions {
    /// Default of [`MountOptions::spin`]: longer than a walker's pause between
    /// requests while it digests a listing (`find` stating a directory's entries
    /// from the kernel's cache), which a 50 µs window missed (docs/DESIGN.md).
    pub const DEFAULT_SPIN: Duration = Duration::from_micros(200);

    /// A share never brings device nodes or setuid programs into a container.
    fn spec(&self) -> MountSpec<'_> {
        MountSpec {
            fs_name: &self.fs_name,
            subtype: &self.subtype,
            read_only: self.read_only,
            allow_other: self.allow_other,
            default_permissions: self.default_permissions,
            max_read: self.max_read,
            transport: session::Transport { io_uring: self.io_uring, spin: self.spin },
        }
    }
}

/// Counters of one mount.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MountStats {
    pub requests: u64,
    pub errors: u64,
    pub in_flight: u64,
    pub open_files: usize,
    pub open_dirs: usize,
    /// Whether the kernel agreed to passthrough for this mount.
    pub passthrough: bool,
    /// Whether the kernel agreed to FUSE-over-io_uring for this mount.
    pub io_uring: bool,
    /// Requests that came over io_uring (the others came through `/dev/fuse`).
    pub requests_over_io_uring: u64,
}

/// A mounted share. Dropping it unmounts (see [`MountHandle::unmount`]).
/// Unmounting blocks briefly; do not drop it on a runtime worker that the
/// mount's own requests may need.
pub struct MountHandle {
    mountpoint: PathBuf,
    connection: Option<u32>,
    session: Option<Session>,
    shared: Arc<Shared>,
    invalidator: CacheInvalidator,
}

impl std::fmt::Debug for MountHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MountHandle").field("mountpoint", &self.mountpoint).field("connection", &self.connection).finish_non_exhaustive()
    }
}

impl MountHandle {
    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    /// Drops kernel caches of this mount when files change behind its back.
    pub fn invalidator(&self) -> CacheInvalidator {
        self.invalidator.clone()
    }

    pub fn stats(&self) -> MountStats {
        let counters: &Counters = &self.shared.counters;
        let (open_files, open_dirs) = self.shared.handles.open_count();
        MountStats {
            requests: counters.requests.load(Ordering::Relaxed),
            errors: counters.errors.load(Ordering::Relaxed),
            in_flight: counters.in_flight.load(Ordering::Relaxed),
            open_files,
            open_dirs,
            passthrough: self.shared.passthrough_active.load(Ordering::Relaxed),
            io_uring: self.shared.io_uring_active.load(Ordering::Relaxed),
            requests_over_io_uring: counters.over_io_uring.load(Ordering::Relaxed),
        }
    }

    /// Unmounts: detached from the namespace at once (through the mount's own
    /// descriptor). A connection still in use after a short grace is aborted:
    /// processes still using it get `ENOTCONN`, none of them hangs.
    pub fn unmount(mut self) -> io::Result<()> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> io::Result<()> {
        let Some(mut session) = self.session.take() else { return Ok(()) };
        if let Some(mount) = session.mount.take() {
            unmount::detach(mount.as_fd())?;
            // Our own reference would keep the detached mount, and its
            // connection, alive: the connection ends with its last user now.
        }
        if !ends_within(&session, SESSION_END_GRACE) {
            // Still in use: detached while busy, or unmounted by someone else
            // while busy. Its users are cut off so that the session ends.
            let aborted = self.connection.map(unmount::abort);
            if !matches!(aborted, Some(Ok(()))) {
                let mountpoint = self.mountpoint.display();
                tracing::warn!(%mountpoint, ?aborted, "share connection not aborted; its session ends with its last user");
                return Ok(());
            }
        }
        session.reader.join().map_err(|_| io::Error::other("share session thread panicked"))
    }
}

/// How long a detached session may take to end by itself: an unused one ends
/// in a few milliseconds once its mount is gone; one still used is aborted.
const SESSION_END_GRACE: Duration = Duration::from_millis(300);

fn ends_within(session: &Session, grace: Duration) -> bool {
    let deadline = std::time::Instant::now() + grace;
    loop {
        if session.reader.is_finished() {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

impl Drop for MountHandle {
    fn drop(&mut self) {
        if let Err(err) = self.shutdown() {
            tracing::warn!(mountpoint = %self.mountpoint.display(), error = %err, "unmount failed");
        }
    }
}

/// Mounts `backend` at `mountpoint`, a path the caller trusts (see
/// [`mount_onto`] for a directory held by descriptor). Blocks until the kernel
/// has accepted the mount; call it off the runtime's workers (`spawn_blocking`)
/// or outside it.
pub fn mount(backend: Arc<dyn FsBackend>, mountpoint: &Path, options: MountOptions) -> io::Result<MountHandle> {
    let c = std::ffi::CString::new(mountpoint.as_os_str().as_encoded_bytes()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: a valid NUL-terminated path.
    let fd = unsafe { libc::open(c.as_ptr(), libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: just opened, owned by no one else.
    let target = unsafe { OwnedFd::from_raw_fd(fd) };
    mount_onto(backend, target.as_fd(), options)
}

/// Mounts `backend` onto the directory `target` holds: no path is resolved,
/// so a mount point opened beneath a container's root cannot be re-pointed
/// elsewhere between the check and the mount.
pub fn mount_onto(backend: Arc<dyn FsBackend>, target: BorrowedFd<'_>, options: MountOptions) -> io::Result<MountHandle> {
    let runtime = match options.runtime.clone() {
        Some(runtime) => runtime,
        None => tokio::runtime::Handle::try_current()
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "mounting a share needs a tokio runtime"))?,
    };
    keep_large_buffers_mapped();
    // Where the mount shows, for logs and the mount table (never used to reach it).
    let mountpoint = std::fs::read_link(format!("/proc/self/fd/{}", target.as_raw_fd()))?;
    let root = block_on_elsewhere(&runtime, backend.root()).map_err(|err| io::Error::from_raw_os_error(err.to_errno()))?;
    if root.kind != FileKind::Directory {
        return Err(io::Error::from_raw_os_error(libc::ENOTDIR));
    }
    let inodes = Arc::new(InodeTable::new(root.node));
    let shared = Arc::new(Shared {
        backend: backend.clone(),
        inodes: inodes.clone(),
        handles: OpenHandles::default(),
        runtime,
        tuning: Tuning {
            entry_ttl: options.entry_ttl,
            attr_ttl: options.attr_ttl,
            max_write: options.max_write,
            max_readahead: options.max_readahead,
            max_background: options.max_background,
            passthrough: options.passthrough,
        },
        passthrough_active: AtomicBool::new(false),
        io_uring_active: AtomicBool::new(false),
        lock_waits: Default::default(),
        counters: Counters::default(),
    });
    let session = session::mount(target, &options.spec(), Arc::new(ShareFs::new(shared.clone())))?;
    let invalidator = CacheInvalidator::new(session.notifier(), inodes);
    backend.attach_invalidator(invalidator.clone());
    let connection = session.device.connection();
    Ok(MountHandle { mountpoint, connection, session: Some(session), shared, invalidator })
}

/// Each mount has a request buffer of `max_write` and more, and io_uring
/// entries as large, of which requests touch a few pages. Once one such buffer
/// is freed, glibc raises its mmap threshold above that size, and the next
/// buffers come from the heap and are cleared byte by byte: all resident. A
/// fixed threshold keeps large buffers mapped on demand (process-wide: it also
/// stops the heap from keeping freed multi-megabyte blocks).
fn keep_large_buffers_mapped() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        static FIXED_THRESHOLD: std::sync::Once = std::sync::Once::new();
        FIXED_THRESHOLD.call_once(|| {
            // SAFETY: mallopt only changes allocator tuning.
            unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, 512 << 10) };
        });
    }
}

/// Runs `future` to completion on `runtime` from a thread of its own, so that
/// it works whether or not the caller is itself inside the runtime.
fn block_on_elsewhere<F>(runtime: &tokio::runtime::Handle, future: F) -> F::Output
where
    F: Future + Send,
    F::Output: Send,
{
    std::thread::scope(|scope| match scope.spawn(|| runtime.block_on(future)).join() {
        Ok(output) => output,
        Err(panic) => std::panic::resume_unwind(panic),
    })
}
