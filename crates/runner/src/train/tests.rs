//! Tests of training: resumption, stacking, divergence, damaged records, events, precision.

use std::path::Path;
use std::time::Instant;

use models::NetConfigExt as _;
use spec::{EpochRow, RunDir, Stretch};
use tch::{Kind, Tensor};

use super::*;
use crate::batches::seeded;
use crate::checkpoint::{names, Checkpoint};
use crate::data::{Fingerprint, Split};

const EXPERIMENT: &str = r#"
title = "test"
source = "test"
[model]
depth = 8
[[variants]]
name = "explode"
model = { shortcut = { scaling = { lambda_s = 1e30, lambda_f = 1.0 } } }
[[variants]]
name = "original"
[[variants]]
name = "dropout"
model = { shortcut = { dropout = { ratio = 0.5 } } }
[[variants]]
name = "gated"
model = { shortcut = { exclusive_gating = { gate_bias = -6.0 } } }
[profiles.tiny]
seeds = [0, 1]
protocol = { batch_size = 16, iterations = 24, lr = 0.1, lr_drops = [16], train_subset = 128, test_subset = 64 }
[profiles.gentle]
seeds = [0, 1]
protocol = { batch_size = 16, iterations = 16, lr = 0.01, lr_drops = [8], train_subset = 128, test_subset = 64 }
[profiles.steps]
seeds = [0, 1]
protocol = { batch_size = 32, iterations = 11, lr = 0.05, lr_drops = [6], train_subset = 128, test_subset = 64 }
[profiles.bf16]
seeds = [0, 1]
protocol = { batch_size = 32, iterations = 4, lr = 0.05, lr_drops = [2], train_subset = 128, test_subset = 32, precision = "bf16" }
[profiles.sparse]
seeds = [0, 1]
protocol = { batch_size = 32, iterations = 11, lr = 0.05, lr_drops = [6], train_subset = 128, test_subset = 64, eval_every_epochs = 2 }
"#;

/// Random images whose class shifts the mean, so that there is something to learn.
pub(crate) fn synthetic() -> Cifar10 {
    let split = |n: i64, seed: i64| {
        seeded(seed, || {
            let labels = Tensor::randint(10, [n], (Kind::Int64, Device::Cpu));
            let noise = Tensor::randint(120, [n, 3, 32, 32], (Kind::Int64, Device::Cpu));
            let images = (noise + labels.view([n, 1, 1, 1]) * 12).to_kind(Kind::Uint8);
            Split { images, labels }
        })
    };
    let fingerprint = Fingerprint {
        digest: "synthetic".into(),
        files: Default::default(),
        source: "synthetic".into(),
        original: false,
    };
    Cifar10 {
        train: split(128, 1),
        test: split(64, 2),
        fingerprint,
    }
}

/// Trains the `original` variant; `Err` when stopped after `stop_after_steps` steps.
fn train(
    results: &Path,
    profile: &str,
    max_replicas: usize,
    stop_after_steps: Option<i64>,
) -> Result<()> {
    train_variant(results, profile, "original", max_replicas, stop_after_steps)
}

fn train_variant(
    results: &Path,
    profile: &str,
    variant: &str,
    max_replicas: usize,
    stop_after_steps: Option<i64>,
) -> Result<()> {
    let run = Sweep1 {
        text: EXPERIMENT,
        data: &synthetic(),
        profile,
        variant,
        max_replicas,
        precision: None,
        revision: "test",
        layout: SgdLayout::PerTensor,
    };
    run.train(results, stop_after_steps)
}

/// One variant's seeds 0 and 1 from an experiment file's text, on given data.
struct Sweep1<'a> {
    text: &'a str,
    data: &'a Cifar10,
    profile: &'a str,
    variant: &'a str,
    max_replicas: usize,
    /// `--precision`: instead of the profile's.
    precision: Option<Precision>,
    /// The revision the training binary records.
    revision: &'a str,
    layout: SgdLayout,
}

impl Sweep1<'_> {
    fn train(&self, results: &Path, stop_after_steps: Option<i64>) -> Result<()> {
        let Sweep1 {
            text,
            data,
            profile,
            variant,
            max_replicas,
            precision,
            revision,
            layout,
        } = *self;
        let experiment = Experiment::parse(Path::new("experiments/test.toml"), text)?;
        let profile = experiment.profile(profile).unwrap();
        let variants = experiment
            .select_variants(profile, &[variant.to_string()])
            .unwrap();
        let options = TrainOptions {
            results: results.to_path_buf(),
            device: Device::Cpu,
            max_replicas,
            layout,
            precision,
            quiet: true,
            stop_after_steps,
        };
        let provenance = Provenance {
            git_revision: revision.into(),
            libtorch: "test".into(),
            device: "cpu".into(),
        };
        train_experiment(
            &experiment,
            profile,
            &variants,
            &[0, 1],
            data,
            &provenance,
            &options,
        )
    }
}

fn run(results: &Path, variant: &str, seed: u64) -> RunDir {
    RunDir::new(results, "test", "tiny", variant, seed)
}

fn gentle(results: &Path, variant: &str, seed: u64) -> RunDir {
    RunDir::new(results, "test", "gentle", variant, seed)
}

/// The rows without their timings.
type Numbers = (i64, i64, f64, f64, f64, Option<f64>, Option<f64>);

fn numbers(rows: &[EpochRow]) -> Vec<Numbers> {
    rows.iter()
        .map(|r| {
            (
                r.epoch,
                r.iteration,
                r.lr,
                r.train_loss,
                r.train_error,
                r.test_loss,
                r.test_error,
            )
        })
        .collect()
}

