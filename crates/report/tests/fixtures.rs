//! End-to-end tests on fixture results written into a temporary folder: the shapes
//! `runner train` leaves behind (finished, running, diverged, missing seeds), the table
//! computed from them against hand-computed numbers, and the figures.

// The fixture helpers are test code too: a failed write is a failed test.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

mod common;
use common::*;
use report::{render, Paths};

const EXPERIMENT: &str = r#"
title = "Identity Mappings, Table 1: shortcut variants on ResNet-110"
source = "He et al. 2016, Identity Mappings in Deep Residual Networks, Table 1"
[model]
depth = 110
[[variants]]
name = "original"
paper = 6.61
[[variants]]
name = "scaling-0.5-0.5"
paper = 12.35
model = { shortcut = { scaling = { lambda_s = 0.5, lambda_f = 0.5 } } }
[[variants]]
name = "scaling-0-1"
paper = "fail"
[[variants]]
name = "dropout-0.5"
paper = "fail"
[[variants]]
name = "gating-6"
paper = 8.70
[[variants]]
name = "conv1x1"
[profiles.paper]
seeds = [0, 1, 2, 3, 4]
model = {}
protocol = { batch_size = 128, iterations = 64000, lr = 0.1, lr_drops = [32000, 48000], warmup = { lr = 0.01, iterations = 400 } }
[profiles.smoke]
seeds = [0]
protocol = { batch_size = 32, iterations = 50, lr = 0.1, lr_drops = [] }
"#;

struct Fixture {
    _dir: tempfile::TempDir,
    paths: Paths,
}

impl Fixture {
    /// A fresh folder; `REPORT_KEEP_FIXTURES=1` keeps it (its path is printed) to look at.
    fn new() -> Self {
        let (dir, paths) = common::fixture_folder("shortcuts.toml", EXPERIMENT);
        Self { _dir: dir, paths }
    }

