//! End-to-end tests of `kind = "gradients"` experiments on fixture results: `norms.csv` and
//! `provenance.json` as `runner train` writes them, for nets of two depths, one variant not
//! measured; the table against hand-computed ratios and decades, and the figure.

// The fixture helpers are test code too: a failed write is a failed test.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::path::PathBuf;
use std::process::Command;

mod common;
use common::*;
use report::gradients::GradientStatus;
use report::{render, Paths};

const EXPERIMENT: &str = r#"
kind = "gradients"
title = "Per-unit gradient norms |dE/dx_l| (Identity Mappings, eqs. 4-8)"
source = "He, Zhang, Ren, Sun 2016, Identity Mappings in Deep Residual Networks, sec. 3"
[model]
depth = 20
[[variants]]
name = "identity-20"
[[variants]]
name = "scaling-0.5-20"
model = { shortcut = { scaling = { lambda_s = 0.5, lambda_f = 1.0 } } }
[[variants]]
name = "plain-20"
model = { shortcut = "plain" }
[[variants]]
name = "scaling-0.5-56"
model = { depth = 56, shortcut = { scaling = { lambda_s = 0.5, lambda_f = 1.0 } } }
protocol.paper = { iterations = 20, lr_drops = [] }
[profiles.paper]
seeds = [0, 1]
protocol = { batch_size = 16, iterations = 300, lr = 0.1, lr_drops = [] }
"#;

struct Fixture {
    _dir: tempfile::TempDir,
    paths: Paths,
}

impl Fixture {
    /// A fresh folder with the experiment file; `REPORT_KEEP_FIXTURES=1` keeps it.
    fn new() -> Self {
        let (dir, paths) = common::fixture_folder("gradients.toml", EXPERIMENT);
        fs::create_dir_all(paths.results.join("gradients/paper")).unwrap();
        Self { _dir: dir, paths }
    }

