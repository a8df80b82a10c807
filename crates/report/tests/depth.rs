//! End-to-end test of an experiment with plain nets (He et al. 2015, Fig. 6 and Table 6):
//! records written as `runner train` writes them (through spec's `RunDir`), the curves
//! figure in the paper's layout (plain nets left, ResNets right, one colour per depth), and
//! a paper number given as mean ± std with the best run, in the tables and the final figure.

// The fixture helpers are test code too: a failed write is a failed test.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::fs;
use std::ops::Range;

mod common;
use common::*;
use report::render;
use spec::{EpochRow, FinalRecord, Fingerprint, NetConfig, RunConfig, RunDir, ShortcutKind};

const EXPERIMENT: &str = r#"
title = "Plain vs residual networks of growing depth (He et al. 2015, Fig. 6)"
source = "He, Zhang, Ren, Sun 2015, Deep Residual Learning for Image Recognition, Fig. 6, Table 6"
[model]
depth = 20
[[variants]]
name = "plain-20"
model = { shortcut = "plain" }
[[variants]]
name = "plain-56"
model = { depth = 56, shortcut = "plain" }
[[variants]]
name = "resnet-20"
paper = 8.75
[[variants]]
name = "resnet-56"
paper = { mean = 9.0, std = 1.5, best = 7.5 }
model = { depth = 56 }
[profiles.cpu]
seeds = [0, 1, 2]
protocol = { batch_size = 128, iterations = 1000, lr = 0.1, lr_drops = [500] }
"#;

/// One variant's made-up runs.
struct Runs {
    variant: &'static str,
    depth: usize,
    plain: bool,
    /// Test and training error from epoch 3 on.
    test: f64,
    train: f64,
    /// Final test errors of seeds 0–2; they average to `test`, so that the mean curve stays
    /// flat to the end.
    finals: [f64; 3],
}

/// Every flat line lies apart: in the left panel at 28, 24, 22, 16 %; in the right at 16,
/// 12, 8, 4 %.
const RUNS: [Runs; 4] = [
    Runs {
        variant: "plain-20",
        depth: 20,
        plain: true,
        test: 24.0,
        train: 16.0,
        finals: [23.0, 24.0, 25.0],
    },
    Runs {
        variant: "plain-56",
        depth: 56,
        plain: true,
        test: 28.0,
        train: 22.0,
        finals: [27.0, 28.0, 29.0],
    },
    Runs {
        variant: "resnet-20",
        depth: 20,
        plain: false,
        test: 16.0,
        train: 8.0,
        finals: [15.0, 16.0, 17.0],
    },
    Runs {
        variant: "resnet-56",
        depth: 56,
        plain: false,
        test: 12.0,
        train: 4.0,
        finals: [10.5, 11.0, 14.5],
    },
];

/// Tableau 10's first two colours: the shallowest depth, the next.
const BLUE: [u8; 3] = [31, 119, 180];
const ORANGE: [u8; 3] = [255, 127, 14];
/// The third: the colour resnet-20 would have by its place in the file.
const GREEN: [u8; 3] = [44, 160, 44];

/// Ten epochs of 100 iterations: 80% test error at the first, 52% (plain-56) or 40% at the
/// second, then flat at the variant's levels; the last epoch ends at the seed's final error.
fn epochs(test: f64, train: f64, plain_56: bool, last: f64) -> Vec<EpochRow> {
    (1..=10)
        .map(|epoch| {
            let (test, train) = match epoch {
                1 => (80.0, 85.0),
                2 if plain_56 => (52.0, 50.0),
                2 => (40.0, 38.0),
                10 => (last, train),
                _ => (test, train),
            };
            EpochRow {
                epoch,
                iteration: 100 * epoch,
                lr: if epoch <= 5 { 0.1 } else { 0.01 },
                train_loss: train / 40.0,
                train_error: train,
                test_loss: Some(test / 40.0),
                test_error: Some(test),
                wall_s: 60.0 * epoch as f64,
                images_per_s: 200.0,
                gate_first: None,
                gate_middle: None,
                gate_last: None,
            }
        })
        .collect()
}

