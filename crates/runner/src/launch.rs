//! One description of how a sweep is launched. `runner train` and `runner plan` take the same
//! [`Launch`] options, and [`train_args`] turns them back into the command line of a child
//! `runner train`: what `--devices` starts on each GPU and what the Slurm array script runs.
//! A flag added to [`Launch`] reaches every process, or the code does not compile.

use std::path::{Path, PathBuf};

use clap::ValueEnum;

use crate::device::DeviceChoice;
use crate::optim::{Precision, SgdLayout};
use models::fused::BnRelu;

/// What is trained, how, and where it reads and writes: the options every process of a sweep
/// gets.
#[derive(Debug, Clone, PartialEq, clap::Args)]
pub struct Launch {
    /// Which profile of the file: its protocol and seeds.
    #[arg(long, short, default_value = "paper")]
    pub profile: String,
    /// Train only these variants, e.g. original,conv1x1 (or the flag repeated; default: all).
    #[arg(long = "variant", value_delimiter = ',')]
    pub variants: Vec<String>,
    /// Train only these of the profile's seeds, e.g. 0,1,2 (default: all).
    #[arg(long, value_delimiter = ',')]
    pub seeds: Vec<u64>,
    /// Where to train: cuda, cpu, or auto (CUDA when it works here, else the CPU, saying why).
    #[arg(long, value_enum, default_value = "auto")]
    pub device: DeviceChoice,
    /// Most seeds stacked in one network, and so in one task of `plan` or `--devices`
    /// (default: 16 on CUDA, as many as fit in its memory; 1 on the CPU; 1 disables stacking).
    #[arg(long, value_parser = at_least_one)]
    pub replicas: Option<usize>,
    /// Parameter layout of the optimizer (default: flat on CUDA, per tensor on the CPU).
    #[arg(long, value_enum)]
    pub sgd_layout: Option<SgdLayout>,
    /// Numeric precision, instead of the profile's (`precision` in its protocol; fp32, the
    /// papers', unless the file says otherwise): fp16 is CUDA autocast with dynamic loss
    /// scaling. Recorded in each run's config.toml and final.json.
    #[arg(long, value_enum)]
    pub precision: Option<Precision>,
    /// Batch norm and ReLU while training on the CPU: one fused operation (the default), or
    /// libtorch's separate ops. The same numbers to within rounding; for comparing the two.
    /// On CUDA always separate. Recorded in `final.json`; a run resumes only the way it began.
    #[arg(long, value_enum)]
    pub bn_relu: Option<BnRelu>,
    /// Where results go.
    #[arg(long, default_value = "results")]
    pub results: PathBuf,
    /// CIFAR-10 binary folder (default: $CIFAR10_DIR, else data/cifar-10-batches-bin).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
}

impl Launch {
    /// Refuses a `--results` that cannot be the folder runs are written into (a file, a link
    /// to nothing), before anything is read.
    pub fn check_results(&self) -> anyhow::Result<()> {
        let path = &self.results;
        let shown = path.display();
        match (std::fs::symlink_metadata(path), std::fs::metadata(path)) {
            // nothing there yet: made when the first run starts
            (Err(_), _) => Ok(()),
            (Ok(_), Ok(meta)) if meta.is_dir() => Ok(()),
            (Ok(_), Ok(_)) => anyhow::bail!(
                "--results {shown} is not a folder: it names the folder the runs are written into"
            ),
            (Ok(_), Err(err)) => anyhow::bail!(
                "--results {shown} is a link to nothing ({err}): point it at a folder, or remove it"
            ),
        }
    }
}

/// A count of one or more (`--replicas 0` would train nothing).
fn at_least_one(value: &str) -> Result<usize, String> {
    match value.parse::<usize>() {
        Ok(0) => Err("must be 1 or more (1 trains each seed alone)".into()),
        Ok(n) => Ok(n),
        Err(err) => Err(err.to_string()),
    }
}

/// The spelling of `value` on the command line (the flag's, never its Debug name).
pub fn flag_value<T: ValueEnum>(value: &T) -> String {
    value
        .to_possible_value()
        .map(|v| v.get_name().to_string())
        .unwrap_or_default()
}

/// The arguments of `runner train EXPERIMENT` with `launch`'s options (after the program
/// name): what a child process is started with.
pub fn train_args(experiment: &Path, launch: &Launch, quiet: bool) -> Vec<String> {
    // every field by name: a new option is a compile error here until it is passed on
    let Launch {
        profile,
        variants,
        seeds,
        device,
        replicas,
        sgd_layout,
        precision,
        bn_relu,
        results,
        data_dir,
    } = launch;
    let path = |p: &Path| p.display().to_string();
    let mut args = vec!["train".to_string(), path(experiment)];
    args.extend(["--profile".into(), profile.clone()]);
    for variant in variants {
        args.extend(["--variant".into(), variant.clone()]);
    }
    if !seeds.is_empty() {
        let seeds: Vec<String> = seeds.iter().map(u64::to_string).collect();
        args.extend(["--seeds".into(), seeds.join(",")]);
    }
    args.extend(["--device".into(), flag_value(device)]);
    if let Some(k) = replicas {
        args.extend(["--replicas".into(), k.to_string()]);
    }
    if let Some(layout) = sgd_layout {
        args.extend(["--sgd-layout".into(), flag_value(layout)]);
    }
    if let Some(precision) = precision {
        args.extend(["--precision".into(), flag_value(precision)]);
    }
    if let Some(bn_relu) = bn_relu {
        args.extend(["--bn-relu".into(), flag_value(bn_relu)]);
    }
    args.extend(["--results".into(), path(results)]);
    if let Some(dir) = data_dir {
        args.extend(["--data-dir".into(), path(dir)]);
    }
    if quiet {
        args.push("--quiet".into());
    }
    args
}
