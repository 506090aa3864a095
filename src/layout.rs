//! Where things live in a node's data dir, and the node's identity.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Paths inside `<data_dir>`.
#[derive(Debug, Clone)]
pub struct DataLayout {
    root: PathBuf,
}

impl DataLayout {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        DataLayout { root: root.into() }
    }
    pub fn root(&self) -> &Path {
        &self.root
    }
    pub fn catalog(&self) -> PathBuf {
        self.root.join("catalog.db")
    }
    pub fn state(&self) -> PathBuf {
        self.root.join("state")
    }
    pub fn node_file(&self) -> PathBuf {
        self.state().join("node.json")
    }
    pub fn run_dir(&self) -> PathBuf {
        self.root.join("run")
    }
    pub fn endpoints(&self) -> PathBuf {
        self.run_dir().join("endpoints.json")
    }
    pub fn lock_file(&self) -> PathBuf {
        self.run_dir().join("hoodyd.lock")
    }
    pub fn admin_token(&self) -> PathBuf {
        self.root.join("admin.token")
    }
    pub fn containers(&self) -> PathBuf {
        self.root.join("containers")
    }
    pub fn container_dir(&self, id: &str) -> PathBuf {
        self.containers().join(id)
    }
    pub fn store(&self) -> PathBuf {
        self.root.join("store")
    }
    pub fn tls(&self) -> PathBuf {
        self.root.join("tls")
    }

    /// Creates the directories of the layout.
    pub fn create_dirs(&self) -> std::io::Result<()> {
        for dir in [self.root.clone(), self.state(), self.run_dir(), self.containers(), self.store(), self.tls()] {
            std::fs::create_dir_all(&dir)?;
        }
        std::fs::set_permissions(&self.root, std::os::unix::fs::PermissionsExt::from_mode(PRIVATE_DIR))?;
        Ok(())
    }

    /// Makes the daemon's own files private: the data dir and its directories
    /// 0700, its files (packs, indexes, the catalog and its WAL and shm, stat
    /// caches, journals, keys) 0600, whatever mode an older version or an
    /// operator left them in. Never touches a container's files: `containers/`
    /// itself is made private but not entered (a rootfs, and a btrfs snapshot
    /// of one beside it, are the container's), nor symlinks, nor other
    /// filesystems mounted inside, nor any directory of `skip` (every
    /// container's rootfs, wherever it is). Returns how many modes it changed.
    pub fn make_private(&self, skip: &[PathBuf]) -> std::io::Result<usize> {
        use std::os::unix::fs::MetadataExt;
        let root = std::fs::symlink_metadata(&self.root)?;
        let mut changed = 0;
        let mut stack = vec![self.root.clone()];
        while let Some(dir) = stack.pop() {
            changed += usize::from(set_mode(&dir, PRIVATE_DIR)?);
            if dir == self.containers() {
                continue;
            }
            for entry in std::fs::read_dir(&dir)? {
                let entry = entry?;
                let path = entry.path();
                let Ok(st) = std::fs::symlink_metadata(&path) else { continue }; // gone meanwhile
                if st.dev() != root.dev() {
                    continue;
                }
                if st.is_dir() {
                    if !skip.contains(&path) {
                        stack.push(path);
                    }
                } else if st.is_file() {
                    changed += usize::from(set_mode(&path, PRIVATE_FILE)?);
                }
            }
        }
        Ok(changed)
    }
}

/// Mode of the data dir and of the daemon's directories in it.
pub const PRIVATE_DIR: u32 = 0o700;
/// Mode of the daemon's files in the data dir.
pub const PRIVATE_FILE: u32 = 0o600;

/// Sets the permission bits of `path` (not a symlink) to `mode`; true if they differed.
fn set_mode(path: &Path, mode: u32) -> std::io::Result<bool> {
    use std::os::unix::fs::PermissionsExt;
    let st = match std::fs::symlink_metadata(path) {
        Ok(st) => st,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    if st.file_type().is_symlink() || st.permissions().mode() & 0o7777 == mode {
        return Ok(false);
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    Ok(true)
}

/// This node: a stable id chosen at init and a human name.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct NodeIdentity {
    pub id: String,
    pub name: String,
}

/// The bound addresses, written once listening so scripts can use port 0.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Endpoints {
    pub http: String,
    pub quic: String,
}

