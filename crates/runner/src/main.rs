//! `runner`: trains plain networks and ResNets on CIFAR-10 (He et al. 2015, 2016).
//!
//! Networks come from `models`; experiment files, run records and the results layout from
//! `spec`, which `report` reads through too. Here: the data (`data`, `batches`), the device
//! and libtorch (`device`, `libtorch`, `doctor`), training (`train`, `checkpoint`, `optim`,
//! `tensorboard`), the gradients measurement, `bench` and `plan`.

use std::path::{Path, PathBuf};

use anyhow::Result;
use clap::{Parser, Subcommand};
use models::NetConfigExt;

mod batches;
mod bench;
mod checkpoint;
mod data;
mod device;
mod doctor;
mod estimate;
mod gradients;
mod launch;
mod libtorch;
mod memory;
mod optim;
mod plan;
mod step;
mod tensorboard;
mod train;

/// Train and inspect the networks of the residual-learning ablations on CIFAR-10.
#[derive(Debug, Parser)]
#[command(name = "runner", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Report libtorch, CPU threads, CUDA and the CIFAR-10 data folder.
    Doctor {
        /// Which device to probe: `auto` and `cuda` load libtorch's CUDA kernels if they exist.
        #[arg(long, value_enum, default_value = "auto")]
        device: device::DeviceChoice,
        /// CIFAR-10 binary folder (default: $CIFAR10_DIR, else data/cifar-10-batches-bin).
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Train every (variant, seed) of an experiment's profile that has not finished yet.
    Train(TrainArgs),
    /// List every architecture (depth, parameters, multiply-adds), or lay one out like
    /// Table 1 of He et al. 2015.
    Models {
        /// One architecture to lay out, e.g. resnet110 (default: list them all).
        name: Option<String>,
        /// Machine-readable output: the summaries as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Training throughput with synthetic data on the device.
    Bench(BenchArgs),
    /// List the tasks of a sweep (one task: one variant's seeds, stacked), and with
    /// `--emit slurm` write an sbatch array script and its task list beside the results.
    Plan(PlanArgs),
    /// TensorBoard event files, which are derived from each run's epochs.csv.
    Tfevents {
        #[command(subcommand)]
        action: TfeventsAction,
    },
    /// The CIFAR-10 data: download and verify the original archive, or inspect a folder.
    Data {
        #[command(subcommand)]
        action: DataAction,
        /// CIFAR-10 binary folder (default: $CIFAR10_DIR, else data/cifar-10-batches-bin).
        #[arg(long, global = true)]
        data_dir: Option<PathBuf>,
        /// No progress bar.
        #[arg(long, global = true)]
        quiet: bool,
    },
}

#[derive(Debug, Subcommand)]
enum DataAction {
    /// Download cifar-10-binary.tar.gz from the dataset's official address, check its MD5 and
    /// unpack it into the data folder (atomically; a failed fetch leaves nothing behind).
    Fetch,
    /// Check the folder's files and print their fingerprint and provenance.
    Check,
    /// Write a synthetic, learnable dataset in the CIFAR-10 layout into a new folder, given by
    /// --data-dir (for checking the pipeline without CIFAR-10; its results are labelled
    /// synthetic).
    Synthetic,
}

#[derive(Debug, Subcommand)]
enum TfeventsAction {
    /// Rebuild the event files of runs whose epochs are missing from them or there twice (a
    /// deleted or truncated file), from their epochs.csv, so that TensorBoard shows every
    /// epoch once. Runs being trained are left to their trainer.
    Repair {
        /// Run folders (`…/seed-N`), or folders above them, such as `results`.
        #[arg(required = true)]
        folders: Vec<PathBuf>,
    },
}

#[derive(Debug, Clone, PartialEq, clap::Args)]
struct TrainArgs {
    /// The experiment: a name in experiments/ (shortcuts), or the path of a .toml file.
    experiment: PathBuf,
    #[command(flatten)]
    launch: launch::Launch,
    /// No progress bars; one line per epoch.
    #[arg(long)]
    quiet: bool,
    /// Train only task N of the sweep's task list (results/<exp>/<profile>/slurm/tasks.tsv,
    /// written by `runner plan --emit slurm`); what Slurm array tasks run.
    #[arg(long, conflicts_with_all = ["variants", "seeds", "devices"])]
    task: Option<usize>,
    /// Run the sweep's tasks one process per GPU, e.g. 0,1,2,3, until all are done.
    #[arg(long, value_delimiter = ',')]
    devices: Vec<String>,
}

#[derive(Debug, clap::Args)]
struct PlanArgs {
    /// The experiment: a name in experiments/ (shortcuts), or the path of a .toml file.
    experiment: PathBuf,
    /// The options of `runner train` that every task is launched with.
    #[command(flatten)]
    launch: launch::Launch,
    /// Write a Slurm array script and task list into results/<exp>/<profile>/slurm/.
    #[arg(long, value_enum)]
    emit: Option<Emit>,
    /// Slurm partition.
    #[arg(long)]
    partition: Option<String>,
    /// GPUs per array task (0 for CPU-only tasks; default: 0 with --device cpu, else 1).
    #[arg(long)]
    gpus_per_task: Option<u32>,
    /// CPUs per array task.
    #[arg(long, default_value_t = 4)]
    cpus_per_task: u32,
    /// Time limit per array task, HH:MM:SS (requeued tasks resume where they stopped).
    #[arg(long)]
    time: Option<String>,
    /// Most array tasks running at once.
    #[arg(long)]
    max_parallel: Option<usize>,
    /// Seconds before the time limit at which Slurm asks the task to checkpoint and stop.
    #[arg(long, default_value_t = 120)]
    signal_lead: u32,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Emit {
    Slurm,
}

#[derive(Debug, clap::Args)]
struct BenchArgs {
    /// Architectures, e.g. resnet20,resnet110 (default: resnet20 and resnet110 on CUDA,
    /// resnet20 on the CPU).
    #[arg(long, value_delimiter = ',')]
    model: Vec<String>,
    /// Images per model per step.
    #[arg(long, default_value_t = 128)]
    batch: i64,
    /// Stack sizes to measure, e.g. 1,8 (default: 1,8,16 on CUDA, 1 on the CPU).
    #[arg(long, value_delimiter = ',')]
    replicas: Vec<i64>,
    /// Where to train: cuda, cpu, or auto (CUDA when it works here, else the CPU, saying why).
    #[arg(long, value_enum, default_value = "auto")]
    device: device::DeviceChoice,
    /// Optimizer layouts to measure (default: the device's default).
    #[arg(long, value_enum, value_delimiter = ',')]
    sgd_layout: Vec<optim::SgdLayout>,
    /// Activation layouts to measure, e.g. contiguous,channels-last (default: the device's
    /// preferred one).
    #[arg(long, value_enum, value_delimiter = ',')]
    memory_format: Vec<models::MemoryFormat>,
    /// Precisions to measure, e.g. fp32,bf16: fp32, bf16 (activations in bf16, weights fp32),
    /// fp16 (CUDA autocast with dynamic loss scaling; CUDA only).
    #[arg(long, value_enum, value_delimiter = ',', default_value = "fp32")]
    precision: Vec<optim::Precision>,
    /// Batch norm and ReLU while training on the CPU, e.g. fused,separate: one fused
    /// operation, or libtorch's separate ops (on CUDA always separate).
    #[arg(long, value_enum, value_delimiter = ',', default_value = "fused")]
    bn_relu: Vec<models::fused::BnRelu>,
    /// Timed steps per case and round (after 5 untimed ones).
    #[arg(long, default_value_t = 10)]
    steps: usize,
    /// Rounds: every case runs its steps once per round, in turn, so that cases are
    /// measured side by side; the median round is reported.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Print the results as JSON lines.
    #[arg(long)]
    json: bool,
}

fn main() -> std::process::ExitCode {
    keep_freed_memory();
    let cli = Cli::parse();
    let Err(err) = run(cli) else {
        return std::process::ExitCode::SUCCESS;
    };
    if let Some(stop) = err.downcast_ref::<train::Interrupted>() {
        eprintln!("runner: {stop}");
        std::process::exit(train::EXIT_INTERRUPTED);
    }
    // One line, the causes after the message, and never a stack trace (which anyhow adds to
    // the default report when RUST_BACKTRACE is set): a refusal is not a crash.
    eprintln!("runner: error: {err:#}");
    std::process::ExitCode::FAILURE
}

/// The commands that print listings end when their reader has gone (`runner plan ... | head`),
/// as other Unix tools do, instead of panicking on the broken pipe: Rust ignores SIGPIPE, and
/// these restore its default. `train` and `data` keep Rust's way (a write error, not a
/// signal): a run's end and a download's socket are handled in code.
fn end_quietly_on_a_closed_pipe() {
    #[cfg(unix)]
    // SAFETY: sets the disposition of one signal back to its default; no handler runs.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// Every training step frees and reallocates the same activation buffers (megabytes each).
/// glibc's defaults hand such blocks back to the kernel on free (mmap threshold, heap trim),
/// so every step pays the page faults of fresh zeroed memory again: about a tenth of a CPU
/// step here. Keep blocks up to 32 MiB (glibc's ceiling for this setting) in the heap and
/// never trim it below 1 GiB of free space.
fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; called before any thread starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Doctor { device, data_dir } => {
            end_quietly_on_a_closed_pipe();
            doctor::run(device, data_dir.as_deref())
        }
        Command::Train(args) => train_command(args),
        Command::Models { name, json } => {
            end_quietly_on_a_closed_pipe();
            models_command(name.as_deref(), json)
        }
        Command::Bench(args) => bench_command(args),
        Command::Plan(args) => {
            // with --emit, a closed pipe must not end it before the script is written
            if args.emit.is_none() {
                end_quietly_on_a_closed_pipe();
            }
            plan_command(args)
        }
        Command::Tfevents {
            action: TfeventsAction::Repair { folders },
        } => tensorboard::repair_folders(&folders),
        Command::Data {
            action,
            data_dir,
            quiet,
        } => {
            let dir = data::resolve_dir(data_dir.as_deref());
            match action {
                DataAction::Fetch => data::fetch(&dir, quiet),
                DataAction::Synthetic => data::write_synthetic(&dir),
                DataAction::Check => {
                    let data = data::Cifar10::load(&dir)?;
                    println!(
                        "{}: {} training and {} test images",
                        dir.display(),
                        data.train.len(),
                        data.test.len()
                    );
                    println!("fingerprint {}", data.fingerprint.digest);
                    println!("{}", data.fingerprint.source);
                    Ok(())
                }
            }
        }
    }
}

/// The file `runner train|plan EXPERIMENT` names: a path to a `.toml` file, or a name in
/// `experiments/`, as `report` takes it.
fn experiment_file(arg: &Path) -> Result<PathBuf> {
    spec::Experiment::find(&arg.to_string_lossy(), Path::new("experiments"))
}

fn train_command(args: TrainArgs) -> Result<()> {
    let mut args = args;
    args.experiment = experiment_file(&args.experiment)?;
    let experiment = spec::Experiment::load(&args.experiment)?;
    args.launch.check_results()?;
    train::install_signal_handlers()?;
    let profile = experiment.profile(&args.launch.profile)?;
    if let Some(id) = args.task {
        let list = plan::slurm_dir(&args.launch.results, &experiment, profile).join("tasks.tsv");
        let task = plan::read_task(&list, id)?;
        eprintln!("task {id}: {} seeds {:?}", task.variant, task.seeds);
        args.launch.replicas = Some(task.seeds.len());
        args.launch.variants = vec![task.variant];
        args.launch.seeds = task.seeds;
    }
    let variants = experiment.select_variants(profile, &args.launch.variants)?;
    let seeds = profile.select_seeds(&args.launch.seeds)?;
    if !args.devices.is_empty() {
        let tasks = plan::tasks(
            &variants,
            &seeds,
            args.launch.replicas.unwrap_or(seeds.len()),
        );
        // Where no task could use CUDA (libtorch_cuda.so not found: the same for every
        // process), `auto` is said once and every task told `cpu`, and `cuda` fails at once,
        // rather than each process repeating why. Where this process sees a GPU, `auto` tasks
        // are told `cuda`, so a task whose device fails stops with the reason instead of
        // training on the CPU. Otherwise (CUDA loads but this process sees no device: each
        // task has its own CUDA_VISIBLE_DEVICES) the tasks decide for themselves.
        let mut device = args.launch.device;
        if device != device::DeviceChoice::Cpu {
            if device::load_cuda().loaded_from.is_none() {
                let why = device::resolve(device)?.fallback.unwrap_or_default();
                eprintln!("device: {why}; every task trains on the CPU");
                device = device::DeviceChoice::Cpu;
            } else if tch::Cuda::is_available() {
                device = device::DeviceChoice::Cuda;
            }
        }
        let child_args = |task: &plan::Task| -> Vec<String> {
            let launch = launch::Launch {
                variants: vec![task.variant.clone()],
                seeds: task.seeds.clone(),
                replicas: Some(task.seeds.len()),
                device,
                ..args.launch.clone()
            };
            launch::train_args(&args.experiment, &launch, true)
        };
        // the data every task reads, fetched or refused once here rather than in each process
        let dir = data::training_dir(args.launch.data_dir.as_deref(), args.quiet)?;
        data::check_usable(&dir)?;
        return plan::run_on_devices(&tasks, &args.devices, &child_args);
    }
    let TrainArgs { launch, quiet, .. } = args;
    let torch = libtorch::check()?;
    let resolved = device::resolve(launch.device)?;
    if let Some(why) = &resolved.fallback {
        eprintln!("device: {why}; using the CPU");
    }
    // a precision the device cannot train stops the sweep before the data is read or fetched
    // (its warnings, if any, are said as each variant starts)
    for variant in &variants {
        let file_precision = experiment.protocol(variant, profile)?.precision;
        optim::check_precision(launch.precision.unwrap_or(file_precision), resolved.device)?;
    }
    let (max_replicas, memory_line) = memory::fit_sweep(
        &experiment,
        profile,
        &variants,
        &seeds,
        resolved.device,
        launch.replicas,
        launch.precision,
    )?;
    let dir = data::training_dir(launch.data_dir.as_deref(), quiet)?;
    let data = data::Cifar10::load(&dir)?;
    train::stop_if_requested(0)?;
    eprintln!(
        "data: {} ({}), fingerprint {}",
        dir.display(),
        data.fingerprint.source,
        data.fingerprint.digest
    );
    models::fused::set_bn_relu(launch.bn_relu.unwrap_or_default());
    if let Some(warning) = models::fused::isa_warning() {
        eprintln!("train: {warning}");
    }
    let options = train::TrainOptions {
        results: launch.results,
        device: resolved.device,
        max_replicas,
        layout: launch
            .sgd_layout
            .unwrap_or(optim::SgdLayout::for_device(resolved.device)),
        precision: launch.precision,
        quiet,
        stop_after_steps: None,
    };
    let provenance = spec::Provenance {
        git_revision: train::git_revision(),
        libtorch: torch.provenance(),
        device: doctor::describe_device(resolved.device),
    };
    if experiment.kind == spec::ExperimentKind::Training {
        estimate::announce(&estimate::Sweep {
            experiment: &experiment,
            profile,
            variants: &variants,
            seeds: &seeds,
            results: &options.results,
            device: options.device,
            replicas: options.max_replicas,
            layout: options.layout,
            precision: options.precision,
            memory: &memory_line,
        })?;
        train::stop_if_requested(0)?;
    }
    let run = match experiment.kind {
        spec::ExperimentKind::Training => train::train_experiment,
        spec::ExperimentKind::Gradients => gradients::run,
    };
    run(
        &experiment,
        profile,
        &variants,
        &seeds,
        &data,
        &provenance,
        &options,
    )
}

fn models_command(name: Option<&str>, json: bool) -> Result<()> {
    let entries: Vec<(String, models::NetConfig)> = match name {
        Some(name) => vec![(name.to_string(), models::NetConfig::from_name(name)?)],
        None => models::catalogue()
            .into_iter()
            .map(|e| (e.name, e.config))
            .collect(),
    };
    let summaries = entries
        .iter()
        .map(|(_, config)| config.summary())
        .collect::<Result<Vec<_>, _>>()?;
    if json {
        println!("{}", serde_json::to_string_pretty(&summaries)?);
    } else if name.is_some() {
        print!("{}", summaries[0]);
    } else {
        println!(
            "{:<20} {:>5} {:>6} {:>12} {:>10} {:>8}",
            "name", "depth", "units", "params", "mult-adds", "input"
        );
        for ((name, _), s) in entries.iter().zip(&summaries) {
            println!(
                "{name:<20} {:>5} {:>6} {:>11.2}M {:>9.3}G {:>4}x{}",
                s.depth,
                s.residual_units,
                s.params as f64 / 1e6,
                s.macs as f64 / 1e9,
                s.input_size[0],
                s.input_size[1]
            );
        }
    }
    Ok(())
}

fn bench_command(args: BenchArgs) -> Result<()> {
    let resolved = device::resolve(args.device)?;
    if let Some(why) = &resolved.fallback {
        eprintln!("device: {why}; using the CPU");
    }
    let layouts = if args.sgd_layout.is_empty() {
        vec![optim::SgdLayout::for_device(resolved.device)]
    } else {
        args.sgd_layout
    };
    let formats = if args.memory_format.is_empty() {
        vec![models::MemoryFormat::preferred(resolved.device)]
    } else {
        args.memory_format
    };
    let cuda = resolved.device.is_cuda();
    let model_names: Vec<String> = match (args.model.is_empty(), cuda) {
        (false, _) => args.model,
        (true, true) => vec!["resnet20".into(), "resnet110".into()],
        (true, false) => vec!["resnet20".into()],
    };
    let stack_sizes: Vec<i64> = match (args.replicas.is_empty(), cuda) {
        (false, _) => args.replicas,
        (true, true) => vec![1, 8, 16],
        (true, false) => vec![1],
    };
    for &precision in &args.precision {
        if let Some(warning) = optim::check_precision(precision, resolved.device)? {
            eprintln!("bench: {warning}");
        }
    }
    if let Some(warning) = models::fused::isa_warning() {
        eprintln!("bench: {warning}");
    }
    eprintln!(
        "bench on {} (synthetic data)",
        doctor::describe_device(resolved.device)
    );
    let mut cases = Vec::new();
    for name in &model_names {
        let config = models::NetConfig::from_name(name)?;
        for &replicas in &stack_sizes {
            for &layout in &layouts {
                for &memory_format in &formats {
                    for &precision in &args.precision {
                        for &bn_relu in &args.bn_relu {
                            let case = bench::BenchCase {
                                replicas,
                                batch: args.batch,
                                layout,
                                memory_format,
                                precision,
                                bn_relu,
                            };
                            cases.push((name.clone(), config.clone(), case));
                        }
                    }
                }
            }
        }
    }
    for r in bench::measure(&cases, resolved.device, args.steps, args.rounds)? {
        if args.json {
            println!("{}", serde_json::to_string(&r)?);
        } else {
            println!(
                "{:<12} replicas {:>2} batch {:>4}/model {:<10} {:<13} {:<5} {:<8} {:>8.0} img/s \
                 (median of {} rounds of {} steps; {:.0}–{:.0})",
                r.model,
                r.replicas,
                r.batch_per_model,
                launch::flag_value(&r.layout),
                launch::flag_value(&r.memory_format),
                launch::flag_value(&r.precision),
                launch::flag_value(&r.bn_relu),
                r.images_per_s,
                r.round_seconds.len(),
                r.steps,
                r.images_per_s_min,
                r.images_per_s_max,
            );
        }
    }
    Ok(())
}

fn plan_command(args: PlanArgs) -> Result<()> {
    let mut args = args;
    args.experiment = experiment_file(&args.experiment)?;
    let experiment = spec::Experiment::load(&args.experiment)?;
    let launch = &args.launch;
    launch.check_results()?;
    let profile = experiment.profile(&launch.profile)?;
    let variants = experiment.select_variants(profile, &launch.variants)?;
    let seeds = profile.select_seeds(&launch.seeds)?;
    let gpus_per_task = args
        .gpus_per_task
        .unwrap_or(u32::from(launch.device != device::DeviceChoice::Cpu));
    // as `train` stacks them: one seed a process on the CPU, all of a variant's on a GPU;
    // a gradients measurement takes all of a variant's seeds in one process
    let on_cpu = match launch.device {
        device::DeviceChoice::Cpu => true,
        device::DeviceChoice::Auto => gpus_per_task == 0,
        device::DeviceChoice::Cuda => false,
    };
    let replicas = match launch.replicas {
        _ if experiment.kind == spec::ExperimentKind::Gradients => seeds.len(),
        Some(k) => k,
        None if on_cpu => 1,
        None => seeds.len(),
    };
    let tasks = plan::tasks(&variants, &seeds, replicas);
    println!("{:>4}  {:<28} {:<16} status", "task", "variant", "seeds");
    for task in &tasks {
        let seeds: Vec<String> = task.seeds.iter().map(u64::to_string).collect();
        let status = plan::task_status(&launch.results, &experiment, profile, task);
        println!(
            "{:>4}  {:<28} {:<16} {status}",
            task.id,
            task.variant,
            seeds.join(",")
        );
    }
    if let Some(Emit::Slurm) = args.emit {
        let absolute = |p: &Path| -> Result<PathBuf> {
            Ok(if p.is_absolute() {
                p.to_path_buf()
            } else {
                std::env::current_dir()?.join(p)
            })
        };
        // each array task names its variant and seeds by `--task`; a task given a GPU trains
        // on it or fails, never on the CPU in its stead
        let device = match launch.device {
            device::DeviceChoice::Auto if gpus_per_task > 0 => device::DeviceChoice::Cuda,
            chosen => chosen,
        };
        let tasks_launch = launch::Launch {
            variants: Vec::new(),
            seeds: Vec::new(),
            device,
            results: absolute(&launch.results)?,
            data_dir: launch.data_dir.as_deref().map(absolute).transpose()?,
            ..launch.clone()
        };
        let paths = plan::SlurmPaths {
            runner: std::env::current_exe()?,
            train_args: launch::train_args(&absolute(&args.experiment)?, &tasks_launch, true),
            results: tasks_launch.results.clone(),
            workdir: std::env::current_dir()?,
        };
        let options = plan::SlurmOptions {
            partition: args.partition,
            gpus_per_task,
            cpus_per_task: args.cpus_per_task,
            time: args.time,
            max_parallel: args.max_parallel,
            signal_lead_s: args.signal_lead,
        };
        let script = plan::emit_slurm(&experiment, profile, &tasks, &paths, &options)?;
        println!(
            "wrote {} and tasks.tsv beside it; submit with: sbatch {}",
            script.display(),
            script.display()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// A full `runner train` command line: every option set to something other than its
    /// default, except `--task` and `--devices`, which split a sweep into processes.
    const TRAIN: [&str; 26] = [
        "runner",
        "train",
        "exp/x.toml",
        "--profile",
        "cpu",
        "--variant",
        "a",
        "--variant",
        "b c",
        "--seeds",
        "0,2",
        "--device",
        "cuda",
        "--replicas",
        "3",
        "--sgd-layout",
        "per-tensor",
        "--precision",
        "bf16",
        "--bn-relu",
        "separate",
        "--results",
        "out dir",
        "--data-dir",
        "/d/c10",
        "--quiet",
    ];

    fn train_args(line: &[String]) -> TrainArgs {
        match Cli::try_parse_from(line).unwrap().command {
            Command::Train(args) => args,
            other => panic!("{other:?}"),
        }
    }

    /// What a child process is launched with parses back to the options given: `--devices`
    /// and the Slurm script lose no flag. The line above sets every option of `train`, so a
    /// flag added later fails this test until it is set here and passed on.
    #[test]
    fn every_train_option_round_trips_through_the_child_command_line() {
        let cli = Cli::command();
        let train = cli.find_subcommand("train").unwrap();
        for arg in train.get_arguments() {
            let Some(long) = arg.get_long() else { continue };
            if !["task", "devices", "help"].contains(&long) {
                assert!(
                    TRAIN.contains(&format!("--{long}").as_str()),
                    "--{long} is not in the test's command line"
                );
            }
        }
        let line: Vec<String> = TRAIN.iter().map(|s| s.to_string()).collect();
        let args = train_args(&line);
        assert_eq!(args.launch.sgd_layout, Some(optim::SgdLayout::PerTensor));
        assert_eq!(args.launch.bn_relu, Some(models::fused::BnRelu::Separate));
        let mut child = vec!["runner".to_string()];
        child.extend(launch::train_args(
            &args.experiment,
            &args.launch,
            args.quiet,
        ));
        assert_eq!(train_args(&child), args);
        // the defaults round-trip too
        let bare = train_args(&["runner".into(), "train".into(), "x.toml".into()]);
        let mut child = vec!["runner".to_string()];
        child.extend(launch::train_args(
            &bare.experiment,
            &bare.launch,
            bare.quiet,
        ));
        assert_eq!(train_args(&child), bare);
    }

    #[test]
    fn zero_replicas_is_refused_by_the_parser() {
        let err = Cli::try_parse_from(["runner", "train", "x.toml", "--replicas", "0"])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("--replicas") && err.contains("1 or more"),
            "{err}"
        );
    }

    /// `plan` takes every option of `train` that changes what is trained or where it reads
    /// data, so that the array tasks it writes train what was asked.
    #[test]
    fn plan_takes_every_launch_option_of_train() {
        let cli = Cli::command();
        let longs = |name: &str| -> Vec<String> {
            cli.find_subcommand(name)
                .unwrap()
                .get_arguments()
                .filter_map(|a| a.get_long().map(str::to_string))
                .collect()
        };
        let plan = longs("plan");
        for long in longs("train") {
            if !["task", "devices", "quiet"].contains(&long.as_str()) {
                assert!(plan.contains(&long), "plan lacks --{long}");
            }
        }
    }

    /// Values are said as the flags spell them, not as Rust's Debug names.
    #[test]
    fn values_are_said_with_the_flags_spelling() {
        assert_eq!(
            launch::flag_value(&optim::SgdLayout::PerTensor),
            "per-tensor"
        );
        assert_eq!(launch::flag_value(&device::DeviceChoice::Auto), "auto");
        assert_eq!(launch::flag_value(&optim::Precision::Bf16), "bf16");
    }
}
