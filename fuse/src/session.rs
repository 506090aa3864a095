//! One mount's connection to the kernel: the `/dev/fuse` descriptor, the
//! mount itself, `FUSE_INIT`, and the thread that reads requests from the
//! device (polling it briefly within a burst: [`crate::reader_spin`]). Asked
//! to, and where the kernel and the module allow it (`fuse.enable_uring`), the
//! connection then moves to io_uring queues served by the daemon-wide ring
//! threads of [`crate::ring_pool`]; the device keeps carrying forgets,
//! interrupts and our notifications.

use std::ffi::CString;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::device::{Device, Notifier};
use crate::reader_spin::Spin;
use crate::request::{device_replier, dispatch, Handler};
#[cfg(feature = "io-uring")]
use crate::ring_pool;
use crate::wire::{self, decode_header, decode_op, init, opcode, Header, Op, Out, IN_HEADER_LEN};

/// Largest request: a write of `max_write` bytes plus headers.
const REQUEST_OVERHEAD: usize = 4096;
/// The kernel refuses reads of `/dev/fuse` into a smaller buffer than this (plus headers).
const MIN_REQUEST_BUFFER: usize = 8192;

/// The kernel's page size, the unit of `max_pages`.
pub(crate) fn page_size() -> usize {
    // SAFETY: plain query.
    (unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).max(4096) as usize
}

/// `max_pages` of `FUSE_INIT` for writes of up to `max_write` bytes.
fn max_pages(max_write: u32) -> u16 {
    (max_write as usize).div_ceil(page_size()).min(usize::from(u16::MAX)) as u16
}

/// Mount options beyond what every share mount has.
pub(crate) struct MountSpec<'a> {
    pub(crate) fs_name: &'a str,
    pub(crate) subtype: &'a str,
    pub(crate) read_only: bool,
    pub(crate) allow_other: bool,
    pub(crate) default_permissions: bool,
    pub(crate) max_read: u32,
    pub(crate) transport: Transport,
}

/// How requests reach the daemon.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Transport {
    /// Ask for FUSE-over-io_uring (served by [`crate::ring_pool`]).
    pub(crate) io_uring: bool,
    /// How long the `/dev/fuse` reader polls after an answer in a burst ([`crate::reader_spin`]).
    pub(crate) spin: Duration,
}

/// A mounted connection: the device and the thread that reads it.
pub(crate) struct Session {
    pub(crate) device: Arc<Device>,
    pub(crate) reader: JoinHandle<()>,
    /// The mount itself (from `fsmount`): it is unmounted through this
    /// descriptor, never through a path a container could re-point.
    pub(crate) mount: Option<OwnedFd>,
}

impl Session {
    pub(crate) fn notifier(&self) -> Notifier {
        Notifier::new(&self.device)
    }
}

// The new mount API (Linux 5.2): constants libc does not carry.
const FSOPEN_CLOEXEC: libc::c_uint = 0x1;
const FSCONFIG_SET_FLAG: libc::c_uint = 0;
const FSCONFIG_SET_STRING: libc::c_uint = 1;
const FSCONFIG_CMD_CREATE: libc::c_uint = 6;
const FSMOUNT_CLOEXEC: libc::c_uint = 0x1;
const MOUNT_ATTR_RDONLY: libc::c_uint = 0x1;
const MOUNT_ATTR_NOSUID: libc::c_uint = 0x2;
const MOUNT_ATTR_NODEV: libc::c_uint = 0x4;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;
const MOVE_MOUNT_T_EMPTY_PATH: libc::c_uint = 0x40;

fn owned_fd(rc: libc::c_long) -> io::Result<OwnedFd> {
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a descriptor the kernel just returned, owned by no one else.
    Ok(unsafe { OwnedFd::from_raw_fd(rc as i32) })
}

/// One `fsconfig` setting of a file system context; `value` `None` sets a flag.
fn fs_config(context: &OwnedFd, key: &str, value: Option<&str>) -> io::Result<()> {
    let invalid = |_| io::Error::from_raw_os_error(libc::EINVAL);
    let key_c = CString::new(key).map_err(invalid)?;
    let value_c = value.map(CString::new).transpose().map_err(invalid)?;
    let (cmd, value_ptr) = match &value_c {
        Some(v) => (FSCONFIG_SET_STRING, v.as_ptr()),
        None => (FSCONFIG_SET_FLAG, std::ptr::null()),
    };
    // SAFETY: valid descriptor and NUL-terminated strings (or null for a flag).
    let rc = unsafe { libc::syscall(libc::SYS_fsconfig, context.as_raw_fd(), cmd, key_c.as_ptr(), value_ptr, 0) };
    if rc < 0 {
        let err = io::Error::last_os_error();
        return Err(io::Error::new(err.kind(), format!("fsconfig {key}: {err}")));
    }
    Ok(())
}

