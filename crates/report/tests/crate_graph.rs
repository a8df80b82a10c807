//! The crate graph the workspace is built on: `report` and `spec` never link libtorch, and
//! `models` never depends on the crates that use it. Read from `cargo tree`, so a dependency
//! that pulls tch in by a path nobody meant fails here.

use std::process::Command;

/// The package names in the dependency tree of `package` (normal and build dependencies).
fn tree(package: &str) -> Vec<String> {
    let out = Command::new(env!("CARGO"))
        .args([
            "tree",
            "--locked",
            "--offline",
            "-e",
            "normal,build",
            "--prefix",
            "none",
        ])
        .args(["--format", "{p}", "-p", package])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo runs");
    assert!(
        out.status.success(),
        "cargo tree -p {package}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

#[test]
fn report_and_spec_never_link_libtorch_and_models_never_depends_on_its_users() {
    let report = tree("report");
    assert!(report.iter().any(|p| p == "spec"), "{report:?}");
    let spec = tree("spec");
    for (name, packages, forbidden) in [
        (
            "report",
            &report,
            &["tch", "torch-sys", "models", "runner"][..],
        ),
        (
            "spec",
            &spec,
            &["tch", "torch-sys", "models", "runner", "report"][..],
        ),
        ("models", &tree("models"), &["runner", "report"][..]),
    ] {
        for crate_name in forbidden {
            assert!(
                !packages.iter().any(|p| p == crate_name),
                "{name} depends on {crate_name}: {packages:?}"
            );
        }
    }
    // the check itself sees what it should: the runner does link tch
    assert!(tree("runner").iter().any(|p| p == "tch"));
}