    fn variant_dir(&self, variant: &str) -> PathBuf {
        let dir = self.paths.results.join("gradients/paper").join(variant);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// `norms.csv` with `norm(seed, iteration, unit)` for units 1..=units.
    fn norms(
        &self,
        variant: &str,
        seeds: &[u64],
        iterations: [i64; 2],
        units: u32,
        norm: impl Fn(u64, i64, u32) -> f64,
    ) {
        let mut csv = String::from("seed,iteration,unit,norm\n");
        for &seed in seeds {
            for iteration in iterations {
                for unit in 1..=units {
                    let v = norm(seed, iteration, unit);
                    csv.push_str(&format!("{seed},{iteration},{unit},{v}\n"));
                }
            }
        }
        fs::write(self.variant_dir(variant).join("norms.csv"), csv).unwrap();
    }

    /// `provenance.json` as the runner writes it.
    fn provenance(&self, variant: &str, depth: usize, iterations: i64, device: &str) {
        let json = serde_json::json!({
            "experiment": "gradients",
            "profile": "paper",
            "variant": variant,
            "seeds": [0, 1],
            "model": {
                "family": "cifar", "depth": depth, "block": "basic",
                "shortcut": {"scaling": {"lambda_s": 0.5, "lambda_f": 1.0}},
                "placement": "original", "downsample": "a", "num_classes": 10, "replicas": 1
            },
            "protocol": {"batch_size": 16, "iterations": iterations, "lr": 0.1, "lr_drops": []},
            "data": {
                "digest": "0123456789abcdef",
                "files": {"data_batch_1": "00"},
                "source": JPEG,
                "original": false
            },
            "git_revision": "6d25089",
            "libtorch": "2.11.0+cu130",
            "device": device,
            "wall_s": 10.5,
        });
        fs::write(
            self.variant_dir(variant).join("provenance.json"),
            serde_json::to_string_pretty(&json).unwrap(),
        )
        .unwrap();
    }

    fn table_dir(&self) -> PathBuf {
        self.paths.results.join("gradients/paper")
    }

    fn plots(&self) -> PathBuf {
        self.paths.plots.join("gradients/paper")
    }
}

/// Three variants measured, `plain-20` not:
/// - identity-20 (L = 9, seeds 0 and 1): at init 1 + 0.1 (9 − l) on both seeds (1.8 at
///   l = 1, 1.0 at l = 9); after 300 iterations 0.5 everywhere;
/// - scaling-0.5-20 (L = 9): seed 0 has 0.5^(9 − l), seed 1 three times that: mean
///   2 · 0.5^(9 − l); after 300 iterations 0.1 · 0.5^(9 − l) except unit 1, which is 0
///   (float32 underflow);
/// - scaling-0.5-56 (L = 27, seed 0 only, 20 iterations): 0.5^(27 − l), then 0.2 · that.
fn sweep() -> Fixture {
    let f = Fixture::new();
    f.norms("identity-20", &[0, 1], [0, 300], 9, |_, it, l| {
        if it == 0 {
            1.0 + 0.1 * f64::from(9 - l)
        } else {
            0.5
        }
    });
    f.provenance("identity-20", 20, 300, CPU);
    f.norms("scaling-0.5-20", &[0, 1], [0, 300], 9, |seed, it, l| {
        let per_seed = if seed == 0 { 1.0 } else { 3.0 };
        match (it, l) {
            (0, _) => per_seed * 0.5f64.powi(9 - l as i32),
            (_, 1) => 0.0,
            _ => 0.1 * 0.5f64.powi(9 - l as i32),
        }
    });
    f.provenance("scaling-0.5-20", 20, 300, CPU);
    f.norms("scaling-0.5-56", &[0], [0, 20], 27, |_, it, l| {
        let scale = if it == 0 { 1.0 } else { 0.2 };
        scale * 0.5f64.powi(27 - l as i32)
    });
    f.provenance("scaling-0.5-56", 56, 20, H100);
    f
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-12 * b.abs().max(1e-300)
}

#[test]
fn table_csv_has_the_hand_computed_ratios_and_decades() {
    let f = sweep();
    render("gradients", "paper", &f.paths).unwrap();
    let rows = csv_rows(&f.table_dir().join("table.csv"));
    let names: Vec<&str> = rows.iter().map(|r| r["variant"].as_str()).collect();
    assert_eq!(
        names,
        [
            "identity-20",
            "scaling-0.5-20",
            "plain-20",
            "scaling-0.5-56"
        ]
    );

    // identity-20 at init: 1.8 / 1.0 = 1.8, log10(1.8) = 0.25527 decades; after 300
    // iterations flat 0.5: ratio 1, 0 decades.
    let id = &rows[0];
    assert_eq!((id["depth"].as_str(), id["units"].as_str()), ("20", "9"));
    assert_eq!(
        (id["seeds_measured"].as_str(), id["seeds_expected"].as_str()),
        ("2", "2")
    );
    assert!(close(num(id, "x1_norm_init"), 1.8));
    assert!(close(num(id, "xL_norm_init"), 1.0));
    assert!(close(num(id, "ratio_init"), 1.8));
    assert!(close(num(id, "decades_init"), 1.8f64.log10()));
    assert_eq!(id["zero_units_init"], "0");
    assert_eq!(id["iterations"], "300");
    assert_eq!(num(id, "ratio_trained"), 1.0);
    assert_eq!(num(id, "decades_trained"), 0.0);
    assert_eq!(id["status"], "measured");

    // scaling-0.5-20 at init, mean of the seeds 2 · 0.5^(9 − l): x_1 = 2 · 0.5^8 = 0.0078125,
    // x_9 = 2, ratio 0.5^8 = 0.00390625, span 8 log10 2 = 2.40824 decades.
    let s = &rows[1];
    assert!(close(num(s, "x1_norm_init"), 0.0078125));
    assert!(close(num(s, "xL_norm_init"), 2.0));
    assert!(close(num(s, "ratio_init"), 0.00390625));
    assert!(close(num(s, "decades_init"), 8.0 * 2f64.log10()));
    // After training unit 1 is 0: ratio 0; the span over units 2..9 is
    // log10(0.1 / (0.1 · 0.5^7)) = 7 log10 2 = 2.10721, with one unit at 0.
    assert_eq!(num(s, "x1_norm_trained"), 0.0);
    assert!(close(num(s, "xL_norm_trained"), 0.1));
    assert_eq!(num(s, "ratio_trained"), 0.0);
    assert!(close(num(s, "decades_trained"), 7.0 * 2f64.log10()));
    assert_eq!(s["zero_units_trained"], "1");

    // plain-20: no norms.csv.
    let p = &rows[2];
    for column in [
        "depth",
        "units",
        "x1_norm_init",
        "ratio_init",
        "decades_init",
        "iterations",
        "ratio_trained",
    ] {
        assert_eq!(p[column], "", "{column}");
    }
    assert_eq!(
        (p["seeds_measured"].as_str(), p["seeds_expected"].as_str()),
        ("0", "2")
    );
    assert_eq!(p["status"], "not measured");

    // scaling-0.5-56: L = 27, 0.5^26 = 1.4901e-8 at both measurements (the 0.2 cancels),
    // 26 log10 2 = 7.8268 decades; 20 iterations (the variant's own protocol).
    let d = &rows[3];
    assert_eq!((d["depth"].as_str(), d["units"].as_str()), ("56", "27"));
    assert_eq!(d["seeds_measured"], "1");
    assert!(close(num(d, "ratio_init"), 0.5f64.powi(26)));
    assert!(close(num(d, "ratio_trained"), 0.5f64.powi(26)));
    assert!(close(num(d, "decades_trained"), 26.0 * 2f64.log10()));
    assert_eq!(d["iterations"], "20");
    assert_eq!(d["status"], "measured");
}

#[test]
fn table_md_states_data_devices_and_rows() {
    let f = sweep();
    let written = render("gradients", "paper", &f.paths).unwrap();
    let md = fs::read_to_string(f.table_dir().join("table.md")).unwrap();
    assert!(md.starts_with("# Per-unit gradient norms |dE/dx_l| (Identity Mappings, eqs. 4-8)\n"));
    assert!(md.contains("Paper: He, Zhang, Ren, Sun 2016, Identity Mappings"));
    assert!(md.contains("**Profile**: `paper`, seeds 0, 1 (2 per variant)"));
    assert!(
        md.contains(&format!("**Data**: {JPEG}; fingerprint `0123456789abcdef`")),
        "{md}"
    );
    assert!(
        md.contains(&format!("**Devices**: {CPU} (2 runs); {H100} (1 run)")),
        "{md}"
    );
    assert!(md.contains("**Git revisions**: `6d25089`"));
    assert!(md.contains("**libtorch**: 2.11.0+cu130"));
    // 3 × 10.5 s.
    assert!(
        md.contains("**Measured**: 3 of 4 variants (32 s in all)"),
        "{md}"
    );
    assert!(!md.contains("incomplete"), "{md}");
    let line = |name: &str| {
        md.lines()
            .find(|l| l.starts_with(&format!("| {name} |")))
            .unwrap_or_else(|| panic!("no row for {name} in\n{md}"))
            .to_string()
    };
    assert_eq!(
        line("identity-20"),
        "| identity-20 | 20 (9) | 2/2 | 1.80e0 | 1.00e0 | 1.80e0 | 0.3 | 300 \
         | 5.00e-1 | 5.00e-1 | 1.00e0 | 0.0 | measured |"
    );
    assert_eq!(
        line("scaling-0.5-20"),
        "| scaling-0.5-20 | 20 (9) | 2/2 | 7.81e-3 | 2.00e0 | 3.91e-3 | 2.4 | 300 \
         | 0 | 1.00e-1 | 0 | ≥ 2.1 (1 at 0) | measured |"
    );
    assert_eq!(
        line("plain-20"),
        "| plain-20 | – | 0/2 | – | – | – | – | – | – | – | – | – | not measured |"
    );
    assert!(line("scaling-0.5-56").starts_with("| scaling-0.5-56 | 56 (27) | 1/2 | 1.49e-8 |"));
    assert!(line("scaling-0.5-56")
        .ends_with("| 20 | 2.98e-9 | 2.00e-1 | 1.49e-8 | 7.8 | measured (1/2 seeds) |"));
    // The line under the table says what the ratio is.
    assert!(md.contains("ratio = ‖∂E/∂x_1‖ / ‖∂E/∂x_L‖, the gradient at the input side over"));

    let table = written.table.gradients().unwrap();
    assert!(written.table.training().is_none());
    assert_eq!(table.measured(), 3);
    assert_eq!(table.rows[2].status, GradientStatus::NotMeasured);
    assert_eq!(
        written.table.notes(),
        ["1 of 4 variants are not measured yet"]
    );
}

#[test]
fn norms_figure_has_one_panel_per_depth() {
    let f = sweep();
    let written = render("gradients", "paper", &f.paths).unwrap();
    let dir = f.plots();
    for ext in ["svg", "png"] {
        let path = dir.join(format!("norms.{ext}"));
        assert!(
            written.files.contains(&path),
            "{} not reported",
            path.display()
        );
    }
    // No training figures for a gradients experiment.
    assert!(!dir.join("curves.svg").exists() && !dir.join("final.svg").exists());

    let svg = fs::read_to_string(dir.join("norms.svg")).unwrap();
    assert!(svg.trim_start().starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    assert!(
        svg.contains("CIFAR-10, JPEG-75 copy · profile paper"),
        "data source and profile in the title"
    );
    assert!(svg.contains("One panel per depth"));
    assert!(svg.contains("dashed: at initialisation"));
    assert!(svg.contains("ResNet-20: L = 9 residual units · solid after 300 iterations"));
    assert!(svg.contains("ResNet-56: L = 27 residual units · solid after 20 iterations"));
    for name in ["identity-20", "scaling-0.5-20", "scaling-0.5-56"] {
        assert!(svg.contains(name), "norms.svg lacks {name}");
    }
    assert!(!svg.contains("plain-20"), "an unmeasured variant is drawn");
    assert!(svg.contains("1 unit at 0 not drawn"));
    // Decade labels: the 56-layer panel spans 0.2 · 0.5^26 ≈ 3e-9 to 1, padded to
    // log10 −8.87 … 0.34: nine whole decades, labelled every 2 (10⁻⁸ … 10⁰).
    let text = |t: &str| svg.lines().any(|line| line.trim() == t);
    for label in ["10⁻⁸", "10⁻⁶", "10⁰"] {
        assert!(text(label), "no label {label}");
    }
    assert!(!text("10⁻⁷"));
    assert!(svg.contains("‖∂E/∂x_l‖ (log scale)"));

    // Two panels of 520 px under a two-line title band of 86 px.
    let png = decode(&dir.join("norms.png"));
    assert_eq!(png.dimensions(), (1100, 86 + 2 * 520));
    // Panel 1 (ResNet-20) holds the first two colours (#1f77b4, #ff7f0e); panel 2 the
    // fourth variant's (#d62728), not drawn in panel 1.
    let (top, bottom) = (86..606, 606..1126);
    assert!(count_near(&png, top.clone(), [31, 119, 180], 10) > 300);
    assert!(count_near(&png, top.clone(), [255, 127, 14], 10) > 300);
    assert!(count_near(&png, top, [214, 39, 40], 10) == 0);
    assert!(count_near(&png, bottom.clone(), [214, 39, 40], 10) > 300);
    // The embedded font rendered: dark text in the title band and in the legend column.
    assert!(count_near(&png, 0..86, [0, 0, 0], 60) > 500);
    let legend_text = png
        .enumerate_pixels()
        .filter(|(x, y, p)| *x > 780 && bottom.contains(y) && p.0.iter().all(|&c| c < 80))
        .count();
    assert!(legend_text > 300, "{legend_text} dark legend pixels");
}

#[test]
fn nothing_measured_yet_renders_a_table_and_no_figure() {
    let f = Fixture::new();
    let written = render("gradients", "paper", &f.paths).unwrap();
    let table = written.table.gradients().unwrap();
    assert!(table.rows.iter().all(|r| r.status_text() == "not measured"));
    assert_eq!(written.files.len(), 2, "{:?}", written.files);
    assert!(!f.plots().join("norms.svg").exists());
    let md = fs::read_to_string(f.table_dir().join("table.md")).unwrap();
    assert!(md.contains("**Data**: unknown (no finished run yet)"));
    assert!(md.contains("**Measured**: 0 of 4 variants\n"));
}

#[test]
fn a_figure_of_measurements_no_longer_there_is_removed() {
    let f = sweep();
    render("gradients", "paper", &f.paths).unwrap();
    assert!(f.plots().join("norms.png").exists());
    for entry in fs::read_dir(f.table_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            fs::remove_dir_all(path).unwrap();
        }
    }
    render("gradients", "paper", &f.paths).unwrap();
    assert!(!f.plots().join("norms.png").exists());
    assert!(!f.plots().join("norms.svg").exists());
}

#[test]
fn damaged_and_unprovenanced_files_are_noted() {
    let f = sweep();
    fs::write(
        f.variant_dir("plain-20").join("norms.csv"),
        "seed,iteration\n0,x\n",
    )
    .unwrap();
    fs::remove_file(f.variant_dir("scaling-0.5-56").join("provenance.json")).unwrap();
    let mut nan = fs::read_to_string(f.variant_dir("identity-20").join("norms.csv")).unwrap();
    nan.push_str("1,300,9,NaN\n");
    fs::write(f.variant_dir("identity-20").join("norms.csv"), nan).unwrap();
    let written = render("gradients", "paper", &f.paths).unwrap();
    let table = written.table.gradients().unwrap();
    let notes = table.notes.join("\n");
    assert!(notes.contains("plain-20/norms.csv: skipped"), "{notes}");
    assert!(
        notes.contains("no provenance.json beside norms.csv"),
        "{notes}"
    );
    assert!(
        notes.contains("1 non-finite norm (NaN or inf) left out"),
        "{notes}"
    );
    assert_eq!(table.rows[2].status, GradientStatus::NotMeasured);
    // Without provenance the depth is unknown; L still comes from norms.csv.
    assert_eq!((table.rows[3].depth, table.rows[3].units), (None, Some(27)));
    // The NaN row is left out of the mean: unit 9 after training is still 0.5.
    assert_eq!(table.rows[0].trained.unwrap().output_side, 0.5);
    assert_eq!(table.provenance.finished, 2);
    let md = fs::read_to_string(f.table_dir().join("table.md")).unwrap();
    assert!(md.contains("| scaling-0.5-56 | – (27) |"), "{md}");
    assert!(md.contains("Notes (paths from this table's folder):\n"));
}

#[test]
fn cli_reports_unmeasured_variants_not_incomplete_runs() {
    let f = sweep();
    let root = f.paths.experiments.parent().unwrap().to_path_buf();
    let out = Command::new(env!("CARGO_BIN_EXE_report"))
        .args(["gradients", "--profile", "paper"])
        .current_dir(&root)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("wrote results/gradients/paper/table.md"),
        "{text}"
    );
    assert!(
        text.contains("wrote plots/gradients/paper/norms.png"),
        "{text}"
    );
    assert!(
        text.contains("note: 1 of 4 variants are not measured yet"),
        "{text}"
    );
    assert!(!text.contains("incomplete"), "{text}");
}

