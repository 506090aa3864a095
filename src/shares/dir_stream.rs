//! An open directory read in pieces, each resuming at the cookie the kernel
//! last consumed (the `d_off` of `getdents64`), as FUSE readdir asks for it.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use parking_lot::Mutex;

use super::syscalls::{getdents, reopen, seek};

const BATCH_BYTES: usize = 16 * 1024;

pub(super) struct RawEntry {
    pub(super) name: CString,
    /// Cookie resuming after this entry.
    pub(super) offset: u64,
}

pub(super) struct DirStream {
    fd: OwnedFd,
    /// Seek and read must not interleave between two readers of one stream.
    cursor: Mutex<()>,
}

impl DirStream {
    pub(super) fn open(dir: BorrowedFd<'_>) -> io::Result<Self> {
        let fd = reopen(dir, libc::O_RDONLY | libc::O_DIRECTORY)?;
        Ok(DirStream { fd, cursor: Mutex::new(()) })
    }

    pub(super) fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Up to `max` entries from cookie `offset` (0: the start).
    pub(super) fn read_from(&self, offset: u64, max: usize) -> io::Result<Vec<RawEntry>> {
        let _cursor = self.cursor.lock();
        seek(self.fd.as_fd(), offset, libc::SEEK_SET)?;
        let mut entries = Vec::new();
        let mut buf = vec![0u8; BATCH_BYTES];
        'batches: while entries.len() < max {
            let filled = getdents(self.fd.as_fd(), &mut buf)?;
            if filled == 0 {
                break;
            }
            let mut at = 0;
            while at < filled {
                let record = &buf[at..filled];
                // linux_dirent64: d_ino u64, d_off i64, d_reclen u16, d_type u8, d_name.
                let cookie = u64::from_ne_bytes(record[8..16].try_into().expect("8 bytes"));
                let length = usize::from(u16::from_ne_bytes(record[16..18].try_into().expect("2 bytes")));
                let name_bytes = &record[19..length];
                let name_len = name_bytes.iter().position(|&b| b == 0).unwrap_or(name_bytes.len());
                let name = CString::new(&name_bytes[..name_len]).expect("no NUL before the terminator");
                entries.push(RawEntry { name, offset: cookie });
                at += length;
                if entries.len() == max {
                    break 'batches;
                }
            }
        }
        Ok(entries)
    }
}
