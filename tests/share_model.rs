//! The reference-model property test of shares: random sequences of
//! filesystem operations run in a plain directory and, by the same relative
//! paths, inside a FUSE mount of the local backend serving another directory;
//! every result (value or errno) and the trees must be equal (`fs_model`).
//!
//! Failing sequences are shrunk and their seeds kept in
//! `tests/share_model.proptest-regressions` (committed), which every run
//! replays first. 64 sequences of up to 40 operations per mount flavour;
//! `HOODY_STRESS=1` runs 2000 of up to 120. Skipped, saying so, without /dev/fuse.

mod common;
mod fs_model;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use fs_model::world::World;
use hoody_fuse::{MountHandle, MountOptions};
use hoodyd::shares::{LocalBackend, ShareMode};
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;

const REGRESSIONS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/share_model.proptest-regressions");

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

/// A share of `source` mounted at `mnt`, and the plain reference directory
/// beside them; every sequence gets a fresh subdirectory of both.
struct Mounted {
    _mount: MountHandle,
    mnt: PathBuf,
    reference: PathBuf,
    next_case: AtomicU64,
    _tmp: tempfile::TempDir,
}

impl Mounted {
    fn new(passthrough: bool) -> Option<Self> {
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
        let backend = Arc::new(LocalBackend::open(&source, ShareMode::ReadWrite).unwrap());
        let options = MountOptions {
            passthrough,
            entry_ttl: Duration::from_secs(1),
            attr_ttl: Duration::from_secs(1),
            runtime: Some(runtime().handle().clone()),
            ..MountOptions::default()
        };
        let mount = hoody_fuse::mount(backend, &mnt, options).unwrap();
        Some(Mounted { _mount: mount, mnt, reference, next_case: AtomicU64::new(0), _tmp: tmp })
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
    // Removed through the mount, so that the kernel forgets the files and the
    // backend closes the descriptor it keeps for each (thousands of sequences
    // would otherwise exhaust the process's descriptors). Failed cases stay.
    for root in [reference.root(), tested.root()] {
        std::fs::remove_dir_all(root).map_err(|err| TestCaseError::fail(format!("removing {}: {err}", root.display())))?;
    }
    Ok(())
}

/// Runs the sequences against one mount, unmounted before the verdict: a
/// mount kept in a static would outlive the process, one per run.
fn run_model(passthrough: bool) {
    let Some(mounted) = Mounted::new(passthrough) else { return };
    let mut runner = proptest::test_runner::TestRunner::new(config());
    let result = runner.run(&fs_model::ops::sequence(max_ops()), |ops| check(&mounted, &ops));
    drop(mounted);
    if let Err(failure) = result {
        panic!("{failure}\n{runner}");
    }
}

#[test]
fn a_share_with_passthrough_behaves_like_a_plain_directory() {
    run_model(true);
}

#[test]
fn a_share_without_passthrough_behaves_like_a_plain_directory() {
    run_model(false);
}