fn final_record(variant: &str, seed: u64, error: f64) -> FinalRecord {
    FinalRecord {
        status: if error > 20.0 {
            spec::Status::Fail
        } else {
            spec::Status::Ok
        },
        experiment: "depth".into(),
        profile: "cpu".into(),
        variant: variant.into(),
        seed,
        iterations: 1000,
        diverged_at_iteration: None,
        final_test_error: Some(error),
        final_test_loss: Some(error / 40.0),
        final_train_error: Some(error / 2.0),
        final_train_loss: Some(error / 80.0),
        fail_above_percent: 20.0,
        wall_s: 600.0,
        data: Fingerprint {
            digest: "0123456789abcdef".into(),
            files: BTreeMap::from([("data_batch_1".to_string(), "00".to_string())]),
            source: JPEG.into(),
            original: false,
        },
        provenance: spec::Provenance {
            git_revision: "5f672cc".into(),
            libtorch: "2.11.0".into(),
            device: CPU.into(),
        },
        earlier_revisions: Vec::new(),
        stacked_with: 1,
        parameters: None,
        stretches: Vec::new(),
        precision: spec::Precision::Fp32,
        bn_relu: Some(spec::BnRelu::Separate),
        finished_at_unix_s: 1_700_000_000,
        weights: None,
    }
}

/// The experiment and every run of `RUNS`, finished; returns the folder and its paths.
fn depth_sweep() -> (tempfile::TempDir, report::Paths) {
    sweep_of(|_| true)
}

/// The experiment and the runs of `RUNS` that `keep` keeps.
fn sweep_of(keep: impl Fn(&Runs) -> bool) -> (tempfile::TempDir, report::Paths) {
    let (dir, paths) = fixture_folder("depth.toml", EXPERIMENT);
    for runs in RUNS.into_iter().filter(|r| keep(r)) {
        let variant = runs.variant;
        for (seed, last) in (0u64..).zip(runs.finals) {
            let run = RunDir::new(&paths.results, "depth", "cpu", variant, seed);
            fs::create_dir_all(&run.dir).unwrap();
            let mut model = NetConfig::cifar(runs.depth);
            if runs.plain {
                model.shortcut = ShortcutKind::Plain;
            }
            let protocol =
                toml::from_str("batch_size = 128\niterations = 1000\nlr = 0.1\nlr_drops = [500]")
                    .unwrap();
            let config = RunConfig {
                experiment: "depth".into(),
                profile: "cpu".into(),
                variant: variant.into(),
                seed,
                model,
                protocol,
            };
            run.write_config(&config).unwrap();
            let rows = epochs(runs.test, runs.train, variant == "plain-56", last);
            run.write_epochs(&rows).unwrap();
            run.write_final(&final_record(variant, seed, last)).unwrap();
        }
    }
    (dir, paths)
}

/// Bands of consecutive rows in which `columns` hold a horizontal run of at least
/// `min_run` pixels of colour `rgb`: (first row, rows), top to bottom.
fn horizontal_bands(
    img: &image::RgbImage,
    columns: Range<u32>,
    rgb: [u8; 3],
    min_run: u32,
) -> Vec<(u32, u32)> {
    let near = |x: u32, y: u32| {
        let p = img.get_pixel(x, y);
        (0..3).all(|i| (i32::from(p[i]) - i32::from(rgb[i])).abs() <= 30)
    };
    let mut bands: Vec<(u32, u32)> = Vec::new();
    for y in 0..img.height() {
        let (mut run, mut longest) = (0, 0);
        for x in columns.clone() {
            run = if near(x, y) { run + 1 } else { 0 };
            longest = longest.max(run);
        }
        if longest >= min_run {
            match bands.last_mut() {
                Some((first, rows)) if *first + *rows == y => *rows += 1,
                _ => bands.push((y, 1)),
            }
        }
    }
    bands
}

