//! The mounts of incoming shares on this node: which are up, mounting and
//! unmounting to match what the catalog wants, and clearing mounts a crashed
//! daemon left behind.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::io;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use hoody_fuse::{mount_onto, MountHandle, MountOptions};

use crate::beneath::Dir;

use super::remote::{RemoteBackend, RemoteShares};
use super::{LocalBackend, ShareMode};

/// How long a target's kernel trusts names and attributes of a remote share
/// (its source pushes invalidations; this bounds staleness if one is lost).
pub const REMOTE_CACHE_TTL: std::time::Duration = std::time::Duration::from_secs(30);

/// One share mounted in one target container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredMount {
    pub share_id: String,
    pub target_id: String,
    pub target_rootfs: PathBuf,
    pub alias: String,
    pub source_rootfs: PathBuf,
    pub source_path: PathBuf,
    pub mode: ShareMode,
    /// Whether the source container runs (a stopped source fails fast).
    pub source_available: bool,
    /// The node of the source container when it is not this one: the mount
    /// is then served over QUIC by that node.
    pub source_node: Option<String>,
}

impl DesiredMount {
    pub fn key(&self) -> (String, String) {
        (self.share_id.clone(), self.target_id.clone())
    }
}


struct Mounted {
    handle: MountHandle,
    available: Arc<AtomicBool>,
    /// Where the mount point is: removed, by descriptors, once unmounted.
    target_rootfs: PathBuf,
    alias: String,
    mode: ShareMode,
}

impl Mounted {
    /// Whether this mount is `d` as it is wanted now: same place, same mode.
    fn matches(&self, d: &DesiredMount) -> bool {
        self.alias == d.alias && self.mode == d.mode && self.target_rootfs == d.target_rootfs
    }
}

#[derive(Default)]
pub struct MountManager {
    mounts: Mutex<HashMap<(String, String), Mounted>>,
    /// How mounts of sources on other nodes reach them (set once the QUIC endpoint is up).
    remote: std::sync::OnceLock<Arc<RemoteShares>>,
    /// Requests and errors of mounts gone, so that totals never go down.
    retired: Mutex<(u64, u64)>,
}

/// What the mounts of this node did, for `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ShareTotals {
    pub mounts: usize,
    pub requests: u64,
    pub errors: u64,
    pub in_flight: u64,
    /// Files targets' kernels know, one open descriptor each.
    pub held_files: usize,
    /// Directory listings served from what a mount's reader read ahead of a walker.
    pub directories_read_ahead: u64,
}

impl MountManager {
    pub fn set_remote(&self, remote: Arc<RemoteShares>) {
        let _ = self.remote.set(remote);
    }

    /// Unmounts what is not desired and mounts what is missing. A mount whose
    /// alias or mode changed is remade at once: unmounted (its old mount point
    /// removed) with every other stale mount first, so that a name it frees is
    /// free for whichever share now takes it, then mounted anew. Returns the
    /// error of each desired mount that could not be made. Blocking.
    pub fn apply(&self, desired: &[DesiredMount], runtime: &tokio::runtime::Handle) -> HashMap<(String, String), String> {
        let wanted: HashMap<_, _> = desired.iter().map(|d| (d.key(), d)).collect();
        let stale: Vec<Mounted> = {
            let mut mounts = self.mounts.lock().expect("mount table");
            let keys: Vec<_> = mounts.iter().filter(|(k, m)| wanted.get(*k).is_none_or(|d| !m.matches(d))).map(|(k, _)| k.clone()).collect();
            keys.into_iter().filter_map(|k| mounts.remove(&k)).collect()
        };
        for m in stale {
            self.take_down(m);
        }
        let mut failures = HashMap::new();
        for d in desired {
            if let Some(m) = self.mounts.lock().expect("mount table").get(&d.key()) {
                m.available.store(d.source_available, Ordering::Relaxed);
                continue;
            }
            match mount_one(d, runtime, self.remote.get()) {
                Ok(mounted) => {
                    tracing::info!(share = %d.share_id, target = %d.target_id, mountpoint = %mounted.handle.mountpoint().display(), "share mounted");
                    self.mounts.lock().expect("mount table").insert(d.key(), mounted);
                }
                Err(e) => {
                    failures.insert(d.key(), e);
                }
            }
        }
        failures
    }

    pub fn is_mounted(&self, key: &(String, String)) -> bool {
        self.mounts.lock().expect("mount table").contains_key(key)
    }

    /// The alias a share is mounted under in a target now, if it is.
    pub fn mounted_alias(&self, key: &(String, String)) -> Option<String> {
        self.mounts.lock().expect("mount table").get(key).map(|m| m.alias.clone())
    }

    pub fn count(&self) -> usize {
        self.mounts.lock().expect("mount table").len()
    }

