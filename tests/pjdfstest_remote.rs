//! The POSIX suite pjdfstest inside a cross-server share: the same script,
//! configuration and expected-failure list as tests/pjdfstest.rs
//! (`scripts/pjdfstest-share`), run in a share whose source container is on
//! node 1 of a real two-node cluster and whose target is on node 2, which
//! serves it with the remote backend (every call over QUIC to node 1).

mod common;
mod suite_in_share;

#[test]
fn pjdfstest_passes_in_a_cross_server_share_but_for_the_listed_cases() {
    let Some(output) = suite_in_share::run_remote("pjdfstest-share", "posix", &[]) else { return };
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let summary = stdout.lines().find(|line| line.starts_with("Summary:")).unwrap_or("no summary: pjdfstest did not finish");
    println!("pjdfstest in a cross-server share: {summary}");
    if !output.status.success() {
        let failed: Vec<_> = stdout.lines().filter(|line| line.ends_with("FAILED") || line.ends_with("PASSED UNEXPECTEDLY")).collect();
        panic!(
            "pjdfstest failed in a cross-server share ({summary}, {}):\n{}\n\n--- full output ---\n{stdout}\n--- stderr ---\n{stderr}",
            output.status,
            failed.join("\n")
        );
    }
}