/// Columns whose pixels in `rows` are dark for more than `min` of them: the panels' y axes.
fn dark_columns(img: &image::RgbImage, rows: Range<u32>, min: usize) -> Vec<u32> {
    (0..img.width())
        .filter(|&x| {
            rows.clone()
                .filter(|&y| img.get_pixel(x, y).0.iter().all(|&c| c < 60))
                .count()
                > min
        })
        .collect()
}

fn centre((first, rows): (u32, u32)) -> f64 {
    f64::from(first) + f64::from(rows - 1) / 2.0
}

#[test]
fn curves_are_plain_nets_beside_resnets_one_colour_per_depth() {
    let (_dir, paths) = depth_sweep();
    render("depth", "cpu", &paths).unwrap();
    let plots = paths.plots.join("depth/cpu");
    let png = decode(&plots.join("curves.png"));
    // two panels of 700 px
    assert_eq!(png.dimensions(), (1400, 700));

    // Each panel has its own y axis, a dark vertical line over the plot's height; the two
    // lie one panel width apart, one in each half.
    let axes = dark_columns(&png, 150..600, 400);
    assert_eq!(axes.len(), 2, "y axes at columns {axes:?}");
    assert!(axes[0] < 700 && axes[1] >= 700, "{axes:?}");
    assert_eq!(axes[1] - axes[0], 700);
    let (left, right) = (axes[0]..700, axes[1]..1400);

    // The flat part of each curve (iterations 300 to 1000, about 410 px of the 600 px
    // plot) is a long horizontal band: 1 px for training error, at least 3 for test error.
    let bands = |columns: Range<u32>, rgb| horizontal_bands(&png, columns, rgb, 300);
    let (plain_20, resnet_20) = (bands(left.clone(), BLUE), bands(right.clone(), BLUE));
    let (plain_56, resnet_56) = (bands(left.clone(), ORANGE), bands(right.clone(), ORANGE));
    for (name, found) in [
        ("plain-20", &plain_20),
        ("resnet-20", &resnet_20),
        ("plain-56", &plain_56),
        ("resnet-56", &resnet_56),
    ] {
        // test error above training error: the bold band first, then the thin one
        assert_eq!(found.len(), 2, "{name}: {found:?}");
        let (bold, thin) = (found[0].1, found[1].1);
        assert!(
            (3..=5).contains(&bold),
            "{name}: test error {bold} px thick"
        );
        assert!(
            (1..=2).contains(&thin),
            "{name}: training error {thin} px thick"
        );
    }
    // The same depth has the same colour in both panels, and no variant has the colour of
    // its place in the file (resnet-20 is the third variant).
    assert_eq!(count_near(&png, 64..700, GREEN, 10), 0);

    // Plain nets are on the left: plain-20's test error (24%) is above resnet-20's (16%).
    assert!(centre(plain_20[0]) < centre(resnet_20[0]) - 20.0);
    // Both panels share one y axis: plain-20's training error and resnet-20's test error
    // are both 16% and lie on one row; so do plain-56's 28% and 24% ... spaced alike.
    assert!((centre(plain_20[1]) - centre(resnet_20[0])).abs() <= 1.0);
    // 0–60% over the plot: 4 points (28 − 24) are as many pixels in either panel as
    // 4 points (16 − 12) in the other.
    let left_4 = centre(plain_20[0]) - centre(plain_56[0]);
    let right_4 = centre(resnet_56[0]) - centre(resnet_20[0]);
    assert!(
        left_4 > 20.0 && (left_4 - right_4).abs() <= 1.5,
        "{left_4} {right_4}"
    );

    let svg = fs::read_to_string(plots.join("curves.svg")).unwrap();
    for words in [
        "plain networks",
        "ResNets",
        "plain-20 (3 seeds)",
        "plain-56 (3 seeds)",
        "resnet-20 (3 seeds)",
        "resnet-56 (3 seeds)",
        "one colour per depth",
    ] {
        assert!(svg.contains(words), "curves.svg lacks {words}");
    }
    // The error axis ends at 60%: the next ten above 52%, the highest error after the first
    // epoch (80% at the first epoch runs off the top, as in the paper's figure).
    let tick = |label: &str| svg.contains(&format!(">\n{label}\n</text>"));
    assert!(tick("50") && tick("60") && !tick("70"));
}

