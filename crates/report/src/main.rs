//! `report EXP --profile P`: tables and figures from `results/EXP/P/`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use report::{render, Paths};

/// Renders the table (results/EXP/PROFILE/table.{csv,md}) and figures
/// (plots/EXP/PROFILE/*.{svg,png}) of an ablation from the runner's results.
#[derive(Debug, Parser)]
#[command(name = "report", version)]
struct Args {
    /// Experiment name (experiments/EXP.toml), or the path of a .toml file.
    experiment: String,
    /// Profile of the experiment file (paper, short, smoke, ...).
    #[arg(long, short, default_value = "paper")]
    profile: String,
    /// Folder of the experiment files.
    #[arg(long, default_value = "experiments")]
    experiments: PathBuf,
    /// Folder the runner writes results into (tables are written beside them).
    #[arg(long, default_value = "results")]
    results: PathBuf,
    /// Folder for the figures.
    #[arg(long, default_value = "plots")]
    plots: PathBuf,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let paths = Paths {
        experiments: args.experiments,
        results: args.results,
        plots: args.plots,
    };
    match render(&args.experiment, &args.profile, &paths) {
        Ok(written) => {
            for file in &written.files {
                println!("wrote {}", file.display());
            }
            for file in &written.removed {
                println!("removed {} (nothing left to draw)", file.display());
            }
            for note in written.table.notes() {
                eprintln!("note: {note}");
            }
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("report: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