#[test]
fn an_interrupted_run_resumes_to_the_numbers_of_an_uninterrupted_one() {
    let whole = tempfile::tempdir().unwrap();
    train(whole.path(), "tiny", 1, None).unwrap();
    // 8 steps per epoch, 24 in all. Stop inside epoch 2 (after step 11), then inside
    // epoch 3 (after step 19), then let it finish.
    let broken = tempfile::tempdir().unwrap();
    let err = train(broken.path(), "tiny", 1, Some(11)).unwrap_err();
    assert_eq!(
        err.downcast_ref::<Interrupted>().map(|i| i.iteration),
        Some(11),
        "{err:#}"
    );
    let interrupted = run(broken.path(), "original", 0);
    assert!(interrupted.checkpoint_path().exists());
    assert!(interrupted.finished().unwrap().is_none());
    assert_eq!(interrupted.read_epochs().unwrap().len(), 1);
    // The sweep stopped at the request: seed 1 never started, and no lock is left.
    let untouched = run(broken.path(), "original", 1);
    assert!(!untouched.epochs_path().exists());
    assert!(!untouched.dir.join("lock").exists() && !interrupted.dir.join("lock").exists());
    let err = train(broken.path(), "tiny", 1, Some(8)).unwrap_err();
    assert_eq!(
        err.downcast_ref::<Interrupted>().map(|i| i.iteration),
        Some(19)
    );
    assert_eq!(interrupted.read_epochs().unwrap().len(), 2);
    train(broken.path(), "tiny", 1, None).unwrap();
    for seed in [0, 1] {
        let a = run(whole.path(), "original", seed);
        let b = run(broken.path(), "original", seed);
        assert_eq!(
            numbers(&a.read_epochs().unwrap()),
            numbers(&b.read_epochs().unwrap())
        );
        assert_eq!(a.read_epochs().unwrap().len(), 3);
        let (fa, fb) = (
            a.finished().unwrap().unwrap(),
            b.finished().unwrap().unwrap(),
        );
        assert_eq!(fa.final_test_error, fb.final_test_error);
        assert_eq!(fa.final_test_loss, fb.final_test_loss);
        assert!(
            !b.checkpoint_path().exists(),
            "a finished run keeps no checkpoint"
        );
    }
}

#[test]
fn two_stacked_seeds_match_two_lone_runs() {
    // with the dropout shortcut too: each model draws its masks from its own seed
    for variant in ["original", "dropout"] {
        let lone = tempfile::tempdir().unwrap();
        train_variant(lone.path(), "gentle", variant, 1, None).unwrap();
        let stacked = tempfile::tempdir().unwrap();
        train_variant(stacked.path(), "gentle", variant, 2, None).unwrap();
        for seed in [0, 1] {
            let a = gentle(lone.path(), variant, seed).read_epochs().unwrap();
            let b = gentle(stacked.path(), variant, seed).read_epochs().unwrap();
            assert_eq!(a.len(), 2);
            assert_eq!(a.len(), b.len());
            for (ra, rb) in a.iter().zip(&b) {
                // Grouped and lone convolutions sum in different orders, so the numbers
                // agree to float noise, not bit for bit; any real mismatch (other data,
                // augmentation, init or dropout masks) would move them by percents.
                let close = |x: f64, y: f64| (x - y).abs() <= 1e-4 * x.abs().max(1.0);
                assert!(
                    close(ra.train_loss, rb.train_loss),
                    "{variant} seed {seed}: {ra:?} vs {rb:?}"
                );
                assert!(
                    close(ra.test_loss.unwrap(), rb.test_loss.unwrap()),
                    "{variant} seed {seed}: {ra:?} vs {rb:?}"
                );
                assert_eq!(ra.train_error, rb.train_error, "{variant} seed {seed}");
            }
            let record = gentle(stacked.path(), variant, seed)
                .finished()
                .unwrap()
                .unwrap();
            assert_eq!(record.stacked_with, 2);
        }
        // The two seeds are different models.
        let s0 = gentle(lone.path(), variant, 0).read_epochs().unwrap();
        let s1 = gentle(lone.path(), variant, 1).read_epochs().unwrap();
        assert_ne!(s0[0].train_loss, s1[0].train_loss);
    }
}

#[test]
fn divergence_is_recorded_and_the_sweep_goes_on_and_finished_runs_are_skipped() {
    let results = tempfile::tempdir().unwrap();
    let experiment = Experiment::parse(Path::new("experiments/test.toml"), EXPERIMENT).unwrap();
    let profile = experiment.profile("tiny").unwrap();
    let variants = experiment.select_variants(profile, &[]).unwrap();
    let options = TrainOptions {
        results: results.path().to_path_buf(),
        device: Device::Cpu,
        max_replicas: 2,
        layout: SgdLayout::Flat,
        precision: None,
        quiet: true,
        stop_after_steps: None,
    };
    let provenance = Provenance {
        git_revision: "test".into(),
        libtorch: "test".into(),
        device: "cpu".into(),
    };
    let data = synthetic();
    train_experiment(
        &experiment,
        profile,
        &variants,
        &[0, 1],
        &data,
        &provenance,
        &options,
    )
    .unwrap();
    for seed in [0, 1] {
        let exploded = run(results.path(), "explode", seed)
            .finished()
            .unwrap()
            .unwrap();
        assert_eq!(exploded.status, Status::Diverged);
        assert_eq!(exploded.diverged_at_iteration, Some(1));
        // the loss is read once an epoch: it trained to the end of the first, as its last
        // row (and its saved weights) are
        let rows = run(results.path(), "explode", seed).read_epochs().unwrap();
        assert_eq!(rows.len(), 1);
        assert!(rows[0].iteration > 1);
        assert_eq!(exploded.iterations, rows[0].iteration);
        assert_eq!(exploded.final_test_error, None);
        let fine = run(results.path(), "original", seed)
            .finished()
            .unwrap()
            .unwrap();
        assert_ne!(fine.status, Status::Diverged);
        assert!(fine.final_test_error.unwrap() < 100.0);
        assert_eq!(fine.iterations, 24);
        // the network's size, one model's (the two seeds trained stacked)
        let original = variants.iter().find(|v| v.name == "original").unwrap();
        let config = experiment.net_config(original, profile).unwrap();
        let count = config.summary().unwrap().params_total;
        assert_eq!(fine.parameters, Some(count));
        assert_eq!(fine.stacked_with, 2);
    }
    // A second sweep trains nothing: every final.json stays as it was.
    let before = std::fs::read(run(results.path(), "original", 1).final_path()).unwrap();
    let started = Instant::now();
    train_experiment(
        &experiment,
        profile,
        &variants,
        &[0, 1],
        &data,
        &provenance,
        &options,
    )
    .unwrap();
    assert_eq!(
        before,
        std::fs::read(run(results.path(), "original", 1).final_path()).unwrap()
    );
    assert!(started.elapsed().as_secs_f64() < 5.0);
}

