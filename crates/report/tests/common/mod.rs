//! Helpers shared by the report's fixture tests.

// Test code: a failed write or parse is a failed test.
#![allow(clippy::unwrap_used, dead_code)]

use std::collections::HashMap;
use std::fs;
use std::path::Path;

use report::Paths;

pub const JPEG: &str = "CIFAR-10, JPEG-75 copy (not the original pixels)";
pub const ORIGINAL: &str = "original CIFAR-10 (archive MD5 verified)";
pub const H100: &str = "cuda:0 NVIDIA H100 80GB HBM3";
pub const CPU: &str = "cpu Intel(R) Xeon(R) Processor (2 threads)";

/// A fresh folder with `experiments/<file_name>` holding `experiment`;
/// `REPORT_KEEP_FIXTURES=1` keeps it (its path is printed) to look at.
pub fn fixture_folder(file_name: &str, experiment: &str) -> (tempfile::TempDir, Paths) {
    let mut dir = tempfile::tempdir().unwrap();
    if std::env::var_os("REPORT_KEEP_FIXTURES").is_some() {
        dir.disable_cleanup(true);
        println!("fixture folder: {}", dir.path().display());
    }
    let paths = Paths {
        experiments: dir.path().join("experiments"),
        results: dir.path().join("results"),
        plots: dir.path().join("plots"),
    };
    fs::create_dir_all(&paths.experiments).unwrap();
    fs::write(paths.experiments.join(file_name), experiment).unwrap();
    (dir, paths)
}

/// The rows of a CSV file, each as column → value.
pub fn csv_rows(path: &Path) -> Vec<HashMap<String, String>> {
    let mut reader = csv::Reader::from_path(path).unwrap();
    let headers = reader.headers().unwrap().clone();
    reader
        .records()
        .map(|r| {
            let r = r.unwrap();
            headers
                .iter()
                .map(String::from)
                .zip(r.iter().map(String::from))
                .collect()
        })
        .collect()
}

pub fn num(row: &HashMap<String, String>, column: &str) -> f64 {
    row[column]
        .parse()
        .unwrap_or_else(|_| panic!("{column} = {:?} is not a number", row[column]))
}

/// A decoded PNG.
pub fn decode(path: &Path) -> image::RgbImage {
    image::open(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .to_rgb8()
}

/// Pixels in `rows` within `tol` of colour `rgb`.
pub fn count_near(
    img: &image::RgbImage,
    rows: std::ops::Range<u32>,
    rgb: [u8; 3],
    tol: i32,
) -> usize {
    count_near_in(img, 0..img.width(), rows, rgb, tol)
}

/// Pixels in the rectangle `columns` × `rows` within `tol` of colour `rgb`.
pub fn count_near_in(
    img: &image::RgbImage,
    columns: std::ops::Range<u32>,
    rows: std::ops::Range<u32>,
    rgb: [u8; 3],
    tol: i32,
) -> usize {
    img.enumerate_pixels()
        .filter(|(x, y, _)| columns.contains(x) && rows.contains(y))
        .filter(|(_, _, p)| (0..3).all(|i| (i32::from(p[i]) - i32::from(rgb[i])).abs() <= tol))
        .count()
}

/// The `x` and `y` attributes of the SVG `<text>` element whose content is `label` (plotters
/// writes the content on a line of its own).
pub fn text_position(svg: &str, label: &str) -> (f64, f64) {
    let end = svg
        .find(&format!(">\n{label}\n<"))
        .unwrap_or_else(|| panic!("no text {label:?} in the SVG"));
    let start = svg[..end].rfind("<text").unwrap();
    let attribute = |name: &str| -> f64 {
        let tag = &svg[start..end];
        let at = tag.find(&format!(" {name}=\"")).unwrap() + name.len() + 3;
        tag[at..at + tag[at..].find('"').unwrap()].parse().unwrap()
    };
    (attribute("x"), attribute("y"))
}

/// The two-point polylines of an SVG whose line holds every one of `attributes` (plotters
/// writes one element a line): ((x0, y0), (x1, y1)) each.
pub fn svg_segments(svg: &str, attributes: &[&str]) -> Vec<((f64, f64), (f64, f64))> {
    svg.lines()
        .filter(|l| l.starts_with("<polyline") && attributes.iter().all(|a| l.contains(a)))
        .filter_map(|l| {
            let points = &l[l.find("points=\"")? + 8..];
            let xy: Vec<f64> = points[..points.find('"')?]
                .split([',', ' '])
                .filter(|v| !v.is_empty())
                .map(|v| v.parse().unwrap())
                .collect();
            (xy.len() == 4).then(|| ((xy[0], xy[1]), (xy[2], xy[3])))
        })
        .collect()
}
