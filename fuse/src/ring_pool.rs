//! FUSE-over-io_uring for every mount of the daemon: one thread per CPU, bound
//! to it, each with one io_uring on which every mount registers its queue for
//! that CPU. The kernel puts a request on the queue of the CPU that made it and
//! completes it on the thread that registered the entry, so a request is read,
//! served and answered on the requester's own CPU: no wake-up of another CPU
//! and half the cost of a `/dev/fuse` round trip (measured with
//! `fuse/examples/fuse_floor`). Threads are per CPU, not per mount, so 200
//! mounts cost no more threads than one.
//!
//! Each queue entry has two buffers the kernel fills with a request and reads
//! the answer from: a header block (`fuse_in_header`/`fuse_out_header`, the
//! operation's fixed-size arguments, the entry's bookkeeping) and a payload.
//! All submissions to a ring are made by its own thread (the kernel runs an
//! entry's completion on the task that submitted it); an answer given on
//! another thread is handed over through the ring's inbox.

use std::cell::{RefCell, UnsafeCell};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use io_uring::{cqueue, opcode, squeue, types, IoUring};
use parking_lot::Mutex;

use crate::id_map::IdMap;
use crate::device::Device;
use crate::request::{dispatch, ring_replier, Handler, RingQueue};
use crate::wire::{self, decode_header, decode_op, IN_HEADER_LEN, OUT_HEADER_LEN};

/// `fuse_uring_req_header`: in/out header area, operation header area, bookkeeping.
const IN_OUT_LEN: usize = 128;
const OP_IN_LEN: usize = 128;
const ENT_IN_OUT: usize = IN_OUT_LEN + OP_IN_LEN;
const HEADER_LEN: usize = ENT_IN_OUT + 32;
const CMD_REGISTER: u32 = 1;
const CMD_COMMIT_AND_FETCH: u32 = 2;
/// Entries per mount and CPU: requests of one CPU in flight at once.
const QUEUE_DEPTH: u32 = 4;
/// user_data of the inbox's eventfd poll.
const INBOX: u64 = u64::MAX;
const MODULE_PARAMETER: &str = "/sys/module/fuse/parameters/enable_uring";

/// Whether a mount about to be made may ask for io_uring: the kernel has it
/// and the module allows it now (`fuse.enable_uring`, which only lets
/// connections ask for it; the kernel reads it when it queues a mount's
/// `FUSE_INIT`, so it is checked at every mount). Setting it is the caller's:
/// this crate writes no system parameter.
pub(crate) fn available() -> bool {
    let allowed = std::fs::read_to_string(MODULE_PARAMETER).is_ok_and(|value| value.trim() == "Y");
    allowed && pool().is_some()
}

/// Registers one queue per CPU of the connection of `device` on the pool.
pub(crate) fn attach(device: Arc<Device>, handler: Arc<dyn Handler>, payload_len: usize) -> io::Result<()> {
    let pool = pool().ok_or_else(|| io::Error::from_raw_os_error(libc::ENOSYS))?;
    static NEXT_SLOT: AtomicU32 = AtomicU32::new(1);
    let slot = NEXT_SLOT.fetch_add(1, Ordering::Relaxed);
    for (qid, ring) in pool.iter().enumerate() {
        let entries = (0..QUEUE_DEPTH).map(|_| EntryBuffers::new(payload_len)).collect();
        let queue = Arc::new(MountQueue {
            slot,
            qid: qid as u16,
            device: device.clone(),
            handler: handler.clone(),
            entries,
            live: AtomicUsize::new(QUEUE_DEPTH as usize),
            ring: ring.clone(),
        });
        ring.post(Message::Register(queue))?;
    }
    Ok(())
}

fn pool() -> Option<&'static Vec<Arc<RingHandle>>> {
    static POOL: OnceLock<Option<Vec<Arc<RingHandle>>>> = OnceLock::new();
    POOL.get_or_init(|| match start_pool() {
        Ok(pool) => Some(pool),
        Err(err) => {
            tracing::warn!(error = %err, "no io_uring for FUSE; mounts use /dev/fuse");
            None
        }
    })
    .as_ref()
}

/// The kernel's possible CPUs (`0-3,5`: 6), which may be more than are
/// present or online.
fn possible_cpus() -> usize {
    std::fs::read_to_string("/sys/devices/system/cpu/possible").ok().and_then(|list| highest_cpu(&list)).map_or_else(
        // SAFETY: plain query.
        || unsafe { libc::sysconf(libc::_SC_NPROCESSORS_CONF) }.max(1) as usize,
        |highest| highest + 1,
    )
}

