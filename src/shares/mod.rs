//! Shares: a container's directory served to other containers through FUSE.
//!
//! This module holds the backends behind the `hoody_fuse` adapter. The local
//! backend serves a source directory of this node; it owns containment (nothing
//! outside the source is ever reached) and the readonly rule, whatever the
//! mount options of the target say.

mod containment;
mod dir_stream;
mod file_locks;
pub mod local_backend;
pub mod mounts;
pub mod remote;
mod mount_watch;
mod node_table;
mod privileges;
pub(crate) mod proc_fd;
mod source_tree;
mod source_watch;
pub(crate) mod syscalls;
mod walk_ahead;
pub(crate) mod xattrs;

pub use local_backend::LocalBackend;

/// What a share's targets may do with it. The catalog records it as the API
/// spells it (`"readonly"`, `"readwrite"`), so data dirs written when the
/// record held the API's type read unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ShareMode {
    /// Every write fails with `EROFS`, enforced by the backend.
    #[serde(rename = "readonly")]
    ReadOnly,
    #[serde(rename = "readwrite")]
    ReadWrite,
}

/// Where a share stands in one target, or summed up over all of them; the
/// API's `ShareStatus` says the same on the wire (mapped in `engine::share_api`),
/// and the catalog records the same word (`share-status/`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ShareStatus {
    /// Mounted at `/hoody/shares/<alias>` in the target.
    Active,
    /// Could not be mounted (the message says why); stays so until retried.
    Failed,
    /// Not mounted yet: an offer awaiting acceptance, a target not reached yet,
    /// or (for a whole share) no target at all.
    Pending,
    /// The target chose not to mount it.
    Unmounted,
    /// The source disabled it.
    Disabled,
    /// Its expiry has passed.
    Expired,
}

