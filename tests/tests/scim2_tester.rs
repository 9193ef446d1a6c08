//! scim2-tester (PyPI, python-scim's independent SCIM 2.0 checker) against the live gateway: every
//! check it runs must succeed. `make test` installs it (pinned, tests/scim2-tester/requirements.txt)
//! into target/scim2-tester-venv; `SCIM2_TESTER_PYTHON` may name another interpreter that has it.

use std::path::PathBuf;
use std::process::Command;

use e2e::TestStack;
use serde_json::Value;

fn python() -> PathBuf {
    if let Ok(p) = std::env::var("SCIM2_TESTER_PYTHON") {
        return PathBuf::from(p);
    }
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/scim2-tester-venv/bin/python");
    assert!(venv.exists(), "scim2-tester is not installed: run `make test` (or set SCIM2_TESTER_PYTHON)");
    venv
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scim2_tester_passes_every_check() {
    let stack = TestStack::start().await;
    // scim2-tester creates and deletes active users by the dozen on a tenant of a few: the
    // mass-deprovision brake would rightly hold those deletions. This is a protocol check, not
    // that, so the brake is set out of its way.
    let loose = user_directory::store::TenantUpdate { brake_min_users: Some(1_000_000), ..Default::default() };
    stack.store().update_tenant("acme", &loose).await.unwrap();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scim2-tester/check.py");
    let (base, auth) = (stack.base_url.clone(), stack.auth());
    let python = python();
    let output = tokio::task::spawn_blocking(move || Command::new(python).arg(script).arg(base).arg(auth).output())
        .await
        .unwrap()
        .expect("run scim2-tester");
    let log = String::from_utf8_lossy(&output.stderr);
    println!("{log}");
    assert!(output.status.success(), "scim2-tester failed to run:\n{log}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let report: Value = serde_json::from_str(stdout.lines().last().unwrap_or("")).expect("a JSON report");
    let results = report["results"].as_array().unwrap();
    let failed: Vec<&Value> = results.iter().filter(|r| r["status"] != "SUCCESS").collect();
    let passed = results.len() - failed.len();
    println!("scim2-tester: {passed} of {} checks passed", results.len());
    assert!(results.len() >= 100, "scim2-tester ran only {} checks", results.len());
    assert!(
        failed.is_empty(),
        "{} of {} scim2-tester checks did not pass:\n{}",
        failed.len(),
        results.len(),
        failed
            .iter()
            .map(|f| format!("  [{}] {} {}: {}", f["status"], f["resource"], f["title"], f["reason"]))
            .collect::<Vec<_>>()
            .join("\n")
    );
    stack.stop().await;
}
