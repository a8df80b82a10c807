//! `runner`: trains plain networks and ResNets on CIFAR-10 (He et al. 2015, 2016).

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};

mod batches;
mod data;
mod device;
mod doctor;
mod experiment;
mod libtorch;
mod optim;
mod protocol;
mod results;
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
}

#[derive(Debug, clap::Args)]
struct TrainArgs {
    /// The experiment file, e.g. experiments/shortcuts.toml.
    experiment: PathBuf,
    /// Which profile of the file: its protocol and seeds.
    #[arg(long, default_value = "paper")]
    profile: String,
    /// Train only these variants (repeatable; default: all).
    #[arg(long = "variant")]
    variants: Vec<String>,
    /// Train only these of the profile's seeds, e.g. 0,1,2 (default: all).
    #[arg(long, value_delimiter = ',')]
    seeds: Vec<u64>,
    #[arg(long, value_enum, default_value = "auto")]
    device: device::DeviceChoice,
    /// Most seeds stacked in one network (default: all of a variant's seeds on CUDA, 1 on
    /// the CPU; 1 disables stacking).
    #[arg(long)]
    replicas: Option<usize>,
    /// Parameter layout of the optimizer (default: flat on CUDA, per tensor on the CPU).
    #[arg(long, value_enum)]
    sgd_layout: Option<optim::SgdLayout>,
    /// Where results go.
    #[arg(long, default_value = "results")]
    results: PathBuf,
    /// CIFAR-10 binary folder (default: $CIFAR10_DIR, else data/cifar-10-batches-bin).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// No progress bars; one line per epoch.
    #[arg(long)]
    quiet: bool,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Doctor { device, data_dir } => {
            doctor::run(device, &data::resolve_dir(data_dir.as_deref()))
        }
        Command::Train(args) => train_command(args),
        Command::Data {
            action,
            data_dir,
            quiet,
        } => {
            let dir = data::resolve_dir(data_dir.as_deref());
            match action {
                DataAction::Fetch => data::fetch(&dir, quiet),
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

fn train_command(args: TrainArgs) -> Result<()> {
    let experiment = experiment::Experiment::load(&args.experiment)?;
    let profile = experiment.profile(&args.profile)?;
    let variants = experiment.select_variants(&args.variants)?;
    if let Some(seed) = args.seeds.iter().find(|s| !profile.seeds.contains(s)) {
        anyhow::bail!(
            "seed {seed} is not one of profile `{}`'s seeds {:?}",
            profile.name,
            profile.seeds
        );
    }
    let seeds = if args.seeds.is_empty() {
        profile.seeds.clone()
    } else {
        args.seeds
    };
    let torch = libtorch::check()?;
    let resolved = device::resolve(args.device)?;
    if let Some(why) = &resolved.fallback {
        eprintln!("device: {why}; using the CPU");
    }
    let dir = data::resolve_dir(args.data_dir.as_deref());
    if !dir.exists() {
        data::fetch(&dir, args.quiet)?;
    }
    let data = data::Cifar10::load(&dir)?;
    eprintln!(
        "data: {} ({}), fingerprint {}",
        dir.display(),
        data.fingerprint.source,
        data.fingerprint.digest
    );
    let options = train::TrainOptions {
        results: args.results,
        device: resolved.device,
        max_replicas: args
            .replicas
            .unwrap_or(if resolved.device.is_cuda() { 16 } else { 1 }),
        layout: args
            .sgd_layout
            .unwrap_or(optim::SgdLayout::for_device(resolved.device)),
        quiet: args.quiet,
        stop_after_epochs: None,
    };
    let provenance = train::Provenance {
        git_revision: results::git_revision(),
        libtorch: format!(
            "{} ({})",
            torch.version.as_deref().unwrap_or("unknown"),
            torch.lib_dir.display()
        ),
        device: doctor::describe_device(resolved.device),
    };
    train::train_experiment(
        &experiment,
        profile,
        &variants,
        &seeds,
        &data,
        &provenance,
        &options,
    )
}