    fn seed_dir(&self, exp: &str, variant: &str, seed: u64) -> PathBuf {
        let dir = self
            .paths
            .results
            .join(exp)
            .join("paper")
            .join(variant)
            .join(format!("seed-{seed}"));
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// A finished run: epochs.csv falling toward `error`, and final.json.
    fn finished(&self, variant: &str, seed: u64, error: f64, device: &str, data: &str) {
        let dir = self.seed_dir("shortcuts", variant, seed);
        fs::write(dir.join("epochs.csv"), epochs(error, 20)).unwrap();
        let status = if error > 20.0 { "fail" } else { "ok" };
        let json = final_json(variant, seed, status, Some(error), None, device, data);
        fs::write(dir.join("final.json"), json).unwrap();
    }

    /// The run's `config.toml`, as the runner writes it.
    fn config(&self, variant: &str, seed: u64, depth: usize) {
        let dir = self.seed_dir("shortcuts", variant, seed);
        let config = spec::RunConfig {
            experiment: "shortcuts".into(),
            profile: "paper".into(),
            variant: variant.into(),
            seed,
            model: spec::NetConfig::cifar(depth),
            protocol: toml::from_str(
                "batch_size = 128\niterations = 64000\nlr = 0.1\nlr_drops = [32000, 48000]",
            )
            .unwrap(),
        };
        fs::write(dir.join("config.toml"), toml::to_string(&config).unwrap()).unwrap();
    }

    /// A run whose loss became NaN at iteration 450.
    fn diverged(&self, variant: &str, seed: u64) {
        let dir = self.seed_dir("shortcuts", variant, seed);
        let mut csv = epochs(50.0, 8);
        csv.push_str("9,450,0.1,NaN,NaN,,,12.0,1000.0\n");
        fs::write(dir.join("epochs.csv"), csv).unwrap();
        let json = final_json(variant, seed, "diverged", None, Some(450), H100, JPEG);
        fs::write(dir.join("final.json"), json).unwrap();
    }

    /// A run in progress: epochs.csv, no final.json, and the lock of a live process (this
    /// test's, as the runner writes it).
    fn running(&self, variant: &str, seed: u64) {
        self.interrupted(variant, seed);
        let dir = self.seed_dir("shortcuts", variant, seed);
        let holder = format!("{} {}\n", spec::layout::hostname(), std::process::id());
        fs::write(dir.join("lock"), holder).unwrap();
    }

    /// A run that stopped and that nothing trains: epochs.csv, no final.json, no lock.
    fn interrupted(&self, variant: &str, seed: u64) {
        let dir = self.seed_dir("shortcuts", variant, seed);
        fs::write(dir.join("epochs.csv"), epochs(14.0, 6)).unwrap();
    }

    fn plots(&self, exp: &str) -> PathBuf {
        self.paths.plots.join(exp).join("paper")
    }

    fn table_dir(&self, exp: &str) -> PathBuf {
        self.paths.results.join(exp).join("paper")
    }
}

/// `epochs` rows falling from 90% toward `error`; test error on even epochs and the last.
fn epochs(error: f64, epochs: i64) -> String {
    let mut csv = String::from(
        "epoch,iteration,lr,train_loss,train_error,test_loss,test_error,wall_s,images_per_s\n",
    );
    for epoch in 1..=epochs {
        let decay = (-(epoch as f64) / 3.0).exp();
        let train = 0.5 * error + (90.0 - 0.5 * error) * decay;
        let test = if epoch == epochs {
            error
        } else {
            error + (90.0 - error) * decay
        };
        let test = if epoch % 2 == 0 || epoch == epochs {
            format!("{:.3},{test}", test / 40.0)
        } else {
            ",".to_string()
        };
        csv.push_str(&format!(
            "{epoch},{},0.1,{:.3},{train},{test},{:.1},1000.0\n",
            epoch * 50,
            train / 40.0,
            epoch as f64 * 1.5
        ));
    }
    csv
}

fn final_json(
    variant: &str,
    seed: u64,
    status: &str,
    error: Option<f64>,
    diverged_at: Option<i64>,
    device: &str,
    source: &str,
) -> String {
    serde_json::json!({
        "status": status,
        "experiment": "shortcuts",
        "profile": "paper",
        "variant": variant,
        "seed": seed,
        "iterations": diverged_at.unwrap_or(1000),
        "diverged_at_iteration": diverged_at,
        "final_test_error": error,
        "final_test_loss": error.map(|e| e / 40.0),
        "final_train_error": error.map(|e| e / 2.0),
        "final_train_loss": error.map(|e| e / 80.0),
        "fail_above_percent": 20.0,
        "wall_s": 30.0,
        "data": {
            "digest": if source == JPEG { "0123456789abcdef" } else { "fedcba9876543210" },
            "files": {"data_batch_1": "00"},
            "source": source,
            "original": source == ORIGINAL,
        },
        "git_revision": "5f672cc",
        "libtorch": "2.11.0",
        "device": device,
        "stacked_with": 1,
        "finished_at_unix_s": 1_700_000_000u64,
        "a_field_the_runner_adds_later": {"anything": true},
    })
    .to_string()
}

/// The sweep of the module docs: every kind of row.
fn sweep() -> Fixture {
    let f = Fixture::new();
    // original: 6.5 6.7 6.6 7.0 6.2, three on the H100 and two on the CPU.
    for (seed, e) in [6.5, 6.7, 6.6, 7.0, 6.2].into_iter().enumerate() {
        let device = if seed < 3 { H100 } else { CPU };
        f.finished("original", seed as u64, e, device, JPEG);
    }
    // scaling-0.5-0.5: three finished, seed 3 running, seed 4 not started.
    for (seed, e) in [12.0, 13.0, 14.5].into_iter().enumerate() {
        f.finished("scaling-0.5-0.5", seed as u64, e, H100, JPEG);
    }
    f.running("scaling-0.5-0.5", 3);
    for (seed, e) in [85.0, 90.0, 88.0, 91.0, 89.5].into_iter().enumerate() {
        f.finished("scaling-0-1", seed as u64, e, H100, JPEG);
    }
    // dropout-0.5: seeds 1 and 3 diverged.
    for (seed, e) in [(0, 30.0), (2, 25.0), (4, 40.0)] {
        f.finished("dropout-0.5", seed, e, H100, JPEG);
    }
    f.diverged("dropout-0.5", 1);
    f.diverged("dropout-0.5", 3);
    // gating-6: nothing at all.
    for (seed, e) in [12.0, 12.2, 12.4, 12.6, 12.8].into_iter().enumerate() {
        f.finished("conv1x1", seed as u64, e, H100, JPEG);
    }
    f
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

#[test]
fn table_csv_has_the_hand_computed_statistics() {
    let f = sweep();
    render("shortcuts", "paper", &f.paths).unwrap();
    let rows = csv_rows(&f.table_dir("shortcuts").join("table.csv"));
    let names: Vec<&str> = rows.iter().map(|r| r["variant"].as_str()).collect();
    assert_eq!(
        names,
        [
            "original",
            "scaling-0.5-0.5",
            "scaling-0-1",
            "dropout-0.5",
            "gating-6",
            "conv1x1"
        ]
    );

    // original: mean 33.0 / 5 = 6.6; squared deviations .01 + .01 + 0 + .16 + .16 = .34,
    // sample std sqrt(.34 / 4) = 0.29155; median 6.6; diff 6.6 − 6.61 = −0.01.
    let o = &rows[0];
    assert_eq!(
        (o["seeds_finished"].as_str(), o["seeds_expected"].as_str()),
        ("5", "5")
    );
    assert!(close(num(o, "mean"), 6.6));
    assert!(close(num(o, "std"), (0.34f64 / 4.0).sqrt()));
    assert!(close(num(o, "median"), 6.6));
    assert_eq!((num(o, "min"), num(o, "max")), (6.2, 7.0));
    assert_eq!(num(o, "paper"), 6.61);
    assert!(close(num(o, "diff"), -0.01));
    // a single paper number: our median against it, no spread or best run
    assert_eq!(o["diff_of"], "median");
    assert_eq!(
        (o["paper_std"].as_str(), o["paper_best"].as_str()),
        ("", "")
    );
    assert_eq!(o["status"], "ok");

    // scaling-0.5-0.5: 12, 13, 14.5 → mean 39.5 / 3 = 13.1667; deviations −7/6, −1/6, 4/3,
    // sum of squares 19/6, sample std sqrt(19/12) = 1.2583; median 13; diff 13 − 12.35 = 0.65.
    let s = &rows[1];
    assert_eq!(s["seeds_finished"], "3");
    assert_eq!(s["seeds_running"], "1");
    assert!(close(num(s, "mean"), 39.5 / 3.0));
    assert!(close(num(s, "std"), (19.0f64 / 12.0).sqrt()));
    assert!(close(num(s, "median"), 13.0));
    assert!(close(num(s, "diff"), 0.65));
    assert_eq!(s["status"], "incomplete");

    // scaling-0-1: median 89.5 > 20 → fail; the paper says "fail", so no difference.
    let p = &rows[2];
    assert!(close(num(p, "mean"), 443.5 / 5.0));
    assert!(close(num(p, "median"), 89.5));
    assert_eq!(p["paper"], "fail");
    assert_eq!((p["diff"].as_str(), p["diff_of"].as_str()), ("", ""));
    assert_eq!(p["status"], "fail");

    // dropout-0.5: 2 of 5 diverged; statistics over 30, 25, 40: mean 95 / 3, median 30.
    let d = &rows[3];
    assert_eq!(
        (d["seeds_finished"].as_str(), d["seeds_diverged"].as_str()),
        ("5", "2")
    );
    assert_eq!(d["n_errors"], "3");
    assert!(close(num(d, "mean"), 95.0 / 3.0));
    assert!(close(num(d, "median"), 30.0));
    assert_eq!(d["status"], "diverged");

    // gating-6: nothing ran; empty statistics, 0/5.
    let g = &rows[4];
    assert_eq!(
        (g["seeds_finished"].as_str(), g["n_errors"].as_str()),
        ("0", "0")
    );
    for column in ["mean", "std", "median", "min", "max", "diff"] {
        assert_eq!(g[column], "", "{column}");
    }
    assert_eq!(num(g, "paper"), 8.7);
    assert_eq!(g["status"], "incomplete");

    // conv1x1: no paper number, so no difference; std sqrt(.4 / 4) = 0.3162.
    let c = &rows[5];
    assert_eq!((c["paper"].as_str(), c["diff"].as_str()), ("", ""));
    assert!(close(num(c, "std"), 0.1f64.sqrt()));
    assert_eq!(c["status"], "ok");
}

/// A run resumed on another device counts on both in the table's devices.
#[test]
fn a_run_resumed_on_another_device_counts_on_each() {
    let f = sweep();
    let file = f.seed_dir("shortcuts", "conv1x1", 0).join("final.json");
    let mut record: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(&file).unwrap()).unwrap();
    assert_eq!(record["device"], H100);
    let stretch = |from: i64, to: i64, device: &str| {
        serde_json::json!({"from_iteration": from, "to_iteration": to, "device": device,
                           "libtorch": "2.11.0", "stacked_with": 1})
    };
    record["stretches"] = serde_json::json!([stretch(0, 400, CPU), stretch(400, 1000, H100)]);
    fs::write(&file, record.to_string()).unwrap();
    render("shortcuts", "paper", &f.paths).unwrap();
    let md = fs::read_to_string(f.table_dir("shortcuts").join("table.md")).unwrap();
    assert!(
        md.contains(&format!("**Devices**: {H100} (21 runs); {CPU} (3 runs)")),
        "{md}"
    );
}

#[test]
fn table_md_states_provenance_and_rows() {
    let f = sweep();
    render("shortcuts", "paper", &f.paths).unwrap();
    let md = fs::read_to_string(f.table_dir("shortcuts").join("table.md")).unwrap();
    assert!(md.starts_with("# Identity Mappings, Table 1: shortcut variants on ResNet-110\n"));
    assert!(md.contains("He et al. 2016, Identity Mappings in Deep Residual Networks, Table 1"));
    assert!(md.contains("**Profile**: `paper`, seeds 0, 1, 2, 3, 4"));
    assert!(md.contains(&format!("**Data**: {JPEG}; fingerprint `0123456789abcdef`")));
    // 21 finished runs: original 2 on the CPU, 19 on the H100.
    assert!(
        md.contains(&format!("**Devices**: {H100} (21 runs); {CPU} (2 runs)")),
        "{md}"
    );
    assert!(md.contains("**Git revisions**: `5f672cc`"));
    assert!(md.contains("**Runs**: 23 finished of 30 expected (6 variants × 5 seeds), 1 in progress, 2 diverged"), "{md}");
    let line = |name: &str| {
        md.lines()
            .find(|l| l.starts_with(&format!("| {name} |")))
            .unwrap_or_else(|| panic!("no row for {name} in\n{md}"))
            .to_string()
    };
    assert_eq!(
        line("original"),
        "| original | 5/5 | 6.60 ± 0.29 | 6.60 | 6.20–7.00 | 6.61 | -0.01 | ok |"
    );
    assert_eq!(
        line("scaling-0.5-0.5"),
        "| scaling-0.5-0.5 | 3/5 | 13.17 ± 1.26 | 13.00 | 12.00–14.50 | 12.35 | +0.65 | incomplete 3/5 (1 running) |"
    );
    assert_eq!(
        line("scaling-0-1"),
        "| scaling-0-1 | 5/5 | 88.70 ± 2.33 | 89.50 | 85.00–91.00 | fail | – | fail |"
    );
    assert!(line("dropout-0.5").ends_with("| fail | – | diverged 2/5 (the others fail) |"));
    assert_eq!(
        line("gating-6"),
        "| gating-6 | 0/5 | – | – | – | 8.70 | – | incomplete 0/5 |"
    );
    assert!(line("conv1x1").contains("| 12.40 ± 0.32 | 12.40 | 12.00–12.80 | – | – | ok |"));
}

#[test]
fn disagreeing_data_sources_are_called_out() {
    let f = Fixture::new();
    f.finished("original", 0, 7.0, H100, JPEG);
    f.finished("original", 1, 7.2, H100, ORIGINAL);
    let written = render("shortcuts", "paper", &f.paths).unwrap();
    let md = fs::read_to_string(f.table_dir("shortcuts").join("table.md")).unwrap();
    assert!(
        md.contains(&format!(
            "**Data**: **runs disagree**: {JPEG} (1 run); {ORIGINAL} (1 run)"
        )),
        "{md}"
    );
    assert_eq!(
        written.table.training().unwrap().provenance.data_label(),
        "mixed data (see table.md)"
    );
    let svg = fs::read_to_string(f.plots("shortcuts").join("final.svg")).unwrap();
    assert!(svg.contains("mixed data"));
}

#[test]
fn a_run_resumed_by_another_build_shows_its_chain_of_revisions() {
    let f = Fixture::new();
    f.finished("original", 0, 7.0, H100, JPEG);
    f.finished("original", 1, 7.2, H100, JPEG);
    let path = f.seed_dir("shortcuts", "original", 1).join("final.json");
    let mut json: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(&path).unwrap()).unwrap();
    json["earlier_revisions"] = serde_json::json!(["unrecorded", "1a2b3c"]);
    fs::write(&path, json.to_string()).unwrap();
    render("shortcuts", "paper", &f.paths).unwrap();
    let md = fs::read_to_string(f.table_dir("shortcuts").join("table.md")).unwrap();
    assert!(
        md.contains(
            "**Git revisions**: `5f672cc` (1 run); `unrecorded → 1a2b3c → 5f672cc` (1 run)"
        ),
        "{md}"
    );
}

