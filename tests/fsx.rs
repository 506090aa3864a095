//! The file system exerciser fsx inside a share mounted by the real daemon
//! (`scripts/fsx-share`): random data operations on one file — reads and
//! writes through the page cache and through mmap, truncates, fallocate, hole
//! punching, sendfile, copy_file_range, fsync, close and reopen — each read
//! checked against fsx's model of the file.

mod common;
mod suite_in_share;

#[test]
fn fsx_finds_no_difference_in_a_share() {
    // Two seeds of 20,000 operations: some ten seconds.
    let Some(output) = suite_in_share::run("fsx-share", &["20000", "1", "2"]) else { return };
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "fsx found a difference in a share ({}):\n{stdout}\n--- stderr ---\n{stderr}", output.status);
    assert_eq!(stdout.matches("All operations completed A-OK!").count(), 2, "both seeds ran to the end:\n{stdout}");
}