/// Mounts a FUSE connection onto the directory `target` (a descriptor: no
/// path is resolved, so nothing can re-point where the mount lands) and
/// starts reading it for `handler`. The new mount API, as root: `fsopen`,
/// `fsconfig`, `fsmount`, then `move_mount` onto `target`.
pub(crate) fn mount(target: BorrowedFd<'_>, spec: &MountSpec<'_>, handler: Arc<dyn Handler>) -> io::Result<Session> {
    // Decided before the mount: the kernel offers io_uring in the `FUSE_INIT`
    // it queues then, only if the module allows it at that moment.
    let transport = Transport { io_uring: spec.transport.io_uring && io_uring_available(), ..spec.transport };
    let file = File::options().read(true).write(true).open("/dev/fuse")?;
    // SAFETY: plain queries.
    let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
    // SAFETY: a constant NUL-terminated name.
    let context = owned_fd(unsafe { libc::syscall(libc::SYS_fsopen, c"fuse".as_ptr(), FSOPEN_CLOEXEC) })?;
    fs_config(&context, "source", Some(spec.fs_name))?;
    fs_config(&context, "subtype", Some(spec.subtype))?;
    fs_config(&context, "fd", Some(&file.as_raw_fd().to_string()))?;
    fs_config(&context, "rootmode", Some("40000"))?;
    fs_config(&context, "user_id", Some(&uid.to_string()))?;
    fs_config(&context, "group_id", Some(&gid.to_string()))?;
    fs_config(&context, "max_read", Some(&spec.max_read.to_string()))?;
    if spec.allow_other {
        fs_config(&context, "allow_other", None)?;
    }
    if spec.default_permissions {
        fs_config(&context, "default_permissions", None)?;
    }
    if spec.read_only {
        fs_config(&context, "ro", None)?;
    }
    // SAFETY: valid descriptor; no key or value.
    if unsafe { libc::syscall(libc::SYS_fsconfig, context.as_raw_fd(), FSCONFIG_CMD_CREATE, std::ptr::null::<libc::c_char>(), std::ptr::null::<libc::c_char>(), 0) } < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut attrs = MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV;
    if spec.read_only {
        attrs |= MOUNT_ATTR_RDONLY;
    }
    // SAFETY: valid descriptor.
    let mount = owned_fd(unsafe { libc::syscall(libc::SYS_fsmount, context.as_raw_fd(), FSMOUNT_CLOEXEC, attrs) })?;
    drop(context);
    // SAFETY: valid descriptors and empty paths.
    let moved = unsafe {
        libc::syscall(libc::SYS_move_mount, mount.as_raw_fd(), c"".as_ptr(), target.as_raw_fd(), c"".as_ptr(), MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH)
    };
    if moved < 0 {
        return Err(io::Error::last_os_error());
    }
    let device = Arc::new(Device::new(file, crate::unmount::connection_of(mount.as_fd())));
    let reader_device = device.clone();
    let buffer_len = (spec.max_read.max(handler.init_config().max_write) as usize).max(MIN_REQUEST_BUFFER) + REQUEST_OVERHEAD;
    let reader = std::thread::Builder::new().name("share-fuse".into()).spawn(move || read_requests(&reader_device, handler, buffer_len, transport));
    match reader {
        Ok(reader) => Ok(Session { device, reader, mount: Some(mount) }),
        Err(err) => {
            // Nothing would read the mount: every access would wait forever.
            let _ = crate::unmount::detach(mount.as_fd());
            Err(err)
        }
    }
}

/// Serves the device until the connection ends (unmounted or aborted).
fn read_requests(device: &Arc<Device>, handler: Arc<dyn Handler>, buffer_len: usize, transport: Transport) {
    serve(device, &handler, buffer_len, transport);
    handler.ended();
}

fn serve(device: &Arc<Device>, handler: &Arc<dyn Handler>, buffer_len: usize, transport: Transport) {
    let mut buf = vec![0u8; buffer_len];
    let mut spin = Spin::new(transport.spin);
    if spin.enabled() && set_nonblocking(device.file()).is_err() {
        spin = Spin::new(Duration::ZERO);
    }
    // Whether the handler did idle work since it was last told the burst ended.
    let mut idle_work = false;
    loop {
        let len = match next_request(device.file(), &mut buf, &spin, &**handler, &mut idle_work) {
            Ok(len) => len,
            // Interrupted, or the request vanished before it was read.
            Err(err) if matches!(err.raw_os_error(), Some(libc::EINTR) | Some(libc::EAGAIN) | Some(libc::ENOENT)) => continue,
            // ENODEV: unmounted; anything else: nothing more will come.
            Err(_) => return,
        };
        spin.arrived(Instant::now());
        let request = &buf[..len];
        let Ok(header) = decode_header(request) else { continue };
        let body = &request[IN_HEADER_LEN.min(len)..];
        if header.opcode == opcode::INIT {
            initialize(device, handler, &header, body, transport.io_uring);
            continue;
        }
        let fixed = wire::fixed_args_len(header.opcode).min(body.len());
        let (fixed, rest) = body.split_at(fixed);
        dispatch(handler, &header, decode_op(header.opcode, fixed, rest), device_replier(header.unique, device));
        spin.answered(Instant::now());
        if header.opcode == opcode::DESTROY {
            return;
        }
    }
}

