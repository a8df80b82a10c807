//! `runner`: trains plain networks and ResNets on CIFAR-10 (He et al. 2015, 2016).

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};

mod batches;
mod data;
mod device;
mod doctor;
mod libtorch;
mod optim;
mod protocol;

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

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Doctor { device, data_dir } => {
            doctor::run(device, &data::resolve_dir(data_dir.as_deref()))
        }
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
