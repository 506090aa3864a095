//! Changes made to a share's source behind the mount's back (the source
//! container writing its own files, another target, a restore) must not leave
//! the target's kernel with stale names, attributes or data. The kernel only
//! caches what it looked up, so only directories it holds a reference to are
//! watched; an event on such a directory or on a name in it is handed to the
//! listener of every mount watching that directory, which drops what its
//! kernel cached about it.
//!
//! One inotify instance serves the whole daemon: instances are limited to 128
//! per user, far fewer than the mounts of a busy node, while watches are cheap.
//! One thread reads the events; listeners run on it, never on a thread that
//! serves kernel requests, as invalidations require.

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use hoody_fuse::NodeId;
use parking_lot::Mutex;

use super::proc_fd;

/// What happened, as far as caches care.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum Change {
    /// A name appeared where there was none. Kernels never trust a missing
    /// name (a failed lookup is not cached), so only the directory changed.
    NewName,
    /// A name of the directory now names another file or none.
    Entry,
    /// A file's contents (and so its size and times) changed.
    Data,
    /// A file's attributes changed.
    Attrs,
}

/// Receives the changes of watched directories of one mount.
pub(super) trait ChangeListener: Send + Sync {
    /// `name` is `None` for a change of the directory itself.
    fn changed(&self, dir: NodeId, dir_fd: &OwnedFd, name: Option<&OsStr>, change: Change);
    /// Events were lost: every cached thing may be stale.
    fn overflowed(&self);
}

/// How long changes gather before the next read: far below anything a
/// person or a program polling a file would notice.
const GATHER: std::time::Duration = std::time::Duration::from_millis(1);

const WATCHED_EVENTS: u32 = libc::IN_CREATE
    | libc::IN_DELETE
    | libc::IN_MOVED_FROM
    | libc::IN_MOVED_TO
    | libc::IN_MODIFY
    | libc::IN_ATTRIB
    | libc::IN_DELETE_SELF
    | libc::IN_MOVE_SELF
    | libc::IN_EXCL_UNLINK;

/// Identifies one mount's listener.
pub(super) type ListenerId = u64;

struct Subscription {
    listener_id: ListenerId,
    listener: Arc<dyn ChangeListener>,
    dir: NodeId,
    dir_fd: Arc<OwnedFd>,
}

#[derive(Default)]
struct Watches {
    by_wd: HashMap<i32, Vec<Subscription>>,
    /// Where each (listener, directory) is subscribed, to unsubscribe.
    wd_of: HashMap<(ListenerId, NodeId), i32>,
    listeners: HashMap<ListenerId, Arc<dyn ChangeListener>>,
}

pub(super) struct SourceWatcher {
    inotify: OwnedFd,
    watches: Mutex<Watches>,
    next_listener: AtomicU64,
}