/// The trained weights of a finished run, by name.
fn weights(run: &RunDir) -> Vec<(String, Tensor)> {
    let mut named = Tensor::load_multi(run.weights_path()).unwrap();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    named
}

/// Everything a run leaves that must not depend on interruptions: the numbers of
/// epochs.csv, final.json without its timings, and the weights.
fn outcome(run: &RunDir) -> (Vec<Numbers>, serde_json::Value, Vec<(String, Tensor)>) {
    let mut record = serde_json::to_value(run.finished().unwrap().unwrap()).unwrap();
    for timing in ["wall_s", "finished_at_unix_s"] {
        record.as_object_mut().unwrap().remove(timing);
    }
    (numbers(&run.read_epochs().unwrap()), record, weights(run))
}

fn assert_same_outcome(a: &RunDir, b: &RunDir, what: &str) {
    let (rows_a, record_a, weights_a) = outcome(a);
    let (rows_b, record_b, weights_b) = outcome(b);
    assert_eq!(rows_a, rows_b, "{what}: epochs.csv");
    assert_eq!(record_a, record_b, "{what}: final.json");
    assert_eq!(weights_a.len(), weights_b.len());
    for ((name, x), (_, y)) in weights_a.iter().zip(&weights_b) {
        assert!(x.equal(y), "{what}: weights {name} differ");
    }
}

/// Stops a run after every single step in turn (the stop request signals make), resumes
/// it, and compares everything with the uninterrupted run: 4 steps per epoch, 11 in all
/// (the last epoch is short), the lr drop inside epoch 2; evaluation every epoch and every
/// second epoch; lone and stacked seeds.
#[test]
fn a_run_stopped_at_any_step_resumes_to_the_uninterrupted_numbers_and_weights() {
    for (profile, replicas) in [("steps", 1), ("sparse", 1), ("steps", 2)] {
        let whole = tempfile::tempdir().unwrap();
        train(whole.path(), profile, replicas, None).unwrap();
        let at = |results: &Path, seed| RunDir::new(results, "test", profile, "original", seed);
        assert_eq!(at(whole.path(), 0).read_epochs().unwrap().len(), 3);
        for stop in 1..11 {
            let what = format!("{profile}, {replicas} stacked, stopped after step {stop}");
            let broken = tempfile::tempdir().unwrap();
            let err = train(broken.path(), profile, replicas, Some(stop)).unwrap_err();
            assert_eq!(
                err.downcast_ref::<Interrupted>().map(|i| i.iteration),
                Some(stop),
                "{what}: {err:#}"
            );
            let stopped = at(broken.path(), 0);
            let rows = stopped.read_epochs().unwrap();
            assert_eq!(
                rows.len() as i64,
                stop / 4,
                "{what}: rows of whole epochs only"
            );
            train(broken.path(), profile, replicas, None).unwrap();
            for seed in [0, 1] {
                assert_same_outcome(&at(whole.path(), seed), &at(broken.path(), seed), &what);
                assert!(!at(broken.path(), seed).checkpoint_path().exists());
            }
        }
    }
}

/// The flat SGD layout (CUDA's default) keeps its momentum in one buffer: a stacked pair
/// stopped inside an epoch and at an epoch's end resumes to the uninterrupted outcome too.
#[test]
fn a_run_with_the_flat_sgd_layout_resumes_to_the_uninterrupted_outcome() {
    let data = synthetic();
    let sweep = Sweep1 {
        text: EXPERIMENT,
        data: &data,
        profile: "steps",
        variant: "original",
        max_replicas: 2,
        precision: None,
        revision: "test",
        layout: SgdLayout::Flat,
    };
    let whole = tempfile::tempdir().unwrap();
    sweep.train(whole.path(), None).unwrap();
    for stop in [5, 8] {
        let broken = tempfile::tempdir().unwrap();
        sweep.train(broken.path(), Some(stop)).unwrap_err();
        sweep.train(broken.path(), None).unwrap();
        for seed in [0, 1] {
            let at = |results: &Path| RunDir::new(results, "test", "steps", "original", seed);
            assert_same_outcome(
                &at(whole.path()),
                &at(broken.path()),
                &format!("flat, stopped after {stop}"),
            );
        }
    }
}

