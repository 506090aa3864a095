//! The `/dev/fuse` descriptor of one mount: writing replies and
//! notifications to it, registering passthrough backing files, ending the
//! connection. Reading requests is [`crate::session`]'s.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, IoSlice, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::sync::{Arc, Weak};

use crate::wire::{self, Out};

const FUSE_DEV_IOC_BACKING_OPEN: libc::c_ulong = 0x4010_e501;
const FUSE_DEV_IOC_BACKING_CLOSE: libc::c_ulong = 0x4004_e502;
const NOTIFY_INVAL_INODE: i32 = 2;
const NOTIFY_INVAL_ENTRY: i32 = 3;

/// The `/dev/fuse` descriptor of one mount.
pub(crate) struct Device {
    file: File,
    /// The connection's fusectl id, to abort it.
    connection: Option<u32>,
}

impl Device {
    pub(crate) fn new(file: File, connection: Option<u32>) -> Device {
        Device { file, connection }
    }

    /// The device, to read requests from.
    pub(crate) fn file(&self) -> &File {
        &self.file
    }

    fn write_parts(&self, parts: &[IoSlice<'_>]) -> io::Result<()> {
        let total: usize = parts.iter().map(|part| part.len()).sum();
        let written = (&self.file).write_vectored(parts)?;
        if written != total {
            return Err(io::Error::other("short write to /dev/fuse"));
        }
        Ok(())
    }

    pub(crate) fn reply(&self, unique: u64, result: Result<&[u8], i32>) -> io::Result<()> {
        match result {
            Ok(body) => self.write_parts(&[IoSlice::new(&wire::out_header(unique, 0, body.len())), IoSlice::new(body)]),
            Err(errno) => self.write_parts(&[IoSlice::new(&wire::out_header(unique, errno, 0))]),
        }
    }

    fn notify(&self, code: i32, body: &[&[u8]]) -> io::Result<()> {
        let len: usize = body.iter().map(|p| p.len()).sum();
        // Notifications carry their code where replies carry an error, and no unique.
        let header = wire::out_header(0, -code, len);
        let mut parts = vec![IoSlice::new(&header)];
        parts.extend(body.iter().map(|part| IoSlice::new(part)));
        self.write_parts(&parts)
    }

    pub(crate) fn raw_fd(&self) -> i32 {
        self.file.as_raw_fd()
    }

    /// The connection's fusectl id (`/sys/fs/fuse/connections/<id>`).
    pub(crate) fn connection(&self) -> Option<u32> {
        self.connection
    }

    /// Ends the connection: every request waiting and to come fails.
    #[cfg_attr(not(feature = "io-uring"), allow(dead_code))]
    pub(crate) fn abort(&self) {
        if let Some(err) = self.connection.map(crate::unmount::abort).and_then(Result::err) {
            tracing::error!(error = %err, "FUSE connection not aborted");
        }
    }
}

/// A file registered with the kernel for passthrough; unregistered when dropped.
#[derive(Debug)]
pub(crate) struct BackingId {
    device: Weak<Device>,
    pub(crate) id: u32,
}

impl Drop for BackingId {
    fn drop(&mut self) {
        if let Some(device) = self.device.upgrade() {
            let id = self.id;
            // SAFETY: valid descriptor; the ioctl reads one u32.
            unsafe { libc::ioctl(device.raw_fd(), FUSE_DEV_IOC_BACKING_CLOSE, &id) };
        }
    }
}

/// Registers `fd` as a passthrough backing file of the mount of `device`.
pub(crate) fn open_backing(device: &Arc<Device>, fd: BorrowedFd<'_>) -> io::Result<BackingId> {
    #[repr(C)]
    struct BackingMap {
        fd: i32,
        flags: u32,
        padding: u64,
    }
    let map = BackingMap { fd: fd.as_raw_fd(), flags: 0, padding: 0 };
    // SAFETY: valid descriptor; the ioctl reads a `fuse_backing_map`.
    let id = unsafe { libc::ioctl(device.raw_fd(), FUSE_DEV_IOC_BACKING_OPEN, &map) };
    if id < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(BackingId { device: Arc::downgrade(device), id: id as u32 })
}

/// Drops kernel caches: `FUSE_NOTIFY_INVAL_*` written to the device.
#[derive(Clone)]
pub(crate) struct Notifier {
    device: Weak<Device>,
}

impl Notifier {
    pub(crate) fn new(device: &Arc<Device>) -> Notifier {
        Notifier { device: Arc::downgrade(device) }
    }

    fn device(&self) -> io::Result<Arc<Device>> {
        self.device.upgrade().ok_or_else(|| io::Error::from_raw_os_error(libc::ENOTCONN))
    }

    /// Attributes of `ino` and its cached data in `offset..offset+len` (a
    /// negative offset: attributes only; `len` 0: to the end).
    pub(crate) fn inval_inode(&self, ino: u64, offset: i64, len: i64) -> io::Result<()> {
        let mut body = Out::default();
        body.u64(ino).u64(offset as u64).u64(len as u64);
        self.device()?.notify(NOTIFY_INVAL_INODE, &[&body.bytes])
    }

    pub(crate) fn inval_entry(&self, parent: u64, name: &OsStr) -> io::Result<()> {
        let mut body = Out::default();
        body.u64(parent).u32(name.len() as u32).u32(0);
        self.device()?.notify(NOTIFY_INVAL_ENTRY, &[&body.bytes, name.as_bytes(), b"\0"])
    }
}

impl AsFd for Device {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}
