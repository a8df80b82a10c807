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

/// Tiny nets that diverge (λ = 1e30) or train, 8 steps per epoch.
const DIVERGING: &str = r#"
title = "cli test"
source = "test"
[model]
depth = 8
[[variants]]
name = "explode"
model = { shortcut = { scaling = { lambda_s = 1e30, lambda_f = 1.0 } } }
[[variants]]
name = "original"
[profiles.tiny]
seeds = [0]
protocol = { batch_size = 32, iterations = 40, lr = 0.05, lr_drops = [32], train_subset = 256, test_subset = 100 }
"#;

struct Setup {
    _tmp: tempfile::TempDir,
    root: PathBuf,
}

impl Setup {
    fn new() -> Self {
        Self::with(EXPERIMENT)
    }

    /// A folder with synthetic data and `experiment` as `cli.toml`.
    fn with(experiment: &str) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_path_buf();
        std::fs::write(root.join("cli.toml"), experiment).unwrap();
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

/// A refusal is one line naming the cause, with no stack trace even where RUST_BACKTRACE
/// is set (common on research machines), and a failing exit status.
#[test]
fn a_refusal_is_one_line_without_a_stack_trace() {
    let s = Setup::new();
    let out = s
        .train("results", &["--profile", "nope"])
        .env("RUST_BACKTRACE", "1")
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{log}");
    assert!(log.contains("runner: error: "), "{log}");
    assert!(log.contains("has no profile `nope`"), "{log}");
    assert!(!log.to_lowercase().contains("backtrace"), "{log}");
    assert_eq!(log.trim_end().lines().count(), 1, "{log}");
}

/// A network far too big for the machine (60,002 layers: about 1 G parameters and 2 TiB of
/// activations per batch) is refused before anything is built, naming the line of the
/// profile's model and the estimate; nothing is written. It used to grow until the kernel's
/// OOM killer ended it, minutes later.
#[test]
fn a_network_too_big_for_memory_is_refused_at_once_with_the_estimate() {
    let experiment = format!(
        "{EXPERIMENT}[profiles.huge]\nseeds = [0]\nmodel = {{ units_per_stage = 10000 }}\n\
         protocol = {{ batch_size = 128, iterations = 10, lr = 0.1, lr_drops = [] }}\n"
    );
    let line = experiment.lines().count() - 1;
    let s = Setup::with(&experiment);
    let started = Instant::now();
    let out = s
        .train("results", &["--profile", "huge", "--variant", "original"])
        .output()
        .unwrap();
    let took = started.elapsed();
    let log = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{log}");
    let expected = format!(
        "runner: error: {}:{line}: profile `huge`, variant `original`: too big for this \
         machine: training needs about ",
        s.root.join("cli.toml").display()
    );
    assert!(log.contains(&expected), "{log}");
    assert!(log.contains("TiB (972.14M parameters × 1 replica"), "{log}");
    assert!(log.contains("lower the depth (units_per_stage)"), "{log}");
    assert_eq!(log.trim_end().lines().count(), 1, "{log}");
    assert!(!s.root.join("results").exists(), "nothing is written");
    // under a second when the machine is quiet; the bound leaves room for a busy CI
    assert!(took < Duration::from_secs(3), "took {took:?}");
}

#[test]
fn a_results_path_that_is_a_file_is_refused_before_anything_is_read() {
    let s = Setup::new();
    std::fs::write(s.root.join("taken"), "notes\n").unwrap();
    let out = s.train("taken", &["--profile", "tiny"]).output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{log}");
    assert!(log.contains("is not a folder"), "{log}");
    assert!(
        !log.contains("data:"),
        "refused before the data is read: {log}"
    );
    assert_eq!(
        std::fs::read_to_string(s.root.join("taken")).unwrap(),
        "notes\n"
    );
    // a link to nothing
    std::os::unix::fs::symlink(s.root.join("gone"), s.root.join("dangling")).unwrap();
    let out = s
        .train("dangling", &["--profile", "tiny"])
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{log}");
    assert!(log.contains("is a link to nothing"), "{log}");
    assert!(!s.root.join("gone").exists());
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
    // A finished run of a network of another size is kept, skipped, and said to be so.
    let record = s.run_dir("results", "tiny", "plain", 1).join("final.json");
    let text = std::fs::read_to_string(&record).unwrap();
    let at = text
        .find("\"parameters\": ")
        .expect("final.json records the network's size");
    let end = at + text[at..].find(',').unwrap();
    std::fs::write(
        &record,
        format!("{}\"parameters\": 7{}", &text[..at], &text[end..]),
    )
    .unwrap();
    let out = s.train("results", &["--profile", "tiny"]).output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert!(
        log.contains(
            "plain/seed-1: finished (ok), skipped; but its network had 7 trainable parameters"
        ),
        "{log}"
    );
    assert!(
        log.contains("1 of the finished runs trained another network"),
        "{log}"
    );
    assert!(log.contains("already finished"), "{log}");
    // A data folder no task could use is refused once, before any process starts.
    std::fs::remove_file(s.root.join("data").join("data_batch_4.bin")).unwrap();
    let out = s
        .train(
            "damaged",
            &["--profile", "tiny", "--devices", "0,1", "--replicas", "1"],
        )
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{log}");
    assert_eq!(log.matches("runner: error").count(), 1, "{log}");
    assert!(
        log.contains("data_batch_4.bin") && !log.contains("devices: task"),
        "{log}"
    );
    assert!(!s.root.join("damaged").exists(), "{log}");
}

/// With `--devices` and `--device auto` where libtorch_cuda.so is not found, why CUDA is not
/// used is said once by the launcher, not once by every task's process. (Where it loads, the
/// tasks decide with their own CUDA_VISIBLE_DEVICES: not this test's case.)
#[test]
fn devices_without_cuda_say_so_once() {
    let doctor = runner()
        .args(["doctor", "--device", "auto"])
        .output()
        .unwrap();
    if !String::from_utf8_lossy(&doctor.stdout).contains("libtorch_cuda not found") {
        eprintln!("libtorch_cuda.so loads here: skipped");
        return;
    }
    let s = Setup::new();
    let out = runner()
        .arg("train")
        .arg(s.root.join("cli.toml"))
        .args(["--profile", "tiny", "--seeds", "0,1", "--replicas", "1"])
        .args([
            "--devices",
            "0,1",
            "--device",
            "auto",
            "--quiet",
            "--data-dir",
        ])
        .arg(s.root.join("data"))
        .arg("--results")
        .arg(s.root.join("results"))
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert_eq!(log.matches("devices: task").count(), 4, "{log}");
    assert_eq!(log.matches("CUDA is not usable").count(), 1, "{log}");
    assert!(log.contains("every task trains on the CPU"), "{log}");
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

/// A listing whose reader has gone (`runner plan ... | head`) ends by SIGPIPE, as other Unix
/// tools do, not with a panic and its backtrace.
#[test]
fn a_listing_whose_reader_has_gone_ends_quietly() {
    use std::os::unix::process::ExitStatusExt;
    let s = Setup::new();
    let toml = s.root.join("cli.toml").display().to_string();
    for args in [
        vec!["plan", toml.as_str(), "--profile", "tiny"],
        vec!["doctor", "--device", "cpu"],
    ] {
        let mut child = runner()
            .args(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // the reader goes before the first line is written (start-up takes far longer)
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.signal(),
            Some(13),
            "{args:?}: {:?} {stderr}",
            out.status
        );
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}

/// plan sizes tasks as train runs them: with --device cpu one seed a task and no GPU asked
/// for; by default a variant's seeds stacked in one task given a GPU, which trains with
/// --device cuda (never falling back to the node's CPU).
#[test]
fn plan_sizes_tasks_for_the_device() {
    let s = Setup::new();
    let plan = |name: &str, extra: &[&str]| -> (usize, String) {
        let results = s.root.join(name);
        let out = runner()
            .arg("plan")
            .arg(s.root.join("cli.toml"))
            .args(["--profile", "tiny", "--emit", "slurm", "--results"])
            .arg(&results)
            .args(extra)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "{stdout}");
        let tasks = stdout
            .lines()
            .filter(|l| l.trim_start().starts_with(|c: char| c.is_ascii_digit()))
            .count();
        let script = results.join("cli/tiny/slurm/array.sbatch");
        (tasks, std::fs::read_to_string(script).unwrap())
    };
    // 2 variants × 2 seeds
    let (tasks, script) = plan("cpu", &["--device", "cpu"]);
    assert_eq!(tasks, 4, "{script}");
    assert!(!script.contains("--gpus-per-task"), "{script}");
    assert!(script.contains("--device cpu"), "{script}");
    let (tasks, script) = plan("gpu", &[]);
    assert_eq!(tasks, 2, "{script}");
    assert!(script.contains("#SBATCH --gpus-per-task=1"), "{script}");
    assert!(script.contains("--device cuda"), "{script}");
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

/// doctor names the fused kernels' instruction set; RESNET_FUSED_ISA picks the baseline on
/// any x86-64 CPU, and a name it does not know is said, not silently dropped.
#[test]
fn doctor_says_which_fused_kernels_run_and_what_resnet_fused_isa_did() {
    let doctor = |isa: Option<&str>| {
        let mut cmd = runner();
        cmd.args(["doctor", "--device", "cpu"]);
        match isa {
            Some(isa) => cmd.env("RESNET_FUSED_ISA", isa),
            None => cmd.env_remove("RESNET_FUSED_ISA"),
        };
        String::from_utf8_lossy(&cmd.output().unwrap().stdout).into_owned()
    };
    let best = doctor(None);
    let line = best
        .lines()
        .find(|l| l.starts_with("cpu fused     BN–ReLU kernels run "))
        .unwrap_or_else(|| panic!("{best}"));
    assert!(
        line.contains("baseline)") || line.contains("baseline;"),
        "{line}"
    );
    assert!(!best.contains("RESNET_FUSED_ISA="), "{best}");
    // the CPU line (and so every run's recorded device) names the CPU's widest vector set,
    // whatever RESNET_FUSED_ISA asks of the kernels
    let threads_line = |out: &str| -> String {
        out.lines()
            .find(|l| l.starts_with("cpu threads   "))
            .unwrap_or_else(|| panic!("{out}"))
            .to_string()
    };
    let this_cpu = line.split("this CPU: ").nth(1).unwrap();
    let widest = match this_cpu.split([',', ';']).next().unwrap() {
        "avx512" => "AVX-512",
        "avx2" => "AVX2",
        _ => "no AVX2",
    };
    assert!(threads_line(&best).contains(widest), "{best}");
    let baseline = doctor(Some("baseline"));
    assert_eq!(threads_line(&baseline), threads_line(&best));
    assert!(
        baseline.contains("BN–ReLU kernels run baseline ("),
        "{baseline}"
    );
    assert!(
        !baseline.contains("RESNET_FUSED_ISA=baseline"),
        "{baseline}"
    );
    let unknown = doctor(Some("sse9"));
    assert!(
        unknown.contains("RESNET_FUSED_ISA=sse9 is not one this CPU runs"),
        "{unknown}"
    );
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
    assert!(
        report.contains("training on   cpu with --device cpu\n"),
        "{report}"
    );
    assert!(report.contains("synthetic"), "{report}");

    // the whole report first, then the verdict in the exit status
    let cuda = doctor("cuda");
    let report = String::from_utf8_lossy(&cuda.stdout);
    assert!(report.contains("cifar-10"), "{report}");
    if report.contains("cuda          no") {
        assert!(!cuda.status.success(), "{report}");
        assert!(report.contains("training on   nothing"), "{report}");
        assert!(String::from_utf8_lossy(&cuda.stderr).contains("--device cuda cannot train"));
    } else {
        assert!(cuda.status.success(), "{report}");
    }
}

/// A data folder training could not read fails doctor after the whole report (a script
/// checking a machine must not pass it): a damaged one, or one named by `--data-dir` that is
/// absent (training refuses it as a likely typo). The absent default folder does not (`train`
/// downloads it), and doctor says so.
#[test]
fn doctor_fails_on_a_data_folder_training_could_not_read() {
    let setup = Setup::new();
    let doctor = |dir: &Path| {
        runner()
            .args(["doctor", "--device", "cpu", "--data-dir"])
            .arg(dir)
            .env_remove("CIFAR10_DIR")
            .output()
            .unwrap()
    };
    let data = setup.root.join("data");
    let batch = data.join("data_batch_3.bin");
    let bytes = std::fs::read(&batch).unwrap();
    std::fs::write(&batch, &bytes[..bytes.len() - 1]).unwrap();
    let out = doctor(&data);
    let (report, err) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(!out.status.success(), "{report}");
    assert_eq!(report.matches("not usable").count(), 1, "{report}");
    assert!(
        report.contains("data_batch_3.bin") && report.contains("truncated"),
        "{report}"
    );
    assert!(report.contains("move it away"), "{report}");
    assert!(
        report.contains("training on   cpu"),
        "the whole report first: {report}"
    );
    assert!(err.contains("training cannot read"), "{err}");

    let typo = setup.root.join("nothing-here");
    let out = doctor(&typo);
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{report}");
    assert!(report.contains("named by --data-dir"), "{report}");
    assert!(!typo.exists(), "doctor made the folder it checked");

    // the default folder, absent: train would download it
    let elsewhere = setup.root.join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    let out = runner()
        .args(["doctor", "--device", "cpu"])
        .current_dir(&elsewhere)
        .env_remove("CIFAR10_DIR")
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{report}");
    assert!(
        report.contains("absent: `runner train` downloads the original archive into it"),
        "{report}"
    );
}

#[test]
fn a_divergence_is_said_as_it_happens_and_in_the_summary_and_is_not_an_error() {
    let s = Setup::with(DIVERGING);
    let out = s.train("results", &["--profile", "tiny"]).output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert!(
        log.contains("explode/seed-0: diverged at iteration 1 (the loss is not finite)"),
        "{log}"
    );
    assert!(
        log.contains("sweep: 2 trained to the end (1 ok, 0 fail, 1 diverged)")
            || log.contains("sweep: 2 trained to the end (0 ok, 1 fail, 1 diverged)"),
        "{log}"
    );
    assert!(
        log.contains("  explode/seed-0: diverged at iteration 1"),
        "{log}"
    );
    // before training, how long it would take here
    assert!(
        log.contains("estimate: 2 run(s) to train, 80 iterations; 32 depth-8 steps timed here"),
        "{log}"
    );
    // and what memory it needs, after the time
    assert!(
        log.contains("\nestimate: memory for explode: about "),
        "{log}"
    );
    // a second sweep has nothing to train and nothing to estimate
    let again = s.train("results", &["--profile", "tiny"]).output().unwrap();
    let log = String::from_utf8_lossy(&again.stderr);
    assert!(
        again.status.success() && !log.contains("estimate:"),
        "{log}"
    );
}

#[test]
fn a_damaged_checkpoint_is_one_line_naming_it_and_the_sweep_goes_on() {
    let s = Setup::with(DIVERGING);
    let args = ["--profile", "tiny", "--variant", "original"];
    let stopped = s.run_dir("results", "tiny", "original", 0);
    std::fs::create_dir_all(&stopped).unwrap();
    std::fs::write(
        stopped.join("checkpoint.ot"),
        b"PK\x03\x04 not a checkpoint",
    )
    .unwrap();
    let out = s
        .train("results", &args)
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{log}");
    let line = log
        .lines()
        .find(|l| l.contains("checkpoint.ot cannot be read"))
        .unwrap_or_else(|| panic!("{log}"));
    assert!(
        line.contains(&format!("delete {}", stopped.display())),
        "{line}"
    );
    assert!(!log.contains("frame #"), "no C++ stack: {log}");
    assert!(log.lines().count() < 10, "{log}");
    assert!(!stopped.join("final.json").exists());
}

/// Kills a training process with SIGKILL at random moments (no chance to checkpoint): each
/// time once it has written a new epoch, after a random part of another epoch's time, so
/// that kills land in steps, evaluations and writes alike. Every process resumes from what
/// the last one left; the result must be the uninterrupted run's.
#[test]
fn kill_9_at_random_moments_resumes_to_the_uninterrupted_numbers() {
    let s = Setup::new();
    let args = ["--profile", "long", "--variant", "original"];
    let started = Instant::now();
    let whole = s.train("whole", &args).output().unwrap();
    let epoch_s = started.elapsed().as_secs_f64() / 10.0; // 10 epochs (and the start-up)
    assert!(
        whole.status.success(),
        "{}",
        String::from_utf8_lossy(&whole.stderr)
    );
    let run = s.run_dir("killed", "long", "original", 0);
    let rows = || {
        std::fs::read_to_string(run.join("epochs.csv"))
            .map(|t| t.lines().count())
            .unwrap_or(0)
    };
    // a fixed sequence of pseudo-random delays (xorshift), so that a failure reproduces
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    let mut kills = 0;
    for _ in 0..40 {
        if run.join("final.json").exists() {
            break;
        }
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let delay = Duration::from_secs_f64(epoch_s * 1.2 * (state % 1000) as f64 / 1000.0);
        let before = rows();
        let mut child = s
            .train("killed", &args)
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        while rows() <= before && child.try_wait().unwrap().is_none() {
            std::thread::sleep(Duration::from_millis(10));
        }
        let new_row = Instant::now();
        while new_row.elapsed() < delay && child.try_wait().unwrap().is_none() {
            std::thread::sleep(Duration::from_millis(10));
        }
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap(); // SIGKILL
            kills += 1;
        }
        child.wait().unwrap();
    }
    assert!(run.join("final.json").exists(), "never finished");
    assert!(kills >= 3, "killed only {kills} times");
    let whole_run = s.run_dir("whole", "long", "original", 0);
    assert_eq!(
        numbers(&run.join("epochs.csv")),
        numbers(&whole_run.join("epochs.csv"))
    );
    // the tensors, not the file's bytes (each file carries its own serialization id)
    let weights = |dir: &Path| {
        let mut named = tch::Tensor::load_multi(dir.join("model.ot")).unwrap();
        named.sort_by(|a, b| a.0.cmp(&b.0));
        named
    };
    let (a, b) = (weights(&run), weights(&whole_run));
    assert_eq!(a.len(), b.len());
    for ((name, x), (_, y)) in a.iter().zip(&b) {
        assert!(x.equal(y), "trained weights {name} differ");
    }
}

/// `bench --precision fp32,bf16` measures both side by side and says which is which.
#[test]
fn bench_measures_fp32_and_bf16_side_by_side_on_the_cpu() {
    let out = runner()
        .args([
            "bench", "--device", "cpu", "--model", "resnet8", "--batch", "8",
        ])
        .args([
            "--precision",
            "fp32,bf16",
            "--steps",
            "1",
            "--rounds",
            "2",
            "--json",
        ])
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    let results: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let precisions: Vec<&str> = results
        .iter()
        .map(|r| r["precision"].as_str().unwrap())
        .collect();
    assert_eq!(precisions, ["fp32", "bf16"]);
    for r in &results {
        assert!(r["images_per_s"].as_f64().unwrap() > 0.0, "{r}");
        assert_eq!(r["round_seconds"].as_array().unwrap().len(), 2, "{r}");
    }
}

#[test]
fn a_run_records_the_revision_its_binary_was_built_from() {
    // The build script reads the revision; cargo builds this test and the binary together,
    // so the tree's state now is the build's: HEAD, dirty when the code differs from it.
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let git = |args: &[&str]| {
        let out = Command::new("git")
            .arg("-C")
            .arg(&root)
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "git {args:?}");
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    let head = git(&["rev-parse", "--short=12", "HEAD"]);
    let code = ["--", "crates", "Cargo.toml", "Cargo.lock"];
    let changes = git(&[
        &["status", "--porcelain", "--untracked-files=no"][..],
        &code,
    ]
    .concat());
    let expected = if changes.is_empty() {
        head
    } else {
        format!("{head}-dirty")
    };

    let s = Setup::with(DIVERGING);
    let out = s
        .train("results", &["--profile", "tiny", "--variant", "original"])
        .current_dir(&s.root) // not a git tree: nothing there to read at run time
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let record: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            s.run_dir("results", "tiny", "original", 0)
                .join("final.json"),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(record["git_revision"], expected.as_str());
}
