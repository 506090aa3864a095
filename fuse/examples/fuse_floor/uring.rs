//! The floor mirror served over FUSE-over-io_uring (Linux 6.14+, with the
//! `fuse.enable_uring` module parameter on): one queue per CPU, each served by
//! a thread bound to that CPU, so a request is answered on the CPU that made it.
//! `/dev/fuse` still carries `FUSE_INIT`, forgets, interrupts and whatever
//! arrives before every queue is registered.
//!
//! The kernel splits a request over two buffers of each queue entry: a header
//! block (`fuse_in_header`, then the operation's fixed-size arguments, then the
//! entry's bookkeeping) and a payload (names, data). The answer goes back the
//! same way: `fuse_out_header` in the header block, the reply in the payload.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;

use io_uring::{cqueue, opcode, squeue, types, IoUring};

use crate::Floor;

const IN_HEADER: usize = 40;
const OUT_HEADER: usize = 16;
/// `fuse_uring_req_header`: in/out header area, operation header area, entry bookkeeping.
const URING_IN_OUT: usize = 128;
const URING_OP_IN: usize = 128;
const URING_HEADER: usize = URING_IN_OUT + URING_OP_IN + 32;
const CMD_REGISTER: u32 = 1;
const CMD_COMMIT_AND_FETCH: u32 = 2;
const MAX_WRITE: u32 = 128 * 1024;
const PAYLOAD: usize = MAX_WRITE as usize;
const QUEUE_DEPTH: usize = 8;

const FUSE_LOOKUP: u32 = 1;
const FUSE_FORGET: u32 = 2;
const FUSE_GETATTR: u32 = 3;
const FUSE_READLINK: u32 = 5;
const FUSE_STATFS: u32 = 17;
const FUSE_RELEASE: u32 = 18;
const FUSE_GETXATTR: u32 = 22;
const FUSE_LISTXATTR: u32 = 23;
const FUSE_FLUSH: u32 = 25;
const FUSE_INIT: u32 = 26;
const FUSE_OPENDIR: u32 = 27;
const FUSE_RELEASEDIR: u32 = 29;
const FUSE_ACCESS: u32 = 34;
const FUSE_INTERRUPT: u32 = 36;
const FUSE_DESTROY: u32 = 38;
const FUSE_BATCH_FORGET: u32 = 42;
const FUSE_READDIRPLUS: u32 = 44;

/// Size of the fixed arguments of the operations served here (what the kernel
/// puts in the operation header area; the rest goes to the payload).
fn op_header_size(opcode: u32) -> usize {
    match opcode {
        FUSE_GETATTR => 16,
        FUSE_OPENDIR | FUSE_GETXATTR | FUSE_LISTXATTR | FUSE_ACCESS => 8,
        FUSE_READDIRPLUS => 40,
        FUSE_RELEASEDIR | FUSE_RELEASE | FUSE_FLUSH => 24,
        _ => 0,
    }
}

fn u32_at(buf: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes(buf[at..at + 4].try_into().unwrap())
}

fn u64_at(buf: &[u8], at: usize) -> u64 {
    u64::from_ne_bytes(buf[at..at + 8].try_into().unwrap())
}

fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_ne_bytes());
}

fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_ne_bytes());
}

/// `fuse_attr` of node `ino` (88 bytes).
fn put_attr(out: &mut Vec<u8>, floor: &Floor, ino: u64) {
    let a = &floor.nodes[ino as usize - 1].attr;
    let secs = |t: std::time::SystemTime| t.duration_since(std::time::UNIX_EPOCH).map(|d| (d.as_secs(), d.subsec_nanos())).unwrap_or((0, 0));
    let (at, atn) = secs(a.atime);
    let (mt, mtn) = secs(a.mtime);
    let (ct, ctn) = secs(a.ctime);
    for v in [ino, a.size, a.blocks, at, mt, ct] {
        put_u64(out, v);
    }
    let kind = match a.kind {
        fuser::FileType::Directory => libc::S_IFDIR,
        fuser::FileType::Symlink => libc::S_IFLNK,
        fuser::FileType::NamedPipe => libc::S_IFIFO,
        fuser::FileType::Socket => libc::S_IFSOCK,
        fuser::FileType::CharDevice => libc::S_IFCHR,
        fuser::FileType::BlockDevice => libc::S_IFBLK,
        fuser::FileType::RegularFile => libc::S_IFREG,
    };
    for v in [atn, mtn, ctn, kind | u32::from(a.perm), a.nlink, a.uid, a.gid, a.rdev, 4096, 0] {
        put_u32(out, v);
    }
}

