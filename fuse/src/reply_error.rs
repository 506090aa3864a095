//! The replies of the adapter that can carry an errno, so that one helper
//! ([`crate::mount_state::Shared::fail`]) answers every failure.

use fuser::{
    Errno, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyLseek, ReplyOpen,
    ReplyStatfs, ReplyWrite, ReplyXattr,
};

/// Replies that can carry an errno.
pub(crate) trait ReplyError {
    fn error(self, errno: Errno);
}

macro_rules! reply_error {
    ($($reply:ty),* $(,)?) => {
        $(impl ReplyError for $reply {
            fn error(self, errno: Errno) {
                <$reply>::error(self, errno)
            }
        })*
    };
}

reply_error!(
    ReplyAttr,
    ReplyCreate,
    ReplyData,
    ReplyDirectory,
    ReplyDirectoryPlus,
    ReplyEmpty,
    ReplyEntry,
    ReplyLseek,
    ReplyOpen,
    ReplyStatfs,
    ReplyWrite,
    ReplyXattr,
);
