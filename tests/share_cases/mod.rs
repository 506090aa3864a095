//! Share test bodies written once against a mounted share, checked with plain
//! std::fs and libc calls, so that every backend (local now, QUIC later) runs
//! the same cases. A backend's test file provides the fixture and instantiates
//! the cases.
#![allow(dead_code)]

use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Where a case finds things. The fixture seeds `source` with [`seed_source`]
/// before mounting and places `mnt` so that `mnt/..` is neither the source's
/// parent nor `outside`'s.
pub struct Share {
    /// The shared directory as its owner sees it.
    pub source: PathBuf,
    /// The same directory as a target sees it.
    pub mnt: PathBuf,
    /// Next to `source`, not shared.
    pub outside: PathBuf,
}

const GIB: u64 = 1024 * 1024 * 1024;

pub fn seed_source(source: &Path, outside: &Path) {
    fs::create_dir_all(source.join("dir")).unwrap();
    fs::create_dir_all(source.join("full")).unwrap();
    fs::write(source.join("full/inner"), b"inner").unwrap();
    fs::write(source.join("existing"), b"existing").unwrap();
    set_xattr(&source.join("existing"), "user.seed", b"seeded").unwrap();
    fs::create_dir_all(outside).unwrap();
    fs::write(outside.join("secret"), b"secret").unwrap();
    std::os::unix::fs::symlink("../outside/secret", source.join("up")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", source.join("passwd")).unwrap();
}

/// A `security.capability` value granting CAP_NET_BIND_SERVICE (bit 10), format v2.
pub fn capability_blob() -> Vec<u8> {
    [0x0200_0001u32, 1 << 10, 0, 0, 0].iter().flat_map(|word| word.to_le_bytes()).collect()
}

fn c_path(path: &Path) -> CString {
    CString::new(path.as_os_str().as_bytes()).unwrap()
}

fn check(rc: libc::c_int) -> io::Result<()> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

pub fn errno<T: std::fmt::Debug>(result: io::Result<T>) -> i32 {
    result.expect_err("expected an error").raw_os_error().expect("an OS error")
}

pub fn set_xattr(path: &Path, name: &str, value: &[u8]) -> io::Result<()> {
    let name = CString::new(name).unwrap();
    // SAFETY: valid strings and buffer.
    check(unsafe { libc::lsetxattr(c_path(path).as_ptr(), name.as_ptr(), value.as_ptr().cast(), value.len(), 0) })
}

pub fn get_xattr(path: &Path, name: &str) -> io::Result<Vec<u8>> {
    let name = CString::new(name).unwrap();
    let mut buf = vec![0u8; 4096];
    // SAFETY: valid strings and buffer.
    let len = unsafe { libc::lgetxattr(c_path(path).as_ptr(), name.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if len < 0 {
        return Err(io::Error::last_os_error());
    }
    buf.truncate(len as usize);
    Ok(buf)
}

pub fn xattr_size(path: &Path, name: &str) -> io::Result<usize> {
    let name = CString::new(name).unwrap();
    // SAFETY: a size query: null buffer, zero size.
    let len = unsafe { libc::lgetxattr(c_path(path).as_ptr(), name.as_ptr(), std::ptr::null_mut(), 0) };
    if len < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(len as usize)
    }
}

fn list_xattrs(path: &Path) -> io::Result<Vec<String>> {
    let mut buf = vec![0u8; 4096];
    // SAFETY: valid string and buffer.
    let len = unsafe { libc::llistxattr(c_path(path).as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if len < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(buf[..len as usize].split(|&b| b == 0).filter(|n| !n.is_empty()).map(|n| String::from_utf8_lossy(n).into_owned()).collect())
}

fn remove_xattr(path: &Path, name: &str) -> io::Result<()> {
    let name = CString::new(name).unwrap();
    // SAFETY: valid strings.
    check(unsafe { libc::lremovexattr(c_path(path).as_ptr(), name.as_ptr()) })
}

fn rename2(from: &Path, to: &Path, flags: u32) -> io::Result<()> {
    // SAFETY: valid strings.
    check(unsafe { libc::renameat2(libc::AT_FDCWD, c_path(from).as_ptr(), libc::AT_FDCWD, c_path(to).as_ptr(), flags) })
}

fn set_times(path: &Path, atime: (i64, i64), mtime: (i64, i64)) -> io::Result<()> {
    let times = [libc::timespec { tv_sec: atime.0, tv_nsec: atime.1 }, libc::timespec { tv_sec: mtime.0, tv_nsec: mtime.1 }];
    // SAFETY: valid string and two timespecs.
    check(unsafe { libc::utimensat(libc::AT_FDCWD, c_path(path).as_ptr(), times.as_ptr(), libc::AT_SYMLINK_NOFOLLOW) })
}

fn truncate_path(path: &Path, size: i64) -> io::Result<()> {
    // SAFETY: valid string.
    check(unsafe { libc::truncate(c_path(path).as_ptr(), size) })
}

fn mkfifo(path: &Path) -> io::Result<()> {
    // SAFETY: valid string.
    check(unsafe { libc::mkfifo(c_path(path).as_ptr(), 0o644) })
}

fn statvfs(path: &Path) -> libc::statvfs {
    // SAFETY: plain data, filled on success.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: valid string and out pointer.
    check(unsafe { libc::statvfs(c_path(path).as_ptr(), &mut st) }).unwrap();
    st
}

fn umask() -> u32 {
    // SAFETY: umask cannot fail; it is restored at once.
    let mask = unsafe { libc::umask(0o022) };
    // SAFETY: as above.
    unsafe { libc::umask(mask) };
    mask
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
}

pub fn create_read_write_append_truncate(share: &Share) {
    let path = share.mnt.join("file.txt");
    fs::write(&path, b"hello world").unwrap();
    assert_eq!(fs::read(&path).unwrap(), b"hello world");
    assert_eq!(fs::read(share.source.join("file.txt")).unwrap(), b"hello world", "visible at the source");

    let mut appender = OpenOptions::new().append(true).open(&path).unwrap();
    appender.write_all(b"!!").unwrap();
    // O_APPEND writes at the end whatever the position.
    appender.seek(SeekFrom::Start(0)).unwrap();
    appender.write_all(b"?").unwrap();
    drop(appender);
    assert_eq!(fs::read(&path).unwrap(), b"hello world!!?");

    OpenOptions::new().write(true).open(&path).unwrap().write_all_at(b"W", 6).unwrap();
    assert_eq!(fs::read(&path).unwrap(), b"hello World!!?");

    OpenOptions::new().write(true).truncate(true).open(&path).unwrap().write_all(b"short").unwrap();
    assert_eq!(fs::read(&path).unwrap(), b"short");

    let file = OpenOptions::new().write(true).open(&path).unwrap();
    file.set_len(2).unwrap();
    assert_eq!(fs::read(&path).unwrap(), b"sh");
    file.set_len(4).unwrap();
    assert_eq!(fs::read(&path).unwrap(), b"sh\0\0");
    drop(file);
    truncate_path(&path, 1).unwrap();
    assert_eq!(fs::metadata(&path).unwrap().len(), 1);
    assert_eq!(fs::metadata(share.source.join("file.txt")).unwrap().len(), 1);

    let exclusive = OpenOptions::new().write(true).create_new(true).open(&path);
    assert_eq!(exclusive.unwrap_err().kind(), io::ErrorKind::AlreadyExists);

    let made = share.mnt.join("moded");
    OpenOptions::new().write(true).create_new(true).mode(0o640).open(&made).unwrap();
    assert_eq!(fs::metadata(&made).unwrap().mode() & 0o7777, 0o640 & !umask());
    assert_eq!(fs::metadata(share.source.join("moded")).unwrap().mode() & 0o7777, 0o640 & !umask());

    // Larger than one FUSE request, at odd offsets.
    let big = pattern(3 * 1024 * 1024 + 17);
    fs::write(share.mnt.join("big"), &big).unwrap();
    assert_eq!(fs::read(share.mnt.join("big")).unwrap(), big);
    assert_eq!(fs::read(share.source.join("big")).unwrap(), big);
    let mut chunk = vec![0u8; 1000];
    File::open(share.mnt.join("big")).unwrap().read_exact_at(&mut chunk, 1_234_567).unwrap();
    assert_eq!(chunk, &big[1_234_567..1_235_567]);

    // Writes at the source show through the mount after the next open.
    fs::write(share.source.join("from-source"), b"one").unwrap();
    assert_eq!(fs::read(share.mnt.join("from-source")).unwrap(), b"one");
}

pub fn rename_variants(share: &Share) {
    let m = |name: &str| share.mnt.join(name);
    fs::write(m("a"), b"a").unwrap();
    fs::rename(m("a"), m("b")).unwrap();
    assert!(!m("a").exists());
    assert_eq!(fs::read(share.source.join("b")).unwrap(), b"a");

    fs::write(m("c"), b"c").unwrap();
    fs::rename(m("c"), m("b")).unwrap();
    assert_eq!(fs::read(m("b")).unwrap(), b"c", "rename replaces");

    fs::write(m("d"), b"d").unwrap();
    assert_eq!(errno(rename2(&m("d"), &m("b"), libc::RENAME_NOREPLACE)), libc::EEXIST);
    rename2(&m("d"), &m("fresh"), libc::RENAME_NOREPLACE).unwrap();
    assert_eq!(fs::read(m("fresh")).unwrap(), b"d");

    rename2(&m("b"), &m("fresh"), libc::RENAME_EXCHANGE).unwrap();
    assert_eq!(fs::read(m("b")).unwrap(), b"d");
    assert_eq!(fs::read(m("fresh")).unwrap(), b"c");
    assert_eq!(errno(rename2(&m("b"), &m("missing"), libc::RENAME_EXCHANGE)), libc::ENOENT);

    fs::create_dir_all(m("tree/sub")).unwrap();
    fs::write(m("tree/sub/leaf"), b"leaf").unwrap();
    fs::create_dir(m("elsewhere")).unwrap();
    fs::rename(m("tree"), m("elsewhere/tree")).unwrap();
    assert_eq!(fs::read(m("elsewhere/tree/sub/leaf")).unwrap(), b"leaf");
    assert_eq!(fs::read(share.source.join("elsewhere/tree/sub/leaf")).unwrap(), b"leaf");

    fs::create_dir(m("empty")).unwrap();
    assert_eq!(errno(fs::rename(m("empty"), m("elsewhere"))), libc::ENOTEMPTY);
    fs::rename(m("elsewhere/tree/sub"), m("empty")).unwrap();
    assert_eq!(fs::read(m("empty/leaf")).unwrap(), b"leaf", "a directory replaces an empty one");
}

pub fn unlink_rmdir_mkdir(share: &Share) {
    let m = |name: &str| share.mnt.join(name);
    fs::create_dir(m("d")).unwrap();
    assert_eq!(fs::create_dir(m("d")).unwrap_err().kind(), io::ErrorKind::AlreadyExists);
    fs::create_dir_all(m("d/x/y")).unwrap();
    fs::write(m("d/x/y/f"), b"f").unwrap();
    assert!(share.source.join("d/x/y/f").is_file());
    assert_eq!(errno(fs::remove_dir(m("d/x"))), libc::ENOTEMPTY);
    assert_eq!(errno(fs::remove_dir(m("d/x/y/f"))), libc::ENOTDIR);
    assert_eq!(errno(fs::remove_file(m("d/x"))), libc::EISDIR);
    fs::remove_file(m("d/x/y/f")).unwrap();
    assert_eq!(fs::remove_file(m("d/x/y/f")).unwrap_err().kind(), io::ErrorKind::NotFound);
    fs::remove_dir(m("d/x/y")).unwrap();
    fs::remove_dir(m("d/x")).unwrap();
    assert!(!share.source.join("d/x").exists());

    fs::create_dir(m("modes")).unwrap();
    fs::set_permissions(m("modes"), fs::Permissions::from_mode(0o750)).unwrap();
    fs::create_dir(m("modes/inner")).unwrap();
    assert_eq!(fs::metadata(m("modes/inner")).unwrap().mode() & 0o7777, 0o777 & !umask());

    // A listing longer than one kernel buffer.
    fs::create_dir(m("many")).unwrap();
    for i in 0..600 {
        File::create(m(&format!("many/entry-with-a-longish-name-{i:04}"))).unwrap();
    }
    let mut names: Vec<_> = fs::read_dir(m("many")).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    names.sort();
    assert_eq!(names.len(), 600);
    assert_eq!(names[0], "entry-with-a-longish-name-0000");
    assert_eq!(names[599], "entry-with-a-longish-name-0599");
    let kinds: Vec<_> = fs::read_dir(m("full")).unwrap().map(|e| e.unwrap().file_type().unwrap().is_file()).collect();
    assert_eq!(kinds, vec![true]);
    let listed = std::process::Command::new("ls").arg("-a1").arg(m("full")).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&listed.stdout), ".\n..\ninner\n");
    fs::remove_dir_all(m("many")).unwrap();
    assert!(!share.source.join("many").exists());
}

pub fn links(share: &Share) {
    let m = |name: &str| share.mnt.join(name);
    fs::write(m("f"), b"shared").unwrap();
    fs::hard_link(m("f"), m("g")).unwrap();
    let (f, g) = (fs::metadata(m("f")).unwrap(), fs::metadata(m("g")).unwrap());
    assert_eq!(f.nlink(), 2);
    assert_eq!(f.ino(), g.ino());
    OpenOptions::new().write(true).open(m("g")).unwrap().write_all_at(b"S", 0).unwrap();
    assert_eq!(fs::read(m("f")).unwrap(), b"Shared");
    assert_eq!(fs::metadata(share.source.join("f")).unwrap().nlink(), 2);
    fs::remove_file(m("f")).unwrap();
    assert_eq!(fs::read(m("g")).unwrap(), b"Shared");
    assert_eq!(fs::metadata(m("g")).unwrap().nlink(), 1);

    std::os::unix::fs::symlink("g", m("to-g")).unwrap();
    assert_eq!(fs::read_link(m("to-g")).unwrap(), PathBuf::from("g"));
    assert!(fs::symlink_metadata(m("to-g")).unwrap().file_type().is_symlink());
    assert_eq!(fs::read(m("to-g")).unwrap(), b"Shared");
    assert_eq!(fs::read_link(share.source.join("to-g")).unwrap(), PathBuf::from("g"));
    std::os::unix::fs::symlink("nowhere/target", m("dangling")).unwrap();
    assert_eq!(fs::read_link(m("dangling")).unwrap(), PathBuf::from("nowhere/target"));
    assert_eq!(fs::metadata(m("dangling")).unwrap_err().kind(), io::ErrorKind::NotFound);
    fs::hard_link(m("to-g"), m("to-g-too")).unwrap();
    assert!(fs::symlink_metadata(m("to-g-too")).unwrap().file_type().is_symlink(), "link(2) links the symlink itself");
}

pub fn metadata_changes(share: &Share) {
    let m = |name: &str| share.mnt.join(name);
    fs::write(m("meta"), b"meta").unwrap();
    fs::set_permissions(m("meta"), fs::Permissions::from_mode(0o604)).unwrap();
    assert_eq!(fs::metadata(m("meta")).unwrap().mode() & 0o7777, 0o604);
    assert_eq!(fs::metadata(share.source.join("meta")).unwrap().mode() & 0o7777, 0o604);

    std::os::unix::fs::chown(m("meta"), Some(1234), Some(5678)).unwrap();
    let meta = fs::metadata(m("meta")).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (1234, 5678));
    let source = fs::metadata(share.source.join("meta")).unwrap();
    assert_eq!((source.uid(), source.gid()), (1234, 5678));

    set_times(&m("meta"), (1_000_000_000, 500), (1_500_000_000, 250_000_000)).unwrap();
    let meta = fs::metadata(m("meta")).unwrap();
    assert_eq!((meta.atime(), meta.atime_nsec()), (1_000_000_000, 500));
    assert_eq!((meta.mtime(), meta.mtime_nsec()), (1_500_000_000, 250_000_000));
    set_times(&m("meta"), (0, libc::UTIME_OMIT), (-86_400, 0)).unwrap();
    let meta = fs::metadata(m("meta")).unwrap();
    assert_eq!(meta.atime(), 1_000_000_000, "UTIME_OMIT leaves atime");
    assert_eq!(meta.mtime(), -86_400, "before the epoch");
    set_times(&m("meta"), (0, libc::UTIME_NOW), (0, libc::UTIME_NOW)).unwrap();
    assert!(fs::metadata(m("meta")).unwrap().mtime() > 1_600_000_000);

    std::os::unix::fs::symlink("meta", m("meta-link")).unwrap();
    std::os::unix::fs::lchown(m("meta-link"), Some(42), Some(43)).unwrap();
    let link = fs::symlink_metadata(m("meta-link")).unwrap();
    assert_eq!((link.uid(), link.gid()), (42, 43));
    assert_eq!(fs::metadata(m("meta")).unwrap().uid(), 1234, "lchown leaves the target");
}

pub fn xattrs(share: &Share) {
    let path = share.mnt.join("x");
    fs::write(&path, b"x").unwrap();
    set_xattr(&path, "user.colour", b"blue").unwrap();
    assert_eq!(get_xattr(&path, "user.colour").unwrap(), b"blue");
    assert_eq!(xattr_size(&path, "user.colour").unwrap(), 4);
    assert_eq!(get_xattr(&share.source.join("x"), "user.colour").unwrap(), b"blue");
    set_xattr(&path, "user.empty", b"").unwrap();
    assert_eq!(get_xattr(&path, "user.empty").unwrap(), b"");
    let mut names = list_xattrs(&path).unwrap();
    names.sort();
    assert_eq!(names, vec!["user.colour", "user.empty"]);
    remove_xattr(&path, "user.colour").unwrap();
    assert_eq!(errno(get_xattr(&path, "user.colour")), libc::ENODATA);
    assert_eq!(errno(remove_xattr(&path, "user.colour")), libc::ENODATA);
    assert_eq!(get_xattr(&share.mnt.join("existing"), "user.seed").unwrap(), b"seeded");
    fs::create_dir(share.mnt.join("xdir")).unwrap();
    set_xattr(&share.mnt.join("xdir"), "user.on-dir", b"1").unwrap();
    assert_eq!(get_xattr(&share.source.join("xdir"), "user.on-dir").unwrap(), b"1");
    // Linux allows no user.* attributes on symlinks; the share says the same.
    assert_eq!(errno(set_xattr(&share.mnt.join("up"), "user.x", b"1")), libc::EPERM);
    assert_eq!(list_xattrs(&share.mnt.join("up")).unwrap(), Vec::<String>::new());
}

/// A share carries no labels of mandatory access control (SELinux, Smack):
/// lists leave them out, getting and setting one is `EOPNOTSUPP`, and the
/// source's own label stays as it is. Every other attribute of the
/// `security.` namespace is the file's and is carried: file capabilities.
pub fn security_labels_are_not_carried(share: &Share) {
    let label = b"system_u:object_r:etc_t:s0";
    let source = share.source.join("labelled");
    fs::write(&source, b"l").unwrap();
    set_xattr(&source, "security.selinux", label).unwrap();
    set_xattr(&source, "security.SMACK64", b"_").unwrap();
    set_xattr(&source, "user.k", b"v").unwrap();
    let capability = capability_blob();
    set_xattr(&source, "security.capability", &capability).unwrap();

    let path = share.mnt.join("labelled");
    assert_eq!(errno(get_xattr(&path, "security.selinux")), libc::EOPNOTSUPP);
    assert_eq!(errno(xattr_size(&path, "security.SMACK64")), libc::EOPNOTSUPP);
    let mut names = list_xattrs(&path).unwrap();
    names.sort();
    assert_eq!(names, vec!["security.capability", "user.k"]);
    assert_eq!(get_xattr(&path, "security.capability").unwrap(), capability);
    assert_eq!(errno(set_xattr(&path, "security.selinux", b"unconfined_u:object_r:shadow_t:s0")), libc::EOPNOTSUPP);
    assert_eq!(errno(set_xattr(&share.mnt.join("existing"), "security.SMACK64", b"_")), libc::EOPNOTSUPP);
    assert_eq!(errno(remove_xattr(&path, "security.selinux")), libc::EOPNOTSUPP);
    assert_eq!(get_xattr(&source, "security.selinux").unwrap(), label);
    assert_eq!(errno(get_xattr(&share.source.join("existing"), "security.SMACK64")), libc::ENODATA);
}

pub fn statfs_matches_the_source(share: &Share) {
    let (mnt, source) = (statvfs(&share.mnt), statvfs(&share.source));
    assert_eq!(mnt.f_frsize, source.f_frsize);
    assert_eq!(mnt.f_blocks, source.f_blocks);
    assert_eq!(mnt.f_files, source.f_files);
    assert_eq!(mnt.f_namemax, source.f_namemax);
}

pub fn sparse_file_beyond_4_gib(share: &Share) {
    let path = share.mnt.join("sparse");
    let mut file = File::create(&path).unwrap();
    file.seek(SeekFrom::Start(5 * GIB)).unwrap();
    file.write_all(b"tail").unwrap();
    file.sync_all().unwrap();
    drop(file);
    for seen in [&path, &share.source.join("sparse")] {
        let meta = fs::metadata(seen).unwrap();
        assert_eq!(meta.len(), 5 * GIB + 4);
        assert!(meta.blocks() * 512 < 1024 * 1024, "stays sparse: {} blocks", meta.blocks());
    }
    let file = File::open(&path).unwrap();
    let mut tail = [0u8; 4];
    file.read_exact_at(&mut tail, 5 * GIB).unwrap();
    assert_eq!(&tail, b"tail");
    let mut hole = vec![1u8; 4096];
    file.read_exact_at(&mut hole, 4 * GIB).unwrap();
    assert!(hole.iter().all(|&b| b == 0));
    // SAFETY: valid descriptor.
    let data = unsafe { libc::lseek64(std::os::fd::AsRawFd::as_raw_fd(&file), 0, libc::SEEK_DATA) };
    assert!(data as u64 >= 5 * GIB - 4096 && data as u64 <= 5 * GIB, "SEEK_DATA finds the data: {data}");
    OpenOptions::new().write(true).open(&path).unwrap().set_len(4 * GIB + 1).unwrap();
    assert_eq!(fs::metadata(&path).unwrap().len(), 4 * GIB + 1);
}

pub fn mmap_read(share: &Share) {
    let content = pattern(1024 * 1024 + 123);
    fs::write(share.mnt.join("mapped"), &content).unwrap();
    let file = File::open(share.mnt.join("mapped")).unwrap();
    // SAFETY: nobody truncates the file while it is mapped.
    let map = unsafe { memmap2::Mmap::map(&file) }.unwrap();
    assert_eq!(&map[..], &content[..]);
    drop(map);
    let seeded = File::open(share.mnt.join("existing")).unwrap();
    // SAFETY: as above.
    let map = unsafe { memmap2::Mmap::map(&seeded) }.unwrap();
    assert_eq!(&map[..], b"existing");
}

pub fn shared_mmap_write(share: &Share) {
    let path = share.mnt.join("mapped-rw");
    fs::write(&path, pattern(3 * 4096 + 10)).unwrap();
    let file = OpenOptions::new().read(true).write(true).open(&path).unwrap();
    // SAFETY: nobody truncates the file while it is mapped.
    let mut map = unsafe { memmap2::MmapMut::map_mut(&file) }.unwrap();
    map[4096..4096 + 6].copy_from_slice(b"mapped");
    map[3 * 4096 + 9] = b'!';
    map.flush().unwrap();
    drop(map);
    let mut expected = pattern(3 * 4096 + 10);
    expected[4096..4096 + 6].copy_from_slice(b"mapped");
    expected[3 * 4096 + 9] = b'!';
    assert_eq!(fs::read(share.source.join("mapped-rw")).unwrap(), expected, "the source has the mapped writes");
    assert_eq!(fs::read(&path).unwrap(), expected);
}

fn record_lock(file: &File, cmd: libc::c_int, typ: libc::c_int, start: i64, len: i64) -> io::Result<libc::flock> {
    // SAFETY: `flock` is plain data.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = typ as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    fl.l_start = start;
    fl.l_len = len;
    // SAFETY: valid descriptor and lock structure.
    check(unsafe { libc::fcntl(std::os::fd::AsRawFd::as_raw_fd(file), cmd, &mut fl) })?;
    Ok(fl)
}

fn flock(file: &File, operation: libc::c_int) -> io::Result<()> {
    // SAFETY: valid descriptor.
    check(unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(file), operation) })
}