const TTL_SECS: u64 = 60;

/// `fuse_entry_out` (128 bytes).
fn put_entry(out: &mut Vec<u8>, floor: &Floor, ino: u64) {
    for v in [ino, 0, TTL_SECS, TTL_SECS] {
        put_u64(out, v);
    }
    put_u32(out, 0);
    put_u32(out, 0);
    put_attr(out, floor, ino);
}

/// The answer to one request: `Err(errno)`, or the reply's bytes; `None` for
/// requests that get no answer (forgets, interrupts).
fn answer(floor: &Floor, opcode: u32, nodeid: u64, args: &[u8]) -> Option<Result<Vec<u8>, i32>> {
    let node = |ino: u64| floor.nodes.get((ino as usize).wrapping_sub(1));
    let mut out = Vec::new();
    let result = match opcode {
        FUSE_FORGET | FUSE_BATCH_FORGET | FUSE_INTERRUPT => return None,
        FUSE_LOOKUP => {
            let name = &args[..args.iter().position(|&b| b == 0).unwrap_or(args.len())];
            match node(nodeid).and_then(|n| n.by_name.get(OsStr::from_bytes(name))) {
                Some(&child) => {
                    put_entry(&mut out, floor, child);
                    Ok(out)
                }
                None => Err(libc::ENOENT),
            }
        }
        FUSE_GETATTR => match node(nodeid) {
            Some(_) => {
                put_u64(&mut out, TTL_SECS);
                put_u32(&mut out, 0);
                put_u32(&mut out, 0);
                put_attr(&mut out, floor, nodeid);
                Ok(out)
            }
            None => Err(libc::ENOENT),
        },
        FUSE_READLINK => node(nodeid).map(|n| n.target.clone()).ok_or(libc::ENOENT),
        FUSE_STATFS => Ok(vec![0u8; 80]),
        FUSE_GETXATTR => Err(libc::ENODATA),
        FUSE_LISTXATTR => Ok(if u32_at(args, 0) == 0 { vec![0u8; 8] } else { Vec::new() }),
        FUSE_OPENDIR => Ok(vec![0u8; 16]),
        FUSE_RELEASEDIR | FUSE_ACCESS | FUSE_DESTROY | FUSE_FLUSH | FUSE_RELEASE => Ok(Vec::new()),
        FUSE_READDIRPLUS => {
            let (offset, size) = (u64_at(args, 8), u32_at(args, 16) as usize);
            let Some(dir) = node(nodeid) else { return Some(Err(libc::ENOENT)) };
            for (index, (name, child)) in dir.children.iter().enumerate().skip(offset as usize) {
                let name = name.as_bytes();
                let record = 128 + 24 + name.len();
                let padded = record.div_ceil(8) * 8;
                if out.len() + padded > size {
                    break;
                }
                put_entry(&mut out, floor, *child);
                put_u64(&mut out, *child);
                put_u64(&mut out, index as u64 + 1);
                put_u32(&mut out, name.len() as u32);
                let mode = match floor.nodes[*child as usize - 1].attr.kind {
                    fuser::FileType::Directory => libc::DT_DIR,
                    fuser::FileType::Symlink => libc::DT_LNK,
                    fuser::FileType::RegularFile => libc::DT_REG,
                    fuser::FileType::NamedPipe => libc::DT_FIFO,
                    fuser::FileType::Socket => libc::DT_SOCK,
                    fuser::FileType::CharDevice => libc::DT_CHR,
                    fuser::FileType::BlockDevice => libc::DT_BLK,
                };
                put_u32(&mut out, u32::from(mode));
                out.extend_from_slice(name);
                out.resize(out.len() + padded - record, 0);
            }
            Ok(out)
        }
        _ => Err(libc::ENOSYS),
    };
    Some(result)
}

fn out_header(len: usize, error: i32, unique: u64) -> [u8; OUT_HEADER] {
    let mut header = [0u8; OUT_HEADER];
    header[..4].copy_from_slice(&(len as u32).to_ne_bytes());
    header[4..8].copy_from_slice(&(-error).to_ne_bytes());
    header[8..].copy_from_slice(&unique.to_ne_bytes());
    header
}

/// Writes one answer to `/dev/fuse`.
fn reply_classic(dev: &File, unique: u64, result: Result<Vec<u8>, i32>) {
    let mut buf = Vec::new();
    match result {
        Ok(body) => {
            buf.extend_from_slice(&out_header(OUT_HEADER + body.len(), 0, unique));
            buf.extend_from_slice(&body);
        }
        Err(errno) => buf.extend_from_slice(&out_header(OUT_HEADER, errno, unique)),
    }
    let _ = (&*dev).write(&buf);
}

