//! CIFAR-10 in its official binary layout: finding it, checking it, fingerprinting it,
//! fetching the original archive, and reading it into tensors.

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use md5::{Digest, Md5};
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

/// Pixels per image: 3 channels of 32×32.
pub const IMAGE_BYTES: usize = 3 * 32 * 32;
/// Bytes per record: one label byte, then 1024 red, 1024 green and 1024 blue pixel bytes.
pub const RECORD_BYTES: usize = 1 + IMAGE_BYTES;
/// Records per file.
pub const RECORDS_PER_FILE: usize = 10_000;
/// Classes of CIFAR-10.
pub const NUM_CLASSES: u8 = 10;
/// The five training files, in order.
pub const TRAIN_FILES: [&str; 5] = [
    "data_batch_1.bin",
    "data_batch_2.bin",
    "data_batch_3.bin",
    "data_batch_4.bin",
    "data_batch_5.bin",
];
/// The test file.
pub const TEST_FILE: &str = "test_batch.bin";

/// The official archive, its MD5 as published beside it, and the folder it unpacks to.
pub const ARCHIVE_URL: &str = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz";
pub const ARCHIVE_MD5: &str = "c32a1d4ab5d03f1284b67883e8d87530";
pub const ARCHIVE_FOLDER: &str = "cifar-10-batches-bin";
/// Written by `runner data fetch` beside the files: where they came from and their MD5s.
pub const PROVENANCE_FILE: &str = "PROVENANCE.json";

/// Copies of CIFAR-10 that are not the original pixels but are recognised by their files' MD5s.
/// Results on them are labelled with the copy's name.
const KNOWN_COPIES: &[(&str, [(&str, &str); 6])] = &[(
    "CIFAR-10, JPEG-75 copy (not the original pixels)",
    [
        ("data_batch_1.bin", "5a5142663b2c457eb7edf61944cf14cd"),
        ("data_batch_2.bin", "a03813b579934887e19fffa24f57e096"),
        ("data_batch_3.bin", "9338b8beb58f9f053aa7e7f6d2ca26a1"),
        ("data_batch_4.bin", "5d6a4b059305fb3437429da7d5355351"),
        ("data_batch_5.bin", "b543e7acd6f6cab339de5ace5ae323ae"),
        ("test_batch.bin", "522aae0f6b5a0887c19587e9738bc7db"),
    ],
)];

fn all_files() -> impl Iterator<Item = &'static str> {
    TRAIN_FILES.into_iter().chain([TEST_FILE])
}

/// The data folder: `--data-dir`, else `$CIFAR10_DIR`, else `data/cifar-10-batches-bin`.
pub fn resolve_dir(cli: Option<&Path>) -> PathBuf {
    if let Some(dir) = cli {
        return dir.to_path_buf();
    }
    match std::env::var_os("CIFAR10_DIR") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => Path::new("data").join(ARCHIVE_FOLDER),
    }
}

/// The folder to train from: as [`resolve_dir`] says, and there. Only the default folder
/// is downloaded into when missing (`runner data fetch` can fetch anywhere): a folder named
/// by `--data-dir` or `CIFAR10_DIR` that does not exist is more likely a typo than a wish to
/// download 160 MB into it.
pub fn training_dir(cli: Option<&Path>, quiet: bool) -> Result<PathBuf> {
    let dir = resolve_dir(cli);
    if dir.exists() {
        return Ok(dir);
    }
    if let Some(by) = named_by(cli) {
        return Err(absent_named(&dir, by));
    }
    let cwd = std::env::current_dir().map_or_else(|_| ".".into(), |d| d.display().to_string());
    eprintln!(
        "data: no {} in {cwd}; downloading the original archive (about 160 MB) there \
         (--data-dir or CIFAR10_DIR name a folder you already have)",
        dir.display()
    );
    fetch(&dir, quiet).with_context(|| {
        format!(
            "no CIFAR-10 folder at {} in {cwd}, and it could not be fetched; run from the \
             project's folder, or point --data-dir or CIFAR10_DIR at a folder holding the \
             six binary files",
            dir.display()
        )
    })?;
    Ok(dir)
}

