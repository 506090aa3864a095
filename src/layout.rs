//! Where things live in a node's data dir, and the node's identity.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
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
        std::fs::set_permissions(&self.root, std::os::unix::fs::PermissionsExt::from_mode(0o711))?;
        Ok(())
    }
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

/// Writes `bytes` to `path` atomically (temp file, fsync, rename) with `mode`.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(mode).open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    sync_parent(path)
}

/// Makes the entry of `path` in its directory durable (a new or renamed
/// file's name: the file's own fsync does not keep it).
pub fn sync_parent(path: &Path) -> std::io::Result<()> {
    match path.parent() {
        Some(dir) => std::fs::File::open(dir)?.sync_all(),
        None => Ok(()),
    }
}
