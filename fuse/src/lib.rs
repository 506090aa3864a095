//! The FUSE side of shares: a filesystem-backend trait, the one error type of
//! filesystem operations with its errno mapping, and (with the shares issue) the
//! adapter that turns kernel requests into backend calls.
//!
//! The trait is shaped for two implementations: a local backend serving a source
//! directory on this node, and a remote backend forwarding each operation over
//! QUIC to the source's node. Hence operations are asynchronous (many in flight),
//! identify files by backend-chosen handles that survive a server restart
//! ([`NodeId`] is stable, not a pointer), and the backend may push invalidations.
//! This crate knows nothing of QUIC or HTTP.

use std::ffi::OsString;
use std::time::SystemTime;

use async_trait::async_trait;

/// A file as the backend names it: stable across restarts of either side (for
/// the local backend, derived from the source file's device and inode).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(pub u64);

/// An open file or directory of the backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct HandleId(pub u64);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    File,
    Directory,
    Symlink,
    Fifo,
    Socket,
    CharDevice,
    BlockDevice,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attr {
    pub node: NodeId,
    pub kind: FileKind,
    /// Permission bits including setuid, setgid and sticky.
    pub perm: u16,
    pub nlink: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub blocks: u64,
    pub rdev: u32,
    pub atime: SystemTime,
    pub mtime: SystemTime,
    pub ctime: SystemTime,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    pub name: OsString,
    pub attr: Attr,
}

/// Changes of `setattr`; `None` leaves the field alone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SetAttr {
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub size: Option<u64>,
    pub atime: Option<SystemTime>,
    pub mtime: Option<SystemTime>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatFs {
    pub blocks: u64,
    pub bfree: u64,
    pub bavail: u64,
    pub files: u64,
    pub ffree: u64,
    pub bsize: u32,
    pub namelen: u32,
}

/// Every failure of a filesystem operation; [`FsError::to_errno`] is the only
/// place where a failure becomes an errno.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FsError {
    #[error("no such file or directory")]
    NotFound,
    #[error("file exists")]
    Exists,
    #[error("not a directory")]
    NotDirectory,
    #[error("is a directory")]
    IsDirectory,
    #[error("directory not empty")]
    NotEmpty,
    #[error("permission denied")]
    PermissionDenied,
    #[error("operation not permitted")]
    NotPermitted,
    #[error("read-only share")]
    ReadOnly,
    #[error("invalid argument")]
    InvalidArgument,
    #[error("name too long")]
    NameTooLong,
    #[error("no space left")]
    NoSpace,
    /// The share's source is unavailable (source stopped, server unreachable):
    /// answered at once rather than hanging.
    #[error("share source unavailable")]
    Unavailable,
    #[error("stale handle")]
    Stale,
    #[error("operation not supported")]
    Unsupported,
    #[error("no such attribute")]
    NoAttribute,
    #[error("result too large for the buffer")]
    Range,
    /// Any other errno reported by the host filesystem, passed through unchanged.
    #[error("os error {0}")]
    Os(i32),
}

impl FsError {
    pub fn to_errno(&self) -> i32 {
        match self {
            FsError::NotFound => libc::ENOENT,
            FsError::Exists => libc::EEXIST,
            FsError::NotDirectory => libc::ENOTDIR,
            FsError::IsDirectory => libc::EISDIR,
            FsError::NotEmpty => libc::ENOTEMPTY,
            FsError::PermissionDenied => libc::EACCES,
            FsError::NotPermitted => libc::EPERM,
            FsError::ReadOnly => libc::EROFS,
            FsError::InvalidArgument => libc::EINVAL,
            FsError::NameTooLong => libc::ENAMETOOLONG,
            FsError::NoSpace => libc::ENOSPC,
            FsError::Unavailable => libc::EIO,
            FsError::Stale => libc::ESTALE,
            FsError::Unsupported => libc::EOPNOTSUPP,
            FsError::NoAttribute => libc::ENODATA,
            FsError::Range => libc::ERANGE,
            FsError::Os(errno) => *errno,
        }
    }

