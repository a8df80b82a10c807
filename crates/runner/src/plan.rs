//! Sweeps as lists of tasks, for Slurm job arrays and for several GPUs in one machine.
//!
//! One task is one variant's seeds, trained stacked in one process (or one seed, with
//! `--replicas 1`). `runner plan --emit slurm` writes the task list and an `sbatch` array script
//! into `results/<experiment>/<profile>/slurm/`; each array task runs
//! `runner train ... --task $SLURM_ARRAY_TASK_ID`, which reads its line of the list. Finished
//! runs are skipped and interrupted ones resume, so submitting the array again is safe.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};

use anyhow::{bail, ensure, Context, Result};

use spec::layout::RunState;
use spec::{write_atomic, Experiment, ExperimentKind, Profile, RunDir, Variant, VariantDir};

/// One unit of work: seeds of one variant, trained together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Task {
    pub id: usize,
    pub variant: String,
    pub seeds: Vec<u64>,
}

/// Splits a sweep into tasks: per variant, its seeds in chunks of at most `replicas`.
pub fn tasks(variants: &[&Variant], seeds: &[u64], replicas: usize) -> Vec<Task> {
    let mut tasks = Vec::new();
    for variant in variants {
        for chunk in seeds.chunks(replicas.max(1)) {
            tasks.push(Task {
                id: tasks.len(),
                variant: variant.name.clone(),
                seeds: chunk.to_vec(),
            });
        }
    }
    tasks
}

/// `results/<experiment>/<profile>/slurm/`.
pub fn slurm_dir(results: &Path, experiment: &Experiment, profile: &Profile) -> PathBuf {
    spec::profile_dir(results, &experiment.name, &profile.name).join("slurm")
}

const TASKS_HEADER: &str = "task\tvariant\tseeds";

/// The task list as a TSV file: `task<TAB>variant<TAB>seed,seed,...`.
pub fn tasks_tsv(tasks: &[Task]) -> String {
    let mut text = format!("{TASKS_HEADER}\n");
    for t in tasks {
        let seeds: Vec<String> = t.seeds.iter().map(u64::to_string).collect();
        let _ = writeln!(text, "{}\t{}\t{}", t.id, t.variant, seeds.join(","));
    }
    text
}

/// Reads task `id` from a task list written by [`tasks_tsv`].
pub fn read_task(path: &Path, id: usize) -> Result<Task> {
    let text = std::fs::read_to_string(path).with_context(|| {
        format!(
            "no task list at {} (write it with `runner plan --emit slurm`)",
            path.display()
        )
    })?;
    let mut lines = text.lines();
    ensure!(
        lines.next() == Some(TASKS_HEADER),
        "{} is not a task list",
        path.display()
    );
    for line in lines {
        let fields: Vec<&str> = line.split('\t').collect();
        let [task, variant, seeds] = fields.as_slice() else {
            bail!("{}: malformed line `{line}`", path.display());
        };
        if task.parse::<usize>().ok() == Some(id) {
            let seeds = seeds
                .split(',')
                .map(|s| {
                    s.parse::<u64>()
                        .with_context(|| format!("{}: bad seed `{s}`", path.display()))
                })
                .collect::<Result<Vec<_>>>()?;
            return Ok(Task {
                id,
                variant: variant.to_string(),
                seeds,
            });
        }
    }
    bail!("{} has no task {id}", path.display())
}

