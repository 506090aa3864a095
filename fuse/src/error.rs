//! The one error type of filesystem operations and its errno mapping:
//! [`FsError::to_errno`] is the only place a failure becomes an errno.

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
    /// The kernel named a node or handle this mount no longer knows.
    #[error("stale file handle")]
    Stale,
    #[error("bad file handle")]
    BadHandle,
    #[error("operation not supported")]
    Unsupported,
    #[error("no such attribute")]
    NoAttribute,
    #[error("result too large for the buffer")]
    Range,
    /// A lock is held by someone else (`F_SETLK`, `LOCK_NB`).
    #[error("lock held by another")]
    WouldBlock,
    /// The caller was interrupted by a signal while it waited.
    #[error("interrupted")]
    Interrupted,
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
            FsError::BadHandle => libc::EBADF,
            FsError::Unsupported => libc::EOPNOTSUPP,
            FsError::NoAttribute => libc::ENODATA,
            FsError::Range => libc::ERANGE,
            FsError::WouldBlock => libc::EAGAIN,
            FsError::Interrupted => libc::EINTR,
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
            libc::EBADF => FsError::BadHandle,
            libc::EOPNOTSUPP => FsError::Unsupported,
            libc::ENODATA => FsError::NoAttribute,
            libc::ERANGE => FsError::Range,
            libc::EAGAIN => FsError::WouldBlock,
            libc::EINTR => FsError::Interrupted,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_mapping_round_trips() {
        for errno in [libc::ENOENT, libc::EEXIST, libc::ENOTDIR, libc::EISDIR, libc::ENOTEMPTY, libc::EACCES, libc::EPERM, libc::EROFS,
            libc::EINVAL, libc::ENAMETOOLONG, libc::ENOSPC, libc::ESTALE, libc::EOPNOTSUPP, libc::ENODATA, libc::ERANGE,
            libc::EBADF, libc::EXDEV, libc::EAGAIN, libc::EINTR] {
            assert_eq!(FsError::from_errno(errno).to_errno(), errno);
        }
        assert_eq!(FsError::Unavailable.to_errno(), libc::EIO);
        assert_eq!(FsError::from(std::io::Error::from_raw_os_error(libc::ELOOP)), FsError::Os(libc::ELOOP));
    }
}