    pub fn totals(&self) -> ShareTotals {
        let (requests, errors) = *self.retired.lock().expect("retired counts");
        let mut totals = ShareTotals {
            requests,
            errors,
            held_files: super::node_table::held_descriptors(),
            directories_read_ahead: super::walk_ahead::served_total(),
            ..ShareTotals::default()
        };
        for mounted in self.mounts.lock().expect("mount table").values() {
            let stats = mounted.handle.stats();
            totals.mounts += 1;
            totals.requests += stats.requests;
            totals.errors += stats.errors;
            totals.in_flight += stats.in_flight;
        }
        totals
    }

    /// Keeps the counts of a mount about to go.
    fn retire(&self, handle: MountHandle) -> MountHandle {
        let stats = handle.stats();
        let mut retired = self.retired.lock().expect("retired counts");
        retired.0 += stats.requests;
        retired.1 += stats.errors;
        handle
    }

    /// Unmounts everything (shutdown). Blocking.
    pub fn unmount_all(&self) {
        let all: Vec<Mounted> = self.mounts.lock().expect("mount table").drain().map(|(_, m)| m).collect();
        for m in all {
            self.take_down(m);
        }
    }

    /// Unmounts one mount and removes its mount point.
    fn take_down(&self, m: Mounted) {
        let handle = self.retire(m.handle);
        let at = handle.mountpoint().to_path_buf();
        if let Err(e) = handle.unmount() {
            tracing::warn!(mountpoint = %at.display(), error = %e, "unmount failed");
        }
        remove_mountpoint(&m.target_rootfs, &m.alias);
    }
}

/// The error of a desired mount is a share's `status_message`, which clients
/// read: it names paths as the containers see them, and the full error (with
/// host paths) goes to the log.
fn mount_one(d: &DesiredMount, runtime: &tokio::runtime::Handle, remote: Option<&Arc<RemoteShares>>) -> Result<Mounted, String> {
    let failed = |public: String, e: &io::Error| {
        tracing::warn!(share = %d.share_id, target = %d.target_id, error = %e, "{public}");
        public
    };
    let (backend, available): (Arc<dyn hoody_fuse::FsBackend>, Arc<AtomicBool>) = match &d.source_node {
        None => {
            let backend = LocalBackend::open_in_container(&d.source_rootfs, &d.source_path, d.mode).map_err(|e| {
                failed(format!("source path {} is not available in the source container: {}", d.source_path.display(), hoody_api::io_reason(&e)), &e)
            })?;
            let available = backend.availability();
            (Arc::new(backend), available)
        }
        Some(node) => {
            let remote = remote.ok_or_else(|| "this node cannot reach other nodes yet".to_string())?;
            let channel = remote.channel(node, &d.share_id, &d.target_id);
            let backend = runtime.block_on(RemoteBackend::attach(channel)).map_err(|e| {
                let e = io::Error::from_raw_os_error(e.to_errno());
                failed(format!("the source on server {node} refused or could not be reached: {}", hoody_api::io_reason(&e)), &e)
            })?;
            let backend = Arc::new(backend);
            remote.register(&d.share_id, &d.target_id, node, &backend);
            let available = backend.availability();
            (backend, available)
        }
    };
    let mountpoint = ensure_mountpoint(&d.target_rootfs, &d.alias).map_err(|e| {
        // ensure_mountpoint's own messages name container paths only.
        let reason = if e.raw_os_error().is_some() { hoody_api::io_reason(&e) } else { e.to_string() };
        failed(format!("cannot make the mount point /hoody/shares/{}: {reason}", d.alias), &e)
    })?;
    available.store(d.source_available, Ordering::Relaxed);
    let transport = MountTransport::from_env();
    if transport.io_uring {
        if let Err(e) = allow_fuse_io_uring() {
            tracing::warn!(error = %e, "FUSE-over-io_uring asked for but not allowed; the mount reads /dev/fuse");
        }
    }
    // A remote source pushes every change it sees: the kernel may trust what
    // it was told for long, and a second walk asks the source nothing.
    let ttl = if d.source_node.is_some() { REMOTE_CACHE_TTL } else { MountOptions::default().entry_ttl };
    let options = MountOptions {
        entry_ttl: ttl,
        attr_ttl: ttl,
        read_only: d.mode == ShareMode::ReadOnly,
        subtype: "hoody".into(),
        runtime: Some(runtime.clone()),
        io_uring: transport.io_uring,
        spin: transport.spin,
        ..Default::default()
    };
    let handle = mount_onto(backend, mountpoint.as_fd(), options).map_err(|e| failed(format!("mount failed: {}", hoody_api::io_reason(&e)), &e))?;
    Ok(Mounted { handle, available, target_rootfs: d.target_rootfs.clone(), alias: d.alias.clone(), mode: d.mode })
}

/// How share mounts take their requests: the daemon's choice, from the
/// environment (docs/CONFIGURATION.md), handed to the FUSE crate as mount
/// options (the crate itself reads no environment).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MountTransport {
    /// `HOODY_FUSE_URING=1`: FUSE-over-io_uring where the kernel has it.
    pub io_uring: bool,
    /// `HOODY_FUSE_SPIN_US`: the `/dev/fuse` reader's polling window.
    pub spin: std::time::Duration,
}