/// Where a task stands, from its runs' records (as `train` reads them: a damaged run is
/// neither finished nor started; a gradients measurement is finished when its `norms.csv` is).
pub fn task_status(
    results: &Path,
    experiment: &Experiment,
    profile: &Profile,
    task: &Task,
) -> String {
    if experiment.kind == ExperimentKind::Gradients {
        // one measurement of all seeds of a variant, done when its norms.csv is written
        let files = VariantDir::new(results, &experiment.name, &profile.name, &task.variant);
        return if files.norms_path().exists() {
            "finished".into()
        } else {
            "pending".into()
        };
    }
    let (mut finished, mut started, mut damaged) = (0, 0, 0);
    for &seed in &task.seeds {
        let run = RunDir::new(
            results,
            &experiment.name,
            &profile.name,
            &task.variant,
            seed,
        );
        match run.state() {
            Ok(RunState::Finished { .. }) => finished += 1,
            Ok(RunState::Unfinished { epochs, .. })
                if !epochs.is_empty() || run.checkpoint_path().exists() =>
            {
                started += 1
            }
            Ok(RunState::Unfinished { .. }) => {}
            Err(_) => damaged += 1,
        }
    }
    let status = match (finished, started) {
        (f, _) if f == task.seeds.len() => "finished".into(),
        (0, 0) => "pending".into(),
        (f, s) => format!("{f} finished, {s} started"),
    };
    if damaged > 0 {
        format!("{status}, {damaged} damaged (`runner train` names them)")
    } else {
        status
    }
}

/// What the `sbatch` script asks of Slurm.
#[derive(Debug, Clone)]
pub struct SlurmOptions {
    pub partition: Option<String>,
    pub gpus_per_task: u32,
    pub cpus_per_task: u32,
    pub time: Option<String>,
    pub max_parallel: Option<usize>,
    /// Seconds before the time limit at which Slurm sends SIGUSR1.
    pub signal_lead_s: u32,
}

/// What the script runs and where, paths absolute.
pub struct SlurmPaths {
    pub runner: PathBuf,
    /// The arguments of `runner train` for every task (`--task` is added per task):
    /// [`crate::launch::train_args`].
    pub train_args: Vec<String>,
    pub results: PathBuf,
    pub workdir: PathBuf,
}

/// The `sbatch` array script for `tasks`.
pub fn sbatch_script(
    experiment: &Experiment,
    profile: &Profile,
    tasks: &[Task],
    paths: &SlurmPaths,
    opts: &SlurmOptions,
) -> String {
    let dir = paths
        .results
        .join(&experiment.name)
        .join(&profile.name)
        .join("slurm");
    let mut array = format!("0-{}", tasks.len().saturating_sub(1));
    if let Some(k) = opts.max_parallel {
        let _ = write!(array, "%{k}");
    }
    let mut s = String::from("#!/bin/bash\n");
    let _ = writeln!(
        s,
        "# {} tasks of {}/{} ({}); written by `runner plan --emit slurm`.",
        tasks.len(),
        experiment.name,
        profile.name,
        experiment.title
    );
    let _ = writeln!(
        s,
        "# Submit with `sbatch {}`; submitting again is safe: finished runs are",
        dir.join("array.sbatch").display()
    );
    s.push_str("# skipped and interrupted ones resume from their checkpoints.\n");
    let _ = writeln!(s, "#SBATCH --job-name={}-{}", experiment.name, profile.name);
    let _ = writeln!(s, "#SBATCH --array={array}");
    let _ = writeln!(s, "#SBATCH --output={}/logs/%A_%a.out", dir.display());
    s.push_str("#SBATCH --open-mode=append\n#SBATCH --requeue\n");
    let _ = writeln!(s, "#SBATCH --signal=B:USR1@{}", opts.signal_lead_s);
    let _ = writeln!(s, "#SBATCH --cpus-per-task={}", opts.cpus_per_task);
    if opts.gpus_per_task > 0 {
        let _ = writeln!(s, "#SBATCH --gpus-per-task={}", opts.gpus_per_task);
    }
    if let Some(p) = &opts.partition {
        let _ = writeln!(s, "#SBATCH --partition={p}");
    }
    if let Some(t) = &opts.time {
        let _ = writeln!(s, "#SBATCH --time={t}");
    }
    let _ = write!(
        s,
        r#"set -u
cd {workdir}
# Slurm signals this script (B:USR1) ahead of the time limit, and SIGTERM on preemption: pass
# it on; the runner finishes its step, writes checkpoints and exits 75.
{runner} {train} \
  --task "$SLURM_ARRAY_TASK_ID" &
child=$!
trap 'kill -USR1 "$child" 2>/dev/null' USR1 TERM
status=0
while :; do
  wait "$child"; status=$?
  kill -0 "$child" 2>/dev/null || break
done
if [ "$status" -eq 75 ]; then
  echo "task $SLURM_ARRAY_TASK_ID stopped before the end; requeueing it"
  scontrol requeue "${{SLURM_ARRAY_JOB_ID}}_${{SLURM_ARRAY_TASK_ID}}"
fi
exit "$status"
"#,
        workdir = quote_path(&paths.workdir),
        runner = quote_path(&paths.runner),
        train = paths
            .train_args
            .iter()
            .map(|a| quote(a))
            .collect::<Vec<_>>()
            .join(" "),
    );
    s
}