    /// The inverse for errors coming from the host: well-known errnos get their variant.
    pub fn from_errno(errno: i32) -> Self {
        match errno {
            libc::ENOENT => FsError::NotFound,
            libc::EEXIST => FsError::Exists,
            libc::ENOTDIR => FsError::NotDirectory,
            libc::EISDIR => FsError::IsDirectory,
            libc::ENOTEMPTY => FsError::NotEmpty,
            libc::EACCES => FsError::PermissionDenied,
            libc::EPERM => FsError::NotPermitted,
            libc::EROFS => FsError::ReadOnly,
            libc::EINVAL => FsError::InvalidArgument,
            libc::ENAMETOOLONG => FsError::NameTooLong,
            libc::ENOSPC => FsError::NoSpace,
            libc::ESTALE => FsError::Stale,
            libc::EOPNOTSUPP => FsError::Unsupported,
            libc::ENODATA => FsError::NoAttribute,
            libc::ERANGE => FsError::Range,
            other => FsError::Os(other),
        }
    }
}

impl From<std::io::Error> for FsError {
    fn from(e: std::io::Error) -> Self {
        FsError::from_errno(e.raw_os_error().unwrap_or(libc::EIO))
    }
}

pub type FsResult<T> = Result<T, FsError>;

/// What a share serves. The FUSE adapter owns inode numbering and kernel caches;
/// the backend owns the files and the rules (containment, readonly, availability).
#[async_trait]
pub trait FsBackend: Send + Sync + 'static {
    /// The root of the share.
    async fn root(&self) -> FsResult<Attr>;
    async fn lookup(&self, parent: NodeId, name: &std::ffi::OsStr) -> FsResult<Attr>;
    async fn getattr(&self, node: NodeId) -> FsResult<Attr>;
    async fn setattr(&self, node: NodeId, handle: Option<HandleId>, changes: SetAttr) -> FsResult<Attr>;
    async fn readdirplus(&self, dir: NodeId, offset: u64) -> FsResult<Vec<DirEntry>>;
    async fn open(&self, node: NodeId, flags: i32) -> FsResult<HandleId>;
    async fn create(&self, parent: NodeId, name: &std::ffi::OsStr, mode: u32, flags: i32) -> FsResult<(Attr, HandleId)>;
    async fn read(&self, handle: HandleId, offset: u64, size: u32) -> FsResult<Vec<u8>>;
    async fn write(&self, handle: HandleId, offset: u64, data: &[u8]) -> FsResult<u32>;
    async fn release(&self, handle: HandleId) -> FsResult<()>;
    async fn fsync(&self, handle: HandleId, datasync: bool) -> FsResult<()>;
    async fn mkdir(&self, parent: NodeId, name: &std::ffi::OsStr, mode: u32) -> FsResult<Attr>;
    async fn unlink(&self, parent: NodeId, name: &std::ffi::OsStr) -> FsResult<()>;
    async fn rmdir(&self, parent: NodeId, name: &std::ffi::OsStr) -> FsResult<()>;
    async fn rename(&self, parent: NodeId, name: &std::ffi::OsStr, new_parent: NodeId, new_name: &std::ffi::OsStr, flags: u32) -> FsResult<()>;
    async fn link(&self, node: NodeId, new_parent: NodeId, new_name: &std::ffi::OsStr) -> FsResult<Attr>;
    async fn symlink(&self, parent: NodeId, name: &std::ffi::OsStr, target: &std::path::Path) -> FsResult<Attr>;
    async fn readlink(&self, node: NodeId) -> FsResult<std::path::PathBuf>;
    async fn statfs(&self) -> FsResult<StatFs>;
    async fn getxattr(&self, node: NodeId, name: &std::ffi::OsStr) -> FsResult<Vec<u8>>;
    async fn setxattr(&self, node: NodeId, name: &std::ffi::OsStr, value: &[u8], flags: i32) -> FsResult<()>;
    async fn listxattr(&self, node: NodeId) -> FsResult<Vec<OsString>>;
    async fn removexattr(&self, node: NodeId, name: &std::ffi::OsStr) -> FsResult<()>;
    async fn fallocate(&self, handle: HandleId, offset: u64, length: u64, mode: i32) -> FsResult<()>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_mapping_round_trips() {
        for errno in [libc::ENOENT, libc::EEXIST, libc::ENOTDIR, libc::EISDIR, libc::ENOTEMPTY, libc::EACCES, libc::EPERM, libc::EROFS,
            libc::EINVAL, libc::ENAMETOOLONG, libc::ENOSPC, libc::ESTALE, libc::EOPNOTSUPP, libc::ENODATA, libc::ERANGE, libc::EXDEV] {
            assert_eq!(FsError::from_errno(errno).to_errno(), errno);
        }
        assert_eq!(FsError::Unavailable.to_errno(), libc::EIO);
        assert_eq!(FsError::from(std::io::Error::from_raw_os_error(libc::ELOOP)), FsError::Os(libc::ELOOP));
    }
}