/// Mounts the floor at `mountpoint` over io_uring and serves it until unmounted.
pub fn serve(floor: Floor, mountpoint: &Path) -> io::Result<()> {
    std::fs::write("/sys/module/fuse/parameters/enable_uring", "Y")?;
    let dev = File::options().read(true).write(true).open("/dev/fuse")?;
    let options = format!(
        "fd={},rootmode=40000,user_id=0,group_id=0,allow_other,default_permissions,max_read={MAX_WRITE}",
        dev.as_raw_fd()
    );
    let target = std::ffi::CString::new(mountpoint.as_os_str().as_bytes()).unwrap();
    let options = std::ffi::CString::new(options).unwrap();
    // SAFETY: valid NUL-terminated strings.
    let rc = unsafe {
        libc::mount(c"floor".as_ptr(), target.as_ptr(), c"fuse.floor".as_ptr(), libc::MS_NOSUID | libc::MS_NODEV | libc::MS_RDONLY, options.as_ptr().cast())
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    let floor = Arc::new(floor);
    let dev = Arc::new(dev);
    let mut buf = vec![0u8; PAYLOAD + 4096];
    let mut rings_started = false;
    loop {
        let len = match (&*dev).read(&mut buf) {
            Ok(len) => len,
            Err(err) if err.raw_os_error() == Some(libc::ENODEV) => return Ok(()),
            Err(err) if err.raw_os_error() == Some(libc::EINTR) => continue,
            Err(err) => return Err(err),
        };
        let (opcode, unique, nodeid) = (u32_at(&buf, 4), u64_at(&buf, 8), u64_at(&buf, 16));
        if opcode == FUSE_INIT {
            let (major, minor, flags, flags2) = (u32_at(&buf, 40), u32_at(&buf, 44), u32_at(&buf, 52), u32_at(&buf, 56));
            let wanted: u64 = (1 << 13) | (1 << 18) | (1 << 20) | (1 << 22) | (1 << 30) | (1 << 41);
            let offered = u64::from(flags) | (u64::from(flags2) << 32);
            let granted = wanted & offered;
            let mut init = Vec::new();
            put_u32(&mut init, major);
            put_u32(&mut init, minor.min(44));
            put_u32(&mut init, 128 * 1024);
            put_u32(&mut init, granted as u32);
            init.extend_from_slice(&16u16.to_ne_bytes());
            init.extend_from_slice(&12u16.to_ne_bytes());
            put_u32(&mut init, MAX_WRITE);
            put_u32(&mut init, 1);
            init.extend_from_slice(&((MAX_WRITE / 4096) as u16).to_ne_bytes());
            init.extend_from_slice(&0u16.to_ne_bytes());
            put_u32(&mut init, (granted >> 32) as u32);
            init.resize(64, 0);
            reply_classic(&dev, unique, Ok(init));
            if granted & (1 << 41) == 0 {
                // Timing /dev/fuse under the name of io_uring would mislead.
                return Err(io::Error::other("the kernel declined FUSE over io_uring"));
            } else if !rings_started {
                rings_started = true;
                for cpu in 0..num_cpus() {
                    let (floor, dev) = (floor.clone(), dev.clone());
                    std::thread::Builder::new().name(format!("floor-ring-{cpu}")).spawn(move || {
                        // A queue's buffers stay the kernel's until the
                        // connection ends: on failure the process ends instead.
                        if let Err(err) = serve_queue(&floor, &dev, cpu) {
                            eprintln!("fuse_floor: queue {cpu}: {err}");
                            std::process::exit(1);
                        }
                    })?;
                }
            }
            continue;
        }
        let args = &buf[IN_HEADER..len];
        if let Some(result) = answer(&floor, opcode, nodeid, args) {
            reply_classic(&dev, unique, result);
        }
        if opcode == FUSE_DESTROY {
            return Ok(());
        }
    }
}

/// The kernel has a queue per possible CPU and uses io_uring only once each
/// has entries: `/sys/devices/system/cpu/possible` (e.g. `0-3,6`) says how many.
fn num_cpus() -> usize {
    let possible = std::fs::read_to_string("/sys/devices/system/cpu/possible").unwrap_or_default();
    let highest = possible.trim().split([',', '-']).filter_map(|n| n.parse::<usize>().ok()).max();
    match highest {
        Some(highest) => highest + 1,
        // SAFETY: plain query.
        None => unsafe { libc::sysconf(libc::_SC_NPROCESSORS_CONF) }.max(1) as usize,
    }
}

struct RingEntry {
    header: Box<[u8; URING_HEADER]>,
    payload: Vec<u8>,
    iov: [libc::iovec; 2],
    commit_id: u64,
}

fn command(dev: &File, cmd_op: u32, qid: u16, commit_id: u64, index: usize, iov: Option<&[libc::iovec; 2]>) -> squeue::Entry128 {
    let mut cmd = [0u8; 80];
    cmd[8..16].copy_from_slice(&commit_id.to_ne_bytes());
    cmd[16..18].copy_from_slice(&qid.to_ne_bytes());
    let mut entry = opcode::UringCmd80::new(types::Fd(dev.as_raw_fd()), cmd_op).cmd(cmd);
    if let Some(iov) = iov {
        entry = entry.addr(Some(iov.as_ptr() as u64));
    }
    let entry = entry.build().user_data(index as u64);
    // The registration names its two buffers as an iovec array: `len` is 2.
    // SAFETY: `Entry128` is a plain 128-byte `repr(C)` SQE; `len` sits at byte 24.
    let mut raw: [u8; 128] = unsafe { std::mem::transmute(entry) };
    if iov.is_some() {
        raw[24..28].copy_from_slice(&2u32.to_ne_bytes());
    }
    // SAFETY: as above, back again.
    unsafe { std::mem::transmute(raw) }
}

fn serve_queue(floor: &Floor, dev: &File, cpu: usize) -> io::Result<()> {
    // SAFETY: plain data; bind this thread to `cpu`.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
    let mut ring: IoUring<squeue::Entry128, cqueue::Entry> = IoUring::builder().setup_cqsize((QUEUE_DEPTH * 2) as u32).build(QUEUE_DEPTH as u32 * 2)?;
    let mut entries: Vec<RingEntry> = (0..QUEUE_DEPTH)
        .map(|_| RingEntry {
            header: Box::new([0u8; URING_HEADER]),
            payload: vec![0u8; PAYLOAD],
            iov: [libc::iovec { iov_base: std::ptr::null_mut(), iov_len: 0 }; 2],
            commit_id: 0,
        })
        .collect();
    let qid = cpu as u16;
    for (index, entry) in entries.iter_mut().enumerate() {
        entry.iov = [
            libc::iovec { iov_base: entry.header.as_mut_ptr().cast(), iov_len: URING_HEADER },
            libc::iovec { iov_base: entry.payload.as_mut_ptr().cast(), iov_len: PAYLOAD },
        ];
        let sqe = command(dev, CMD_REGISTER, qid, 0, index, Some(&entry.iov));
        // SAFETY: the buffers live as long as `entries`, i.e. as long as the ring serves.
        unsafe { ring.submission().push(&sqe).map_err(|_| io::Error::other("submission queue full"))? };
    }
    loop {
        ring.submit_and_wait(1)?;
        let done: Vec<(u64, i32)> = ring.completion().map(|cqe| (cqe.user_data(), cqe.result())).collect();
        for (index, result) in done {
            if result < 0 {
                if result == -libc::ENOTCONN || result == -libc::ENODEV {
                    return Ok(());
                }
                return Err(io::Error::from_raw_os_error(-result));
            }
            let entry = &mut entries[index as usize];
            let header = &entry.header[..];
            let (opcode, unique, nodeid) = (u32_at(header, 4), u64_at(header, 8), u64_at(header, 16));
            let ent = URING_IN_OUT + URING_OP_IN;
            entry.commit_id = u64_at(header, ent + 8);
            let payload_len = u32_at(header, ent + 16) as usize;
            let mut args = header[URING_IN_OUT..URING_IN_OUT + op_header_size(opcode)].to_vec();
            args.extend_from_slice(&entry.payload[..payload_len]);
            let result = answer(floor, opcode, nodeid, &args).unwrap_or(Err(libc::ENOSYS));
            let (error, body) = match result {
                Ok(body) => (0, body),
                Err(errno) => (errno, Vec::new()),
            };
            entry.payload[..body.len()].copy_from_slice(&body);
            entry.header[..OUT_HEADER].copy_from_slice(&out_header(OUT_HEADER + body.len(), error, unique));
            entry.header[ent + 16..ent + 20].copy_from_slice(&(body.len() as u32).to_ne_bytes());
            let sqe = command(dev, CMD_COMMIT_AND_FETCH, qid, entry.commit_id, index as usize, None);
            // SAFETY: as at registration.
            unsafe { ring.submission().push(&sqe).map_err(|_| io::Error::other("submission queue full"))? };
        }
    }
}