/// Writes `tasks.tsv` and `array.sbatch` into the sweep's slurm folder; returns the script.
pub fn emit_slurm(
    experiment: &Experiment,
    profile: &Profile,
    tasks: &[Task],
    paths: &SlurmPaths,
    opts: &SlurmOptions,
) -> Result<PathBuf> {
    let dir = slurm_dir(&paths.results, experiment, profile);
    std::fs::create_dir_all(dir.join("logs"))
        .with_context(|| format!("cannot create {}", dir.display()))?;
    write_atomic(&dir.join("tasks.tsv"), tasks_tsv(tasks).as_bytes())?;
    let script = dir.join("array.sbatch");
    write_atomic(
        &script,
        sbatch_script(experiment, profile, tasks, paths, opts).as_bytes(),
    )?;
    Ok(script)
}

/// A word for a shell command line: as it is when it holds nothing the shell would read
/// (letters, digits, `-_.,/=:`), else single-quoted.
fn quote(word: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "-_.,/=:".contains(c);
    if !word.is_empty() && word.chars().all(plain) {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// A path for a shell command line, single-quoted.
fn quote_path(path: &Path) -> String {
    format!("'{}'", path.display().to_string().replace('\'', r"'\''"))
}

/// Runs `tasks` as child `runner train` processes, one per device at a time, each seeing only
/// its GPU (`CUDA_VISIBLE_DEVICES`), until all are done or a stop is requested.
pub fn run_on_devices(
    tasks: &[Task],
    devices: &[String],
    child_args: &dyn Fn(&Task) -> Vec<String>,
) -> Result<()> {
    ensure!(!devices.is_empty(), "no devices given");
    let exe = std::env::current_exe().context("cannot find the runner executable")?;
    let mut queue = tasks.iter();
    let mut running: Vec<(usize, &Task, Child)> = Vec::new();
    let mut failures = Vec::new();
    let mut free: Vec<usize> = (0..devices.len()).rev().collect();
    loop {
        let stopping = crate::train::stop_requested();
        while !stopping && !free.is_empty() {
            let Some(task) = queue.next() else { break };
            let slot = free.pop().expect("a free device");
            eprintln!(
                "devices: task {} ({} seeds {:?}) on device {}",
                task.id, task.variant, task.seeds, devices[slot]
            );
            let child = Command::new(&exe)
                .args(child_args(task))
                .env("CUDA_VISIBLE_DEVICES", &devices[slot])
                .spawn()
                .with_context(|| format!("cannot start {}", exe.display()))?;
            running.push((slot, task, child));
        }
        if running.is_empty() {
            break;
        }
        if stopping {
            for (_, _, child) in &running {
                // SAFETY: plain kill(2) on our own child's pid.
                unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
        let mut still = Vec::new();
        for (slot, task, mut child) in running {
            match child.try_wait()? {
                Some(status) => {
                    free.push(slot);
                    if !status.success() {
                        failures.push(format!("task {} ({}): {status}", task.id, task.variant));
                    }
                }
                None => still.push((slot, task, child)),
            }
        }
        running = still;
    }
    crate::train::stop_if_requested(0)?;
    ensure!(
        failures.is_empty(),
        "some tasks failed: {}",
        failures.join("; ")
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn experiment() -> Experiment {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../experiments");
        Experiment::load(&dir.join("shortcuts.toml")).unwrap()
    }

    #[test]
    fn tasks_chunk_each_variants_seeds_and_round_trip_through_the_list() {
        let e = experiment();
        let paper = e.profile("paper").unwrap();
        let variants = e
            .select_variants(paper, &["original".into(), "conv1x1".into()])
            .unwrap();
        let tasks = tasks(&variants, &[0, 1, 2, 3, 4], 2);
        let shape: Vec<(usize, &str, Vec<u64>)> = tasks
            .iter()
            .map(|t| (t.id, t.variant.as_str(), t.seeds.clone()))
            .collect();
        assert_eq!(
            shape,
            [
                (0, "original", vec![0, 1]),
                (1, "original", vec![2, 3]),
                (2, "original", vec![4]),
                (3, "conv1x1", vec![0, 1]),
                (4, "conv1x1", vec![2, 3]),
                (5, "conv1x1", vec![4]),
            ]
        );
        let tmp = tempfile::tempdir().unwrap();
        let list = tmp.path().join("tasks.tsv");
        std::fs::write(&list, tasks_tsv(&tasks)).unwrap();
        for task in &tasks {
            assert_eq!(&read_task(&list, task.id).unwrap(), task);
        }
        assert!(read_task(&list, 6)
            .unwrap_err()
            .to_string()
            .contains("no task 6"));
    }

    #[test]
    fn the_array_script_asks_for_the_warning_signal_and_requeues_on_exit_75() {
        let e = experiment();
        let profile = e.profile("paper").unwrap();
        let variants = e.select_variants(profile, &[]).unwrap();
        let tasks = tasks(&variants, &profile.seeds, 5);
        let launch = crate::launch::Launch {
            profile: "paper".into(),
            variants: Vec::new(),
            seeds: Vec::new(),
            device: crate::device::DeviceChoice::Cuda,
            replicas: None,
            sgd_layout: None,
            precision: Some(crate::optim::Precision::Bf16),
            bn_relu: None,
            results: "/w/results".into(),
            data_dir: Some("/data/my cifar".into()),
        };
        let experiment = Path::new("/w/experiments/shortcuts.toml");
        let paths = SlurmPaths {
            runner: "/opt/it's here/runner".into(),
            train_args: crate::launch::train_args(experiment, &launch, true),
            results: "/w/results".into(),
            workdir: "/w".into(),
        };
        let opts = SlurmOptions {
            partition: Some("gpu".into()),
            gpus_per_task: 1,
            cpus_per_task: 8,
            time: Some("12:00:00".into()),
            max_parallel: Some(4),
            signal_lead_s: 180,
        };
        let script = sbatch_script(&e, profile, &tasks, &paths, &opts);
        for line in [
            "#SBATCH --array=0-10%4",
            "#SBATCH --signal=B:USR1@180",
            "#SBATCH --requeue",
            "#SBATCH --gpus-per-task=1",
            "#SBATCH --partition=gpu",
            "#SBATCH --time=12:00:00",
            "#SBATCH --output=/w/results/shortcuts/paper/slurm/logs/%A_%a.out",
            r#"scontrol requeue "${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}""#,
            r#"if [ "$status" -eq 75 ]; then"#,
        ] {
            assert!(
                script.lines().any(|l| l.trim() == line),
                "missing `{line}` in\n{script}"
            );
        }
        // The path with a quote survives the shell.
        let line = "'/opt/it'\\''s here/runner' train /w/experiments/shortcuts.toml --profile \
                    paper --device cuda --precision bf16 --results /w/results --data-dir \
                    '/data/my cifar' --quiet \\\n";
        assert!(script.contains(line), "{line} not in\n{script}");
        assert!(script.contains(r#"--task "$SLURM_ARRAY_TASK_ID""#));
    }
}
