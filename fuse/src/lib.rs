//! The FUSE side of shares: a filesystem-backend trait, the one error type of
//! filesystem operations with its errno mapping, and the adapter that turns
//! kernel requests into backend calls ([`mount()`]).
//!
//! The trait is shaped for two implementations: a local backend serving a source
//! directory on this node, and a remote backend forwarding each operation over
//! QUIC to the source's node. Hence operations are asynchronous (many in flight),
//! identify files by backend-chosen handles that survive a server restart
//! ([`NodeId`] is stable, not a pointer), and the backend may push invalidations
//! ([`FsBackend::attach_invalidator`]). This crate knows nothing of QUIC or HTTP.

mod adapter;
mod backend;
mod device;
mod error;
mod id_map;
mod inode_table;
mod invalidation;
mod lock_waits;
mod mount;
mod mount_state;
mod open_handles;
mod reader_spin;
mod reply;
mod request;
#[cfg(feature = "io-uring")]
mod ring_pool;
mod session;
mod unmount;
mod wire;

pub use backend::{
    Attr, Caller, DirEntry, FileKind, FileLock, FsBackend, HandleId, LockKind, LockOwner, NodeId, Opened, SetAttr, SetTime, StatFs,
    LOCK_TO_END,
};
pub use error::{FsError, FsResult};
pub use id_map::{IdHasher, IdMap};
pub use invalidation::{CacheInvalidator, InvalidationSink};
pub use mount::{mount, mount_onto, MountHandle, MountOptions, MountStats};