#[test]
fn a_run_resumed_by_another_build_records_every_revision_that_trained_it() {
    let data = synthetic();
    let by = |revision| Sweep1 {
        text: EXPERIMENT,
        data: &data,
        profile: "tiny",
        variant: "original",
        max_replicas: 1,
        precision: None,
        revision,
        layout: SgdLayout::PerTensor,
    };
    let trained_by = |run: &RunDir| -> Vec<String> {
        let checkpoint = Checkpoint::load(run).unwrap().expect("a checkpoint");
        checkpoint
            .trained_by
            .expect("the checkpoint records its revisions")
    };
    // 24 steps of 8 per epoch; seed 0 is stopped twice by build aaa and once by bbb,
    // then ccc finishes it and trains seed 1 from its start.
    let results = tempfile::tempdir().unwrap();
    let run0 = run(results.path(), "original", 0);
    by("aaa").train(results.path(), Some(5)).unwrap_err();
    by("aaa").train(results.path(), Some(6)).unwrap_err();
    assert_eq!(
        trained_by(&run0),
        ["aaa"],
        "a resume by the same build is no new entry"
    );
    by("bbb").train(results.path(), Some(8)).unwrap_err();
    assert_eq!(trained_by(&run0), ["aaa", "bbb"]);
    by("ccc").train(results.path(), None).unwrap();
    let record = run0.finished().unwrap().unwrap();
    assert_eq!(record.provenance.git_revision, "ccc");
    assert_eq!(record.earlier_revisions, ["aaa", "bbb"]);
    assert_eq!(record.revisions(), "aaa → bbb → ccc");
    let fresh = run(results.path(), "original", 1)
        .finished()
        .unwrap()
        .unwrap();
    assert_eq!(
        (
            fresh.provenance.git_revision.as_str(),
            fresh.earlier_revisions.len()
        ),
        ("ccc", 0)
    );
    let json = std::fs::read_to_string(run(results.path(), "original", 1).final_path()).unwrap();
    assert!(!json.contains("earlier_revisions"), "{json}");

    // A checkpoint of a runner that did not record its revisions: what trained it before
    // is said to be unrecorded, not left out.
    let results = tempfile::tempdir().unwrap();
    let run0 = run(results.path(), "original", 0);
    by("aaa").train(results.path(), Some(5)).unwrap_err();
    let mut tensors = Tensor::load_multi(run0.checkpoint_path()).unwrap();
    tensors.retain(|(n, _)| n != names::META_TRAINED_BY);
    Tensor::save_multi(&tensors, run0.checkpoint_path()).unwrap();
    by("bbb").train(results.path(), None).unwrap();
    let record = run0.finished().unwrap().unwrap();
    assert_eq!(record.revisions(), "unrecorded → bbb");
}

/// A run resumed in another stack size (or on another device or libtorch) lists each
/// stretch's setup in final.json; resumed in the same setup, or never stopped, it lists none.
#[test]
fn a_run_resumed_in_another_setup_records_each_stretch() {
    let stretch = |from, to, stacked_with| Stretch {
        from_iteration: from,
        to_iteration: to,
        device: "cpu".into(),
        libtorch: "test".into(),
        stacked_with,
    };
    // "steps": 11 iterations; stopped at 5 in a stack of 2, then twice alone
    let results = tempfile::tempdir().unwrap();
    train(results.path(), "steps", 2, Some(5)).unwrap_err();
    let seed0 = RunDir::new(results.path(), "test", "steps", "original", 0);
    let seed1 = RunDir::new(results.path(), "test", "steps", "original", 1);
    let checkpoint = Checkpoint::load(&seed0).unwrap().unwrap();
    assert_eq!(checkpoint.trained_in, Some(vec![stretch(0, 5, 2)]));
    train(results.path(), "steps", 1, Some(2)).unwrap_err(); // seed 0 to 7
    train(results.path(), "steps", 1, None).unwrap();
    let record = seed0.finished().unwrap().unwrap();
    assert_eq!(record.stretches, [stretch(0, 5, 2), stretch(5, 11, 1)]);
    assert_eq!(record.stacked_with, 1);
    let record = seed1.finished().unwrap().unwrap();
    assert_eq!(record.stretches, [stretch(0, 5, 2), stretch(5, 11, 1)]);

    // stopped and resumed alone: one setup, nothing listed
    let results = tempfile::tempdir().unwrap();
    train(results.path(), "steps", 1, Some(5)).unwrap_err();
    train(results.path(), "steps", 1, None).unwrap();
    let seed0 = RunDir::new(results.path(), "test", "steps", "original", 0);
    assert!(seed0.finished().unwrap().unwrap().stretches.is_empty());
    let json = std::fs::read_to_string(seed0.final_path()).unwrap();
    assert!(!json.contains("stretches"), "{json}");

    // a checkpoint of a runner that did not record them: that stretch is said unrecorded
    let results = tempfile::tempdir().unwrap();
    train(results.path(), "steps", 1, Some(5)).unwrap_err();
    let seed0 = RunDir::new(results.path(), "test", "steps", "original", 0);
    let mut tensors = Tensor::load_multi(seed0.checkpoint_path()).unwrap();
    tensors.retain(|(n, _)| n != names::META_TRAINED_IN);
    Tensor::save_multi(&tensors, seed0.checkpoint_path()).unwrap();
    train(results.path(), "steps", 1, None).unwrap();
    let record = seed0.finished().unwrap().unwrap();
    assert_eq!(
        record.stretches,
        [Stretch::unrecorded(5), stretch(5, 11, 1)]
    );
}