/// What named the data folder: `--data-dir`, `CIFAR10_DIR`, or nothing (the default folder,
/// the only one `train` downloads into when it is missing).
pub fn named_by(cli: Option<&Path>) -> Option<&'static str> {
    if cli.is_some() {
        Some("--data-dir")
    } else if std::env::var_os("CIFAR10_DIR").is_some_and(|d| !d.is_empty()) {
        Some("CIFAR10_DIR")
    } else {
        None
    }
}

/// Why training refuses `dir`, named by `by` (see [`named_by`]) but absent.
pub fn absent_named(dir: &Path, by: &str) -> anyhow::Error {
    anyhow::anyhow!(
        "no CIFAR-10 folder at {} (named by {by}); point --data-dir or CIFAR10_DIR at a \
         folder holding the six binary files, or run `runner data fetch` to download the \
         original archive into {}",
        dir.display(),
        Path::new("data").join(ARCHIVE_FOLDER).display()
    )
}

/// Checks that the folder holds the six files with the sizes of the official layout.
pub fn check_dir(dir: &Path) -> Result<()> {
    ensure!(dir.is_dir(), "no folder {}", dir.display());
    for name in all_files() {
        let path = dir.join(name);
        let len = fs::metadata(&path)
            .with_context(|| format!("missing {}", path.display()))?
            .len();
        check_len(&path, len)?;
    }
    Ok(())
}

fn check_len(path: &Path, len: u64) -> Result<()> {
    let expected = (RECORD_BYTES * RECORDS_PER_FILE) as u64;
    ensure!(
        len == expected,
        "{} has {len} bytes, but a CIFAR-10 batch file has {expected} ({RECORDS_PER_FILE} records of \
         {RECORD_BYTES} bytes){}",
        path.display(),
        if len < expected { ": truncated?" } else { ": not a CIFAR-10 binary batch?" }
    );
    Ok(())
}

/// Images and labels of one split, on the host.
#[derive(Debug)]
pub struct Split {
    /// `[n, 3, 32, 32]`, uint8.
    pub images: Tensor,
    /// `[n]`, int64 in 0..10.
    pub labels: Tensor,
}

impl Split {
    pub fn len(&self) -> i64 {
        self.labels.size()[0]
    }
}

/// Reads one batch file: exactly 10,000 records with labels in 0..10, every class among them
/// (each official file has about 1,000 of each), or an error naming the file and the problem.
fn parse_batch(path: &Path, bytes: &[u8]) -> Result<(Vec<u8>, Vec<u8>)> {
    check_len(path, bytes.len() as u64)?;
    let mut images = Vec::with_capacity(RECORDS_PER_FILE * IMAGE_BYTES);
    let mut labels = Vec::with_capacity(RECORDS_PER_FILE);
    for (index, record) in bytes.chunks_exact(RECORD_BYTES).enumerate() {
        let label = record[0];
        ensure!(
            label < NUM_CLASSES,
            "{}: record {index} has label {label}, outside 0..{NUM_CLASSES}: not a CIFAR-10 batch file",
            path.display()
        );
        labels.push(label);
        images.extend_from_slice(&record[1..]);
    }
    let mut counts = [0usize; NUM_CLASSES as usize];
    for &label in &labels {
        counts[usize::from(label)] += 1;
    }
    let missing: Vec<String> = (0..NUM_CLASSES)
        .filter(|&c| counts[usize::from(c)] == 0)
        .map(|c| c.to_string())
        .collect();
    ensure!(
        missing.is_empty(),
        "{}: no record has label {}: every CIFAR-10 batch file holds all ten classes (about \
         1,000 each); is it damaged or a placeholder?",
        path.display(),
        missing.join(", ")
    );
    Ok((images, labels))
}

/// Reads the batch files `names` of `dir` into one split, recording each file's MD5 in `md5s`
/// (so that the fingerprint needs no second pass over the files).
fn read_split(dir: &Path, names: &[&str], md5s: &mut BTreeMap<String, String>) -> Result<Split> {
    let mut images = Vec::new();
    let mut labels = Vec::new();
    for name in names {
        let path = dir.join(name);
        let bytes = fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
        md5s.insert(name.to_string(), format!("{:x}", Md5::digest(&bytes)));
        let (im, lb) = parse_batch(&path, &bytes)?;
        images.extend(im);
        labels.extend(lb);
    }
    let n = labels.len() as i64;
    Ok(Split {
        images: Tensor::from_slice(&images).view([n, 3, 32, 32]),
        labels: Tensor::from_slice(&labels).to_kind(Kind::Int64),
    })
}