/// The highest CPU number of a kernel CPU list (`0-3,8-11`).
fn highest_cpu(list: &str) -> Option<usize> {
    list.trim().split(',').filter_map(|range| range.rsplit('-').next()?.parse().ok()).max()
}

fn start_pool() -> io::Result<Vec<Arc<RingHandle>>> {
    // The kernel waits for a queue per possible CPU.
    let cpus = possible_cpus();
    let mut handles = Vec::with_capacity(cpus);
    for cpu in 0..cpus {
        // SAFETY: plain call; the descriptor is owned below.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: just opened, owned by no one else.
        let eventfd = unsafe { OwnedFd::from_raw_fd(fd) };
        let ring: IoUring<squeue::Entry128, cqueue::Entry> = IoUring::builder().setup_cqsize(4096).build(256)?;
        let handle = Arc::new(RingHandle { cpu, inbox: Mutex::new(Vec::new()), eventfd });
        let thread_handle = handle.clone();
        std::thread::Builder::new().name(format!("share-ring-{cpu}")).spawn(move || RingThread::new(ring, thread_handle).run())?;
        handles.push(handle);
    }
    Ok(handles)
}

enum Message {
    Register(Arc<MountQueue>),
    Commit(Arc<MountQueue>, u32),
}

/// What other threads see of a ring: its inbox.
struct RingHandle {
    cpu: usize,
    inbox: Mutex<Vec<Message>>,
    eventfd: OwnedFd,
}