#[test]
fn a_resume_under_another_protocol_or_data_is_refused_naming_the_differences() {
    let data = synthetic();
    let sweep = |text, data| Sweep1 {
        text,
        data,
        profile: "steps",
        variant: "original",
        max_replicas: 1,
        precision: None,
        revision: "test",
        layout: SgdLayout::PerTensor,
    };
    let results = tempfile::tempdir().unwrap();
    sweep(EXPERIMENT, &data)
        .train(results.path(), Some(5))
        .unwrap_err();
    let stopped = RunDir::new(results.path(), "test", "steps", "original", 0);
    let config_before = std::fs::read(stopped.config_path()).unwrap();
    let changed = EXPERIMENT.replace(
        "iterations = 11, lr = 0.05, lr_drops = [6], train_subset = 128, test_subset = 64 }",
        "iterations = 11, lr = 0.07, lr_drops = [6], train_subset = 128, test_subset = 64 }",
    );
    assert_ne!(changed, EXPERIMENT);
    let err = format!(
        "{:#}",
        sweep(&changed, &data)
            .train(results.path(), None)
            .unwrap_err()
    );
    assert!(err.contains("protocol.lr: 0.05 → 0.07"), "{err}");
    assert!(
        err.contains(&format!("delete {}", stopped.dir.display())),
        "{err}"
    );
    assert!(
        !err.contains("protocol.iterations"),
        "only what differs: {err}"
    );
    // nothing was trained or rewritten
    assert_eq!(std::fs::read(stopped.config_path()).unwrap(), config_before);
    assert!(stopped.finished().unwrap().is_none());
    let mut other = synthetic();
    other.fingerprint.digest = "other".into();
    let err = format!(
        "{:#}",
        sweep(EXPERIMENT, &other)
            .train(results.path(), None)
            .unwrap_err()
    );
    assert!(err.contains("data: \"synthetic\" → \"other\""), "{err}");
    // the same setup resumes
    sweep(EXPERIMENT, &data)
        .train(results.path(), None)
        .unwrap();
    assert!(stopped.finished().unwrap().is_some());
}

/// BN–ReLU fused and separate round differently: a run keeps the way it started with, and
/// records it. A checkpoint of a runner that did not record it resumes.
#[test]
fn a_resume_with_the_other_bn_relu_is_refused_and_the_record_says_which_trained_it() {
    let results = tempfile::tempdir().unwrap();
    train(results.path(), "steps", 1, Some(5)).unwrap_err();
    let stopped = RunDir::new(results.path(), "test", "steps", "original", 0);
    let now = models::fused::bn_relu_on(Device::Cpu);
    let other = match now {
        spec::BnRelu::Fused => spec::BnRelu::Separate,
        spec::BnRelu::Separate => spec::BnRelu::Fused,
    };
    let rewrite = |bn_relu: Option<spec::BnRelu>| {
        let mut tensors = Tensor::load_multi(stopped.checkpoint_path()).unwrap();
        for (name, tensor) in &mut tensors {
            if name == names::META_TRAINED_WITH {
                let mut with: serde_json::Value =
                    serde_json::from_slice(&Vec::<u8>::try_from(&*tensor).unwrap()).unwrap();
                assert!(with.get("bn_relu").is_some(), "recorded: {with}");
                match bn_relu {
                    Some(b) => with["bn_relu"] = serde_json::to_value(b).unwrap(),
                    None => {
                        with.as_object_mut().unwrap().remove("bn_relu");
                    }
                }
                let bytes = serde_json::to_vec(&with).unwrap();
                *tensor = Tensor::from_slice(&bytes).to_kind(Kind::Uint8);
            }
        }
        Tensor::save_multi(&tensors, stopped.checkpoint_path()).unwrap();
    };
    let checkpoint = Checkpoint::load(&stopped).unwrap().unwrap();
    assert_eq!(checkpoint.trained_with.unwrap().bn_relu, Some(now));
    rewrite(Some(other));
    let err = format!("{:#}", train(results.path(), "steps", 1, None).unwrap_err());
    let said = |b: spec::BnRelu| serde_json::to_string(&b).unwrap();
    assert!(
        err.contains(&format!("bn_relu: {} → {}", said(other), said(now))),
        "{err}"
    );
    assert!(err.contains("--bn-relu"), "{err}");
    assert!(stopped.finished().unwrap().is_none());
    // unrecorded: resumes, and the record says how the finishing runner trained
    rewrite(None);
    train(results.path(), "steps", 1, None).unwrap();
    let record = stopped.finished().unwrap().unwrap();
    assert_eq!(record.bn_relu, Some(now));
}

#[test]
fn a_checkpoint_without_its_rows_is_left_out_and_the_sweep_goes_on() {
    let results = tempfile::tempdir().unwrap();
    train(results.path(), "steps", 1, Some(6)).unwrap_err();
    let stopped = RunDir::new(results.path(), "test", "steps", "original", 0);
    std::fs::remove_file(stopped.epochs_path()).unwrap();
    let err = format!("{:#}", train(results.path(), "steps", 1, None).unwrap_err());
    assert!(err.contains("1 run(s) left out"), "{err}");
    // seed 0 is not finished (let alone `ok`), seed 1 trained regardless
    assert!(stopped.finished().unwrap().is_none());
    assert!(stopped.checkpoint_path().exists());
    let other = RunDir::new(results.path(), "test", "steps", "original", 1);
    assert!(other.finished().unwrap().is_some());
}

