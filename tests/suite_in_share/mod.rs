//! Runs one of the `scripts/*-share` suites (a crates.io tool inside a share
//! mounted by the real daemon) and hands back what it printed. Its includer
//! also includes `common` (for the skip helper).

use std::path::Path;
use std::process::{Command, Output};

/// `None` (saying why) where no share can be mounted: without /dev/fuse or root.
pub fn run(script: &str, args: &[&str]) -> Option<Output> {
    if !Path::new("/dev/fuse").exists() {
        crate::common::skip("/dev/fuse is absent, no share can be mounted");
        return None;
    }
    // SAFETY: plain getter.
    if unsafe { libc::geteuid() } != 0 {
        crate::common::skip("the suite mounts a share (and may switch users): it needs root");
        return None;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts").join(script);
    Some(Command::new(&script).args(args).env("HOODYD_BIN", env!("CARGO_BIN_EXE_hoodyd")).output().unwrap_or_else(|e| panic!("run {}: {e}", script.display())))
}
