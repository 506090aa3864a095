//! The reference-model property test of shares (tests/share_model.rs) against
//! a cross-server share (tests/remote_loop): the FUSE mount serves a `RemoteBackend` whose every
//! call is encoded as a postcard `FsOp` and sent over a real QUIC connection
//! (two `hoody_transport` endpoints in this process, with a test cluster CA)
//! to a "source node" endpoint that decodes it and applies it with
//! `dispatch::apply` to a `LocalBackend` of the source directory, as the
//! daemon's `ShareServer` does once a session is open; the source's
//! invalidations come back as pushed frames on the same connection. What this
//! leaves out of the daemon's path is only the catalog's session checks
//! (tests/share_remote.rs covers those with a real cluster).
//!
//! Failing sequences are shrunk and their seeds kept in
//! `tests/share_model_remote.proptest-regressions` (committed), which every
//! run replays first. 64 sequences of up to 40 operations; `HOODY_STRESS=1`
//! runs 2000 of up to 120. Skipped, saying so, without /dev/fuse.

mod common;
mod fs_model;
mod remote_loop;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use fs_model::world::World;
use hoodyd::shares::ShareMode;
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;

const REGRESSIONS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/share_model_remote.proptest-regressions");

fn stress() -> bool {
    std::env::var_os("HOODY_STRESS").is_some_and(|value| value != "0")
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: if stress() { 2000 } else { 64 },
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(REGRESSIONS))),
        ..ProptestConfig::default()
    }
}

fn max_ops() -> usize {
    if stress() {
        120
    } else {
        40
    }
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap())
}

/// A cross-server share of `source` mounted at `mnt`, and the plain reference
/// directory beside them; every sequence gets a fresh subdirectory of both.
struct Mounted {
    remote: remote_loop::RemoteMount,
    mnt: PathBuf,
    reference: PathBuf,
    next_case: AtomicU64,
    _tmp: tempfile::TempDir,
}

impl Mounted {
    fn new() -> Option<Self> {
        if !Path::new("/dev/fuse").exists() {
            common::skip("/dev/fuse is absent, no share can be mounted");
            return None;
        }
        let tmp = tempfile::tempdir().unwrap();
        let (source, mnt, reference) = (tmp.path().join("source"), tmp.path().join("mnt"), tmp.path().join("reference"));
        for dir in [&source, &mnt, &reference] {
            std::fs::create_dir(dir).unwrap();
        }
        // Other users (`Op::AsUser`) reach both worlds.
        for dir in [tmp.path(), &source, &reference] {
            std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        }
        let remote = remote_loop::mount(runtime(), &source, &mnt, ShareMode::ReadWrite);
        Some(Mounted { remote, mnt, reference, next_case: AtomicU64::new(0), _tmp: tmp })
    }

    /// Two empty directories, the reference and its twin inside the share
    /// (made through the mount, so the kernel learns of it as a user would).
    fn new_case(&self) -> (World, World) {
        let case = format!("case-{}", self.next_case.fetch_add(1, Ordering::Relaxed));
        let (reference, tested) = (self.reference.join(&case), self.mnt.join(&case));
        for root in [&reference, &tested] {
            std::fs::create_dir(root).unwrap();
            std::fs::set_permissions(root, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
        }
        (World::new(reference), World::new(tested))
    }
}

fn check(mounted: &Mounted, ops: &[fs_model::ops::Op]) -> Result<(), TestCaseError> {
    let (mut reference, mut tested) = mounted.new_case();
    fs_model::check_sequence(&mut reference, &mut tested, ops).map_err(TestCaseError::fail)?;
    // Removed through the mount (the kernel forgets the files, the source's
    // backend closes their descriptors). Failed cases stay.
    for root in [reference.root(), tested.root()] {
        std::fs::remove_dir_all(root).map_err(|err| TestCaseError::fail(format!("removing {}: {err}", root.display())))?;
    }
    Ok(())
}

#[test]
fn a_cross_server_share_behaves_like_a_plain_directory() {
    let Some(mounted) = Mounted::new() else { return };
    let mut runner = proptest::test_runner::TestRunner::new(config());
    let result = runner.run(&fs_model::ops::sequence(max_ops()), |ops| check(&mounted, &ops));
    println!("{} sequences, {} share calls over QUIC", mounted.next_case.load(Ordering::Relaxed), mounted.remote.calls());
    drop(mounted);
    if let Err(failure) = result {
        panic!("{failure}\n{runner}");
    }
}
