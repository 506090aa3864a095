//! One request and its one answer: the handler a mount serves requests to,
//! and the replier that takes the answer back, to the device or to the
//! io_uring entry the request came in.

use std::io;
use std::sync::Arc;

use crate::device::Device;
use crate::wire::{self, Header, Malformed, Op};

/// An io_uring queue a request came in on, to put its answer in its entry
/// (implemented by [`crate::ring_pool`], which this module does not know).
pub(crate) trait RingQueue: Send + Sync {
    fn answer(self: Arc<Self>, index: u32, unique: u64, result: Result<&[u8], i32>) -> io::Result<()>;
}

/// Where one answer goes.
enum Sink {
    /// The replier's own device.
    Device,
    /// Entry `index` of an io_uring queue.
    #[cfg_attr(not(feature = "io-uring"), allow(dead_code))]
    Ring(Arc<dyn RingQueue>, u32),
}

/// The one answer a request gets; a request dropped unanswered gets `EIO`
/// (the kernel would wait for it forever, and a ring entry would be lost).
pub(crate) struct Replier {
    unique: u64,
    sink: Option<Sink>,
    device: Arc<Device>,
}

impl Replier {
    pub(crate) fn send(mut self, result: Result<&[u8], i32>) {
        self.send_now(result);
    }

    fn send_now(&mut self, result: Result<&[u8], i32>) {
        let result = match result {
            Ok(body) if body.len() > u32::MAX as usize => Err(libc::EIO),
            Err(errno) => Err(wire_errno(errno)),
            other => other,
        };
        let outcome = match self.sink.take() {
            Some(Sink::Device) => self.device.reply(self.unique, result),
            Some(Sink::Ring(queue, index)) => queue.answer(index, self.unique, result),
            None => return,
        };
        if let Err(err) = outcome {
            // ENOENT: the request was interrupted meanwhile; nothing to do.
            if err.raw_os_error() != Some(libc::ENOENT) {
                tracing::debug!(error = %err, "reply not delivered");
            }
        }
    }

    /// The device of the mount, to register passthrough backing files.
    pub(crate) fn device(&self) -> &Arc<Device> {
        &self.device
    }
}

impl Drop for Replier {
    fn drop(&mut self) {
        self.send_now(Err(libc::EIO));
    }
}

/// The error a reply may carry: the kernel takes 1..512 only (0 would read as
/// success, and anything else makes it refuse the reply, leaving its caller
/// waiting forever); the rest becomes `EIO`.
fn wire_errno(errno: i32) -> i32 {
    if (1..512).contains(&errno) {
        errno
    } else {
        libc::EIO
    }
}

/// What a mount serves: requests with their answer to give.
pub(crate) trait Handler: Send + Sync + 'static {
    /// The capabilities and limits to offer at `FUSE_INIT`.
    fn init_config(&self) -> InitConfig;
    /// What the kernel granted of them.
    fn initialized(&self, granted: u64);
    fn handle(&self, header: &Header, op: Op<'_>, replier: Replier);
    /// A request came over io_uring (counted in [`crate::MountStats`]).
    #[cfg_attr(not(feature = "io-uring"), allow(dead_code))]
    fn served_over_io_uring(&self) {}
    /// See [`crate::FsBackend::idle_step`] and [`crate::FsBackend::idle_end`].
    fn idle_step(&self) -> bool {
        false
    }
    fn idle_end(&self) {}
    /// The connection ended: no request still pending will be answered.
    fn ended(&self) {}
}

#[derive(Debug, Clone)]
pub(crate) struct InitConfig {
    pub(crate) flags: u64,
    pub(crate) max_write: u32,
    pub(crate) max_readahead: u32,
    pub(crate) max_background: u16,
    pub(crate) congestion_threshold: u16,
    pub(crate) max_stack_depth: u32,
}

/// Hands a decoded request to the handler; a malformed one is answered `EINVAL`.
pub(crate) fn dispatch(handler: &Arc<dyn Handler>, header: &Header, op: Result<Op<'_>, Malformed>, mut replier: Replier) {
    if wire::is_unanswered(header.opcode) {
        replier.sink = None;
    }
    match op {
        Ok(op) => handler.handle(header, op, replier),
        Err(Malformed) => replier.send(Err(libc::EINVAL)),
    }
}

#[cfg(feature = "io-uring")]
pub(crate) fn ring_replier(unique: u64, queue: Arc<dyn RingQueue>, index: u32, device: Arc<Device>) -> Replier {
    Replier { unique, sink: Some(Sink::Ring(queue, index)), device }
}

pub(crate) fn device_replier(unique: u64, device: &Arc<Device>) -> Replier {
    Replier { unique, sink: Some(Sink::Device), device: device.clone() }
}


#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_errnos_the_kernel_takes_reach_it() {
        assert_eq!(wire_errno(libc::ENOENT), libc::ENOENT);
        assert_eq!(wire_errno(511), 511);
        for outside in [0, -1, -libc::ENOENT, 512, 4096, i32::MAX, i32::MIN] {
            assert_eq!(wire_errno(outside), libc::EIO, "{outside}");
        }
    }
}