#[test]
fn a_panel_whose_nets_have_not_started_says_so() {
    let (_dir, paths) = sweep_of(|r| r.plain);
    render("depth", "cpu", &paths).unwrap();
    let plots = paths.plots.join("depth/cpu");
    let svg = fs::read_to_string(plots.join("curves.svg")).unwrap();
    assert!(svg.contains("ResNets") && svg.contains("plain-20 (3 seeds)"));
    assert_eq!(svg.matches("no run has logged an epoch yet").count(), 1);
    // the ResNets panel holds no curve, the plain one both depths
    let png = decode(&plots.join("curves.png"));
    assert_eq!(png.dimensions(), (1400, 700));
    for (rgb, name) in [(BLUE, "depth 20"), (ORANGE, "depth 56")] {
        let left = horizontal_bands(&png, 0..700, rgb, 300);
        let right = horizontal_bands(&png, 700..1400, rgb, 300);
        assert_eq!((left.len(), right.len()), (2, 0), "{name}");
    }
}

#[test]
fn a_paper_mean_is_compared_with_our_mean_and_drawn_with_its_spread() {
    let (_dir, paths) = depth_sweep();
    render("depth", "cpu", &paths).unwrap();
    let table_dir = paths.results.join("depth/cpu");

    // resnet-56: 10.5, 11, 14.5: mean 12, median 11; squared deviations 2.25 + 1 + 6.25 =
    // 9.5, std sqrt(9.5 / 2) = 2.18. Against the paper's mean 9.0: +3.00 (the median would
    // give +2.00). resnet-20: 15, 16, 17: median 16 against the paper's 8.75: +7.25.
    let md = fs::read_to_string(table_dir.join("table.md")).unwrap();
    let line = |name: &str| {
        md.lines()
            .find(|l| l.starts_with(&format!("| {name} |")))
            .unwrap_or_else(|| panic!("no row for {name} in\n{md}"))
            .to_string()
    };
    assert!(md.contains(
        "| variant | seeds | mean ± std | median | min–max | paper | ours − paper | status |"
    ));
    assert_eq!(
        line("resnet-56"),
        "| resnet-56 | 3/3 | 12.00 ± 2.18 | 11.00 | 10.50–14.50 | 9.00 ± 1.50 (best 7.50) | +3.00 (mean) | ok |"
    );
    assert_eq!(
        line("resnet-20"),
        "| resnet-20 | 3/3 | 16.00 ± 1.00 | 16.00 | 15.00–17.00 | 8.75 | +7.25 (median) | ok |"
    );
    assert!(line("plain-20").ends_with("| – | – | fail |"), "{md}");
    assert!(md.contains("our mean against the paper's mean where the paper gives mean ± std"));

    let rows = csv_rows(&table_dir.join("table.csv"));
    let row = |name: &str| rows.iter().find(|r| r["variant"] == name).unwrap();
    let r56 = row("resnet-56");
    assert_eq!(
        (
            num(r56, "paper"),
            num(r56, "paper_std"),
            num(r56, "paper_best")
        ),
        (9.0, 1.5, 7.5)
    );
    assert!((num(r56, "diff") - 3.0).abs() < 1e-9);
    assert_eq!(r56["diff_of"], "mean");
    let r20 = row("resnet-20");
    assert_eq!(num(r20, "paper"), 8.75);
    assert_eq!(
        (r20["paper_std"].as_str(), r20["paper_best"].as_str()),
        ("", "")
    );
    assert!((num(r20, "diff") - 7.25).abs() < 1e-9);
    assert_eq!(r20["diff_of"], "median");
    let p20 = row("plain-20");
    assert_eq!(
        (
            p20["paper"].as_str(),
            p20["diff"].as_str(),
            p20["diff_of"].as_str()
        ),
        ("", "", "")
    );

    // The final figure: each variant in its depth's colour (plain-56 and resnet-56 orange),
    // the paper's numbers beside ours, in black.
    let plots = paths.plots.join("depth/cpu");
    let png = decode(&plots.join("final.png"));
    let (width, height) = png.dimensions();
    // the chart, left of the legend column
    let width = width - FINAL_LEGEND;
    let orange_columns: Vec<u32> = (0..width)
        .filter(|&x| {
            (64..height - 100).any(|y| {
                let p = png.get_pixel(x, y).0;
                (0..3).all(|i| (i32::from(p[i]) - i32::from(ORANGE[i])).abs() <= 10)
            })
        })
        .collect();
    // two orange markers: plain-56 (second) and resnet-56 (last)
    let last_orange = *orange_columns.last().unwrap();
    assert!(orange_columns[0] < width / 2 && last_orange > width / 2);
    // Right of resnet-56's marker: the paper's bar from 7.5 to 10.5%, a long vertical run of
    // black; right of resnet-20's blue marker only the paper's triangle (at most 13 px).
    let longest_black_run = |columns: Range<u32>| {
        columns
            .map(|x| {
                let (mut run, mut longest) = (0, 0);
                for y in 64..height - 100 {
                    let dark = png.get_pixel(x, y).0.iter().all(|&c| c < 50);
                    run = if dark { run + 1 } else { 0 };
                    longest = longest.max(run);
                }
                longest
            })
            .max()
            .unwrap()
    };
    let bar = longest_black_run(last_orange + 4..last_orange + 20);
    assert!(
        (20..=80).contains(&bar),
        "the paper's ± std bar is {bar} px"
    );
    let blue_columns: Vec<u32> = (width / 2..last_orange - 30)
        .filter(|&x| {
            (64..height - 100).any(|y| {
                let p = png.get_pixel(x, y).0;
                (0..3).all(|i| (i32::from(p[i]) - i32::from(BLUE[i])).abs() <= 10)
            })
        })
        .collect();
    let last_blue = *blue_columns.last().unwrap();
    let triangle = longest_black_run(last_blue + 4..last_blue + 20);
    assert!(
        (6..=13).contains(&triangle),
        "the paper's triangle is {triangle} px"
    );
    let svg = fs::read_to_string(plots.join("final.svg")).unwrap();
    for words in [
        "paper 9.00 ± 1.50, best 7.50",
        "paper: mean ± std of its runs",
        "paper: its best run",
    ] {
        assert!(svg.contains(words), "final.svg lacks {words}");
    }
}

