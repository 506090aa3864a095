//! A consistent image of a running container: its cgroup's processes frozen
//! for as short a time as possible, and where the rootfs is a btrfs subvolume an
//! atomic read-only subvolume snapshot taken during the freeze, so the freeze
//! lasts only for that and the capture reads the frozen image at leisure.

use std::ffi::CString;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long to wait for the kernel to report a cgroup frozen.
const FREEZE_TIMEOUT: Duration = Duration::from_secs(5);

/// Prefix of the temporary subvolume snapshot, made beside the rootfs (in its
/// parent directory, on the same filesystem) so the rootfs itself is untouched.
pub const BTRFS_SNAPSHOT_PREFIX: &str = ".hoody-snapshot-of-";

/// A frozen cgroup; thawed on drop, whatever happens in between.
pub struct Frozen {
    cgroup: PathBuf,
    v2: bool,
    mark: PathBuf,
}

impl Frozen {
    /// Freezes every process of `cgroup` (v2 `cgroup.freeze` or v1 `freezer.state`)
    /// and waits until the kernel reports them frozen. `mark` is a file that
    /// names the cgroup from just before the freeze until just after the thaw:
    /// a daemon killed in between thaws it at its next start ([`thaw_marked`]).
    pub fn freeze(cgroup: &Path, mark: &Path) -> io::Result<Frozen> {
        let v2 = is_v2(cgroup);
        if !v2 && !cgroup.join("freezer.state").exists() {
            return Err(io::Error::new(io::ErrorKind::NotFound, format!("{}: no cgroup freezer", cgroup.display())));
        }
        if let Some(dir) = mark.parent() {
            std::fs::create_dir_all(dir)?;
        }
        crate::durable::write_atomic(mark, cgroup.as_os_str().as_bytes(), 0o600)?;
        let frozen = Frozen { cgroup: cgroup.to_path_buf(), v2, mark: mark.to_path_buf() };
        if v2 {
            std::fs::write(cgroup.join("cgroup.freeze"), "1")?;
        } else {
            std::fs::write(cgroup.join("freezer.state"), "FROZEN")?;
        }
        let started = Instant::now();
        while !frozen.is_frozen()? {
            if started.elapsed() > FREEZE_TIMEOUT {
                return Err(io::Error::new(io::ErrorKind::TimedOut, format!("{}: processes did not freeze within {FREEZE_TIMEOUT:?}", cgroup.display())));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(frozen)
    }

    fn is_frozen(&self) -> io::Result<bool> {
        if self.v2 {
            Ok(std::fs::read_to_string(self.cgroup.join("cgroup.events"))?.lines().any(|l| l.trim() == "frozen 1"))
        } else {
            Ok(std::fs::read_to_string(self.cgroup.join("freezer.state"))?.trim() == "FROZEN")
        }
    }
}

/// Whether `cgroup` has the v2 freezer (`cgroup.freeze`) rather than v1's.
fn is_v2(cgroup: &Path) -> bool {
    cgroup.join("cgroup.freeze").exists()
}

fn thaw(cgroup: &Path, v2: bool) -> io::Result<()> {
    if v2 {
        std::fs::write(cgroup.join("cgroup.freeze"), "0")
    } else {
        std::fs::write(cgroup.join("freezer.state"), "THAWED")
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        match thaw(&self.cgroup, self.v2) {
            // A mark left behind would only thaw the cgroup once more at the next start.
            Ok(()) => drop(std::fs::remove_file(&self.mark)),
            Err(e) => tracing::error!(cgroup = %self.cgroup.display(), error = %e, "could not thaw cgroup"),
        }
    }
}

/// Thaws the cgroups whose marks (in `dir`) a killed daemon left behind:
/// their containers were frozen for a snapshot that never finished.
pub fn thaw_marked(dir: &Path) -> io::Result<()> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Ok(()) };
    for entry in entries {
        let mark = entry?.path();
        let cgroup = PathBuf::from(std::ffi::OsStr::from_bytes(&std::fs::read(&mark)?));
        if cgroup.is_dir() {
            tracing::info!(cgroup = %cgroup.display(), "thawing a container frozen for a snapshot a restart cut off");
            thaw(&cgroup, is_v2(&cgroup))?;
        }
        std::fs::remove_file(&mark)?;
    }
    Ok(())
}

