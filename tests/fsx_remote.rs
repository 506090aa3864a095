//! The file system exerciser fsx inside a cross-server share: the same
//! script, operations and seeds as tests/fsx.rs (`scripts/fsx-share`), run
//! in a share whose source container is on node 1 of a real two-node cluster
//! and whose target is on node 2 (remote backend, every call over QUIC).

mod common;
mod suite_in_share;

#[test]
fn fsx_finds_no_difference_in_a_cross_server_share() {
    let Some(output) = suite_in_share::run_remote("fsx-share", "fsx", &["20000", "1", "2"]) else { return };
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    assert!(output.status.success(), "fsx found a difference in a cross-server share ({}):\n{stdout}\n--- stderr ---\n{stderr}", output.status);
    assert_eq!(stdout.matches("All operations completed A-OK!").count(), 2, "both seeds ran to the end:\n{stdout}");
}