/// A checkpoint that reads but does not fit the network (a build with another network or
/// optimizer state wrote it) leaves its run out, untouched; its stack-mate trains on, and a
/// lone run's checkpoint that lacks the shared optimizer state is refused too, not a panic.
#[test]
fn a_checkpoint_that_does_not_fit_the_network_is_left_out_and_the_others_train() {
    let results = tempfile::tempdir().unwrap();
    train(results.path(), "steps", 2, Some(5)).unwrap_err(); // seeds 0 and 1 stacked
    let seed0 = RunDir::new(results.path(), "test", "steps", "original", 0);
    let seed1 = RunDir::new(results.path(), "test", "steps", "original", 1);
    type Named = Vec<(String, Tensor)>;
    let tamper = |run: &RunDir, edit: &dyn Fn(&mut Named)| {
        let mut tensors = Tensor::load_multi(run.checkpoint_path()).unwrap();
        edit(&mut tensors);
        Tensor::save_multi(&tensors, run.checkpoint_path()).unwrap();
        std::fs::read(run.checkpoint_path()).unwrap()
    };
    // seed 0: one weight of another shape (one more output channel)
    let misshapen = tamper(&seed0, &|tensors| {
        let (_, t) = tensors
            .iter_mut()
            .find(|(n, t)| n.starts_with(names::MODEL) && t.dim() == 4)
            .unwrap();
        let mut size = t.size();
        size[0] += 1;
        *t = Tensor::zeros(size.as_slice(), (t.kind(), t.device()));
    });
    let err = format!("{:#}", train(results.path(), "steps", 2, None).unwrap_err());
    assert!(err.contains("1 run(s) left out"), "{err}");
    assert!(seed0.finished().unwrap().is_none());
    assert_eq!(std::fs::read(seed0.checkpoint_path()).unwrap(), misshapen);
    assert!(
        seed1.finished().unwrap().is_some(),
        "its stack-mate trained on"
    );

    // seed 0 alone, without the optimizer's shared step marker
    let missing = tamper(&seed0, &|tensors| {
        tensors.retain(|(n, _)| n != names::MOMENTUM_STARTED);
        for (name, t) in tensors.iter_mut() {
            if name.starts_with(names::MODEL) && t.dim() == 4 {
                let mut size = t.size();
                if size[0] % 2 == 1 {
                    size[0] -= 1; // back to this network's shape
                    *t = Tensor::zeros(size.as_slice(), (t.kind(), t.device()));
                }
            }
        }
    });
    let err = format!("{:#}", train(results.path(), "steps", 2, None).unwrap_err());
    assert!(err.contains("1 run(s) left out"), "{err}");
    assert_eq!(std::fs::read(seed0.checkpoint_path()).unwrap(), missing);
    assert!(seed0.finished().unwrap().is_none());
}

#[test]
fn damaged_records_of_a_finished_run_are_left_out_not_retrained() {
    let results = tempfile::tempdir().unwrap();
    train(results.path(), "steps", 1, None).unwrap();
    let seed0 = RunDir::new(results.path(), "test", "steps", "original", 0);
    let seed1 = RunDir::new(results.path(), "test", "steps", "original", 1);
    let final0 = std::fs::read(seed0.final_path()).unwrap();
    std::fs::write(seed0.epochs_path(), "epoch,iteration\n1,oops\n").unwrap();
    std::fs::write(seed1.final_path(), "{ not json").unwrap();
    let err = format!("{:#}", train(results.path(), "steps", 1, None).unwrap_err());
    assert!(err.contains("2 run(s) left out"), "{err}");
    // neither was trained again: the damaged files are as they were
    assert_eq!(std::fs::read(seed0.final_path()).unwrap(), final0);
    assert_eq!(std::fs::read(seed1.final_path()).unwrap(), b"{ not json");
    assert!(!seed0.checkpoint_path().exists() && !seed1.checkpoint_path().exists());
}

/// final.json records model.ot's size and SHA-256; weights cut short afterwards make the
/// run damaged (left out, not retrained, one line naming model.ot); absent weights (a
/// fresh clone) leave it finished.
#[test]
fn weights_damaged_after_the_run_finished_are_caught_and_absent_ones_are_not_damage() {
    let results = tempfile::tempdir().unwrap();
    train(results.path(), "steps", 1, None).unwrap();
    let seed0 = RunDir::new(results.path(), "test", "steps", "original", 0);
    let seed1 = RunDir::new(results.path(), "test", "steps", "original", 1);
    let record = seed0.finished().unwrap().unwrap();
    let digest = record.weights.expect("final.json records the weights");
    assert_eq!(
        digest.bytes,
        std::fs::metadata(seed0.weights_path()).unwrap().len()
    );
    assert_eq!(digest.sha256.len(), 64);
    let bytes = std::fs::read(seed0.weights_path()).unwrap();
    std::fs::write(seed0.weights_path(), &bytes[..100]).unwrap();
    std::fs::remove_file(seed1.weights_path()).unwrap();
    let err = format!("{:#}", train(results.path(), "steps", 1, None).unwrap_err());
    assert!(err.contains("1 run(s) left out"), "{err}");
    // the line the sweep printed for it
    let damage = seed0.state().unwrap_err().to_string();
    assert!(
        damage.contains("model.ot is damaged: 100 bytes"),
        "{damage}"
    );
    // not trained again: the cut file is as it was
    assert_eq!(std::fs::read(seed0.weights_path()).unwrap().len(), 100);
    assert!(matches!(
        seed1.state().unwrap(),
        spec::layout::RunState::Finished { .. }
    ));
}