/// The whole dataset on the host, as read from the binary files.
#[derive(Debug)]
pub struct Cifar10 {
    pub train: Split,
    pub test: Split,
    pub fingerprint: Fingerprint,
}

impl Cifar10 {
    /// Reads and checks the six files of `dir`.
    pub fn load(dir: &Path) -> Result<Self> {
        check_usable(dir)?;
        let mut md5s = BTreeMap::new();
        let train = read_split(dir, &TRAIN_FILES, &mut md5s)?;
        let test = read_split(dir, &[TEST_FILE], &mut md5s)?;
        Ok(Self {
            train,
            test,
            fingerprint: fingerprint_of(dir, md5s),
        })
    }
}

/// [`check_dir`], with what to do about a folder that fails it.
pub fn check_usable(dir: &Path) -> Result<()> {
    check_dir(dir).with_context(|| {
        if dir.exists() {
            format!(
                "the CIFAR-10 folder {} is not usable: restore its files, or move it away \
                     and run `runner data fetch --data-dir {0}` to download the original",
                dir.display()
            )
        } else {
            format!(
                "the CIFAR-10 folder is not usable (`runner data fetch --data-dir {}` downloads it)",
                dir.display()
            )
        }
    })
}

pub use spec::Fingerprint;

fn md5_file(path: &Path) -> Result<String> {
    let mut file =
        fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut hasher = Md5::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file
            .read(&mut buf)
            .with_context(|| format!("cannot read {}", path.display()))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(format!("{:x}", hasher.finalize()))
}

/// The provenance record written by `runner data fetch` (and `runner data synthetic`).
#[derive(Debug, Serialize, Deserialize)]
struct ArchiveRecord {
    archive_url: String,
    archive_md5: String,
    files: BTreeMap<String, String>,
    /// Written by `runner data synthetic`: generated images, not CIFAR-10.
    #[serde(default)]
    synthetic: bool,
}

/// The source name of data made by [`write_synthetic`].
pub const SYNTHETIC_SOURCE: &str = "synthetic data (runner data synthetic), not CIFAR-10";

/// Hashes the six files and says whether they are the verified original, a known copy, or neither.
pub fn fingerprint(dir: &Path) -> Result<Fingerprint> {
    let mut files = BTreeMap::new();
    for name in all_files() {
        files.insert(name.to_string(), md5_file(&dir.join(name))?);
    }
    Ok(fingerprint_of(dir, files))
}

/// The fingerprint of the six files of `dir`, given their MD5s by file name.
fn fingerprint_of(dir: &Path, files: BTreeMap<String, String>) -> Fingerprint {
    let listing: String = all_files()
        .map(|name| format!("{}  {name}\n", files[name]))
        .collect();
    let digest = format!("{:x}", Md5::digest(listing.as_bytes()));
    let provenance = read_provenance(dir);
    let matches = provenance.as_ref().filter(|p| p.files == files);
    let original = matches.is_some_and(|p| p.archive_md5 == ARCHIVE_MD5 && !p.synthetic);
    let source = if matches.is_some_and(|p| p.synthetic) {
        SYNTHETIC_SOURCE.to_string()
    } else if original {
        "original CIFAR-10 (archive MD5 verified)".to_string()
    } else if let Some((name, _)) = KNOWN_COPIES.iter().find(|(_, sums)| {
        sums.iter()
            .all(|(file, md5)| files.get(*file).map(String::as_str) == Some(*md5))
    }) {
        name.to_string()
    } else {
        "unverified copy (not fetched from the official archive)".to_string()
    };
    Fingerprint {
        digest,
        files,
        source,
        original,
    }
}