#[test]
fn a_run_with_one_epoch_so_far_is_drawn_as_a_dot() {
    // plain-20 finished; plain-56 has logged one epoch only (a line needs two points): its
    // epoch at 0.3k iterations and 30% test error is a dot in the left half of the left
    // panel, away from the legend in its top right corner.
    let (_dir, paths) = sweep_of(|r| r.variant == "plain-20");
    let run = RunDir::new(&paths.results, "depth", "cpu", "plain-56", 0);
    fs::create_dir_all(&run.dir).unwrap();
    let rows: Vec<EpochRow> = epochs(30.0, 35.0, true, 30.0)
        .into_iter()
        .skip(2)
        .take(1)
        .collect();
    assert_eq!((rows[0].iteration, rows[0].test_error), (300, Some(30.0)));
    run.write_epochs(&rows).unwrap();
    render("depth", "cpu", &paths).unwrap();
    let png = decode(&paths.plots.join("depth/cpu/curves.png"));
    let orange = count_near_in(&png, 0..400, 64..700, ORANGE, 10);
    assert!(orange > 30, "{orange} orange pixels where the epoch is");
}

/// Width of the final-error figure's legend column, right of its chart.
const FINAL_LEGEND: u32 = 270;

/// Pixels of `rgb` (within 10) in the columns `columns` of the plot area.
fn colour_pixels(png: &image::RgbImage, columns: Range<u32>, rgb: [u8; 3]) -> usize {
    count_near_in(png, columns, 64..png.height() - 100, rgb, 10)
}