impl SourceWatcher {
    /// The daemon's watcher, started on first use. `None` (and a warning once)
    /// where inotify is unavailable: mounts then rely on their cache timeouts.
    pub(super) fn global() -> Option<&'static SourceWatcher> {
        static WATCHER: OnceLock<Option<&'static SourceWatcher>> = OnceLock::new();
        *WATCHER.get_or_init(|| match SourceWatcher::start() {
            Ok(watcher) => Some(watcher),
            Err(err) => {
                tracing::warn!(error = %err, "no inotify: share caches expire by timeout only");
                None
            }
        })
    }

    fn start() -> io::Result<&'static SourceWatcher> {
        // SAFETY: plain syscall; the descriptor is owned below.
        let fd = unsafe { libc::inotify_init1(libc::IN_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just returned and is owned by no one else.
        let inotify = unsafe { OwnedFd::from_raw_fd(fd) };
        let watcher: &'static SourceWatcher =
            Box::leak(Box::new(SourceWatcher { inotify, watches: Mutex::default(), next_listener: AtomicU64::new(1) }));
        std::thread::Builder::new().name("share-watch".into()).spawn(move || watcher.read_events())?;
        Ok(watcher)
    }

    pub(super) fn add_listener(&self, listener: Arc<dyn ChangeListener>) -> ListenerId {
        let id = self.next_listener.fetch_add(1, Ordering::Relaxed);
        self.watches.lock().listeners.insert(id, listener);
        id
    }

    /// Stops every watch of the listener (its mount is gone).
    pub(super) fn remove_listener(&self, id: ListenerId) {
        let mut watches = self.watches.lock();
        watches.listeners.remove(&id);
        let dirs: Vec<NodeId> = watches.wd_of.keys().filter(|(listener, _)| *listener == id).map(|(_, dir)| *dir).collect();
        for dir in dirs {
            self.unsubscribe(&mut watches, id, dir);
        }
    }

    /// Starts reporting changes of the directory `dir_fd` (an `O_PATH`
    /// descriptor of `dir`) and of the names in it to the listener.
    pub(super) fn watch(&self, id: ListenerId, dir: NodeId, dir_fd: Arc<OwnedFd>) -> io::Result<()> {
        let mut watches = self.watches.lock();
        let Some(listener) = watches.listeners.get(&id).cloned() else { return Ok(()) };
        if watches.wd_of.contains_key(&(id, dir)) {
            return Ok(());
        }
        // The same directory watched again gives the same descriptor.
        let wd = add_watch(self.inotify.as_fd(), dir_fd.as_fd())?;
        watches.wd_of.insert((id, dir), wd);
        watches.by_wd.entry(wd).or_default().push(Subscription { listener_id: id, listener, dir, dir_fd });
        Ok(())
    }

    pub(super) fn unwatch(&self, id: ListenerId, dir: NodeId) {
        let mut watches = self.watches.lock();
        self.unsubscribe(&mut watches, id, dir);
    }

    fn unsubscribe(&self, watches: &mut Watches, id: ListenerId, dir: NodeId) {
        let Some(wd) = watches.wd_of.remove(&(id, dir)) else { return };
        let Some(subscriptions) = watches.by_wd.get_mut(&wd) else { return };
        subscriptions.retain(|s| !(s.listener_id == id && s.dir == dir));
        if subscriptions.is_empty() {
            watches.by_wd.remove(&wd);
            // SAFETY: plain syscall on our own descriptor; a watch the kernel
            // already dropped (directory deleted) just fails.
            unsafe { libc::inotify_rm_watch(self.inotify.as_raw_fd(), wd) };
        }
    }

    fn read_events(&self) {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            // SAFETY: reads into our own buffer of that length.
            let n = unsafe { libc::read(self.inotify.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n < 0 {
                let err = io::Error::last_os_error();
                if err.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                tracing::error!(error = %err, "share watcher stopped: share caches expire by timeout only");
                return;
            }
            // Invalidating is idempotent and runs after every change read so far,
            // so one per (directory, kind, name) serves a burst: a file written
            // many times in a row, or created, written and chmod'ed.
            for event in distinct(parse_events(&buf[..n as usize])) {
                self.dispatch(&event);
            }
            // Let the next changes gather (the kernel also merges repeats of the
            // last queued event): a burst costs a few passes, not one per event.
            std::thread::sleep(GATHER);
        }
    }

    fn dispatch(&self, event: &Event<'_>) {
        if event.mask & libc::IN_Q_OVERFLOW != 0 {
            let listeners: Vec<_> = self.watches.lock().listeners.values().cloned().collect();
            listeners.iter().for_each(|listener| listener.overflowed());
            return;
        }
        let targets: Vec<(Arc<dyn ChangeListener>, NodeId, Arc<OwnedFd>)> = {
            let mut watches = self.watches.lock();
            if event.mask & libc::IN_IGNORED != 0 {
                // The directory is gone: the kernel dropped the watch itself.
                if let Some(subscriptions) = watches.by_wd.remove(&event.wd) {
                    for s in subscriptions {
                        watches.wd_of.remove(&(s.listener_id, s.dir));
                    }
                }
                return;
            }
            match watches.by_wd.get(&event.wd) {
                Some(subscriptions) => subscriptions.iter().map(|s| (s.listener.clone(), s.dir, s.dir_fd.clone())).collect(),
                None => return,
            }
        };
        let change = change_of(event.mask);
        for (listener, dir, dir_fd) in targets {
            listener.changed(dir, &dir_fd, event.name, change);
        }
    }
}

fn change_of(mask: u32) -> Change {
    if mask & libc::IN_CREATE != 0 {
        Change::NewName
    } else if mask & (libc::IN_DELETE | libc::IN_MOVED_FROM | libc::IN_MOVED_TO) != 0 {
        Change::Entry
    } else if mask & libc::IN_MODIFY != 0 {
        Change::Data
    } else {
        Change::Attrs
    }
}

fn add_watch(inotify: BorrowedFd<'_>, dir: BorrowedFd<'_>) -> io::Result<i32> {
    // The watch goes on the directory the descriptor holds, whatever its path now.
    let path = proc_fd::link(dir).path();
    // SAFETY: valid descriptor and NUL-terminated path.
    let wd = unsafe { libc::inotify_add_watch(inotify.as_raw_fd(), path.as_ptr(), WATCHED_EVENTS) };
    if wd < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(wd)
}

struct Event<'a> {
    wd: i32,
    mask: u32,
    name: Option<&'a OsStr>,
}

