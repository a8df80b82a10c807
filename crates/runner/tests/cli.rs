#![allow(clippy::unwrap_used)] // a test file: a failed unwrap is a failed test
//! The runner binary end to end: several devices, a stop signal and resumption, Slurm files.
//! Synthetic data in the CIFAR-10 layout; tiny networks on the CPU.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const EXPERIMENT: &str = r#"
title = "cli test"
source = "test"
[model]
depth = 8
[[variants]]
name = "original"
[[variants]]
name = "plain"
model = { shortcut = "plain" }
[profiles.tiny]
seeds = [0, 1]
protocol = { batch_size = 16, iterations = 48, lr = 0.05, lr_drops = [32], train_subset = 256, test_subset = 100 }
[profiles.long]
seeds = [0]
protocol = { batch_size = 16, iterations = 160, lr = 0.05, lr_drops = [120], train_subset = 256, test_subset = 100 }
"#;

struct Setup {
    _tmp: tempfile::TempDir,
    root: PathBuf,
}

impl Setup {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_path_buf();
        std::fs::write(root.join("cli.toml"), EXPERIMENT).unwrap();
        let status = runner()
            .args(["data", "synthetic", "--data-dir"])
            .arg(root.join("data"))
            .status()
            .unwrap();
        assert!(status.success());
        Self { _tmp: tmp, root }
    }

    fn train(&self, results: &str, extra: &[&str]) -> Command {
        let mut cmd = runner();
        cmd.arg("train")
            .arg(self.root.join("cli.toml"))
            .args(["--device", "cpu", "--quiet", "--data-dir"])
            .arg(self.root.join("data"))
            .arg("--results")
            .arg(self.root.join(results))
            .args(extra);
        cmd
    }

    fn run_dir(&self, results: &str, profile: &str, variant: &str, seed: u64) -> PathBuf {
        self.root
            .join(results)
            .join("cli")
            .join(profile)
            .join(variant)
            .join(format!("seed-{seed}"))
    }
}

fn runner() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_runner"));
    cmd.env("OMP_NUM_THREADS", "1");
    cmd
}

/// epochs.csv without the timing columns.
fn numbers(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| l.split(',').take(7).collect::<Vec<_>>().join(","))
        .collect()
}

#[test]
fn devices_run_the_tasks_in_parallel_processes() {
    let s = Setup::new();
    let out = s
        .train(
            "results",
            &["--profile", "tiny", "--devices", "0,1", "--replicas", "1"],
        )
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    // Four tasks (2 variants × 2 seeds), started on both devices.
    assert_eq!(log.matches("devices: task").count(), 4, "{log}");
    assert!(
        log.contains("on device 0") && log.contains("on device 1"),
        "{log}"
    );
    for variant in ["original", "plain"] {
        for seed in [0, 1] {
            assert!(s
                .run_dir("results", "tiny", variant, seed)
                .join("final.json")
                .exists());
        }
    }
}

#[test]
fn sigterm_checkpoints_exits_75_and_the_rerun_matches_an_uninterrupted_run() {
    let s = Setup::new();
    let args = ["--profile", "long", "--variant", "original"];
    let mut child = s
        .train("stopped", &args)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Let it train a while, then ask it to stop.
    let epochs = s
        .run_dir("stopped", "long", "original", 0)
        .join("epochs.csv");
    let started = Instant::now();
    while !epochs.exists() {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no epoch finished"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(300));
    // SAFETY: kill(2) on our child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(75));
    let run = s.run_dir("stopped", "long", "original", 0);
    assert!(run.join("checkpoint.ot").exists());
    assert!(!run.join("final.json").exists());
    assert!(!run.join("lock").exists());
    // Resume to the end, and train the same run without interruption elsewhere.
    for results in ["stopped", "whole"] {
        let out = s.train(results, &args).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let whole = s.run_dir("whole", "long", "original", 0).join("epochs.csv");
    assert_eq!(numbers(&run.join("epochs.csv")), numbers(&whole));
    assert_eq!(numbers(&whole).len(), 1 + 10);
}

#[test]
fn plan_lists_tasks_and_writes_a_slurm_array() {
    let s = Setup::new();
    let out = runner()
        .arg("plan")
        .arg(s.root.join("cli.toml"))
        .args([
            "--profile",
            "tiny",
            "--replicas",
            "1",
            "--emit",
            "slurm",
            "--gpus-per-task",
            "0",
            "--device",
            "cpu",
        ])
        .arg("--results")
        .arg(s.root.join("results"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(text.matches("pending").count(), 4, "{text}");
    let dir = s.root.join("results/cli/tiny/slurm");
    let script = std::fs::read_to_string(dir.join("array.sbatch")).unwrap();
    assert!(script.contains("#SBATCH --array=0-3\n"), "{script}");
    assert!(!script.contains("--gpus-per-task"), "{script}");
    assert_eq!(
        std::fs::read_to_string(dir.join("tasks.tsv"))
            .unwrap()
            .lines()
            .count(),
        5
    );
    // A task of the list trains exactly its run.
    let out = s
        .train("results", &["--profile", "tiny", "--task", "2"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(s
        .run_dir("results", "tiny", "plain", 0)
        .join("final.json")
        .exists());
    assert!(!s
        .run_dir("results", "tiny", "original", 0)
        .join("final.json")
        .exists());
}

#[test]
fn doctor_fails_when_the_device_asked_for_cannot_train() {
    let setup = Setup::new();
    let doctor = |device: &str| {
        runner()
            .args(["doctor", "--device", device, "--data-dir"])
            .arg(setup.root.join("data"))
            .output()
            .unwrap()
    };
    let cpu = doctor("cpu");
    let report = String::from_utf8_lossy(&cpu.stdout);
    assert!(cpu.status.success(), "{report}");
    assert!(report.contains("training on   Cpu"), "{report}");
    assert!(report.contains("synthetic"), "{report}");

    // the whole report first, then the verdict in the exit status
    let cuda = doctor("cuda");
    let report = String::from_utf8_lossy(&cuda.stdout);
    assert!(report.contains("cifar-10"), "{report}");
    if report.contains("cuda          no") {
        assert!(!cuda.status.success(), "{report}");
        assert!(report.contains("training on   nothing"), "{report}");
        assert!(String::from_utf8_lossy(&cuda.stderr).contains("--device Cuda cannot train"));
    } else {
        assert!(cuda.status.success(), "{report}");
    }
}
