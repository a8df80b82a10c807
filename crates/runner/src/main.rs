//! `runner`: trains plain networks and ResNets on CIFAR-10 (He et al. 2015, 2016).

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};

mod data;
mod device;
mod doctor;
mod libtorch;

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
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Doctor { device, data_dir } => {
            doctor::run(device, &data::resolve_dir(data_dir.as_deref()))
        }
    }
}