/// Downloads the official archive into `dir`'s parent, checks its MD5 and unpacks it as `dir`.
///
/// Nothing is left half-written: the archive is downloaded to a temporary file and unpacked
/// into a temporary folder beside `dir`, which is renamed into place only when complete.
pub fn fetch(dir: &Path, quiet: bool) -> Result<()> {
    if check_dir(dir).is_ok() {
        let print = fingerprint(dir)?;
        if print.original {
            eprintln!("data: {} already holds {}", dir.display(), print.source);
        } else {
            eprintln!(
                "data: {} already holds {}; to fetch the original, move it away or give \
                 another --data-dir",
                dir.display(),
                print.source
            );
        }
        return Ok(());
    }
    ensure!(
        !dir.exists(),
        "{} exists but is not a complete CIFAR-10 folder; move it away first",
        dir.display()
    );
    let parent = parent_of(dir);
    let made_parent = !parent.exists();
    fs::create_dir_all(&parent).with_context(|| format!("cannot create {}", parent.display()))?;
    let fetched = download_and_install(dir, &parent, quiet);
    if fetched.is_err() && made_parent {
        // leave no empty folder behind (remove_dir refuses a folder with anything in it)
        let _ = fs::remove_dir(&parent);
    }
    fetched
}

/// [`fetch`]'s work once `parent` exists.
fn download_and_install(dir: &Path, parent: &Path, quiet: bool) -> Result<()> {
    let mut archive = tempfile::Builder::new()
        .prefix(".cifar-10-download.")
        .tempfile_in(parent)
        .with_context(|| format!("cannot create a temporary file in {}", parent.display()))?;
    let saved_as = archive.path().to_path_buf();
    download(ARCHIVE_URL, archive.as_file_mut(), &saved_as, quiet)?;
    install_archive(archive.path(), ARCHIVE_MD5, ARCHIVE_URL, dir)
}

fn parent_of(dir: &Path) -> PathBuf {
    match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Downloads `url` into `out` (the file at `saved_as`, named in errors).
///
/// A stalled connection is an error after a minute without data (30 s to connect), not a
/// hang; a stop requested while downloading (inside `runner train`, whose signal handlers
/// are installed) ends it as an interruption, the partial file removed.
fn download(url: &str, out: &mut fs::File, saved_as: &Path, quiet: bool) -> Result<()> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_connect(Some(Duration::from_secs(30)))
        .timeout_per_read(Some(Duration::from_secs(60)))
        .build()
        .into();
    let mut response = agent
        .get(url)
        .call()
        .with_context(|| format!("cannot download {url}"))?;
    let total = response
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let bar = if quiet {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::new(total.unwrap_or(0))
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{msg} {bar:40} {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}",
        )
        .expect("valid template"),
    );
    bar.set_message("cifar-10-binary.tar.gz");
    let mut reader = bar.wrap_read(response.body_mut().as_reader());
    // read and write apart, so that a full disk is not said to be the network's fault
    let mut copied = 0u64;
    let mut buffer = vec![0u8; 1 << 16];
    loop {
        if crate::train::stop_requested() {
            return Err(crate::train::Interrupted { iteration: 0 }.into());
        }
        let n = match reader.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => n,
            Err(err) if err.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(err) => return Err(err).with_context(|| format!("download of {url} broke off")),
        };
        out.write_all(&buffer[..n])
            .with_context(|| format!("cannot write the download to {}", saved_as.display()))?;
        copied += n as u64;
    }
    out.flush()
        .with_context(|| format!("cannot write the download to {}", saved_as.display()))?;
    bar.finish();
    if let Some(total) = total {
        ensure!(
            copied == total,
            "download of {url} stopped at {copied} of {total} bytes"
        );
    }
    Ok(())
}