/// The events of one read worth acting on: the first of each (directory,
/// kind of change, name), and every overflow or dropped watch.
fn distinct(events: Vec<Event<'_>>) -> Vec<Event<'_>> {
    let mut seen = HashSet::new();
    events
        .into_iter()
        .filter(|event| {
            event.mask & (libc::IN_Q_OVERFLOW | libc::IN_IGNORED) != 0 || seen.insert((event.wd, change_of(event.mask), event.name))
        })
        .collect()
}

/// Splits a read of the inotify descriptor into its events.
fn parse_events(mut buf: &[u8]) -> Vec<Event<'_>> {
    const HEADER: usize = std::mem::size_of::<libc::inotify_event>();
    let mut events = Vec::new();
    while buf.len() >= HEADER {
        let field = |at: usize| u32::from_ne_bytes(buf[at..at + 4].try_into().expect("four bytes"));
        let (wd, mask, len) = (field(0) as i32, field(4), field(12) as usize);
        let Some(name_bytes) = buf.get(HEADER..HEADER + len) else { break };
        // The name is padded with NULs to an alignment.
        let name_len = name_bytes.iter().position(|&b| b == 0).unwrap_or(name_bytes.len());
        let name = (name_len > 0).then(|| OsStr::from_bytes(&name_bytes[..name_len]));
        events.push(Event { wd, mask, name });
        buf = &buf[HEADER + len..];
    }
    events
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_of_changes_is_one_invalidation_each() {
        let mut buf = Vec::new();
        for (wd, mask, name) in [
            (3, libc::IN_CREATE, &b"f"[..]),
            (3, libc::IN_MODIFY, b"f"),
            (3, libc::IN_MODIFY, b"f"),
            (3, libc::IN_ATTRIB, b"f"),
            (3, libc::IN_ATTRIB, b"f"),
            (3, libc::IN_MODIFY, b"g"),
            (4, libc::IN_MODIFY, b"f"),
            (4, libc::IN_IGNORED, b""),
            (4, libc::IN_IGNORED, b""),
        ] {
            buf.extend(raw_event(wd, mask, name, 16));
        }
        let kept: Vec<(i32, u32)> = distinct(parse_events(&buf)).iter().map(|e| (e.wd, e.mask)).collect();
        assert_eq!(
            kept,
            [(3, libc::IN_CREATE), (3, libc::IN_MODIFY), (3, libc::IN_ATTRIB), (3, libc::IN_MODIFY), (4, libc::IN_MODIFY), (4, libc::IN_IGNORED), (4, libc::IN_IGNORED)]
        );
    }

    fn raw_event(wd: i32, mask: u32, name: &[u8], padded: usize) -> Vec<u8> {
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&wd.to_ne_bytes());
        bytes.extend_from_slice(&mask.to_ne_bytes());
        bytes.extend_from_slice(&0u32.to_ne_bytes());
        bytes.extend_from_slice(&(padded as u32).to_ne_bytes());
        let mut name = name.to_vec();
        name.resize(padded, 0);
        bytes.extend_from_slice(&name);
        bytes
    }

    #[test]
    fn events_are_split_with_their_names() {
        let mut buf = raw_event(3, libc::IN_CREATE, b"new-file", 16);
        buf.extend(raw_event(4, libc::IN_ATTRIB, b"", 0));
        let events = parse_events(&buf);
        assert_eq!(events.len(), 2);
        assert_eq!((events[0].wd, events[0].mask, events[0].name), (3, libc::IN_CREATE, Some(OsStr::new("new-file"))));
        assert_eq!((events[1].wd, events[1].name), (4, None));
        assert_eq!(change_of(libc::IN_MOVED_TO), Change::Entry);
        assert_eq!(change_of(libc::IN_CREATE | libc::IN_ISDIR), Change::NewName);
        assert_eq!(change_of(libc::IN_MODIFY), Change::Data);
        assert_eq!(change_of(libc::IN_ATTRIB | libc::IN_ISDIR), Change::Attrs);
    }
}