const BTRFS_SUPER_MAGIC: i64 = 0x9123_683E;
const BTRFS_FIRST_FREE_OBJECTID: u64 = 256;
// _IOW(0x94, 23, struct btrfs_ioctl_vol_args_v2) and _IOW(0x94, 15, struct btrfs_ioctl_vol_args), both 4096 bytes.
const BTRFS_IOC_SNAP_CREATE_V2: libc::c_ulong = 0x5000_9417;
const BTRFS_IOC_SNAP_DESTROY: libc::c_ulong = 0x5000_940f;
const BTRFS_SUBVOL_RDONLY: u64 = 1 << 1;

/// Whether `path` is the root of a btrfs subvolume.
pub fn is_btrfs_subvolume(path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(c) = CString::new(path.as_os_str().as_bytes()) else { return false };
    let mut sfs: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: valid path and out-pointer.
    if unsafe { libc::statfs(c.as_ptr(), &mut sfs) } != 0 {
        return false;
    }
    sfs.f_type as i64 == BTRFS_SUPER_MAGIC && std::fs::metadata(path).is_ok_and(|m| m.ino() == BTRFS_FIRST_FREE_OBJECTID)
}

#[repr(C)]
struct VolArgsV2 {
    fd: i64,
    transid: u64,
    flags: u64,
    unused: [u64; 4],
    name: [u8; 4040],
}

#[repr(C)]
struct VolArgs {
    fd: i64,
    name: [u8; 4088],
}

fn name_bytes<const N: usize>(name: &str) -> [u8; N] {
    let mut out = [0u8; N];
    out[..name.len()].copy_from_slice(name.as_bytes());
    out
}

/// A read-only snapshot of a subvolume, beside it; destroyed on drop.
pub struct SubvolumeSnapshot {
    parent: std::fs::File,
    name: String,
    pub path: PathBuf,
}

impl SubvolumeSnapshot {
    pub fn create(subvolume: &Path) -> io::Result<Self> {
        let source = std::fs::File::open(subvolume)?;
        let dir = subvolume.parent().ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "a subvolume at / cannot be snapshotted beside itself"))?;
        let parent = std::fs::File::open(dir)?;
        let base = subvolume.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let name = format!("{BTRFS_SNAPSHOT_PREFIX}{base}");
        if name.len() >= 4000 {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "subvolume name too long"));
        }
        let path = dir.join(&name);
        if path.exists() {
            destroy(&parent, &name)?; // left by a crash
        }
        let mut args = VolArgsV2 { fd: source.as_raw_fd() as i64, transid: 0, flags: BTRFS_SUBVOL_RDONLY, unused: [0; 4], name: name_bytes(&name) };
        // SAFETY: the ioctl reads a struct of the kernel's layout and size.
        if unsafe { libc::ioctl(parent.as_raw_fd(), BTRFS_IOC_SNAP_CREATE_V2, &mut args) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(SubvolumeSnapshot { parent, name, path })
    }
}

/// Deletes the temporary snapshot of `subvolume` a killed daemon left beside
/// it (read-only, it would also stop the container's directory from being
/// removed). True if there was one.
pub fn remove_leftover_snapshot(subvolume: &Path) -> io::Result<bool> {
    let (Some(dir), Some(base)) = (subvolume.parent(), subvolume.file_name()) else { return Ok(false) };
    let name = format!("{BTRFS_SNAPSHOT_PREFIX}{}", base.to_string_lossy());
    if !dir.join(&name).exists() {
        return Ok(false);
    }
    destroy(&std::fs::File::open(dir)?, &name)?;
    Ok(true)
}

fn destroy(parent: &std::fs::File, name: &str) -> io::Result<()> {
    let mut args = VolArgs { fd: 0, name: name_bytes(name) };
    // SAFETY: as above.
    if unsafe { libc::ioctl(parent.as_raw_fd(), BTRFS_IOC_SNAP_DESTROY, &mut args) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

impl Drop for SubvolumeSnapshot {
    fn drop(&mut self) {
        if let Err(e) = destroy(&self.parent, &self.name) {
            tracing::error!(path = %self.path.display(), error = %e, "could not delete temporary subvolume snapshot");
        }
    }
}