/// Units whose norm overflowed are marked along the top edge over those units (dashed for
/// initialisation) and named in the table and legend as lower bounds; a flat curve beside one
/// spanning dozens of decades is drawn again in a panel of its own scale.
#[test]
fn overflowed_units_are_marked_and_flat_curves_get_their_own_scale() {
    let f = Fixture::new();
    f.norms("identity-20", &[0], [0, 300], 9, |_, _, l| {
        1.0 + 0.1 * f64::from(9 - l)
    });
    f.provenance("identity-20", 20, 300, CPU);
    // 10^(5 (9 − l)): 40 decades; at initialisation units 1 and 2 overflowed
    f.norms("scaling-0.5-20", &[0], [0, 300], 9, |_, it, l| {
        if it == 0 && l <= 2 {
            f64::INFINITY
        } else {
            10f64.powi(5 * (9 - l as i32))
        }
    });
    f.provenance("scaling-0.5-20", 20, 300, CPU);
    render("gradients", "paper", &f.paths).unwrap();

    let md = fs::read_to_string(f.table_dir().join("table.md")).unwrap();
    assert!(
        md.contains("| ≥ 1.00e30 (units 1–2 overflowed) | 1.00e0 | ≥ 1.00e30 | ≥ 30.0 |"),
        "{md}"
    );

    let svg = fs::read_to_string(f.plots().join("norms.svg")).unwrap();
    assert!(svg.contains("units 1–2 overflowed: marked along the top"));
    // the ResNet-20 panel, then identity-20 again on its own scale
    assert!(svg.contains("ResNet-20: L = 9 residual units · solid after 300 iterations ·"));
    assert!(svg.contains("the flatter curves on their own scale"));
    let png = decode(&f.plots().join("norms.png"));
    assert_eq!(png.dimensions(), (1100, 86 + 2 * 520));
    // the mark: thick orange dashes near the top of the first panel, over units 1–2 only
    // (the left part of its x axis)
    let marks: Vec<(f64, f64, f64)> =
        svg_segments(&svg, &[r##"stroke="#FF7F0E" stroke-width="5""##])
            .into_iter()
            .map(|((x0, y), (x1, _))| (y, x0, x1))
            .collect();
    assert!(marks.len() >= 2, "{marks:?}");
    for (y, x0, x1) in &marks {
        assert!(*y < 86.0 + 80.0, "a mark at y {y}, not along the top");
        assert!(
            *x0 < 320.0 && *x1 < 320.0,
            "a mark at x {x0}..{x1}, past unit 2"
        );
    }
}