/// Checks an archive's MD5 and unpacks its `cifar-10-batches-bin/` into `dir`, atomically.
///
/// Members that would land outside the target (absolute paths, `..`), links and anything
/// outside `cifar-10-batches-bin/` are refused.
pub fn install_archive(archive: &Path, expected_md5: &str, url: &str, dir: &Path) -> Result<()> {
    let md5 = md5_file(archive)?;
    ensure!(
        md5 == expected_md5,
        "{} has MD5 {md5}, expected {expected_md5}: the download is corrupt or not the CIFAR-10 binary archive",
        archive.display()
    );
    let parent = parent_of(dir);
    let staging = tempfile::Builder::new()
        .prefix(".cifar-10-unpack.")
        .tempdir_in(&parent)
        .with_context(|| format!("cannot create a temporary folder in {}", parent.display()))?;
    let file =
        fs::File::open(archive).with_context(|| format!("cannot read {}", archive.display()))?;
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(file));
    for entry in tar.entries().context("not a gzip'd tar archive")? {
        let mut entry = entry.context("broken tar archive")?;
        let path = entry.path()?.into_owned();
        let mut components = path.components().filter(|c| *c != Component::CurDir);
        ensure!(
            components.next() == Some(Component::Normal(ARCHIVE_FOLDER.as_ref())),
            "archive member {} is outside {ARCHIVE_FOLDER}/",
            path.display()
        );
        let rest: PathBuf = components.collect();
        if rest.as_os_str().is_empty() {
            continue;
        }
        ensure!(
            rest.components().all(|c| matches!(c, Component::Normal(_))),
            "archive member {} would escape the target folder",
            path.display()
        );
        match entry.header().entry_type() {
            tar::EntryType::Regular => {
                let target = staging.path().join(&rest);
                if let Some(p) = target.parent() {
                    fs::create_dir_all(p)
                        .with_context(|| format!("cannot create {}", p.display()))?;
                }
                entry
                    .unpack(&target)
                    .with_context(|| format!("cannot unpack {}", path.display()))?;
            }
            tar::EntryType::Directory => {
                let folder = staging.path().join(&rest);
                fs::create_dir_all(&folder)
                    .with_context(|| format!("cannot create {}", folder.display()))?
            }
            other => bail!(
                "archive member {} is a {other:?}, not a plain file",
                path.display()
            ),
        }
    }
    check_dir(staging.path()).context("the archive does not hold the six CIFAR-10 batch files")?;
    let mut files = BTreeMap::new();
    for name in all_files() {
        files.insert(name.to_string(), md5_file(&staging.path().join(name))?);
    }
    let provenance = ArchiveRecord {
        archive_url: url.to_string(),
        archive_md5: md5,
        files,
        synthetic: false,
    };
    write_provenance(staging.path(), &provenance)?;
    // Tasks of one array job may fetch at once: the first to move its copy in wins, and the
    // others, finding that same archive installed, use it (their staging folders removed).
    if let Err(err) = fs::rename(staging.path(), dir) {
        let installed = check_dir(dir).is_ok()
            && read_provenance(dir)
                .is_some_and(|found| found.archive_md5 == provenance.archive_md5);
        if !installed {
            return Err(err)
                .with_context(|| format!("cannot move the unpacked data to {}", dir.display()));
        }
        eprintln!(
            "data: CIFAR-10 was unpacked into {} by another process meanwhile; using it",
            dir.display()
        );
        return Ok(());
    }
    let _ = staging.keep(); // moved: nothing left to remove
    eprintln!(
        "data: CIFAR-10 verified (MD5 {expected_md5}) and unpacked into {}",
        dir.display()
    );
    Ok(())
}

/// `dir`'s `PROVENANCE.json`, if it has one that parses.
fn read_provenance(dir: &Path) -> Option<ArchiveRecord> {
    fs::read(dir.join(PROVENANCE_FILE))
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
}

