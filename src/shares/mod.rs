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

/// What a share's targets may do with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShareMode {
    /// Every write fails with `EROFS`, enforced by the backend.
    ReadOnly,
    ReadWrite,
}