impl MountTransport {
    pub fn from_env() -> MountTransport {
        static READ: std::sync::OnceLock<MountTransport> = std::sync::OnceLock::new();
        *READ.get_or_init(|| Self::from_settings(std::env::var("HOODY_FUSE_URING").ok().as_deref(), std::env::var("HOODY_FUSE_SPIN_US").ok().as_deref()))
    }

    /// `io_uring` on for `"1"`; `spin` in µs where it is a number, else the default.
    fn from_settings(io_uring: Option<&str>, spin_us: Option<&str>) -> MountTransport {
        MountTransport {
            io_uring: io_uring == Some("1"),
            spin: spin_us.and_then(|v| v.trim().parse().ok()).map_or(MountOptions::DEFAULT_SPIN, std::time::Duration::from_micros),
        }
    }
}

/// Lets FUSE connections ask for io_uring (`fuse.enable_uring`, root only):
/// the kernel offers it only to mounts made while it is on.
pub fn allow_fuse_io_uring() -> io::Result<()> {
    const PARAMETER: &str = "/sys/module/fuse/parameters/enable_uring";
    match std::fs::read_to_string(PARAMETER) {
        Ok(value) if value.trim() == "Y" => Ok(()),
        Ok(_) => std::fs::write(PARAMETER, "Y"),
        Err(e) => Err(e),
    }
}

/// Opens `<rootfs>/hoody/shares/<alias>` by descriptors from the rootfs down,
/// making what is missing. No symlink is followed and no mount crossed on the
/// way, and the share is mounted onto the descriptor, not a path: a container
/// cannot point its mount point outside its own root filesystem, before the
/// mount or while it is made.
fn ensure_mountpoint(rootfs: &Path, alias: &str) -> io::Result<Dir> {
    let mut dir = Dir::open_root(rootfs)?;
    let mut at = String::new();
    for part in ["hoody", "shares", alias] {
        at.push('/');
        at.push_str(part);
        let name = OsStr::new(part);
        dir = match dir.open_dir(name) {
            Ok(sub) => sub,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                match dir.mkdir(name, 0o755) {
                    Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(e),
                    _ => {}
                }
                dir.open_dir(name).map_err(|e| mountpoint_error(e, &at))?
            }
            Err(e) => return Err(mountpoint_error(e, &at)),
        };
    }
    Ok(dir)
}

/// Why a mount point cannot be used, naming the path as the container sees it.
fn mountpoint_error(e: io::Error, at: &str) -> io::Error {
    let why = match e.raw_os_error() {
        Some(libc::ELOOP) => "is a symlink",
        Some(libc::ENOTDIR) => "is not a directory",
        Some(libc::EXDEV) => "is already a mount point",
        _ => return e,
    };
    io::Error::new(io::ErrorKind::InvalidInput, format!("{at} {why}"))
}

/// Removes the empty mount point `<rootfs>/hoody/shares/<alias>` a share
/// left, by descriptors (a container may have re-pointed the path).
fn remove_mountpoint(rootfs: &Path, alias: &str) {
    if let Ok(shares) = Dir::open_root(rootfs).and_then(|root| root.open_dir(OsStr::new("hoody/shares"))) {
        let _ = shares.remove_empty_dir(OsStr::new(alias));
    }
}

/// Detaches every mount under `<rootfs>/hoody/shares` of the given root
/// filesystems: what a crashed daemon left behind. Run before anything else.
/// Each is reached by descriptors from its rootfs (see
/// [`crate::beneath::unmount_all_beneath`]): a path a container re-pointed
/// meanwhile never leads the daemon to unmount anything outside.
pub fn clean_stale_mounts(rootfs_dirs: &[PathBuf]) -> usize {
    let mut cleaned = 0;
    for rootfs in rootfs_dirs {
        match crate::beneath::unmount_all_beneath(rootfs, b"hoody/shares/") {
            Ok(n) => cleaned += n,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!(rootfs = %rootfs.display(), error = %e, "could not clear stale share mounts"),
        }
    }
    cleaned
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_polling_window_comes_from_the_setting_where_it_is_a_number() {
        let spin = |v| MountTransport::from_settings(None, v).spin;
        assert_eq!(spin(None), MountOptions::DEFAULT_SPIN);
        assert_eq!(spin(Some("0")), std::time::Duration::ZERO, "0 turns polling off");
        assert_eq!(spin(Some("500")), std::time::Duration::from_micros(500));
        assert_eq!(spin(Some(" 80\n")), std::time::Duration::from_micros(80));
        assert_eq!(spin(Some("fast")), MountOptions::DEFAULT_SPIN);
        assert_eq!(spin(Some("-5")), MountOptions::DEFAULT_SPIN);
        assert!(MountTransport::from_settings(Some("1"), None).io_uring);
        assert!(!MountTransport::from_settings(Some("yes"), None).io_uring);
    }
}
