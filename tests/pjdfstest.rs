//! The POSIX suite pjdfstest inside a share mounted by the real daemon
//! (`scripts/pjdfstest-share`), and the promise that every case the suite is
//! told to expect failing is listed, with its reason, in docs/SEMANTICS.md.

mod common;
mod suite_in_share;

const EXPECTED_FAILURES: &str = include_str!("../scripts/pjdfstest-expected-failures");
const SEMANTICS: &str = include_str!("../docs/SEMANTICS.md");

/// The lines of the expected-failure list that name cases.
fn expected_failures() -> impl Iterator<Item = &'static str> {
    EXPECTED_FAILURES.lines().map(str::trim).filter(|line| !line.is_empty() && !line.starts_with('#'))
}

#[test]
fn every_expected_failure_is_justified_in_the_semantics() {
    let missing: Vec<_> = expected_failures().filter(|line| !SEMANTICS.contains(&format!("`{line}`"))).collect();
    assert!(missing.is_empty(), "docs/SEMANTICS.md must list (and justify) these expected pjdfstest failures: {missing:#?}");
}

#[test]
fn pjdfstest_passes_in_a_share_but_for_the_listed_cases() {
    let Some(output) = suite_in_share::run("pjdfstest-share", &[]) else { return };
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let summary = stdout.lines().find(|line| line.starts_with("Summary:")).unwrap_or("no summary: pjdfstest did not finish");
    println!("pjdfstest in a share: {summary}");
    if !output.status.success() {
        // The cases to look at first, then everything.
        let failed: Vec<_> = stdout.lines().filter(|line| line.ends_with("FAILED") || line.ends_with("PASSED UNEXPECTEDLY")).collect();
        panic!(
            "pjdfstest failed in a share ({summary}, {}):\n{}\n\n--- full output ---\n{stdout}\n--- stderr ---\n{stderr}",
            output.status,
            failed.join("\n")
        );
    }
}