impl RingHandle {
    fn post(&self, message: Message) -> io::Result<()> {
        self.inbox.lock().push(message);
        let one = 1u64.to_ne_bytes();
        // SAFETY: valid descriptor and 8-byte buffer.
        if unsafe { libc::write(self.eventfd.as_raw_fd(), one.as_ptr().cast(), one.len()) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

/// Entries answered and not yet handed back to the kernel.
type Answered = Vec<(Arc<MountQueue>, u32)>;

thread_local! {
    /// On a ring thread: its CPU, and answers given on it not yet submitted.
    static ON_RING: RefCell<Option<(usize, Answered)>> = const { RefCell::new(None) };
}

/// One mount's queue on one CPU's ring.
struct MountQueue {
    slot: u32,
    qid: u16,
    device: Arc<Device>,
    handler: Arc<dyn Handler>,
    entries: Vec<EntryBuffers>,
    /// Entries the kernel still holds; the queue goes when none is left.
    live: AtomicUsize,
    ring: Arc<RingHandle>,
}

struct EntryBuffers {
    header: UnsafeCell<Box<[u8; HEADER_LEN]>>,
    payload: UnsafeCell<Vec<u8>>,
    iov: UnsafeCell<[libc::iovec; 2]>,
    commit_id: AtomicU64,
}

// SAFETY: an entry's buffers are used by one party at a time: the kernel while
// the entry waits for a request, the ring thread when one arrived (it copies
// the request out), then the one replier, which hands the entry back.
unsafe impl Sync for EntryBuffers {}
// SAFETY: as above; the raw pointers in `iov` point into the entry's own buffers.
unsafe impl Send for EntryBuffers {}

impl EntryBuffers {
    fn new(payload_len: usize) -> Self {
        EntryBuffers {
            header: UnsafeCell::new(Box::new([0u8; HEADER_LEN])),
            payload: UnsafeCell::new(vec![0u8; payload_len]),
            iov: UnsafeCell::new([libc::iovec { iov_base: std::ptr::null_mut(), iov_len: 0 }; 2]),
            commit_id: AtomicU64::new(0),
        }
    }
}

/// A request's answer goes into the entry it came in.
impl RingQueue for MountQueue {
    fn answer(self: Arc<Self>, index: u32, unique: u64, result: Result<&[u8], i32>) -> io::Result<()> {
        let entry = &self.entries[index as usize];
        // SAFETY: this replier is the entry's only user until it is committed (see `EntryBuffers`).
        let (header, payload) = unsafe { (&mut **entry.header.get(), &mut *entry.payload.get()) };
        let result = match result {
            Ok(body) if body.len() > payload.len() => Err(libc::EIO),
            other => other,
        };
        let body_len = match result {
            Ok(body) => {
                payload[..body.len()].copy_from_slice(body);
                header[..OUT_HEADER_LEN].copy_from_slice(&wire::out_header(unique, 0, body.len()));
                body.len()
            }
            Err(errno) => {
                header[..OUT_HEADER_LEN].copy_from_slice(&wire::out_header(unique, errno, 0));
                0
            }
        };
        header[ENT_IN_OUT + 16..ENT_IN_OUT + 20].copy_from_slice(&(body_len as u32).to_ne_bytes());
        let on_this_ring = ON_RING.with(|on| {
            let mut on = on.borrow_mut();
            match on.as_mut() {
                Some((cpu, pending)) if *cpu == self.ring.cpu => {
                    pending.push((self.clone(), index));
                    true
                }
                _ => false,
            }
        });
        if on_this_ring {
            return Ok(());
        }
        let ring = self.ring.clone();
        ring.post(Message::Commit(self, index))
    }
}

struct RingThread {
    ring: IoUring<squeue::Entry128, cqueue::Entry>,
    handle: Arc<RingHandle>,
    queues: IdMap<u32, Arc<MountQueue>>,
    /// Each request is copied out of its entry before it is served.
    scratch: Vec<u8>,
}

impl RingThread {
    fn new(ring: IoUring<squeue::Entry128, cqueue::Entry>, handle: Arc<RingHandle>) -> Self {
        RingThread { ring, handle, queues: IdMap::default(), scratch: Vec::new() }
    }

    fn run(mut self) {
        let cpu = self.handle.cpu;
        // SAFETY: plain data; binds this thread to its CPU (refused for an offline one: served anyway).
        unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(cpu, &mut set);
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
        }
        ON_RING.with(|on| *on.borrow_mut() = Some((cpu, Vec::new())));
        self.arm_inbox();
        loop {
            match self.ring.submit_and_wait(1) {
                Ok(_) => {}
                Err(err) if matches!(err.raw_os_error(), Some(libc::EINTR) | Some(libc::EBUSY)) => {}
                Err(err) => {
                    tracing::error!(cpu, error = %err, "FUSE ring stopped");
                    return;
                }
            }
            let done: Vec<(u64, i32, u32)> = self.ring.completion().map(|cqe| (cqe.user_data(), cqe.result(), cqe.flags())).collect();
            for (user_data, result, flags) in done {
                if user_data == INBOX {
                    self.take_inbox();
                    if !cqueue::more(flags) {
                        self.arm_inbox();
                    }
                } else {
                    self.completed((user_data >> 32) as u32, user_data as u32, result);
                }
            }
            let pending = ON_RING.with(|on| on.borrow_mut().as_mut().map(|(_, pending)| std::mem::take(pending)).unwrap_or_default());
            for (queue, index) in pending {
                self.commit(&queue, index);
            }
        }
    }

    fn push(&mut self, entry: &squeue::Entry128) {
        loop {
            // SAFETY: the buffers an entry names live in `MountQueue`s kept until the kernel gave them back.
            if unsafe { self.ring.submission().push(entry) }.is_ok() {
                return;
            }
            let _ = self.ring.submit();
        }
    }

    fn arm_inbox(&mut self) {
        let poll = opcode::PollAdd::new(types::Fd(self.handle.eventfd.as_raw_fd()), libc::POLLIN as u32).multi(true).build().user_data(INBOX);
        // A 64-byte entry in a 128-byte ring: the rest stays zero.
        let poll = squeue::Entry128::from(poll);
        self.push(&poll);
    }

    fn take_inbox(&mut self) {
        let mut count = [0u8; 8];
        // SAFETY: valid descriptor and 8-byte buffer; only resets the counter.
        unsafe { libc::read(self.handle.eventfd.as_raw_fd(), count.as_mut_ptr().cast(), count.len()) };
        let messages = std::mem::take(&mut *self.handle.inbox.lock());
        for message in messages {
            match message {
                Message::Register(queue) => self.register(queue),
                Message::Commit(queue, index) => self.commit(&queue, index),
            }
        }
    }

    fn register(&mut self, queue: Arc<MountQueue>) {
        for index in 0..queue.entries.len() as u32 {
            let entry = &queue.entries[index as usize];
            // SAFETY: not yet handed to the kernel: only this thread uses the buffers.
            let iov = unsafe {
                let iov = &mut *entry.iov.get();
                iov[0] = libc::iovec { iov_base: (*entry.header.get()).as_mut_ptr().cast(), iov_len: HEADER_LEN };
                let payload = &mut *entry.payload.get();
                iov[1] = libc::iovec { iov_base: payload.as_mut_ptr().cast(), iov_len: payload.len() };
                iov.as_ptr()
            };
            let sqe = command(&queue, CMD_REGISTER, 0, index, Some(iov));
            self.push(&sqe);
        }
        self.queues.insert(queue.slot, queue);
    }

    fn commit(&mut self, queue: &Arc<MountQueue>, index: u32) {
        let commit_id = queue.entries[index as usize].commit_id.load(Ordering::Relaxed);
        let sqe = command(queue, CMD_COMMIT_AND_FETCH, commit_id, index, None);
        self.push(&sqe);
    }

    fn completed(&mut self, slot: u32, index: u32, result: i32) {
        let Some(queue) = self.queues.get(&slot).cloned() else { return };
        if result < 0 {
            if !matches!(-result, libc::ENOTCONN | libc::ECANCELED | libc::ENODEV) {
                // Refused (a registration the kernel found wrong): the kernel
                // would hold every request until this CPU's queue has an entry.
                tracing::error!(error = %io::Error::from_raw_os_error(-result), "FUSE io_uring entry refused; the mount's connection is aborted");
                queue.device.abort();
            }
            // The connection ended (ENOTCONN, ECANCELED...): the entry is the kernel's no more.
            if queue.live.fetch_sub(1, Ordering::AcqRel) == 1 {
                self.queues.remove(&slot);
            }
            return;
        }
        let entry = &queue.entries[index as usize];
        // SAFETY: the kernel handed the entry back with a request; until it is answered only we use it.
        let (header, payload) = unsafe { (&**entry.header.get(), &*entry.payload.get()) };
        let commit_id = u64::from_ne_bytes(header[ENT_IN_OUT + 8..ENT_IN_OUT + 16].try_into().expect("8 bytes"));
        entry.commit_id.store(commit_id, Ordering::Relaxed);
        let payload_len = (u32::from_ne_bytes(header[ENT_IN_OUT + 16..ENT_IN_OUT + 20].try_into().expect("4 bytes")) as usize).min(payload.len());
        let Ok(request) = decode_header(&header[..IN_HEADER_LEN]) else { return };
        let fixed_len = wire::fixed_args_len(request.opcode).min(OP_IN_LEN);
        // Copied out, so that the answer may go into the same buffers at once.
        self.scratch.clear();
        self.scratch.extend_from_slice(&header[IN_OUT_LEN..IN_OUT_LEN + fixed_len]);
        self.scratch.extend_from_slice(&payload[..payload_len]);
        let (fixed, rest) = self.scratch.split_at(fixed_len);
        let replier = ring_replier(request.unique, queue.clone(), index, queue.device.clone());
        queue.handler.served_over_io_uring();
        dispatch(&queue.handler, &request, decode_op(request.opcode, fixed, rest), replier);
    }
}

/// An io_uring command for the FUSE connection of `queue`.
fn command(queue: &MountQueue, cmd_op: u32, commit_id: u64, index: u32, iov: Option<*const libc::iovec>) -> squeue::Entry128 {
    // fuse_uring_cmd_req: flags, commit_id, qid.
    let mut cmd = [0u8; 80];
    cmd[8..16].copy_from_slice(&commit_id.to_ne_bytes());
    cmd[16..18].copy_from_slice(&queue.qid.to_ne_bytes());
    let entry = opcode::UringCmd80::new(types::Fd(queue.device.raw_fd()), cmd_op).cmd(cmd).addr(iov.map(|iov| iov as u64)).build();
    let entry = entry.user_data((u64::from(queue.slot) << 32) | u64::from(index));
    if iov.is_none() {
        return entry;
    }
    // The registration names its buffers as an array of two iovecs: `len` is 2,
    // a field `UringCmd80` does not set.
    // SAFETY: `Entry128` is a plain 128-byte `repr(C)` SQE, `len` at byte 24.
    let mut raw: [u8; 128] = unsafe { std::mem::transmute(entry) };
    raw[24..28].copy_from_slice(&2u32.to_ne_bytes());
    // SAFETY: as above.
    unsafe { std::mem::transmute::<[u8; 128], squeue::Entry128>(raw) }
}

#[cfg(test)]
mod tests {
    use super::highest_cpu;

    #[test]
    fn highest_cpu_of_a_list() {
        assert_eq!(highest_cpu("0-1\n"), Some(1));
        assert_eq!(highest_cpu("0"), Some(0));
        assert_eq!(highest_cpu("0-3,8-11"), Some(11));
        assert_eq!(highest_cpu("0,2,5"), Some(5));
        assert_eq!(highest_cpu(""), None);
    }
}
