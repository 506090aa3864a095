//! The share cases (tests/share_cases) that tests/share_local.rs runs on a
//! local mount, run on a cross-server share: a `RemoteBackend` over real QUIC
//! to a `LocalBackend` in this process (tests/remote_loop), mounted with the
//! daemon's options for remote shares.

mod common;
mod remote_loop;
mod share_cases;

use std::ops::Deref;
use std::path::Path;
use std::sync::OnceLock;

use hoodyd::shares::ShareMode;
use share_cases::Share;

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap())
}

/// A seeded source directory and its cross-server mount; unmounts before the temp dir goes.
struct RemoteShare {
    _remote: remote_loop::RemoteMount,
    share: Share,
    _tmp: tempfile::TempDir,
}

impl Deref for RemoteShare {
    type Target = Share;
    fn deref(&self) -> &Share {
        &self.share
    }
}

impl RemoteShare {
    fn mount(mode: ShareMode) -> Option<Self> {
        if !Path::new("/dev/fuse").exists() {
            common::skip("/dev/fuse is absent, no FUSE mount possible");
            return None;
        }
        let tmp = tempfile::tempdir().unwrap();
        let share = Share { source: tmp.path().join("source"), mnt: tmp.path().join("view/mnt"), outside: tmp.path().join("outside") };
        std::fs::create_dir_all(&share.mnt).unwrap();
        share_cases::seed_source(&share.source, &share.outside);
        let remote = remote_loop::mount(runtime(), &share.source, &share.mnt, mode);
        Some(RemoteShare { _remote: remote, share, _tmp: tmp })
    }
}

macro_rules! cases {
    ($mode:expr => $($case:ident),* $(,)?) => {
        $(
            #[test]
            fn $case() {
                if let Some(share) = crate::RemoteShare::mount($mode) {
                    crate::share_cases::$case(&share);
                }
            }
        )*
    };
}

mod readwrite {
    cases!(hoodyd::shares::ShareMode::ReadWrite =>
        create_read_write_append_truncate,
        rename_variants,
        unlink_rmdir_mkdir,
        links,
        metadata_changes,
        xattrs,
        security_labels_are_not_carried,
        statfs_matches_the_source,
        sparse_file_beyond_4_gib,
        mmap_read,
        shared_mmap_write,
        fsync_and_fallocate,
        parallel_operations,
        containment_through_the_mount,
        locks_exclude_across_the_share_and_the_source,
    );
}

mod readonly {
    cases!(hoodyd::shares::ShareMode::ReadOnly => readonly_refuses_every_write);
}