fn write_provenance(dir: &Path, provenance: &ArchiveRecord) -> Result<()> {
    let path = dir.join(PROVENANCE_FILE);
    fs::write(&path, serde_json::to_vec_pretty(provenance)?)
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Writes a learnable synthetic dataset in the official layout into `dir` (atomically), for
/// checking the pipeline where CIFAR-10 is not at hand. Each class has its own colour and a
/// bright square at its own place; pixels carry deterministic noise.
pub fn write_synthetic(dir: &Path) -> Result<()> {
    ensure!(
        !dir.exists(),
        "{} exists; write the synthetic data into a new folder with --data-dir DIR, then \
         train with the same --data-dir",
        dir.display()
    );
    let parent = parent_of(dir);
    fs::create_dir_all(&parent).with_context(|| format!("cannot create {}", parent.display()))?;
    let staging = tempfile::Builder::new()
        .prefix(".synthetic.")
        .tempdir_in(&parent)
        .with_context(|| format!("cannot create a temporary folder in {}", parent.display()))?;
    let mut state: u64 = 0x5EED;
    let mut next = move || {
        // xorshift64*: a fixed, dependency-free stream
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        (state.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 56) as u8
    };
    let mut files = BTreeMap::new();
    for name in all_files() {
        let mut bytes = Vec::with_capacity(RECORD_BYTES * RECORDS_PER_FILE);
        for _ in 0..RECORDS_PER_FILE {
            let label = next() % NUM_CLASSES;
            bytes.push(label);
            let (row, col) = (
                usize::from(label / 5) * 12 + 4,
                usize::from(label % 5) * 5 + 2,
            );
            for channel in 0..3usize {
                let base = 40 + 18 * ((usize::from(label) + channel * 3) % 10);
                for y in 0..32 {
                    for x in 0..32 {
                        let square = (row..row + 8).contains(&y) && (col..col + 6).contains(&x);
                        let value = if square {
                            250
                        } else {
                            base + usize::from(next() % 48)
                        };
                        bytes.push(value.min(255) as u8);
                    }
                }
            }
        }
        files.insert(name.to_string(), format!("{:x}", Md5::digest(&bytes)));
        let path = staging.path().join(name);
        fs::write(&path, bytes).with_context(|| format!("cannot write {}", path.display()))?;
    }
    let provenance = ArchiveRecord {
        archive_url: "none".into(),
        archive_md5: "none".into(),
        files,
        synthetic: true,
    };
    write_provenance(staging.path(), &provenance)?;
    fs::rename(staging.keep(), dir)
        .with_context(|| format!("cannot move the data to {}", dir.display()))?;
    Ok(())
}

#[cfg(test)]
pub mod tests {
    use super::*;

    /// Writes a synthetic dataset in the official layout: `per_file` records per training file
    /// is not allowed by the layout, so every file has 10,000 records of a simple pattern.
    pub fn write_synthetic(dir: &Path) {
        fs::create_dir_all(dir).unwrap();
        for (f, name) in all_files().enumerate() {
            let mut bytes = Vec::with_capacity(RECORD_BYTES * RECORDS_PER_FILE);
            for i in 0..RECORDS_PER_FILE {
                let label = ((i + f) % 10) as u8;
                bytes.push(label);
                bytes.extend((0..IMAGE_BYTES).map(|p| (label as usize * 20 + p % 7) as u8));
            }
            fs::write(dir.join(name), bytes).unwrap();
        }
    }

    #[test]
    fn reads_the_binary_layout() {
        let dir = tempfile::tempdir().unwrap();
        write_synthetic(dir.path());
        let data = Cifar10::load(dir.path()).unwrap();
        assert_eq!(data.train.images.size(), [50_000, 3, 32, 32]);
        assert_eq!(data.test.images.size(), [10_000, 3, 32, 32]);
        // Record 3 of the first file: label 3, red plane starts with pixel bytes 60, 61, ...
        assert_eq!(data.train.labels.int64_value(&[3]), 3);
        assert_eq!(data.train.images.int64_value(&[3, 0, 0, 0]), 60);
        assert_eq!(data.train.images.int64_value(&[3, 0, 0, 1]), 61);
        // The second file starts at record 10,000 with label (0 + 1) % 10.
        assert_eq!(data.train.labels.int64_value(&[10_000]), 1);
        assert!(!data.fingerprint.original);
        assert!(data.fingerprint.source.starts_with("unverified"));
    }

    #[test]
    fn synthetic_data_is_valid_labelled_and_never_taken_for_cifar() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("synthetic");
        super::write_synthetic(&dir).unwrap();
        let data = Cifar10::load(&dir).unwrap();
        assert_eq!(data.fingerprint.source, SYNTHETIC_SOURCE);
        assert!(!data.fingerprint.original);
        // Every class occurs, and the same call makes the same files.
        let counts = data.train.labels.bincount::<tch::Tensor>(None, 10);
        assert!(Vec::<i64>::try_from(&counts)
            .unwrap()
            .iter()
            .all(|&c| c > 4000));
        let again = tmp.path().join("again");
        super::write_synthetic(&again).unwrap();
        assert_eq!(fingerprint(&again).unwrap().digest, data.fingerprint.digest);
        assert!(
            super::write_synthetic(&dir).is_err(),
            "an existing folder is not overwritten"
        );
    }

    #[test]
    fn a_truncated_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        write_synthetic(dir.path());
        let path = dir.path().join("data_batch_3.bin");
        let bytes = fs::read(&path).unwrap();
        fs::write(&path, &bytes[..bytes.len() - 100]).unwrap();
        let err = format!("{:#}", Cifar10::load(dir.path()).unwrap_err());
        assert!(
            err.contains("data_batch_3.bin") && err.contains("truncated"),
            "{err}"
        );
    }

    #[test]
    fn a_label_out_of_range_is_an_error_naming_file_and_record() {
        let dir = tempfile::tempdir().unwrap();
        write_synthetic(dir.path());
        let path = dir.path().join("test_batch.bin");
        let mut bytes = fs::read(&path).unwrap();
        bytes[RECORD_BYTES * 7] = 200;
        fs::write(&path, bytes).unwrap();
        let err = format!("{:#}", Cifar10::load(dir.path()).unwrap_err());
        assert!(
            err.contains("test_batch.bin") && err.contains("record 7") && err.contains("200"),
            "{err}"
        );
    }

    #[test]
    fn a_file_of_one_class_is_an_error_naming_the_missing_ones() {
        let dir = tempfile::tempdir().unwrap();
        write_synthetic(dir.path());
        // the right size, all zeros: every record is an all-black image of class 0
        let path = dir.path().join("test_batch.bin");
        fs::write(&path, vec![0u8; RECORD_BYTES * RECORDS_PER_FILE]).unwrap();
        let err = format!("{:#}", Cifar10::load(dir.path()).unwrap_err());
        assert!(
            err.contains("test_batch.bin") && err.contains("no record has label 1, 2, 3"),
            "{err}"
        );
    }

    #[test]
    fn a_damaged_folder_is_to_be_moved_before_fetching_into_it() {
        let dir = tempfile::tempdir().unwrap();
        write_synthetic(dir.path());
        fs::remove_file(dir.path().join("data_batch_2.bin")).unwrap();
        let err = format!("{:#}", Cifar10::load(dir.path()).unwrap_err());
        let fetch = format!("runner data fetch --data-dir {}", dir.path().display());
        assert!(
            err.contains("move it away") && err.contains(&fetch) && err.contains("data_batch_2"),
            "{err}"
        );
    }

    #[test]
    fn a_mistyped_data_dir_is_an_error_not_a_download() {
        let tmp = tempfile::tempdir().unwrap();
        let typo = tmp.path().join("cifar-10-batchs-bin");
        let err = format!("{:#}", training_dir(Some(&typo), true).unwrap_err());
        for words in [
            typo.display().to_string(),
            "--data-dir".into(),
            "CIFAR10_DIR".into(),
            "runner data fetch".into(),
        ] {
            assert!(err.contains(&words), "{words}: {err}");
        }
        assert!(!typo.exists(), "nothing is created");
        assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0);
    }

    #[test]
    fn a_missing_folder_names_the_fetch_command() {
        let err = format!(
            "{:#}",
            Cifar10::load(Path::new("/nonexistent/cifar")).unwrap_err()
        );
        assert!(
            err.contains("runner data fetch") && err.contains("/nonexistent/cifar"),
            "{err}"
        );
    }

    fn tar_gz(members: &[(&str, &[u8])]) -> tempfile::NamedTempFile {
        let file = tempfile::NamedTempFile::new().unwrap();
        let gz = flate2::write::GzEncoder::new(file.reopen().unwrap(), flate2::Compression::fast());
        let mut builder = tar::Builder::new(gz);
        for (name, data) in members {
            let mut header = tar::Header::new_gnu();
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            header.set_entry_type(tar::EntryType::Regular);
            // Write the name into the header directly, so that even unsafe names reach the reader.
            let bytes = name.as_bytes();
            header.as_old_mut().name[..bytes.len()].copy_from_slice(bytes);
            header.set_cksum();
            builder.append(&header, *data).unwrap();
        }
        builder.into_inner().unwrap().finish().unwrap();
        file
    }

    /// [`tar_gz`] of owned (name, bytes) members.
    fn tar_gz_of(contents: &[(String, Vec<u8>)]) -> tempfile::NamedTempFile {
        let members: Vec<(&str, &[u8])> = contents
            .iter()
            .map(|(n, d)| (n.as_str(), d.as_slice()))
            .collect();
        tar_gz(&members)
    }

    #[test]
    fn archive_install_checks_md5_unpacks_and_records_provenance() {
        let src = tempfile::tempdir().unwrap();
        write_synthetic(src.path());
        let contents: Vec<(String, Vec<u8>)> = all_files()
            .map(|n| {
                (
                    format!("{ARCHIVE_FOLDER}/{n}"),
                    fs::read(src.path().join(n)).unwrap(),
                )
            })
            .collect();
        let archive = tar_gz_of(&contents);
        let md5 = md5_file(archive.path()).unwrap();
        let out = tempfile::tempdir().unwrap();
        let dir = out.path().join("cifar");

        let err = install_archive(archive.path(), "0123", "file://test", &dir)
            .unwrap_err()
            .to_string();
        assert!(err.contains("MD5") && err.contains(&md5), "{err}");
        assert!(!dir.exists());

        install_archive(archive.path(), &md5, "file://test", &dir).unwrap();
        check_dir(&dir).unwrap();
        // Only the target folder remains: no staging folder left behind.
        assert_eq!(fs::read_dir(out.path()).unwrap().count(), 1);
        // Another task of an array job installing the same archive at the same time finds it
        // in place and uses it; another archive is refused; neither leaves a staging folder.
        install_archive(archive.path(), &md5, "file://test", &dir).unwrap();
        assert_eq!(fs::read_dir(out.path()).unwrap().count(), 1);
        let mut other = contents.clone();
        other[0].1[7] ^= 1;
        let other = tar_gz_of(&other);
        let other_md5 = md5_file(other.path()).unwrap();
        let err = format!(
            "{:#}",
            install_archive(other.path(), &other_md5, "file://test", &dir).unwrap_err()
        );
        assert!(err.contains("cannot move the unpacked data"), "{err}");
        assert_eq!(fs::read_dir(out.path()).unwrap().count(), 1);
        // The provenance names this archive; the files are "original" only for the official MD5.
        let print = fingerprint(&dir).unwrap();
        assert!(!print.original);
        let mut provenance: ArchiveRecord =
            serde_json::from_slice(&fs::read(dir.join(PROVENANCE_FILE)).unwrap()).unwrap();
        assert_eq!(provenance.files, print.files);
        provenance.archive_md5 = ARCHIVE_MD5.to_string();
        fs::write(
            dir.join(PROVENANCE_FILE),
            serde_json::to_vec(&provenance).unwrap(),
        )
        .unwrap();
        let print = fingerprint(&dir).unwrap();
        assert!(print.original, "{print:?}");
        // Changing a byte of a file breaks the claim.
        let path = dir.join("test_batch.bin");
        let mut bytes = fs::read(&path).unwrap();
        bytes[5] ^= 1;
        fs::write(&path, bytes).unwrap();
        assert!(!fingerprint(&dir).unwrap().original);
    }

    #[test]
    fn archive_members_escaping_the_target_are_refused() {
        for bad in [
            format!("{ARCHIVE_FOLDER}/../evil.bin"),
            "evil.bin".to_string(),
            "/tmp/evil.bin".to_string(),
        ] {
            let archive = tar_gz(&[(bad.as_str(), b"x")]);
            let md5 = md5_file(archive.path()).unwrap();
            let out = tempfile::tempdir().unwrap();
            let dir = out.path().join("cifar");
            let err = install_archive(archive.path(), &md5, "file://test", &dir)
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("outside") || err.contains("escape"),
                "{bad}: {err}"
            );
            assert!(!dir.exists());
            assert!(!out.path().parent().unwrap().join("evil.bin").exists());
            assert_eq!(
                fs::read_dir(out.path()).unwrap().count(),
                0,
                "staging folder left behind"
            );
        }
    }
}