#[test]
fn subsets_larger_than_the_data_are_refused() {
    let steps = "[profiles.steps]\nseeds = [0, 1]\nprotocol = { batch_size = 32, iterations = 11, \
                     lr = 0.05, lr_drops = [6], train_subset = 128,";
    let text = EXPERIMENT.replace(steps, &steps.replace("128", "129"));
    assert_ne!(text, EXPERIMENT);
    let data = synthetic();
    let sweep = Sweep1 {
        text: &text,
        data: &data,
        profile: "steps",
        variant: "original",
        max_replicas: 1,
        precision: None,
        revision: "test",
        layout: SgdLayout::PerTensor,
    };
    let results = tempfile::tempdir().unwrap();
    let err = format!("{:#}", sweep.train(results.path(), None).unwrap_err());
    assert!(
        err.contains("train_subset = 129, but the data has only 128"),
        "{err}"
    );
    assert!(err.contains("profile `steps`"), "{err}");
}

/// A gated variant logs its first, middle and last unit's mean gate at every evaluation,
/// in `epochs.csv` and as TensorBoard scalars, the same stacked as alone; other variants
/// log none.
#[test]
fn gated_variants_log_their_gates_at_every_evaluation() {
    let stacked = tempfile::tempdir().unwrap();
    let alone = tempfile::tempdir().unwrap();
    train_variant(stacked.path(), "sparse", "gated", 2, None).unwrap();
    train_variant(alone.path(), "sparse", "gated", 1, None).unwrap();
    train_variant(alone.path(), "sparse", "original", 1, None).unwrap();
    let sigma = 1.0 / (1.0 + 6f64.exp());
    for seed in [0, 1] {
        let run = |dir: &Path, variant| RunDir::new(dir, "test", "sparse", variant, seed);
        let rows = run(stacked.path(), "gated").read_epochs().unwrap();
        // 11 steps of 32 on 128 images: 3 epochs, evaluated after the 2nd and the last
        assert_eq!(rows.len(), 3);
        for row in &rows {
            assert_eq!(row.gates().is_some(), row.test_error.is_some(), "{row:?}");
        }
        let lone = run(alone.path(), "gated").read_epochs().unwrap();
        for (a, b) in rows.iter().zip(&lone) {
            match (a.gates(), b.gates()) {
                (Some(a), Some(b)) => {
                    for (a, b) in a.iter().zip(b) {
                        // b_g = −6 starts the gates nearly closed (σ(−6) ≈ 0.0025, a
                        // little more on average with W_g x added), and 11 steps at
                        // lr ≤ 0.05 leave them so
                        assert!(*a > sigma / 2.0 && *a < 0.05, "{a}, σ(−6) = {sigma}");
                        assert!((a - b).abs() < 1e-4, "stacked {a}, alone {b}");
                    }
                }
                (None, None) => {}
                other => panic!("stacked and alone differ: {other:?}"),
            }
        }
        // the event file holds the same values under gate/*
        let logged: Vec<(i64, f64)> = events(&run(stacked.path(), "gated").dir)
            .into_iter()
            .filter(|(_, tag, _)| tag == "gate/middle_unit")
            .map(|(step, _, value)| (step, value))
            .collect();
        let want: Vec<(i64, f64)> = rows
            .iter()
            .filter_map(|r| Some((r.iteration, r.gate_middle?)))
            .collect();
        assert_eq!(logged.len(), want.len());
        for ((s, v), (t, w)) in logged.iter().zip(&want) {
            assert_eq!(s, t);
            assert!((v - w).abs() < 1e-6, "event {v}, row {w}");
        }
        let plain = run(alone.path(), "original").read_epochs().unwrap();
        assert!(plain.iter().all(|r| r.gates().is_none()));
        assert!(plain.iter().any(|r| r.test_error.is_some()));
    }
}

/// (step, tag, value) of every scalar in `dir`'s event files, as the independent reader
/// (scripts/read-tfevents.py, written from the format's description) finds them.
fn events(dir: &Path) -> Vec<(i64, String, f64)> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/read-tfevents.py");
    let out = std::process::Command::new("python3")
        .arg(script)
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    json["scalars"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["step"].as_i64().unwrap(),
                s["tag"].as_str().unwrap().to_string(),
                s["value"].as_f64().unwrap(),
            )
        })
        .collect()
}