/// Removes seeds 1 and 2 of `variant`, leaving it one seed.
fn keep_seed_0(paths: &report::Paths, variant: &str) {
    for seed in [1, 2] {
        let run = RunDir::new(&paths.results, "depth", "cpu", variant, seed);
        fs::remove_dir_all(&run.dir).unwrap();
    }
}

#[test]
fn a_variant_with_one_seed_is_not_drawn_as_a_mean() {
    // Beside means over three seeds, resnet-20's single seed is a hollow circle, and
    // plain-20's mean (same colour) the filled marker. The chart is 4 variants × 80 + 300
    // px wide, at least 900 less the legend: plain-20 sits in its first quarter, resnet-20
    // in its third.
    let (_dir, paths) = depth_sweep();
    keep_seed_0(&paths, "resnet-20");
    render("depth", "cpu", &paths).unwrap();
    let plots = paths.plots.join("depth/cpu");
    let png = decode(&plots.join("final.png"));
    // the chart, left of the legend column
    let w = png.width() - FINAL_LEGEND;
    let mean = colour_pixels(&png, 0..w / 3, BLUE);
    let single = colour_pixels(&png, w / 2..3 * w / 4, BLUE);
    assert!(mean > 120, "plain-20's mean marker has {mean} blue pixels");
    assert!(
        (1..40).contains(&single),
        "resnet-20's one seed has {single} blue pixels: a hollow circle has a few"
    );
    let svg = fs::read_to_string(plots.join("final.svg")).unwrap();
    assert!(svg.contains("the mean with its 95% interval (up to 3 seeds)"));
    // plotters writes a text as its own line inside <text>.
    let mean_legend = ">\nmean, 95% interval\n<";
    assert!(
        svg.contains(mean_legend),
        "the legend lacks the mean marker"
    );

    // With one seed of every variant, each is the filled marker and nothing says "mean".
    for variant in ["plain-20", "plain-56", "resnet-56"] {
        keep_seed_0(&paths, variant);
    }
    render("depth", "cpu", &paths).unwrap();
    let png = decode(&plots.join("final.png"));
    let single = colour_pixels(&png, w / 2..3 * w / 4, BLUE);
    assert!(
        single > 120,
        "resnet-20's one seed has {single} blue pixels"
    );
    let svg = fs::read_to_string(plots.join("final.svg")).unwrap();
    assert!(svg.contains("one seed each"));
    assert!(
        !svg.contains("95% interval (up to"),
        "a chart of single seeds claims a mean"
    );
    assert!(
        !svg.contains(mean_legend),
        "the legend lists a mean marker that is not drawn"
    );
}