/// Reads the next request: polling the (non-blocking) device while `spin`
/// allows, giving the handler's idle work a step between polls (`idle_work`
/// notes that it did some), then waiting for it.
fn next_request(device: &File, buf: &mut [u8], spin: &Spin, handler: &dyn Handler, idle_work: &mut bool) -> io::Result<usize> {
    if !spin.enabled() {
        return (&*device).read(buf);
    }
    let until = spin.poll_until();
    loop {
        match (&*device).read(buf) {
            Err(err) if err.raw_os_error() == Some(libc::EAGAIN) && until.as_ref().is_some_and(|(until, _)| Instant::now() < *until) => {
                if handler.idle_step() {
                    *idle_work = true;
                } else {
                    std::hint::spin_loop()
                }
            }
            Err(err) if err.raw_os_error() == Some(libc::EAGAIN) => break,
            other => return other,
        }
    }
    drop(until);
    let mut ready = libc::pollfd { fd: device.as_raw_fd(), events: libc::POLLIN, revents: 0 };
    // Where the handler did idle work, a short wait first: a walker digesting
    // a large directory comes back within it, and finds what was read ahead
    // for it still there. Otherwise the burst ends at once: no timer wake-up.
    // SAFETY: one valid pollfd. A hang-up or an error of the device shows in the read that follows.
    let rc = if *idle_work { unsafe { libc::poll(&mut ready, 1, IDLE_AFTER_MS) } } else { 0 };
    if rc == 0 {
        handler.idle_end();
        *idle_work = false;
        // SAFETY: as above.
        if unsafe { libc::poll(&mut ready, 1, -1) } < 0 {
            return Err(io::Error::last_os_error());
        }
    } else if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    (&*device).read(buf)
}

/// How long a reader waits for a request before it tells the handler the burst ended.
const IDLE_AFTER_MS: libc::c_int = 5;

fn set_nonblocking(file: &File) -> io::Result<()> {
    // SAFETY: plain fcntl calls on a valid descriptor.
    unsafe {
        let flags = libc::fcntl(file.as_raw_fd(), libc::F_GETFL);
        if flags < 0 || libc::fcntl(file.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

fn initialize(device: &Arc<Device>, handler: &Arc<dyn Handler>, header: &Header, body: &[u8], io_uring: bool) {
    let replier = device_replier(header.unique, device);
    let Ok(Op::Init { major, minor, max_readahead, flags: offered }) = decode_op(opcode::INIT, body, &[]) else {
        return replier.send(Err(libc::EINVAL));
    };
    if major != wire::KERNEL_VERSION || minor < wire::OLDEST_MINOR {
        tracing::warn!(major, minor, "FUSE protocol of this kernel not supported");
        return replier.send(Err(libc::EPROTO));
    }
    let config = handler.init_config();
    let mut wanted = config.flags | init::INIT_EXT | init::MAX_PAGES;
    if io_uring {
        // Locks stay with the kernel: see `FsBackend::takes_locks`.
        wanted = (wanted | init::OVER_IO_URING) & !(init::POSIX_LOCKS | init::FLOCK_LOCKS);
    }
    let granted = wanted & offered;
    let max_pages = max_pages(config.max_write);
    let mut out = Out::default();
    out.u32(wire::KERNEL_VERSION).u32(minor.min(wire::KERNEL_MINOR)).u32(config.max_readahead.min(max_readahead)).u32(granted as u32);
    out.u16(config.max_background).u16(config.congestion_threshold).u32(config.max_write).u32(1);
    out.u16(max_pages).u16(0).u32((granted >> 32) as u32).u32(if granted & init::PASSTHROUGH != 0 { config.max_stack_depth } else { 0 });
    out.bytes.resize(64, 0);
    handler.initialized(granted);
    replier.send(Ok(&out.bytes));
    #[cfg(feature = "io-uring")]
    if granted & init::OVER_IO_URING != 0 {
        // The kernel refuses an entry whose payload could not hold its largest request.
        let payload = (config.max_write as usize).max(usize::from(max_pages) * page_size()).max(MIN_REQUEST_BUFFER);
        if let Err(err) = ring_pool::attach(device.clone(), handler.clone(), payload) {
            // Granted io_uring, the kernel holds every request until each CPU's
            // queue is registered: a connection that cannot have them is ended.
            tracing::error!(error = %err, "io_uring queues not registered; the mount's connection is aborted");
            device.abort();
        }
    }
}

/// Whether a mount about to be made can ask for io_uring ([`crate::ring_pool`]).
#[cfg(feature = "io-uring")]
fn io_uring_available() -> bool {
    ring_pool::available()
}

/// Built without the `io-uring` feature: requests always come over `/dev/fuse`.
#[cfg(not(feature = "io-uring"))]
fn io_uring_available() -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_pages_covers_the_largest_write() {
        let page = page_size();
        assert_eq!(max_pages(1), 1);
        assert_eq!(usize::from(max_pages(1024 * 1024)) * page, 1024 * 1024);
        assert!(usize::from(max_pages(1024 * 1024 + 1)) * page > 1024 * 1024);
        assert_eq!(max_pages(u32::MAX), u16::MAX);
    }
}