/// Every epoch's scalars, once each, at its iteration: after an uninterrupted run and
/// after stops inside an epoch, at an epoch's end, and a crash that left an event past
/// the checkpoint.
#[test]
fn tensorboard_events_hold_every_epoch_once_also_after_stops_and_resumes() {
    let expected = |run: &RunDir| {
        let mut want = Vec::new();
        for row in run.read_epochs().unwrap() {
            let mut scalars = vec![
                ("train/loss", row.train_loss),
                ("train/error", row.train_error),
                ("train/lr", row.lr),
            ];
            if let (Some(l), Some(e)) = (row.test_loss, row.test_error) {
                scalars.extend([("test/loss", l), ("test/error", e)]);
            }
            want.extend(
                scalars
                    .into_iter()
                    .map(|(t, v)| (row.iteration, t.to_string(), v)),
            );
        }
        want.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
        want
    };
    let check = |run: &RunDir, what: &str| {
        // images/s is a timing: present once per epoch, its value not compared
        let found: Vec<_> = events(&run.dir)
            .into_iter()
            .filter(|(_, tag, _)| tag != "train/images_per_s")
            .collect();
        let want = expected(run);
        assert_eq!(found.len(), want.len(), "{what}: {found:?}");
        for (f, w) in found.iter().zip(&want) {
            assert_eq!((f.0, &f.1), (w.0, &w.1), "{what}");
            assert!(
                (f.2 - w.2).abs() <= 1e-6 * w.2.abs().max(1.0),
                "{what}: {f:?} vs {w:?}"
            );
        }
        let speeds = events(&run.dir)
            .iter()
            .filter(|(_, tag, _)| tag == "train/images_per_s")
            .count();
        assert_eq!(speeds, run.read_epochs().unwrap().len(), "{what}");
    };
    let whole = tempfile::tempdir().unwrap();
    train(whole.path(), "sparse", 1, None).unwrap();
    let at = |results: &Path| RunDir::new(results, "test", "sparse", "original", 0);
    check(&at(whole.path()), "uninterrupted");
    assert_eq!(
        expected(&at(whole.path())).len(),
        3 * 3 + 2 * 2,
        "3 epochs, 2 evaluated"
    );

    // stops inside epoch 2 (step 6) and at the end of epoch 2 (step 8)
    let broken = tempfile::tempdir().unwrap();
    train(broken.path(), "sparse", 1, Some(6)).unwrap_err();
    train(broken.path(), "sparse", 1, Some(2)).unwrap_err();
    train(broken.path(), "sparse", 1, None).unwrap();
    check(&at(broken.path()), "stopped twice");

    // a crash after epoch 2's row and event, before its checkpoint: the resume trains
    // epoch 2 again from the checkpoint of epoch 1 and must not log it twice
    let crashed = tempfile::tempdir().unwrap();
    train(crashed.path(), "sparse", 1, Some(4)).unwrap_err(); // checkpoint after epoch 1
    let run = at(crashed.path());
    let checkpoint = std::fs::read(run.checkpoint_path()).unwrap();
    train(crashed.path(), "sparse", 1, Some(4)).unwrap_err(); // epoch 2: row, event, checkpoint
    std::fs::write(run.checkpoint_path(), checkpoint).unwrap(); // as if killed before it
    train(crashed.path(), "sparse", 1, None).unwrap();
    check(&run, "crashed before a checkpoint");
    assert_eq!(
        numbers(&run.read_epochs().unwrap()),
        numbers(&at(whole.path()).read_epochs().unwrap())
    );

    // the event files are derived from epochs.csv: an interrupted run whose files were
    // deleted gets its earlier epochs back when it resumes
    let lost = tempfile::tempdir().unwrap();
    train(lost.path(), "sparse", 1, Some(6)).unwrap_err();
    let run = at(lost.path());
    let delete_events = |run: &RunDir| {
        for entry in std::fs::read_dir(&run.dir).unwrap() {
            let path = entry.unwrap().path();
            if path.to_string_lossy().contains("tfevents") {
                std::fs::remove_file(path).unwrap();
            }
        }
    };
    delete_events(&run);
    train(lost.path(), "sparse", 1, None).unwrap();
    check(&run, "resumed after its events were deleted");
    // and a finished run gets them back when a sweep skips it, deleted or cut short
    delete_events(&run);
    train(lost.path(), "sparse", 1, None).unwrap();
    check(&run, "finished, events deleted");
    for entry in std::fs::read_dir(&run.dir).unwrap() {
        let path = entry.unwrap().path();
        if path.to_string_lossy().contains("tfevents") {
            let bytes = std::fs::read(&path).unwrap();
            std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
        }
    }
    train(lost.path(), "sparse", 1, None).unwrap();
    check(&run, "finished, events cut in half");
}

/// The precision trained with is in config.toml and final.json: the profile's, or the one
/// `--precision` asked for instead.
#[test]
fn the_precision_of_a_run_is_in_its_records() {
    let data = synthetic();
    // (bf16 is slow on a CPU without bf16 units: one short epoch)
    for (profile, precision, expected) in [
        ("bf16", None, Precision::Bf16),
        ("bf16", Some(Precision::Fp32), Precision::Fp32),
    ] {
        let results = tempfile::tempdir().unwrap();
        let sweep = Sweep1 {
            text: EXPERIMENT,
            data: &data,
            profile,
            variant: "original",
            max_replicas: 2,
            precision,
            revision: "test",
            layout: SgdLayout::PerTensor,
        };
        sweep.train(results.path(), None).unwrap();
        for seed in [0, 1] {
            let run = RunDir::new(results.path(), "test", profile, "original", seed);
            let record = run.finished().unwrap().unwrap();
            assert_eq!(record.precision, expected, "{profile} {precision:?}");
            assert_ne!(record.status, Status::Diverged);
            let config = run.read_config().unwrap().unwrap();
            assert_eq!(config.protocol.precision, expected);
            let text = std::fs::read_to_string(run.config_path()).unwrap();
            let word = format!("precision = \"{}\"", format!("{expected:?}").to_lowercase());
            assert!(text.contains(&word), "{text}");
        }
    }
}

/// The disk fills while a run trains (a tmpfs of 160 KiB; its first checkpoint needs about
/// 600 KB): the sweep stops with an error naming the file and the cause, and leaves neither
/// a temporary file nor the lock behind. Needs a tmpfs (CI runs as root).
#[test]
fn a_full_disk_stops_the_sweep_with_the_cause_and_leaves_no_lock_or_temporary_file() {
    let disk = match crate::checkpoint::tests::TinyDisk::mount(160) {
        Ok(disk) => disk,
        Err(why) => {
            eprintln!("skipped: cannot mount a tmpfs here ({})", why.trim());
            return;
        }
    };
    let err = format!("{:#}", train(disk.dir.path(), "tiny", 1, None).unwrap_err());
    assert!(err.contains("No space left on device"), "{err}");
    assert!(err.contains("checkpoint.ot"), "{err}");
    let seed = run(disk.dir.path(), "original", 0);
    let names: Vec<String> = std::fs::read_dir(&seed.dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(!names.contains(&"lock".to_string()), "{names:?}");
    assert!(
        !names
            .iter()
            .any(|n| n.starts_with(".tmp") || n.starts_with(".lock")),
        "{names:?}"
    );
    assert!(!seed.checkpoint_path().exists(), "{names:?}");
}