/// Tables and figures name the data, and figures also the machine, precision and time.
#[test]
fn original_data_is_named_in_tables_and_titles() {
    let f = Fixture::new();
    f.finished("original", 0, 7.0, H100, ORIGINAL);
    render("shortcuts", "paper", &f.paths).unwrap();
    let md = fs::read_to_string(f.table_dir("shortcuts").join("table.md")).unwrap();
    assert!(md.contains(&format!("**Data**: {ORIGINAL}")));
    for figure in ["curves.svg", "final.svg"] {
        let svg = fs::read_to_string(f.plots("shortcuts").join(figure)).unwrap();
        assert!(
            svg.contains("original CIFAR-10 · profile paper"),
            "{figure}"
        );
        let trained = format!("trained on {H100} · fp32 · 30 s of training in all");
        assert!(svg.contains(&trained), "{figure}: {trained}");
    }
}

#[test]
fn figures_exist_decode_and_show_the_variants() {
    let f = sweep();
    let written = render("shortcuts", "paper", &f.paths).unwrap();
    let dir = f.plots("shortcuts");
    for stem in ["curves", "final"] {
        for ext in ["svg", "png"] {
            let path = dir.join(format!("{stem}.{ext}"));
            assert!(
                written.files.contains(&path),
                "{} not reported",
                path.display()
            );
            assert!(
                fs::metadata(&path).unwrap().len() > 1000,
                "{} is tiny",
                path.display()
            );
        }
    }
    assert!(
        !dir.join("norms.svg").exists(),
        "no norms.csv, no norms figure"
    );

    for stem in ["curves", "final"] {
        let svg = fs::read_to_string(dir.join(format!("{stem}.svg"))).unwrap();
        assert!(svg.trim_start().starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert!(
            svg.contains("CIFAR-10, JPEG-75 copy · profile paper"),
            "{stem}: data source in the title"
        );
        for name in [
            "original",
            "scaling-0.5-0.5",
            "scaling-0-1",
            "dropout-0.5",
            "conv1x1",
        ] {
            assert!(svg.contains(name), "{stem}.svg lacks {name}");
        }
        // A variant without any result is left out of the figures.
        assert!(!svg.contains("gating-6"), "{stem}.svg shows gating-6");
    }
    // The curves' legend is a column right of the 1100-pixel-wide chart (whose axes end 20 px
    // before it), over no curve, its entries top to bottom in the order they are listed.
    let curves_svg = fs::read_to_string(dir.join("curves.svg")).unwrap();
    let entries: Vec<(f64, f64)> = [
        "original (5 seeds)",
        "training error",
        "test error",
        "test error, lowest to highest seed",
    ]
    .iter()
    .map(|words| text_position(&curves_svg, words))
    .collect();
    for pair in entries.windows(2) {
        assert!(
            pair[0].1 < pair[1].1,
            "legend entries out of order: {entries:?}"
        );
    }
    assert!(
        entries.iter().all(|&(x, _)| x > 1100.0),
        "legend entries over the chart: {entries:?}"
    );
    let final_svg = fs::read_to_string(dir.join("final.svg")).unwrap();
    // the diverged seeds of dropout-0.5 are marked in its column, with their iterations
    assert!(
        final_svg.contains("2 diverged, at it. 450, 450"),
        "no diverged mark"
    );
    // our threshold (20% here), a dashed red line: (y, x from, x to) of each dash
    let dashes: Vec<(f64, f64, f64)> = svg_segments(&final_svg, &[r##"stroke="#FF0000""##])
        .into_iter()
        .map(|((x0, y), (x1, _))| (y, x0, x1))
        .collect();
    let legend_x = 970.0 - 270.0;
    let (chart, legend): (Vec<(f64, f64, f64)>, Vec<_>) =
        dashes.into_iter().partition(|d| d.1 < legend_x);
    assert!(chart.len() > 10, "{chart:?}");
    // the legend draws the threshold as the chart does: dashed, 8-pixel dashes, 6-pixel gaps
    assert!(
        legend.len() >= 2,
        "the legend's threshold is not dashed: {legend:?}"
    );
    for set in [&chart, &legend] {
        for pair in set.windows(2) {
            assert!(
                pair[0].2 - pair[0].1 <= 8.0 && pair[1].1 - pair[0].2 == 6.0,
                "{pair:?}"
            );
        }
    }
    // The variants that failed by our 20% (scaling-0-1 at 85–91%, dropout-0.5's median 30%)
    // do not stretch the axis: it runs from 0% (the x axis) to 1.35 times the highest mark
    // of the others (scaling-0.5-0.5's interval, 16.3%), and each is one mark along the top
    // edge, labelled with its median.
    let threshold_y = chart[0].0;
    let (_, zero_y) = svg_segments(&final_svg, &[r##"stroke="#000000""##])
        .into_iter()
        .filter(|((x0, y0), (x1, y1))| y0 == y1 && x1 - x0 > 300.0)
        .map(|((_, y), _)| (0, y))
        .fold((0, 0.0), |a, b| if b.1 > a.1 { b } else { a });
    let pixels_per_point = (zero_y - threshold_y) / 20.0;
    let (_, fail_y) = text_position(&final_svg, "fail");
    let axis_top = (zero_y - fail_y) / pixels_per_point;
    assert!(
        (18.0..25.0).contains(&axis_top),
        "the paper's fail mark at {axis_top:.1}%: the axis is not cut above the others"
    );
    for label in ["fail: median 89.50% of 5", "fail: median 30.00% of 3"] {
        let (_, y) = text_position(&final_svg, label);
        assert!(
            (y - fail_y).abs() < 40.0,
            "{label} starts at {y}, not along the top edge with the paper's fail at {fail_y}"
        );
    }
    // the paper's "fail" (above 20% after full training) is at the top edge, above our
    // 20% line, not on it
    assert!(
        fail_y < threshold_y - 15.0,
        "fail at {fail_y}, threshold at {threshold_y}"
    );
    assert!(final_svg.contains("above 20% after full training"));

    let curves = decode(&dir.join("curves.png"));
    let (width, height) = curves.dimensions();
    assert!(
        (1300..=1580).contains(&width) && height == 700,
        "{width} × {height}"
    );
    // Five variants; the first variant's colour (#1f77b4) is drawn in the chart, and in the
    // legend column only as its short mark.
    assert!(count_near_in(&curves, 0..1080, 64..700, [31, 119, 180], 10) > 500);
    let in_legend = count_near_in(&curves, 1100..width, 64..700, [31, 119, 180], 10);
    assert!(
        (20..200).contains(&in_legend),
        "{in_legend} blue pixels in the legend"
    );
    // The title band holds dark text pixels (the embedded font rendered).
    assert!(count_near(&curves, 0..64, [0, 0, 0], 60) > 500);

    // Width: max(900, 5 × 80 + 300 + a 270-pixel legend column); height: 600 + room for
    // the longest rotated label, "scaling-0.5-0.5", 15 × 7 + 25 = 130.
    let finals = decode(&dir.join("final.png"));
    assert_eq!(finals.dimensions(), (970, 730));
    let distinct: std::collections::HashSet<_> = finals.pixels().map(|p| p.0).collect();
    assert!(distinct.len() > 20, "{} colours only", distinct.len());
    // The paper's triangles are black.
    assert!(count_near(&finals, 64..730, [0, 0, 0], 30) > 200);
    // The rotated variant labels fill the band under the axis with dark pixels.
    assert!(count_near(&finals, 600..730, [0, 0, 0], 80) > 300);
}

#[test]
fn partial_results_render() {
    let f = Fixture::new();
    f.running("original", 0);
    let written = render("shortcuts", "paper", &f.paths).unwrap();
    let rows = &written.table.training().unwrap().rows;
    assert_eq!(rows.len(), 6);
    assert!(rows
        .iter()
        .all(|r| r.status_text().starts_with("incomplete 0/5")));
    assert_eq!(rows[0].status_text(), "incomplete 0/5 (1 running)");
    // Curves of the running seed; no final figure yet.
    assert!(f.plots("shortcuts").join("curves.png").exists());
    assert!(!f.plots("shortcuts").join("final.png").exists());
    let md = fs::read_to_string(f.table_dir("shortcuts").join("table.md")).unwrap();
    assert!(md.contains("**Data**: unknown (no finished run yet)"));
}

#[test]
fn an_interrupted_run_is_told_apart_from_a_running_one() {
    let f = Fixture::new();
    f.running("original", 0);
    f.interrupted("original", 1);
    // a lock whose process is gone counts as nobody's
    f.interrupted("conv1x1", 0);
    let dead = format!("{} 4194304\n", spec::layout::hostname());
    fs::write(f.seed_dir("shortcuts", "conv1x1", 0).join("lock"), dead).unwrap();
    let written = render("shortcuts", "paper", &f.paths).unwrap();
    let rows = &written.table.training().unwrap().rows;
    assert_eq!(
        rows[0].status_text(),
        "incomplete 0/5 (1 running, 1 interrupted)"
    );
    assert_eq!(rows[5].status_text(), "incomplete 0/5 (1 interrupted)");
    let md = fs::read_to_string(f.table_dir("shortcuts").join("table.md")).unwrap();
    assert!(
        md.contains("1 in progress, 2 interrupted (nothing is training them"),
        "{md}"
    );
    let csv = csv_rows(&f.table_dir("shortcuts").join("table.csv"));
    // table.csv keeps its columns: seeds_running counts the live runs only
    assert_eq!(csv[0]["seeds_running"], "1");
    assert_eq!(csv[5]["seeds_running"], "0");
}

#[test]
fn seeds_outside_the_profile_and_damaged_files_are_noted() {
    let f = sweep();
    f.finished("original", 9, 1.0, H100, JPEG);
    let broken = f.seed_dir("shortcuts", "conv1x1", 4);
    fs::write(broken.join("final.json"), "{ not json").unwrap();
    let written = render("shortcuts", "paper", &f.paths).unwrap();
    let table = written.table.training().unwrap();
    let notes = table.notes.join("\n");
    assert!(
        notes.contains("seed-9: seed 9 is not in the profile"),
        "{notes}"
    );
    assert!(notes.contains("final.json is damaged"), "{notes}");
    // the runner's words for the same file: left out, and what to do
    assert!(
        notes.contains(&format!(
            "the run is left out: delete {} to train it again",
            broken.display()
        )),
        "{notes}"
    );
    // The outsider does not count; the damaged seed is missing.
    assert_eq!(table.rows[0].summary.unwrap().min, 6.2);
    assert_eq!(table.rows[5].finished, 4);
    assert_eq!(
        table.rows[5].status_text(),
        "incomplete 4/5 (1 damaged, see notes)"
    );
    let md = fs::read_to_string(f.table_dir("shortcuts").join("table.md")).unwrap();
    assert!(md.contains("Notes (paths from this table's folder):\n"));
    // the written table names the run from its own folder, not by this machine's path
    assert!(
        md.contains("- conv1x1/seed-4/final.json is damaged")
            && md.contains("delete conv1x1/seed-4 to train it again"),
        "{md}"
    );
    assert!(!md.contains(&f.paths.results.display().to_string()), "{md}");
}

#[test]
fn a_variant_whose_only_run_is_damaged_is_not_called_unstarted() {
    let f = Fixture::new();
    f.finished("original", 0, 7.0, CPU, JPEG);
    f.finished("conv1x1", 0, 12.0, CPU, JPEG);
    fs::write(
        f.seed_dir("shortcuts", "conv1x1", 0).join("final.json"),
        "{ trunc",
    )
    .unwrap();
    render("shortcuts", "paper", &f.paths).unwrap();
    let md = fs::read_to_string(f.table_dir("shortcuts").join("comparisons.md")).unwrap();
    assert!(
        md.contains("conv1x1: none finished (1 damaged, see the table's notes)"),
        "{md}"
    );
}

#[test]
fn figures_of_runs_no_longer_there_are_removed() {
    let f = Fixture::new();
    f.finished("original", 0, 7.0, CPU, JPEG);
    render("shortcuts", "paper", &f.paths).unwrap();
    for figure in ["curves.png", "curves.svg", "final.png", "final.svg"] {
        assert!(f.plots("shortcuts").join(figure).exists(), "{figure}");
    }
    fs::remove_dir_all(f.seed_dir("shortcuts", "original", 0)).unwrap();
    let written = render("shortcuts", "paper", &f.paths).unwrap();
    for figure in ["curves.png", "curves.svg", "final.png", "final.svg"] {
        assert!(!f.plots("shortcuts").join(figure).exists(), "{figure}");
        let path = f.plots("shortcuts").join(figure);
        assert!(written.removed.contains(&path), "{figure}");
    }
    // a third rendering has nothing left to remove
    assert!(render("shortcuts", "paper", &f.paths)
        .unwrap()
        .removed
        .is_empty());
    assert!(written
        .files
        .iter()
        .all(|p| !p.starts_with(f.plots("shortcuts"))));
}

#[test]
fn a_plots_folder_that_cannot_be_made_leaves_the_tables_alone() {
    let f = Fixture::new();
    f.finished("original", 0, 7.0, CPU, JPEG);
    let table = f.table_dir("shortcuts").join("table.md");
    assert!(!table.exists());
    let paths = Paths {
        plots: f
            .paths
            .results
            .join("shortcuts")
            .join("paper")
            .join("original")
            .join("seed-0")
            .join("final.json"),
        ..f.paths.clone()
    };
    assert!(render("shortcuts", "paper", &paths).is_err());
    assert!(!table.exists(), "no table written");
}

#[test]
fn figures_say_when_a_profile_trained_other_depths_than_the_title() {
    let title = "Identity Mappings, Table 1: shortcut variants on ResNet-110";
    // the paper profile shrunk to one unit a stage: depth 8, where the file names 110
    let shrunk = EXPERIMENT.replace(
        "[profiles.paper]\nseeds = [0, 1, 2, 3, 4]\nmodel = {}",
        "[profiles.paper]\nseeds = [0, 1, 2, 3, 4]\nmodel = { units_per_stage = 1 }",
    );
    assert_ne!(shrunk, EXPERIMENT);
    let f = Fixture::new();
    fs::write(f.paths.experiments.join("shortcuts.toml"), &shrunk).unwrap();
    for (variant, seed) in [("original", 0), ("conv1x1", 1)] {
        f.finished(variant, seed, 30.0, CPU, JPEG);
        f.config(variant, seed, 8);
    }
    render("shortcuts", "paper", &f.paths).unwrap();
    let md = fs::read_to_string(f.table_dir("shortcuts").join("table.md")).unwrap();
    assert!(md.contains("- **Depth trained**: 8\n"), "{md}");
    for figure in ["curves.svg", "final.svg"] {
        let svg = fs::read_to_string(f.plots("shortcuts").join(figure)).unwrap();
        assert!(
            svg.contains(&format!(
                "{title} (paper: depth 110; trained here: depth 8)"
            )),
            "{figure}"
        );
    }

    // two depths in the file, both trained as written: said once
    let two = EXPERIMENT.replace(
        "name = \"conv1x1\"\n",
        "name = \"conv1x1\"\nmodel = { depth = 56 }\n",
    );
    assert_ne!(two, EXPERIMENT);
    let f = Fixture::new();
    fs::write(f.paths.experiments.join("shortcuts.toml"), &two).unwrap();
    f.finished("original", 0, 7.0, CPU, JPEG);
    f.config("original", 0, 110);
    f.finished("conv1x1", 0, 7.5, CPU, JPEG);
    f.config("conv1x1", 0, 56);
    render("shortcuts", "paper", &f.paths).unwrap();
    let md = fs::read_to_string(f.table_dir("shortcuts").join("table.md")).unwrap();
    assert!(
        md.contains("- **Depth trained**: 110 (1 run); 56 (1 run)\n"),
        "{md}"
    );
    let svg = fs::read_to_string(f.plots("shortcuts").join("final.svg")).unwrap();
    assert!(svg.contains(&format!("{title} (depths 56, 110)")), "{svg}");

    // the depth the file names: said once, as the paper's and ours
    let f = Fixture::new();
    f.finished("original", 0, 7.0, CPU, JPEG);
    f.config("original", 0, 110);
    render("shortcuts", "paper", &f.paths).unwrap();
    let svg = fs::read_to_string(f.plots("shortcuts").join("final.svg")).unwrap();
    assert!(svg.contains(&format!("{title} (depth 110)")) && !svg.contains("trained here"));
}

/// A gated run's logged gates appear under `## Gates` at its first evaluation, its last at
/// the highest lr and its last, named by unit; runs without gates add no such section (the
/// golden table below has none).
#[test]
fn gated_runs_show_their_gates_at_three_moments() {
    let f = Fixture::new();
    f.finished("original", 0, 7.0, CPU, JPEG);
    let dir = f.seed_dir("shortcuts", "gating-6", 0);
    // epoch 1 in the warm-up (lr 0.01), 2–3 at 0.1, 4–5 after the drop; 1 and 4 not evaluated
    let csv = "epoch,iteration,lr,train_loss,train_error,test_loss,test_error,wall_s,\
               images_per_s,gate_first,gate_middle,gate_last\n\
               1,200,0.01,2.0,80.0,,,1.0,1000.0,,,\n\
               2,400,0.1,1.5,60.0,1.4,55.0,2.0,1000.0,0.003,0.0025,0.0024\n\
               3,600,0.1,1.0,40.0,1.0,42.0,4.0,1000.0,0.05,0.02,0.01\n\
               4,800,0.01,0.8,30.0,,,5.0,1000.0,,,\n\
               5,1000,0.01,0.7,28.0,0.8,30.0,6.0,1000.0,0.2,0.1,0.03\n";
    fs::write(dir.join("epochs.csv"), csv).unwrap();
    let json = final_json("gating-6", 0, "fail", Some(30.0), None, CPU, JPEG);
    fs::write(dir.join("final.json"), json).unwrap();
    f.config("gating-6", 0, 32);
    render("shortcuts", "paper", &f.paths).unwrap();
    let md = fs::read_to_string(f.table_dir("shortcuts").join("table.md")).unwrap();
    let gates = &md[md
        .find("\n## Gates\n")
        .unwrap_or_else(|| panic!("no Gates section: {md}"))..];
    assert!(gates.contains("units 1 / 8 / 15 of 15"), "{gates}");
    assert!(
        gates.contains(
            "| gating-6 | 0 | epoch 2: 0.0030 / 0.0025 / 0.0024 | epoch 3: 0.0500 / 0.0200 / \
             0.0100 | epoch 5: 0.2000 / 0.1000 / 0.0300 |"
        ),
        "{gates}"
    );
    assert!(!gates.contains("| original |"), "{gates}");
}

/// Every variant against the first (the fixture names no `compare`), in comparisons.csv,
/// comparisons.md and table.md: a resolved difference with SciPy's Welch interval, an
/// unresolved one with statsmodels' seeds per side, one seed on a side, none finished, every seed
/// diverged.
/// Reference values (SciPy 1.17.1, statsmodels 0.15.0):
///   stats.ttest_ind(a, b, equal_var=False).confidence_interval(0.95) and
///   TTestIndPower().solve_power(effect_size=Δ / sqrt((s_a² + s_b²) / 2), alpha=0.05, power=0.8)
/// conv1x1 − original: Δ 5.8, [5.355923151578692, 6.24407684842131];
/// scaling-0.5-0.5 − original: Δ 0.2, [-0.512922133953469, 0.9129221339534693], n 43.17 → 44.
#[test]
fn comparisons_test_each_difference_against_seed_noise() {
    let f = Fixture::new();
    for (seed, e) in [6.5, 6.7, 6.6, 7.0, 6.2].into_iter().enumerate() {
        f.finished("original", seed as u64, e, CPU, JPEG);
    }
    for (seed, e) in [6.4, 7.1, 6.9].into_iter().enumerate() {
        f.finished("scaling-0.5-0.5", seed as u64, e, CPU, JPEG);
    }
    f.finished("scaling-0-1", 0, 30.0, CPU, JPEG);
    f.diverged("dropout-0.5", 0);
    for (seed, e) in [12.0, 12.2, 12.4, 12.6, 12.8].into_iter().enumerate() {
        f.finished("conv1x1", seed as u64, e, CPU, JPEG);
    }
    render("shortcuts", "paper", &f.paths).unwrap();
    let dir = f.table_dir("shortcuts");
    let rows = csv_rows(&dir.join("comparisons.csv"));
    let names: Vec<(&str, &str)> = rows.iter().map(|r| (&r["a"][..], &r["b"][..])).collect();
    assert_eq!(
        names,
        [
            ("scaling-0.5-0.5", "original"),
            ("scaling-0-1", "original"),
            ("dropout-0.5", "original"),
            ("gating-6", "original"),
            ("conv1x1", "original"),
        ]
    );
    let near = |a: f64, b: f64| (a - b).abs() < 1e-9;
    let unresolved = &rows[0];
    assert!(near(num(unresolved, "delta"), 0.2));
    assert!(near(num(unresolved, "ci_low"), -0.512922133953469));
    assert!(near(num(unresolved, "ci_high"), 0.9129221339534693));
    assert!(near(num(unresolved, "paper_delta"), 12.35 - 6.61));
    assert_eq!(unresolved["excludes_zero"], "false");
    assert_eq!(unresolved["seeds_per_side_to_resolve"], "44");
    let resolved = &rows[4];
    assert!(near(num(resolved, "ci_low"), 5.355923151578692));
    assert!(near(num(resolved, "ci_high"), 6.24407684842131));
    assert_eq!(resolved["excludes_zero"], "true");
    assert_eq!(resolved["seeds_per_side_to_resolve"], "");
    assert_eq!(resolved["paper_delta"], "");
    // one seed: a difference, no interval
    assert!(near(num(&rows[1], "delta"), 30.0 - 6.6));
    assert_eq!((&rows[1]["ci_low"][..], &rows[1]["n_a"][..]), ("", "1"));

    let md = fs::read_to_string(dir.join("comparisons.md")).unwrap();
    for line in [
        "| scaling-0.5-0.5 − original | 3, 5 | +0.20 | [-0.51, +0.91] | no | +5.74 | 44 |",
        "| scaling-0-1 − original | 1, 5 | +23.40 | n = 1: no interval | – | – | – |",
        "| dropout-0.5 − original | 0, 5 | – | dropout-0.5: every finished seed diverged | – | – | – |",
        "| gating-6 − original | 0, 5 | – | gating-6: none finished yet | – | +2.09 | – |",
        "| conv1x1 − original | 5, 5 | +5.80 | [+5.36, +6.24] | yes | – | – |",
        "Welch's t interval",
    ] {
        assert!(md.contains(line), "{line}\n{md}");
    }
    let table = fs::read_to_string(dir.join("table.md")).unwrap();
    assert!(table.contains("\n## Comparisons\n"), "{table}");
    assert!(table.contains("| conv1x1 − original | 5, 5 | +5.80 | [+5.36, +6.24] | yes |"));
}

/// The table of a training experiment, byte for byte as `report` wrote it before gradients
/// experiments had their own table (tests/golden/, captured from the sweep fixture); since
/// paper numbers may be mean ± std, `table.csv` ends in three more columns (`paper_std`,
/// `paper_best`, `diff_of`), empty but for `diff_of = median` here; since experiments name
/// comparisons, `table.md` ends in a Comparisons section (every variant against the first
/// here); since runs' precision and wall time are summed up, its header says them; since
/// the seeds to resolve a difference follow Welch's test, its footer says so; and that
/// paper Δ is of medians in Identity Mappings' tables.
#[test]
fn training_table_is_unchanged() {
    let f = sweep();
    let written = render("shortcuts", "paper", &f.paths).unwrap();
    assert!(written.table.training().is_some() && written.table.gradients().is_none());
    let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    for file in ["table.md", "table.csv"] {
        let expected = fs::read_to_string(golden.join(format!("shortcuts-paper.{file}"))).unwrap();
        let actual = fs::read_to_string(f.table_dir("shortcuts").join(file)).unwrap();
        assert_eq!(actual, expected, "{file} changed");
    }
}

fn run_cli(args: &[&str], cwd: &Path) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_report"))
        .args(args)
        .current_dir(cwd)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[test]
fn cli_writes_files_and_fails_clearly() {
    let f = sweep();
    let root = f.paths.experiments.parent().unwrap().to_path_buf();
    let (ok, out) = run_cli(&["shortcuts", "--profile", "paper"], &root);
    assert!(ok, "{out}");
    assert!(
        out.contains("wrote results/shortcuts/paper/table.md"),
        "{out}"
    );
    assert!(
        out.contains("wrote plots/shortcuts/paper/final.png"),
        "{out}"
    );

    let (ok, out) = run_cli(&["nonesuch", "--profile", "paper"], &root);
    assert!(!ok);
    assert!(
        out.contains("no experiment file at experiments/nonesuch.toml; experiments/ has "),
        "{out}"
    );

    let (ok, out) = run_cli(&["shortcuts", "--profile", "smoke"], &root);
    assert!(!ok);
    assert!(
        out.contains("no results folder at results/shortcuts/smoke"),
        "{out}"
    );
    assert!(out.contains("`just ablate shortcuts smoke`"), "{out}");
    // `just ablate` only knows experiments/: for another file, the runner's command
    fs::create_dir_all(root.join("elsewhere")).unwrap();
    fs::copy(
        root.join("experiments/shortcuts.toml"),
        root.join("elsewhere/mine.toml"),
    )
    .unwrap();
    let (ok, out) = run_cli(&["elsewhere/mine.toml", "--profile", "smoke"], &root);
    assert!(!ok);
    assert!(
        out.contains("`runner train elsewhere/mine.toml --profile smoke`"),
        "{out}"
    );

    let (ok, out) = run_cli(&["shortcuts", "--profile", "short"], &root);
    assert!(!ok);
    assert!(
        out.contains("has no profile `short` (it has: paper, smoke)"),
        "{out}"
    );

    // A path to the file works too, with custom folders.
    let (ok, out) = run_cli(
        &[
            "experiments/shortcuts.toml",
            "--profile",
            "paper",
            "--plots",
            "figs",
        ],
        &root,
    );
    assert!(ok, "{out}");
    assert!(root.join("figs/shortcuts/paper/curves.svg").exists());
}

/// A difference the experiment names whose variant the profile does not train is said to be
/// left out, and why, not dropped without a word.
#[test]
fn a_named_comparison_the_profile_cannot_make_is_said_to_be_left_out() {
    let narrowed = EXPERIMENT
        .replace(
            "[model]\n",
            "compare = [[\"conv1x1\", \"original\"], [\"gating-6\", \"original\"]]\n[model]\n",
        )
        .replace(
            "[profiles.paper]\nseeds = [0, 1, 2, 3, 4]\n",
            "[profiles.paper]\nseeds = [0, 1, 2, 3, 4]\nvariants = [\"original\", \"conv1x1\"]\n",
        );
    let f = Fixture::new();
    fs::write(f.paths.experiments.join("shortcuts.toml"), &narrowed).unwrap();
    f.finished("original", 0, 7.0, CPU, JPEG);
    f.finished("conv1x1", 0, 8.0, CPU, JPEG);
    render("shortcuts", "paper", &f.paths).unwrap();
    let line = "Not compared here, as this profile does not train gating-6: gating-6 − original.";
    for file in ["comparisons.md", "table.md"] {
        let md = fs::read_to_string(f.table_dir("shortcuts").join(file)).unwrap();
        assert!(md.contains("| conv1x1 − original | 1, 1 | +1.00 |"), "{md}");
        assert!(md.contains(line), "{file}: {md}");
    }
    // a profile that can make none of them says so too, in the file's order of variants
    let alone = narrowed.replace(
        "variants = [\"original\", \"conv1x1\"]",
        "variants = [\"original\"]",
    );
    assert_ne!(alone, narrowed);
    let f = Fixture::new();
    fs::write(f.paths.experiments.join("shortcuts.toml"), &alone).unwrap();
    f.finished("original", 0, 7.0, CPU, JPEG);
    render("shortcuts", "paper", &f.paths).unwrap();
    let line = "Not compared here, as this profile does not train gating-6, conv1x1: \
                conv1x1 − original; gating-6 − original.";
    for file in ["comparisons.md", "table.md"] {
        let md = fs::read_to_string(f.table_dir("shortcuts").join(file)).unwrap();
        assert!(md.contains(line), "{file}: {md}");
    }
    // with every named comparison made, no such line
    let f = Fixture::new();
    f.finished("original", 0, 7.0, CPU, JPEG);
    render("shortcuts", "paper", &f.paths).unwrap();
    let md = fs::read_to_string(f.table_dir("shortcuts").join("table.md")).unwrap();
    assert!(!md.contains("Not compared here"), "{md}");
}