/// `path` as a process in the container whose root filesystem is `rootfs`
/// sees it (`/hoody/shares/x`); a relative `path` is relative to `rootfs` (as
/// capture and restore name entries); `None` when `path` is elsewhere or
/// empty. For messages to clients, which must not name host paths.
pub fn in_container(rootfs: &Path, path: &Path) -> Option<String> {
    if path.as_os_str().is_empty() {
        return None;
    }
    let inside = if path.is_absolute() { path.strip_prefix(rootfs).ok()? } else { path };
    Some(format!("/{}", inside.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_in_a_container_is_shown_as_the_container_sees_it() {
        let rootfs = Path::new("/var/lib/hoody/containers/c1/rootfs");
        assert_eq!(in_container(rootfs, &rootfs.join("hoody/shares/x")).as_deref(), Some("/hoody/shares/x"));
        assert_eq!(in_container(rootfs, rootfs).as_deref(), Some("/"));
        assert_eq!(in_container(rootfs, Path::new("etc/hosts")).as_deref(), Some("/etc/hosts"));
        assert_eq!(in_container(rootfs, Path::new("")), None);
        assert_eq!(in_container(rootfs, Path::new("/var/lib/hoody/containers/c1/.hoody-snap-rootfs/etc")), None);
        assert_eq!(in_container(rootfs, Path::new("/var/lib/hoody/containers/c1/rootfs2/etc")), None);
    }

    #[test]
    fn make_private_fixes_the_daemons_files_and_leaves_containers_alone() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let layout = DataLayout::new(dir.path().join("data"));
        layout.create_dirs().unwrap();
        let mode = |p: &Path| std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777;
        let set = |p: &Path, m: u32| std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();
        std::fs::write(layout.catalog(), b"db").unwrap();
        std::fs::write(layout.root().join("catalog.db-wal"), b"wal").unwrap();
        std::fs::create_dir_all(layout.store().join("packs")).unwrap();
        std::fs::write(layout.store().join("packs/00000001.pack"), b"pack").unwrap();
        std::fs::create_dir_all(layout.state().join("statcache")).unwrap();
        std::fs::write(layout.state().join("statcache/c1.bin"), b"cache").unwrap();
        let rootfs = layout.container_dir("c1").join("rootfs");
        std::fs::create_dir_all(rootfs.join("etc")).unwrap();
        std::fs::write(rootfs.join("etc/hosts"), b"hosts").unwrap();
        std::fs::write(layout.container_dir("c1").join("beside"), b"x").unwrap();
        let adopted = dir.path().join("adopted");
        std::fs::create_dir(&adopted).unwrap();
        std::fs::write(adopted.join("file"), b"x").unwrap();
        std::os::unix::fs::symlink(&adopted, layout.state().join("link")).unwrap();
        for p in [layout.catalog(), layout.root().join("catalog.db-wal"), layout.store().join("packs/00000001.pack"), layout.state().join("statcache/c1.bin")] {
            set(&p, 0o644);
        }
        set(layout.root(), 0o755);
        set(&layout.store().join("packs"), 0o755);
        for p in [rootfs.join("etc/hosts"), layout.container_dir("c1").join("beside"), adopted.join("file")] {
            set(&p, 0o644);
        }
        set(&rootfs, 0o755);
        set(&adopted, 0o755);

        assert!(layout.make_private(&[]).unwrap() >= 6);
        assert_eq!(mode(layout.root()), 0o700);
        assert_eq!(mode(&layout.store().join("packs")), 0o700);
        assert_eq!(mode(&layout.containers()), 0o700);
        for p in [layout.catalog(), layout.root().join("catalog.db-wal"), layout.store().join("packs/00000001.pack"), layout.state().join("statcache/c1.bin")] {
            assert_eq!(mode(&p), 0o600, "{}", p.display());
        }
        for p in [rootfs.join("etc/hosts"), layout.container_dir("c1").join("beside"), adopted.join("file")] {
            assert_eq!(mode(&p), 0o644, "{} is the container's", p.display());
        }
        assert_eq!(mode(&rootfs), 0o755);
        assert_eq!(mode(&adopted), 0o755);
        assert_eq!(layout.make_private(&[]).unwrap(), 0, "nothing left to fix");
    }
}
