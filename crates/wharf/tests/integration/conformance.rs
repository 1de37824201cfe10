//! The OCI distribution-spec conformance suite (v1.1.1), all four workflows, against wharf.

use std::path::PathBuf;
use std::process::Command;

use crate::harness::Wharf;

/// The suite ships beside the project in `../shared/tools/oci-conformance/` (or wherever
/// `WHARF_CONFORMANCE` points). Without it this test fails and says so.
fn suite() -> PathBuf {
    if let Some(p) = std::env::var_os("WHARF_CONFORMANCE") {
        return PathBuf::from(p);
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/tools/oci-conformance/run")
}

#[test]
fn oci_conformance_suite_passes_every_workflow() {
    let run = suite();
    assert!(
        run.exists(),
        "OCI conformance suite not found at {}: set WHARF_CONFORMANCE to its `run` script \
         (a build of opencontainers/distribution-spec's conformance/ with a runner)",
        run.display()
    );
    let wharf = Wharf::start();
    let out = Command::new(&run)
        .arg(wharf.url())
        .env("OCI_CROSSMOUNT_NAMESPACE", "conformance/mountsource")
        .env("OCI_AUTOMATIC_CROSSMOUNT", "0")
        .output()
        .expect("run the conformance suite");
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    let summary = stdout
        .lines()
        .rfind(|l| l.starts_with("conformance:"))
        .unwrap_or("no summary");
    assert!(
        out.status.success(),
        "conformance failures:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(summary.contains(" 0 failed"), "{summary}");
    let passed: u32 = summary
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(
        passed >= 70,
        "only {passed} conformance specs ran: {summary}"
    );
}
