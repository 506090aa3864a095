//! The mounts of incoming shares on this node: which are up, mounting and
//! unmounting to match what the catalog wants, and clearing mounts a crashed
//! daemon left behind.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use hoody_fuse::{mount, MountHandle, MountOptions};

use super::{LocalBackend, ShareMode};

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
}

impl DesiredMount {
    pub fn key(&self) -> (String, String) {
        (self.share_id.clone(), self.target_id.clone())
    }
}

/// Where shares appear inside a container.
pub fn shares_dir(rootfs: &Path) -> PathBuf {
    rootfs.join("hoody/shares")
}

struct Mounted {
    handle: MountHandle,
    available: Arc<AtomicBool>,
}

#[derive(Default)]
pub struct MountManager {
    mounts: Mutex<HashMap<(String, String), Mounted>>,
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
    /// Unmounts what is not desired and mounts what is missing. An existing mount
    /// is kept as it is (mode and alias changes apply at the next mount). Returns
    /// the error of each desired mount that could not be made. Blocking.
    pub fn apply(&self, desired: &[DesiredMount], runtime: &tokio::runtime::Handle) -> HashMap<(String, String), String> {
        let wanted: std::collections::HashSet<_> = desired.iter().map(DesiredMount::key).collect();
        let stale: Vec<MountHandle> = {
            let mut mounts = self.mounts.lock().expect("mount table");
            let keys: Vec<_> = mounts.keys().filter(|k| !wanted.contains(*k)).cloned().collect();
            keys.into_iter().filter_map(|k| mounts.remove(&k)).map(|m| self.retire(m.handle)).collect()
        };
        for handle in stale {
            let at = handle.mountpoint().to_path_buf();
            if let Err(e) = handle.unmount() {
                tracing::warn!(mountpoint = %at.display(), error = %e, "unmount failed");
            }
            let _ = std::fs::remove_dir(&at);
        }
        let mut failures = HashMap::new();
        for d in desired {
            if let Some(m) = self.mounts.lock().expect("mount table").get(&d.key()) {
                m.available.store(d.source_available, Ordering::Relaxed);
                continue;
            }
            match mount_one(d, runtime) {
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
        let all: Vec<MountHandle> = self.mounts.lock().expect("mount table").drain().map(|(_, m)| self.retire(m.handle)).collect();
        for handle in all {
            let at = handle.mountpoint().to_path_buf();
            let _ = handle.unmount();
            let _ = std::fs::remove_dir(&at);
        }
    }
}

/// The error of a desired mount is a share's `status_message`, which clients
/// read: it names paths as the containers see them, and the full error (with
/// host paths) goes to the log.
fn mount_one(d: &DesiredMount, runtime: &tokio::runtime::Handle) -> Result<Mounted, String> {
    let failed = |public: String, e: &io::Error| {
        tracing::warn!(share = %d.share_id, target = %d.target_id, error = %e, "{public}");
        public
    };
    let backend = LocalBackend::open_in_container(&d.source_rootfs, &d.source_path, d.mode).map_err(|e| {
        failed(format!("source path {} is not available in the source container: {}", d.source_path.display(), hoody_api::io_reason(&e)), &e)
    })?;
    let mountpoint = ensure_mountpoint(&d.target_rootfs, &d.alias).map_err(|e| {
        // ensure_mountpoint's own messages name container paths only.
        let reason = if e.raw_os_error().is_some() { hoody_api::io_reason(&e) } else { e.to_string() };
        failed(format!("cannot make the mount point /hoody/shares/{}: {reason}", d.alias), &e)
    })?;
    let available = backend.availability();
    available.store(d.source_available, Ordering::Relaxed);
    let options = MountOptions { read_only: d.mode == ShareMode::ReadOnly, subtype: "hoody".into(), runtime: Some(runtime.clone()), ..Default::default() };
    let handle = mount(Arc::new(backend), &mountpoint, options).map_err(|e| failed(format!("mount failed: {}", hoody_api::io_reason(&e)), &e))?;
    Ok(Mounted { handle, available })
}

/// Creates `<rootfs>/hoody/shares/<alias>` refusing symlinks on the way, so a
/// container cannot point its mount point outside its own root filesystem.
fn ensure_mountpoint(rootfs: &Path, alias: &str) -> io::Result<PathBuf> {
    let inside = |path: &Path| crate::layout::in_container(rootfs, path).unwrap_or_default();
    let mut path = rootfs.to_path_buf();
    for part in ["hoody", "shares", alias] {
        path.push(part);
        match std::fs::symlink_metadata(&path) {
            Ok(st) if st.file_type().is_symlink() => return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("{} is a symlink", inside(&path)))),
            Ok(st) if !st.is_dir() => return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("{} is not a directory", inside(&path)))),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => std::fs::create_dir(&path)?,
            Err(e) => return Err(e),
        }
    }
    let real = path.canonicalize()?;
    if !real.starts_with(rootfs.canonicalize()?) {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "mount point escapes the container"));
    }
    Ok(real)
}

/// Lazily unmounts every FUSE mount under `<rootfs>/hoody/shares` of the given
/// root filesystems: what a crashed daemon left behind. Run before anything else.
pub fn clean_stale_mounts(rootfs_dirs: &[PathBuf]) -> usize {
    let Ok(table) = std::fs::read_to_string("/proc/self/mountinfo") else { return 0 };
    let prefixes: Vec<PathBuf> = rootfs_dirs.iter().map(|r| shares_dir(r)).collect();
    let mut cleaned = 0;
    for line in table.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let Some(sep) = fields.iter().position(|f| *f == "-") else { continue };
        let (Some(point), Some(fstype)) = (fields.get(4), fields.get(sep + 1)) else { continue };
        let point = PathBuf::from(point.replace("\\040", " "));
        if fstype.starts_with("fuse") && prefixes.iter().any(|p| point.starts_with(p)) {
            if let Ok(c) = std::ffi::CString::new(point.as_os_str().as_encoded_bytes()) {
                // SAFETY: a valid path; MNT_DETACH never blocks on a dead FUSE server.
                unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
                cleaned += 1;
                tracing::info!(mountpoint = %point.display(), "removed a stale share mount");
            }
        }
    }
    cleaned
}