/// Runs `child` in a forked process, which exits with what it returns.
/// `child` may only make system calls: the test process has other threads.
fn in_child(child: impl FnOnce() -> i32) -> libc::pid_t {
    // SAFETY: the child makes system calls only, then `_exit`s.
    match unsafe { libc::fork() } {
        0 => unsafe { libc::_exit(child()) },
        pid => {
            assert!(pid > 0, "fork: {}", io::Error::last_os_error());
            pid
        }
    }
}

/// The exit code of `pid`, or `None` if it is still running after `within`.
fn exit_code(pid: libc::pid_t, within: std::time::Duration) -> Option<i32> {
    let until = std::time::Instant::now() + within;
    loop {
        let mut status = 0;
        // SAFETY: plain waitpid.
        if unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) } == pid {
            return Some(if libc::WIFEXITED(status) { libc::WEXITSTATUS(status) } else { 128 + libc::WTERMSIG(status) });
        }
        if std::time::Instant::now() > until {
            return None;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// Whether `done` comes true within two seconds.
pub fn soon(mut done: impl FnMut() -> bool) -> bool {
    let until = std::time::Instant::now() + std::time::Duration::from_secs(2);
    while !done() {
        if std::time::Instant::now() > until {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    true
}

/// Locks taken through a share are locks on the source file: they exclude
/// processes on the source as well as through the mount, by the rules of a
/// local file (record locks per process, OFD and flock locks per open file).
pub fn locks_exclude_across_the_share_and_the_source(share: &Share) {
    use libc::{EAGAIN, F_OFD_GETLK, F_OFD_SETLK, F_RDLCK, F_SETLK, F_SETLKW, F_UNLCK, F_WRLCK};
    let second = std::time::Duration::from_secs(2);
    fs::write(share.mnt.join("locked"), b"0123456789").unwrap();
    let rw = |path: PathBuf| OpenOptions::new().read(true).write(true).open(path).unwrap();
    let (through, direct) = (rw(share.mnt.join("locked")), rw(share.source.join("locked")));

    // Open-file-description locks, per open file, both ways.
    record_lock(&through, F_OFD_SETLK, F_WRLCK, 0, 5).unwrap();
    assert_eq!(errno(record_lock(&direct, F_OFD_SETLK, F_WRLCK, 4, 1)), EAGAIN);
    record_lock(&direct, F_OFD_SETLK, F_WRLCK, 5, 0).unwrap();
    let seen = record_lock(&direct, F_OFD_GETLK, F_RDLCK, 0, 0).unwrap();
    assert_eq!((seen.l_type as i32, seen.l_start, seen.l_len), (F_WRLCK, 0, 5), "the share's lock as the source sees it");
    let seen = record_lock(&through, F_OFD_GETLK, F_RDLCK, 0, 0).unwrap();
    assert_eq!((seen.l_type as i32, seen.l_start, seen.l_len), (F_WRLCK, 5, 0), "the source's lock, to the end of the file, seen through the share");
    assert_eq!(errno(record_lock(&through, F_OFD_SETLK, F_RDLCK, 100, 1)), EAGAIN);
    // A process's record lock conflicts with open files' locks, its own
    // included. Who holds it: locally -1 for an open file's lock; through a
    // share no process is named (see SEMANTICS.md).
    let seen = record_lock(&through, libc::F_GETLK, F_WRLCK, 0, 0).unwrap();
    assert_eq!((seen.l_type as i32, seen.l_start, seen.l_len, seen.l_pid), (F_WRLCK, 0, 5, 0));
    let other = rw(share.mnt.join("locked"));
    assert_eq!(errno(record_lock(&other, F_OFD_SETLK, F_RDLCK, 0, 1)), EAGAIN, "another open file of the same mount");
    record_lock(&through, F_OFD_SETLK, F_UNLCK, 0, 0).unwrap();
    record_lock(&direct, F_OFD_SETLK, F_UNLCK, 0, 0).unwrap();
    assert_eq!(record_lock(&other, F_OFD_GETLK, F_WRLCK, 0, 0).unwrap().l_type as i32, F_UNLCK);

    // Locks on directories stay with the target's kernel (SEMANTICS.md).
    let dir_through = File::open(share.mnt.join("dir")).unwrap();
    flock(&dir_through, libc::LOCK_EX | libc::LOCK_NB).unwrap();
    assert_eq!(errno(flock(&File::open(share.mnt.join("dir")).unwrap(), libc::LOCK_EX | libc::LOCK_NB)), libc::EWOULDBLOCK);
    flock(&File::open(share.source.join("dir")).unwrap(), libc::LOCK_EX | libc::LOCK_NB).unwrap();
    drop(dir_through);

    // flock locks: per open file; closing it gives the lock up.
    flock(&through, libc::LOCK_EX | libc::LOCK_NB).unwrap();
    assert_eq!(errno(flock(&direct, libc::LOCK_SH | libc::LOCK_NB)), libc::EWOULDBLOCK);
    assert_eq!(errno(flock(&other, libc::LOCK_EX | libc::LOCK_NB)), libc::EWOULDBLOCK);
    flock(&through, libc::LOCK_SH | libc::LOCK_NB).unwrap();
    flock(&other, libc::LOCK_SH | libc::LOCK_NB).unwrap();
    flock(&other, libc::LOCK_UN).unwrap();
    drop(through);
    // The kernel releases a closed file in the background.
    assert!(soon(|| flock(&direct, libc::LOCK_EX | libc::LOCK_NB).is_ok()), "closing the file gave its flock up");
    flock(&direct, libc::LOCK_UN).unwrap();

    // Record locks belong to the process: this one's never conflict with
    // each other whatever descriptor they go through, a forked child's do,
    // though it locks through the very same open file.
    let through = rw(share.mnt.join("locked"));
    record_lock(&through, F_SETLK, F_WRLCK, 0, 2).unwrap();
    record_lock(&other, F_SETLK, F_WRLCK, 1, 2).unwrap();
    // `record_lock` makes system calls only: fit for a forked child.
    let child = in_child(|| {
        let refused = record_lock(&through, F_SETLK, F_WRLCK, 2, 1).is_err_and(|err| err.raw_os_error() == Some(EAGAIN));
        let free = record_lock(&through, F_SETLK, F_WRLCK, 3, 1).is_ok();
        if refused && free { 0 } else { 1 }
    });
    assert_eq!(exit_code(child, second * 5), Some(0), "the child is refused the parent's range and given the rest");
    // The child's lock ended with it; the parent's end when it closes the file.
    assert!(soon(|| record_lock(&direct, F_OFD_SETLK, F_WRLCK, 3, 1).is_ok()), "the child's lock ended when it exited");
    assert_eq!(errno(record_lock(&direct, F_OFD_SETLK, F_WRLCK, 0, 1)), EAGAIN, "the parent's lock holds");
    // Deviation (SEMANTICS.md): closing one of several descriptors of the open
    // file leaves the process's locks, which locally it would end.
    drop(through.try_clone().unwrap());
    std::thread::sleep(std::time::Duration::from_millis(50));
    assert_eq!(errno(record_lock(&direct, F_OFD_SETLK, F_WRLCK, 0, 1)), EAGAIN, "kept until the open file's last close");
    drop(other);
    drop(through);
    assert!(soon(|| record_lock(&direct, F_OFD_SETLK, F_WRLCK, 0, 0).is_ok()), "closing the file ended the process's locks");

    // A waiting lock is given when the holder lets go...
    let through = rw(share.mnt.join("locked"));
    let waiter = in_child(|| if record_lock(&through, F_SETLKW, F_RDLCK, 0, 0).is_ok() { 0 } else { 1 });
    assert_eq!(exit_code(waiter, std::time::Duration::from_millis(300)), None, "waits while the source holds the lock");
    record_lock(&direct, F_OFD_SETLK, F_UNLCK, 0, 0).unwrap();
    assert_eq!(exit_code(waiter, second * 5), Some(0), "granted once the source let go");

    // ...and a waiter killed meanwhile dies at once and leaves no lock. (The
    // first waiter's lock ends as it exits, though the file stays open here.)
    assert!(soon(|| record_lock(&direct, F_OFD_SETLK, F_WRLCK, 0, 0).is_ok()), "an exited process holds no lock");
    let waiter = in_child(|| {
        let _ = record_lock(&through, F_SETLKW, F_WRLCK, 0, 0);
        2
    });
    assert_eq!(exit_code(waiter, std::time::Duration::from_millis(300)), None, "waits while the source holds the lock");
    // SAFETY: our own child.
    unsafe { libc::kill(waiter, libc::SIGKILL) };
    assert_eq!(exit_code(waiter, second), Some(128 + libc::SIGKILL), "a killed waiter does not hang");
    record_lock(&direct, F_OFD_SETLK, F_UNLCK, 0, 0).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(50));
    assert_eq!(record_lock(&direct, F_OFD_GETLK, F_WRLCK, 0, 0).unwrap().l_type as i32, F_UNLCK, "the killed waiter holds no lock");
}

/// Where a share takes no locks on the source (over io_uring, and readonly;
/// SEMANTICS.md), the target's kernel keeps them: they exclude the users of
/// the mount, not the source.
pub fn locks_are_kept_by_the_targets_kernel(share: &Share) {
    use libc::{EAGAIN, F_OFD_SETLK, F_WRLCK};
    fs::write(share.mnt.join("locked"), b"0123456789").unwrap();
    let rw = |path: PathBuf| OpenOptions::new().read(true).write(true).open(path).unwrap();
    let (through, other, direct) = (rw(share.mnt.join("locked")), rw(share.mnt.join("locked")), rw(share.source.join("locked")));
    record_lock(&through, F_OFD_SETLK, F_WRLCK, 0, 0).unwrap();
    assert_eq!(errno(record_lock(&other, F_OFD_SETLK, F_WRLCK, 0, 1)), EAGAIN);
    record_lock(&direct, F_OFD_SETLK, F_WRLCK, 0, 0).unwrap();
    flock(&through, libc::LOCK_EX | libc::LOCK_NB).unwrap();
    assert_eq!(errno(flock(&other, libc::LOCK_EX | libc::LOCK_NB)), libc::EWOULDBLOCK);
    flock(&direct, libc::LOCK_EX | libc::LOCK_NB).unwrap();
}

pub fn fsync_and_fallocate(share: &Share) {
    let path = share.mnt.join("synced");
    let file = File::create(&path).unwrap();
    // SAFETY: valid descriptor.
    let rc = unsafe { libc::fallocate64(std::os::fd::AsRawFd::as_raw_fd(&file), 0, 0, 1024 * 1024) };
    assert_eq!(rc, 0, "fallocate: {}", io::Error::last_os_error());
    assert_eq!(fs::metadata(&path).unwrap().len(), 1024 * 1024);
    assert!(fs::metadata(share.source.join("synced")).unwrap().blocks() >= 2048);
    file.sync_all().unwrap();
    file.sync_data().unwrap();
    File::open(&share.mnt).unwrap().sync_all().unwrap();
    mkfifo(&share.mnt.join("fifo")).unwrap();
    assert!(std::os::unix::fs::FileTypeExt::is_fifo(&fs::metadata(share.source.join("fifo")).unwrap().file_type()));
}

/// Many requests in flight at once: writers, readers and renames on
/// separate files, listings of the directory they share.
pub fn parallel_operations(share: &Share) {
    fs::create_dir(share.mnt.join("busy")).unwrap();
    std::thread::scope(|scope| {
        for worker in 0..8 {
            let dir = share.mnt.join("busy");
            scope.spawn(move || {
                for round in 0..50 {
                    let name = dir.join(format!("{worker}-{round}"));
                    let content = pattern(1000 + worker * 100 + round);
                    fs::write(&name, &content).unwrap();
                    assert_eq!(fs::read(&name).unwrap(), content);
                    let renamed = dir.join(format!("{worker}-{round}.done"));
                    fs::rename(&name, &renamed).unwrap();
                    if round % 2 == 0 {
                        fs::remove_file(&renamed).unwrap();
                    }
                    fs::read_dir(&dir).unwrap().for_each(|entry| drop(entry.unwrap()));
                }
            });
        }
    });
    assert_eq!(fs::read_dir(share.mnt.join("busy")).unwrap().count(), 8 * 25);
    assert_eq!(fs::read_dir(share.source.join("busy")).unwrap().count(), 8 * 25);
}

/// What the target sees of links that point outside the share. The kernel, not
/// the backend, follows symlinks, in the caller's own tree: a relative link out
/// of the share lands next to the mount point, an absolute one in the caller's
/// root (a container's own `/etc/passwd`), never in the source's tree.
pub fn containment_through_the_mount(share: &Share) {
    let m = |name: &str| share.mnt.join(name);
    assert_eq!(fs::canonicalize(m("dir/..")).unwrap(), fs::canonicalize(&share.mnt).unwrap());

    assert_eq!(fs::read_link(m("up")).unwrap(), PathBuf::from("../outside/secret"));
    assert_eq!(fs::read(m("up")).unwrap_err().kind(), io::ErrorKind::NotFound, "resolved beside the mount, not beside the source");

    assert_eq!(fs::read_link(m("passwd")).unwrap(), PathBuf::from("/etc/passwd"));
    assert!(fs::symlink_metadata(m("passwd")).unwrap().file_type().is_symlink());
    assert_eq!(fs::read(m("passwd")).unwrap(), fs::read("/etc/passwd").unwrap(), "the caller's own file");

    // Hard links and renames cannot cross into or out of the mount.
    assert_eq!(errno(fs::hard_link(share.outside.join("secret"), m("stolen"))), libc::EXDEV);
    fs::write(m("mine"), b"mine").unwrap();
    assert_eq!(errno(fs::hard_link(m("mine"), share.outside.join("mine"))), libc::EXDEV);
    assert_eq!(errno(fs::rename(m("mine"), share.outside.join("mine"))), libc::EXDEV);
    assert_eq!(errno(fs::rename(share.outside.join("secret"), m("secret"))), libc::EXDEV);
    assert_eq!(fs::read(share.outside.join("secret")).unwrap(), b"secret");
}

/// Every write through the mount fails with EROFS; reads work; the source is untouched.
pub fn readonly_refuses_every_write(share: &Share) {
    let m = |name: &str| share.mnt.join(name);
    let erofs = libc::EROFS;
    assert_eq!(errno(File::create(m("new"))), erofs);
    assert_eq!(errno(OpenOptions::new().write(true).open(m("existing"))), erofs);
    assert_eq!(errno(OpenOptions::new().append(true).open(m("existing"))), erofs);
    assert_eq!(errno(OpenOptions::new().read(true).write(true).open(m("existing"))), erofs);
    assert_eq!(errno(truncate_path(&m("existing"), 0)), erofs);
    assert_eq!(errno(fs::create_dir(m("newdir"))), erofs);
    assert_eq!(errno(fs::remove_dir(m("dir"))), erofs);
    assert_eq!(errno(fs::remove_file(m("existing"))), erofs);
    assert_eq!(errno(fs::rename(m("existing"), m("renamed"))), erofs);
    assert_eq!(errno(rename2(&m("existing"), &m("dir"), libc::RENAME_EXCHANGE)), erofs);
    assert_eq!(errno(fs::hard_link(m("existing"), m("hard"))), erofs);
    assert_eq!(errno(std::os::unix::fs::symlink("existing", m("soft"))), erofs);
    assert_eq!(errno(fs::set_permissions(m("existing"), fs::Permissions::from_mode(0o777))), erofs);
    assert_eq!(errno(std::os::unix::fs::chown(m("existing"), Some(1), Some(1))), erofs);
    assert_eq!(errno(set_times(&m("existing"), (1, 0), (1, 0))), erofs);
    assert_eq!(errno(set_xattr(&m("existing"), "user.new", b"1")), erofs);
    assert_eq!(errno(remove_xattr(&m("existing"), "user.seed")), erofs);
    assert_eq!(errno(mkfifo(&m("fifo"))), erofs);

    assert_eq!(fs::read(m("existing")).unwrap(), b"existing");
    assert_eq!(fs::read(m("full/inner")).unwrap(), b"inner");
    assert_eq!(fs::read_dir(m("full")).unwrap().count(), 1);
    assert_eq!(get_xattr(&m("existing"), "user.seed").unwrap(), b"seeded");
    let file = File::open(m("existing")).unwrap();
    // SAFETY: nobody changes the file while it is mapped.
    let map = unsafe { memmap2::Mmap::map(&file) }.unwrap();
    assert_eq!(&map[..], b"existing");
    // Locks a reader may take, it takes; a write lock needs a writable descriptor.
    flock(&file, libc::LOCK_SH | libc::LOCK_NB).unwrap();
    record_lock(&file, libc::F_OFD_SETLK, libc::F_RDLCK, 0, 0).unwrap();
    assert_eq!(errno(record_lock(&file, libc::F_OFD_SETLK, libc::F_WRLCK, 0, 0)), libc::EBADF);
    // A reader's locks never hold up the source (SEMANTICS.md).
    let source_side = File::open(share.source.join("existing")).unwrap();
    flock(&source_side, libc::LOCK_EX | libc::LOCK_NB).unwrap();
    flock(&source_side, libc::LOCK_UN).unwrap();

    let source = fs::metadata(share.source.join("existing")).unwrap();
    assert_eq!(source.mode() & 0o7777, 0o666 & !umask());
    assert_eq!(fs::read(share.source.join("existing")).unwrap(), b"existing");
    assert!(share.source.join("dir").is_dir());
    assert!(!share.source.join("new").exists());
}
