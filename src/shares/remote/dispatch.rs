//! The source's side of a remote share: one [`FsOp`] applied to the share's
//! backend, exactly as the kernel's request would be on a local mount.

use std::path::Path;

use hoody_fuse::{FsBackend, FsError, HandleId, NodeId};

use super::wire::{name, Answer, FsOp, FsReply, WAttr, WDirEntry, WName};

fn errno(e: FsError) -> i32 {
    e.to_errno()
}

/// The largest read served. The kernel asks at most its `max_read` (1 MiB)
/// and an answer frame carries at most 16 MiB; a read buffer is allocated
/// whole before reading, so a crafted `u32::MAX` would cost the source 4 GiB.
pub const MAX_READ: u32 = 8 << 20;

/// Applies `op` to `backend` (never `Attach`, which the share server handles).
pub async fn apply(backend: &dyn FsBackend, op: FsOp) -> Answer {
    let attr = |a: hoody_fuse::Attr| FsReply::Attr(WAttr::from(&a));
    let r = match op {
        FsOp::Attach | FsOp::Root => backend.root().await.map(attr),
        FsOp::Lookup { parent, name: n } => backend.lookup(NodeId(parent), name(&n)).await.map(attr),
        FsOp::Forget { node, count } => {
            backend.forget(NodeId(node), count).await;
            Ok(FsReply::Done)
        }
        FsOp::Getattr { node, handle } => backend.getattr(NodeId(node), handle.map(HandleId)).await.map(attr),
        FsOp::Setattr { node, handle, changes } => backend.setattr(NodeId(node), handle.map(HandleId), changes.into()).await.map(attr),
        FsOp::Opendir { dir } => backend.opendir(NodeId(dir)).await.map(|h| FsReply::Handle(h.0)),
        FsOp::Readdirplus { dir, handle, offset, max_entries } => {
            backend.readdirplus(NodeId(dir), HandleId(handle), offset, max_entries as usize).await.map(|es| FsReply::Entries(es.iter().map(WDirEntry::from).collect()))
        }
        FsOp::Releasedir { handle } => backend.releasedir(HandleId(handle)).await.map(|_| FsReply::Done),
        FsOp::Fsyncdir { handle, datasync } => backend.fsyncdir(HandleId(handle), datasync).await.map(|_| FsReply::Done),
        // A descriptor cannot cross machines: the target reads and writes through calls.
        FsOp::Open { node, flags, caller } => backend.open(NodeId(node), flags, caller.into()).await.map(|o| FsReply::Handle(o.handle.0)),
        FsOp::Create { parent, name: n, mode, umask, flags, caller } => backend
            .create(NodeId(parent), name(&n), mode, umask, flags, caller.into())
            .await
            .map(|(a, o)| FsReply::Created { attr: WAttr::from(&a), handle: o.handle.0 }),
        FsOp::Read { size, .. } if size > MAX_READ => return Err(libc::EINVAL),
        FsOp::Read { handle, offset, size } => backend.read(HandleId(handle), offset, size).await.map(FsReply::Data),
        FsOp::Write { handle, offset, data, drop_privileges } => backend.write(HandleId(handle), offset, data, drop_privileges.map(Into::into)).await.map(FsReply::Written),
        FsOp::Flush { handle } => backend.flush(HandleId(handle)).await.map(|_| FsReply::Done),
        FsOp::Release { handle } => backend.release(HandleId(handle)).await.map(|_| FsReply::Done),
        FsOp::Fsync { handle, datasync } => backend.fsync(HandleId(handle), datasync).await.map(|_| FsReply::Done),
        FsOp::Fallocate { handle, offset, length, mode } => backend.fallocate(HandleId(handle), offset, length, mode).await.map(|_| FsReply::Done),
        FsOp::Lseek { handle, offset, whence } => backend.lseek(HandleId(handle), offset, whence).await.map(FsReply::Offset),
        FsOp::CopyFileRange { from, from_offset, to, to_offset, length } => {
            backend.copy_file_range(HandleId(from), from_offset, HandleId(to), to_offset, length).await.map(FsReply::Offset)
        }
        FsOp::Mkdir { parent, name: n, mode, umask, caller } => backend.mkdir(NodeId(parent), name(&n), mode, umask, caller.into()).await.map(attr),
        FsOp::Mknod { parent, name: n, mode, umask, rdev, caller } => backend.mknod(NodeId(parent), name(&n), mode, umask, rdev, caller.into()).await.map(attr),
        FsOp::Symlink { parent, name: n, target, caller } => backend.symlink(NodeId(parent), name(&n), Path::new(name(&target)), caller.into()).await.map(attr),
        FsOp::Link { node, new_parent, new_name } => backend.link(NodeId(node), NodeId(new_parent), name(&new_name)).await.map(attr),
        FsOp::Unlink { parent, name: n } => backend.unlink(NodeId(parent), name(&n)).await.map(|_| FsReply::Done),
        FsOp::Rmdir { parent, name: n } => backend.rmdir(NodeId(parent), name(&n)).await.map(|_| FsReply::Done),
        FsOp::Rename { parent, name: n, new_parent, new_name, flags } => {
            backend.rename(NodeId(parent), name(&n), NodeId(new_parent), name(&new_name), flags).await.map(|_| FsReply::Done)
        }
        FsOp::Readlink { node } => backend.readlink(NodeId(node)).await.map(|p| FsReply::Bytes(std::os::unix::ffi::OsStrExt::as_bytes(p.as_os_str()).to_vec())),
        FsOp::Statfs => backend.statfs().await.map(|s| FsReply::StatFs(s.into())),
        FsOp::Getxattr { node, name: n } => backend.getxattr(NodeId(node), name(&n)).await.map(FsReply::Bytes),
        FsOp::Setxattr { node, name: n, value, flags } => backend.setxattr(NodeId(node), name(&n), &value, flags).await.map(|_| FsReply::Done),
        FsOp::Listxattr { node } => {
            backend.listxattr(NodeId(node)).await.map(|names| FsReply::Names(names.into_iter().map(|n| WName(std::os::unix::ffi::OsStringExt::into_vec(n))).collect()))
        }
        FsOp::Removexattr { node, name: n } => backend.removexattr(NodeId(node), name(&n)).await.map(|_| FsReply::Done),
        FsOp::Getlk { handle, owner, lock } => match lock.to_lock() {
            Ok(lock) => backend.getlk(HandleId(handle), owner, lock).await.map(|l| FsReply::Lock(l.map(Into::into))),
            Err(e) => return Err(e),
        },
        // A backend that takes no locks (a readonly share: its readers may not
        // hold up the source's writers) told the target so at `Attach`, and
        // the target's kernel keeps its locks to itself: a lock asked anyway
        // is refused, never taken on the source's file.
        FsOp::Setlk { lock, .. } if !backend.takes_locks() && lock.kind != libc::F_UNLCK => return Err(libc::EROFS),
        FsOp::Setlk { handle, owner, lock } => match lock.to_lock() {
            Ok(lock) => backend.setlk(HandleId(handle), owner.into(), lock, false).await.map(|_| FsReply::Done),
            Err(e) => return Err(e),
        },
    };
    r.map_err(errno)
}