/// The curves show the spread over seeds (a shaded band from the lowest to the highest
/// seed's test error, for a variant with two seeds or more) and the learning-rate drop (a
/// dashed vertical line in each panel, at 0.5k iterations here), both in the legend.
#[test]
fn curves_shade_the_seed_spread_and_mark_the_lr_drops() {
    let (_dir, paths) = depth_sweep();
    keep_seed_0(&paths, "resnet-20");
    render("depth", "cpu", &paths).unwrap();
    let svg = fs::read_to_string(paths.plots.join("depth/cpu/curves.svg")).unwrap();
    let bands: Vec<&str> = svg
        .lines()
        .filter(|l| l.starts_with("<polygon") && l.contains(r#"opacity="0.18""#))
        .collect();
    // plain-20, plain-56 and resnet-56 have three seeds; resnet-20 has one: no band
    assert_eq!(bands.len(), 3, "{bands:?}");
    // one colour per depth: blue for plain-20 only, orange for plain-56 and resnet-56
    let blue = bands
        .iter()
        .filter(|b| b.contains(r##"fill="#1F77B4""##))
        .count();
    assert_eq!(blue, 1, "{bands:?}");
    assert!(svg.contains("test error, lowest to highest seed"));
    // vertical grey dashes: x → how many
    let mut dashes: BTreeMap<i64, usize> = BTreeMap::new();
    for ((x0, _), (x1, _)) in svg_segments(&svg, &[r##"stroke="#5A5A5A""##, r#"opacity="0.7""#]) {
        if x0 == x1 {
            *dashes.entry(x0 as i64).or_default() += 1;
        }
    }
    let lines: Vec<i64> = dashes
        .iter()
        .filter(|(_, &n)| n >= 20)
        .map(|(&x, _)| x)
        .collect();
    assert_eq!(lines.len(), 2, "{dashes:?}");
    // one in each 700-pixel panel, at the same place within it
    assert!(lines[0] < 700 && lines[1] >= 700);
    assert_eq!(lines[1] - lines[0], 700);
    assert!(svg.contains("learning rate divided"));
}

/// A profile with a warm-up marks where it ends (a dotted vertical line in each panel, and a
/// legend entry with its two learning rates); one without has neither.
#[test]
fn curves_mark_where_the_warmup_ends() {
    let (_dir, paths) = depth_sweep();
    let warmed = EXPERIMENT.replace(
        "lr_drops = [500] }",
        "lr_drops = [500], warmup = { lr = 0.01, iterations = 250 } }",
    );
    assert_ne!(warmed, EXPERIMENT);
    fs::write(paths.experiments.join("depth.toml"), &warmed).unwrap();
    render("depth", "cpu", &paths).unwrap();
    let svg = fs::read_to_string(paths.plots.join("depth/cpu/curves.svg")).unwrap();
    assert!(svg.contains("warm-up ends (lr 0.01 → 0.1)"), "{svg}");
    let mut dots: BTreeMap<i64, usize> = BTreeMap::new();
    for ((x0, _), (x1, _)) in svg_segments(&svg, &[r##"stroke="#5A5A5A""##, r#"opacity="0.9""#]) {
        if x0 == x1 {
            *dots.entry(x0 as i64).or_default() += 1;
        }
    }
    let lines: Vec<i64> = dots
        .iter()
        .filter(|(_, &n)| n >= 20)
        .map(|(&x, _)| x)
        .collect();
    assert_eq!(lines.len(), 2, "{dots:?}");
    assert_eq!(lines[1] - lines[0], 700);

    // a warm-up of one variant's own (He 2015 warms up ResNet-110 only) is named as its
    let own = EXPERIMENT.replace(
        "model = { depth = 56 }\n",
        "model = { depth = 56 }\nprotocol.cpu = { warmup = { lr = 0.01, iterations = 250 } }\n",
    );
    assert_ne!(own, EXPERIMENT);
    fs::write(paths.experiments.join("depth.toml"), &own).unwrap();
    render("depth", "cpu", &paths).unwrap();
    let svg = fs::read_to_string(paths.plots.join("depth/cpu/curves.svg")).unwrap();
    assert!(
        svg.contains("warm-up ends (resnet-56: lr 0.01 → 0.1)"),
        "{svg}"
    );

    fs::write(paths.experiments.join("depth.toml"), EXPERIMENT).unwrap();
    render("depth", "cpu", &paths).unwrap();
    let svg = fs::read_to_string(paths.plots.join("depth/cpu/curves.svg")).unwrap();
    assert!(!svg.contains("warm-up ends"));
}
