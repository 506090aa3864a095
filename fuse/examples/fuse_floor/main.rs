//! The floor of any FUSE filesystem on this machine: a read-only mirror of a
//! directory tree, walked once at start and then served from memory, answering
//! every request without a single system call of its own (`getxattr` is
//! "no such attribute" at once). It negotiates what the share mounts do
//! (readdirplus, POSIX ACLs, one reader thread), so a workload timed through it
//! shows what the kernel's round trips alone cost: no FUSE server can do better.
//! Used by `bench/scenarios/shares.sh`.
//!
//! With `--uring` it speaks FUSE-over-io_uring instead of `/dev/fuse` reads
//! and writes (see `uring.rs`): what a transport with per-CPU queues would bring.
//!
//! Usage: fuse_floor SOURCE MOUNTPOINT [--uring]   (runs until unmounted)

mod uring;

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fs;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;
use std::time::{Duration, SystemTime};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, InitFlags, KernelConfig, MountOption, OpenFlags,
    ReplyAttr, ReplyData, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyXattr, Request, SessionACL,
};

const TTL: Duration = Duration::from_secs(60);

struct Node {
    attr: FileAttr,
    children: Vec<(OsString, u64)>,
    by_name: HashMap<OsString, u64>,
    target: Vec<u8>,
}

struct Floor {
    nodes: Vec<Node>,
}

fn time(secs: i64, nsecs: i64) -> SystemTime {
    if secs >= 0 {
        SystemTime::UNIX_EPOCH + Duration::new(secs as u64, nsecs as u32)
    } else {
        SystemTime::UNIX_EPOCH
    }
}

fn attr_of(ino: u64, meta: &fs::Metadata) -> FileAttr {
    let kind = meta.file_type();
    let kind = if kind.is_dir() {
        FileType::Directory
    } else if kind.is_symlink() {
        FileType::Symlink
    } else if kind.is_fifo() {
        FileType::NamedPipe
    } else if kind.is_socket() {
        FileType::Socket
    } else if kind.is_char_device() {
        FileType::CharDevice
    } else if kind.is_block_device() {
        FileType::BlockDevice
    } else {
        FileType::RegularFile
    };
    FileAttr {
        ino: INodeNo(ino),
        size: meta.size(),
        blocks: meta.blocks(),
        atime: time(meta.atime(), meta.atime_nsec()),
        mtime: time(meta.mtime(), meta.mtime_nsec()),
        ctime: time(meta.ctime(), meta.ctime_nsec()),
        crtime: SystemTime::UNIX_EPOCH,
        kind,
        perm: (meta.mode() & 0o7777) as u16,
        nlink: meta.nlink() as u32,
        uid: meta.uid(),
        gid: meta.gid(),
        rdev: meta.rdev() as u32,
        blksize: 4096,
        flags: 0,
    }
}

impl Floor {
    fn load(root: &Path) -> io::Result<Floor> {
        let mut floor = Floor { nodes: Vec::new() };
        // Inode numbers are indices + 1; the root is 1, as FUSE wants.
        floor.add(root)?;
        Ok(floor)
    }

    fn add(&mut self, path: &Path) -> io::Result<u64> {
        let meta = fs::symlink_metadata(path)?;
        let ino = self.nodes.len() as u64 + 1;
        let target = if meta.file_type().is_symlink() { fs::read_link(path)?.into_os_string().into_encoded_bytes() } else { Vec::new() };
        self.nodes.push(Node { attr: attr_of(ino, &meta), children: Vec::new(), by_name: HashMap::new(), target });
        if meta.is_dir() {
            let mut names: Vec<OsString> = fs::read_dir(path)?.map(|entry| entry.map(|e| e.file_name())).collect::<io::Result<_>>()?;
            names.sort();
            for name in names {
                let child = self.add(&path.join(&name))?;
                let node = &mut self.nodes[ino as usize - 1];
                node.by_name.insert(name.clone(), child);
                node.children.push((name, child));
            }
        }
        Ok(ino)
    }

    fn node(&self, ino: INodeNo) -> Option<&Node> {
        self.nodes.get((ino.0 as usize).wrapping_sub(1))
    }
}

impl Filesystem for Floor {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> io::Result<()> {
        for capability in [InitFlags::FUSE_DO_READDIRPLUS, InitFlags::FUSE_PARALLEL_DIROPS, InitFlags::FUSE_POSIX_ACL] {
            let _ = config.add_capabilities(capability);
        }
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match self.node(parent).and_then(|node| node.by_name.get(name)).and_then(|&ino| self.node(INodeNo(ino))) {
            Some(node) => reply.entry(&TTL, &node.attr, Generation(0)),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.node(ino) {
            Some(node) => reply.attr(&TTL, &node.attr),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.node(ino) {
            Some(node) => reply.data(&node.target),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn opendir(&self, _req: &Request, _ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        reply.opened(FileHandle(0), FopenFlags::empty());
    }

    fn readdirplus(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, offset: u64, mut reply: ReplyDirectoryPlus) {
        let Some(node) = self.node(ino) else { return reply.error(Errno::ENOENT) };
        for (index, (name, child)) in node.children.iter().enumerate().skip(offset as usize) {
            let attr = &self.nodes[*child as usize - 1].attr;
            if reply.add(INodeNo(*child), index as u64 + 1, name, &TTL, attr, Generation(0)) {
                break;
            }
        }
        reply.ok();
    }

    fn releasedir(&self, _req: &Request, _ino: INodeNo, _fh: FileHandle, _flags: OpenFlags, reply: ReplyEmpty) {
        reply.ok();
    }

    fn getxattr(&self, _req: &Request, _ino: INodeNo, _name: &OsStr, _size: u32, reply: ReplyXattr) {
        reply.error(Errno::ENODATA);
    }
}

fn main() -> io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let (source, mountpoint, over_uring) = match args.as_slice() {
        [_, source, mountpoint] => (source, mountpoint, false),
        [_, source, mountpoint, flag] if flag == "--uring" => (source, mountpoint, true),
        _ => {
            eprintln!("usage: fuse_floor SOURCE MOUNTPOINT [--uring]");
            std::process::exit(2);
        }
    };
    let floor = Floor::load(Path::new(source))?;
    if over_uring {
        return uring::serve(floor, Path::new(mountpoint));
    }
    let mut config = fuser::Config::default();
    config.mount_options =
        vec![MountOption::FSName("floor".into()), MountOption::RO, MountOption::DefaultPermissions, MountOption::CUSTOM("max_read=1048576".into())];
    config.acl = SessionACL::All;
    config.n_threads = Some(1);
    fuser::mount(floor, mountpoint, &config)
}
