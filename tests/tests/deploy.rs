//! What `deploy/` ships is checked with the real tools (`scripts/check-deploy`):
//! the alert rules load and their unit tests pass (promtool), every
//! dashboard expression parses and names only metrics weir exports, the
//! Dockerfile passes hadolint, the compose file parses, and the Kubernetes
//! manifests validate against the schemas (KEDA's fields checked by hand).
//! The tools are fetched on first use; without a network the check is
//! skipped outside CI and fails in CI.

use std::process::Command;

#[test]
fn deploy_files_pass_their_tools() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = Command::new(root.join("scripts/check-deploy"))
        .current_dir(&root)
        .output()
        .expect("run scripts/check-deploy");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.code() == Some(3) && std::env::var("CI").is_err() {
        eprintln!("skipped: a tool could not be fetched: {text}");
        return;
    }
    assert!(out.status.success(), "scripts/check-deploy failed:\n{text}");
    assert!(text.contains("SUCCESS: 16 rules found"), "{text}");
    assert!(text.contains("deploy/ checks passed"), "{text}");
}
