//! The few POSIX calls std does not offer: extended attributes, owners and
//! nanosecond times without following symlinks, device nodes, holes.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use super::tree::Timestamp;

fn cpath(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"))
}

fn check(rc: libc::c_int) -> io::Result<()> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Every extended attribute of `path` (not following symlinks), sorted by name.
pub fn xattrs(path: &Path) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let p = cpath(path)?;
    let mut names = vec![0u8; 1024];
    let len = loop {
        // SAFETY: buffer pointer and length describe `names`.
        let n = unsafe { libc::llistxattr(p.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
        if n >= 0 {
            break n as usize;
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::ERANGE) => names.resize(names.len() * 4, 0),
            Some(libc::ENOTSUP) => return Ok(Vec::new()),
            _ => return Err(e),
        }
    };
    let mut out = Vec::new();
    for name in names[..len].split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let cname = CString::new(name).expect("no NUL inside a split name");
        let mut value = vec![0u8; 256];
        loop {
            // SAFETY: buffer pointer and length describe `value`.
            let n = unsafe { libc::lgetxattr(p.as_ptr(), cname.as_ptr(), value.as_mut_ptr().cast(), value.len()) };
            if n >= 0 {
                value.truncate(n as usize);
                out.push((name.to_vec(), value));
                break;
            }
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::ERANGE) => value.resize(value.len() * 4, 0),
                Some(libc::ENODATA) => break,
                _ => return Err(e),
            }
        }
    }
    out.sort();
    Ok(out)
}

pub fn set_xattr(path: &Path, name: &[u8], value: &[u8]) -> io::Result<()> {
    let (p, n) = (cpath(path)?, CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?);
    // SAFETY: valid C strings and a buffer of the given length.
    check(unsafe { libc::lsetxattr(p.as_ptr(), n.as_ptr(), value.as_ptr().cast(), value.len(), 0) })
}

pub fn remove_xattr(path: &Path, name: &[u8]) -> io::Result<()> {
    let (p, n) = (cpath(path)?, CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?);
    // SAFETY: valid C strings.
    check(unsafe { libc::lremovexattr(p.as_ptr(), n.as_ptr()) })
}

/// Makes `path`'s xattrs exactly `wanted` (sorted by name).
pub fn sync_xattrs(path: &Path, wanted: &[(Vec<u8>, Vec<u8>)]) -> io::Result<()> {
    let current = xattrs(path)?;
    if current == wanted {
        return Ok(());
    }
    for (name, _) in &current {
        if !wanted.iter().any(|(n, _)| n == name) {
            remove_xattr(path, name)?;
        }
    }
    for (name, value) in wanted {
        if !current.iter().any(|(n, v)| n == name && v == value) {
            set_xattr(path, name, value)?;
        }
    }
    Ok(())
}

pub fn lchown(path: &Path, uid: u32, gid: u32) -> io::Result<()> {
    let p = cpath(path)?;
    // SAFETY: valid C string.
    check(unsafe { libc::lchown(p.as_ptr(), uid, gid) })
}

pub fn chmod(path: &Path, mode: u32) -> io::Result<()> {
    let p = cpath(path)?;
    // SAFETY: valid C string.
    check(unsafe { libc::chmod(p.as_ptr(), mode) })
}

/// Sets atime and mtime in nanoseconds without following a symlink.
pub fn set_times(path: &Path, atime: Timestamp, mtime: Timestamp) -> io::Result<()> {
    let p = cpath(path)?;
    let ts = [
        libc::timespec { tv_sec: atime.sec, tv_nsec: atime.nsec as i64 },
        libc::timespec { tv_sec: mtime.sec, tv_nsec: mtime.nsec as i64 },
    ];
    // SAFETY: valid C string and a two-element timespec array.
    check(unsafe { libc::utimensat(libc::AT_FDCWD, p.as_ptr(), ts.as_ptr(), libc::AT_SYMLINK_NOFOLLOW) })
}

pub fn mknod(path: &Path, mode: u32, rdev: u64) -> io::Result<()> {
    let p = cpath(path)?;
    // SAFETY: valid C string.
    check(unsafe { libc::mknod(p.as_ptr(), mode, rdev) })
}

/// The data regions of an open file as `(offset, length)`, holes left out.
pub fn data_regions(file: &std::fs::File, size: u64) -> io::Result<Vec<(u64, u64)>> {
    use std::os::fd::AsRawFd;
    let fd = file.as_raw_fd();
    let mut regions = Vec::new();
    let mut pos: u64 = 0;
    while pos < size {
        // SAFETY: lseek on an fd we own.
        let data = unsafe { libc::lseek(fd, pos as i64, libc::SEEK_DATA) };
        if data < 0 {
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::ENXIO) => break,
                // No hole support: one region covering the file.
                Some(libc::EINVAL) | Some(libc::EOPNOTSUPP) => return Ok(vec![(0, size)]),
                _ => return Err(e),
            }
        }
        let data = data as u64;
        if data >= size {
            break;
        }
        // SAFETY: as above.
        let hole = unsafe { libc::lseek(fd, data as i64, libc::SEEK_HOLE) };
        let end = if hole < 0 { size } else { (hole as u64).min(size) };
        regions.push((data, end - data));
        pos = end;
    }
    Ok(regions)
}

/// Syncs the filesystem holding `path` (cheaper than thousands of fsyncs).
pub fn syncfs(path: &Path) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let f = std::fs::File::open(path)?;
    // SAFETY: syncfs on an fd we own.
    check(unsafe { libc::syncfs(f.as_raw_fd()) })
}
