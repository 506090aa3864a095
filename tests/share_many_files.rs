//! A share holds one descriptor per file the target's kernel knows. A tree
//! with many more files than the daemon may open is still walked whole: past
//! its budget the backend makes the kernel forget the files it got longest ago.
//! Alone in its binary because it lowers the process's open files limit.

mod common;

use std::fs;
use std::path::Path;
use std::sync::Arc;

use hoody_fuse::MountOptions;
use hoodyd::shares::{LocalBackend, ShareMode};

const LIMIT: usize = 1024;

fn walk(dir: &Path, seen: &mut usize) {
    for entry in fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let meta = fs::symlink_metadata(entry.path()).unwrap();
        *seen += 1;
        if meta.is_dir() {
            walk(&entry.path(), seen);
        } else {
            assert_eq!(fs::read(entry.path()).unwrap(), entry.file_name().as_encoded_bytes());
        }
    }
}

#[test]
fn a_tree_larger_than_the_open_files_limit_is_walked_whole() {
    if !Path::new("/dev/fuse").exists() {
        common::skip("/dev/fuse is absent");
        return;
    }
    std::env::set_var("HOODY_MAX_OPEN_FILES", LIMIT.to_string());
    let tmp = tempfile::tempdir().unwrap();
    let (source, mnt) = (tmp.path().join("source"), tmp.path().join("mnt"));
    let mut files = 0;
    for d in 0..40 {
        let dir = source.join(format!("d{d}"));
        fs::create_dir_all(&dir).unwrap();
        for f in 0..100 {
            let name = format!("f{d}-{f}");
            fs::write(dir.join(&name), &name).unwrap();
            files += 1;
        }
    }
    fs::create_dir(&mnt).unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let backend = Arc::new(LocalBackend::open(&source, ShareMode::ReadWrite).unwrap());
    let options = MountOptions { runtime: Some(runtime.handle().clone()), ..MountOptions::default() };
    let mount = hoody_fuse::mount(backend.clone(), &mnt, options).unwrap();

    for round in 0..2 {
        let mut seen = 0;
        walk(&mnt, &mut seen);
        assert_eq!(seen, files + 40, "round {round}: every entry, none skipped");
        assert!(backend.referenced_nodes() < LIMIT, "{} files held with a limit of {LIMIT}", backend.referenced_nodes());
    }
    mount.unmount().unwrap();
}
