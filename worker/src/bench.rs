//! `advsweep-worker bench`: images per second of the worker's own training and attack code on
//! synthetic CIFAR-shaped data, so that it runs anywhere the binary and its libtorch are (no
//! coordinator, no data files, no Python).
//!
//! Every measurement goes through the code paths runs use: [`crate::train::train`] with the
//! sweep defaults (SGD, learning rate 0.01, momentum 0.9, weight decay 5e-4, constant schedule,
//! no augmentation) and the defense presets of the catalogue (`advsweep_core::catalogue`), and
//! [`crate::evaluate::evaluate_cell`] on the [`Defended`] wrapper with the `pgd-linf` preset:
//! * `standard`: plain training;
//! * `at-fgsm`: every batch replaced by FGSM ℓ∞ at ε = 8/255 (step ε, no random start), crafted
//!   against the current weights in training mode (`at-fgsm`);
//! * `at-pgd`: the same with PGD-10 ℓ∞ (step 2.5 ε / 10, random start; `at-pgd-linf`);
//! * `pgd10-eval`: an evaluation cell, PGD-10 ℓ∞ at ε = 8/255 (clean pass, attack, attacked
//!   pass, perturbation norms), on a freshly initialized model in eval mode.
//!
//! Training throughput is [`EpochMetrics::images_per_second`] (the epoch's training loop,
//! without the per-epoch clean evaluation); evaluation throughput is
//! [`CellResult::images_per_second`]. Each measurement starts with one untimed warm-up pass
//! over at most two batches (kernel selection, allocator caches, cuDNN autotuning), then
//! times `repeats` passes over `images` images and reports the median.
//!
//! Beside wall-clock throughput it reports images per CPU-second of the process (user +
//! system time of all its threads, from `/proc/self/stat`; a training repeat's also covers the
//! previous epoch's small clean evaluation): on a machine shared with other work, with one
//! thread, that figure moves much less than wall-clock time does.
//!
//! `bench/compute.sh` runs this next to the same computations in PyTorch eager
//! (`bench/compute_reference.py`).

use std::fmt::Write as _;
use std::sync::atomic::AtomicBool;

use advsweep_core::catalogue::{defaults, presets};
use advsweep_core::{
    Attack, CellResult, Defense, EpochMetrics, EpsilonSpace, Precision, TrainingMethod,
    TrainingSpec,
};
use tch::Device;

use crate::attacks::Budget;
use crate::data::{Dataset, synthetic};
use crate::defended::Defended;
use crate::evaluate::{CleanPredictions, evaluate_cell};
use crate::models;
use crate::rng::Rng;
use crate::train::{TrainConfig, train};

/// Models the benchmark knows: `all` is the two the targets name (BasicNet and
/// ResNet-18); the seed's other families can be measured one at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BenchModel {
    Basic,
    Resnet18,
    #[value(name = "wrn-16-4")]
    Wrn16x4,
    Vgg11,
    Vgg16,
    All,
}

impl BenchModel {
    fn names(self) -> &'static [&'static str] {
        match self {
            BenchModel::Basic => &["basic"],
            BenchModel::Resnet18 => &["resnet18"],
            BenchModel::Wrn16x4 => &["wrn-16-4"],
            BenchModel::Vgg11 => &["vgg11"],
            BenchModel::Vgg16 => &["vgg16"],
            BenchModel::All => &["basic", "resnet18"],
        }
    }
}

/// Computations the benchmark knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BenchMode {
    Standard,
    AtFgsm,
    AtPgd,
    Pgd10Eval,
    All,
}

impl BenchMode {
    const EACH: [BenchMode; 4] = [
        BenchMode::Standard,
        BenchMode::AtFgsm,
        BenchMode::AtPgd,
        BenchMode::Pgd10Eval,
    ];

    fn each(self) -> Vec<BenchMode> {
        match self {
            BenchMode::All => BenchMode::EACH.to_vec(),
            one => vec![one],
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            BenchMode::Standard => "standard",
            BenchMode::AtFgsm => "at-fgsm",
            BenchMode::AtPgd => "at-pgd",
            BenchMode::Pgd10Eval => "pgd10-eval",
            BenchMode::All => "all",
        }
    }

    fn is_training(self) -> bool {
        !matches!(self, BenchMode::Pgd10Eval)
    }
}

/// ε of every adversarial computation (pixel space).
pub const EPSILON: f64 = 8.0 / 255.0;
/// Seed of the synthetic data and of the weights.
const SEED: u64 = 0;
/// Evaluation images of the training data sets (the per-epoch clean accuracy, untimed).
const TRAINING_TEST_IMAGES: usize = 64;
/// The sweep defaults: training and evaluation batch sizes.
pub const TRAIN_BATCH: u32 = defaults::BATCH_SIZE;
pub const EVAL_BATCH: u32 = defaults::EVAL_BATCH_SIZE;

/// The `pgd-linf` preset: 10 steps of 2.5 ε / 10, random start, one restart.
pub fn pgd10() -> Attack {
    presets::PGD_LINF
}

/// The `fgsm` preset: one step of ε, no random start.
pub fn fgsm() -> Attack {
    presets::FGSM
}

/// The catalogue's defense preset of a mode (`at-fgsm`, `at-pgd-linf`; `standard`).
fn defense_preset(mode: BenchMode) -> &'static str {
    match mode {
        BenchMode::AtFgsm => "at-fgsm",
        BenchMode::AtPgd => "at-pgd-linf",
        _ => "standard",
    }
}

/// The training method of a training mode: its defense preset with ε = 8/255 (all of every
/// batch adversarial).
fn method(mode: BenchMode) -> TrainingMethod {
    presets::defense_preset(defense_preset(mode))
        .map_or(TrainingMethod::Standard, |d| d.build(EPSILON).0.method)
}

/// The sweep file's `[training]` defaults with one epoch per timed repeat.
fn training_spec(batch_size: u32, epochs: u32, precision: Precision) -> TrainingSpec {
    TrainingSpec {
        precision,
        ..defaults::training(epochs, batch_size)
    }
}

/// Images per timed repeat when `--images` is not given: a few seconds each on two CPU cores,
/// or on one GPU.
pub fn default_images(model: &str, mode: BenchMode, device: Device) -> u32 {
    let cuda = device.is_cuda();
    match (model, mode, cuda) {
        ("basic", BenchMode::Standard, false) => 10_240,
        ("basic", BenchMode::AtFgsm, false) => 5_120,
        ("basic", BenchMode::AtPgd, false) => 1_280,
        ("basic", _, false) => 1_000,
        (_, BenchMode::Standard, false) => 256,
        (_, BenchMode::AtFgsm, false) => 128,
        (_, BenchMode::AtPgd, false) => 128,
        (_, _, false) => 50,
        ("basic", BenchMode::Standard, true) => 51_200,
        ("basic", BenchMode::AtFgsm, true) => 25_600,
        ("basic", BenchMode::AtPgd, true) => 12_800,
        ("basic", _, true) => 10_000,
        (_, BenchMode::Standard, true) => 12_800,
        (_, BenchMode::AtFgsm, true) => 6_400,
        (_, BenchMode::AtPgd, true) => 2_560,
        (_, _, true) => 2_000,
    }
}

/// One (model, mode) measurement.
#[derive(Debug, Clone, PartialEq)]
pub struct Measurement {
    pub model: &'static str,
    pub mode: BenchMode,
    pub batch_size: u32,
    pub images: u32,
    /// Images per second of each timed repeat.
    pub runs: Vec<f64>,
    /// Images per CPU-second of each timed repeat (empty where `/proc` is unavailable).
    pub cpu_runs: Vec<f64>,
}

impl Measurement {
    pub fn median(&self) -> f64 {
        median(&self.runs)
    }
}

/// CPU time used so far by this process (all threads, user + system), in seconds, from
/// `/proc/self/stat` (clock ticks of 1/100 s, Linux's `USER_HZ`); `None` without `/proc`.
pub fn process_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name may contain spaces; the fields after it are space-separated.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

/// Images per CPU-second between two readings (`None` when either is missing or no time
/// passed).
fn per_cpu_second(images: u32, before: Option<f64>, after: Option<f64>) -> Option<f64> {
    let spent = after? - before?;
    (spent > 0.0).then(|| f64::from(images) / spent)
}

/// The median (mean of the two middle values for an even count; 0 for none).
pub fn median(values: &[f64]) -> f64 {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// Everything one `bench` invocation measured.
/// `advsweep-worker bench`: which computations, how large, how often (the subcommand's flags,
/// kept here so that the CLI depends on the benchmark and not the other way round).
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Model(s) to measure: `all` is BasicNet and ResNet-18; the other families one at a time.
    #[arg(long, value_enum, default_value_t = BenchModel::All)]
    pub model: BenchModel,

    /// Computation(s) to measure: standard training, FGSM or PGD-10 adversarial training
    /// (the at-fgsm / at-pgd-linf presets at ε = 8/255), or PGD-10 ℓ∞ evaluation.
    #[arg(long, value_enum, default_value_t = BenchMode::All)]
    pub mode: BenchMode,

    /// Batch size [default: 128 for training, 500 for evaluation, the sweep defaults].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub batch_size: Option<u32>,

    /// Images per timed repeat [default: depends on model, mode and device].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub images: Option<u32>,

    /// Timed repeats after one warm-up pass; the median is reported.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    pub repeats: u32,

    /// Arithmetic of the training modes: fp32, or bf16 autocast (the sweep file's
    /// `[training] precision`); PGD evaluation is always fp32.
    #[arg(long, default_value = "fp32", value_parser = advsweep_core::Precision::from_name)]
    pub precision: advsweep_core::Precision,

    /// Print one JSON document on stdout instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub device: String,
    /// Of the training modes (evaluation is always fp32).
    pub precision: Precision,
    pub threads: usize,
    pub repeats: u32,
    pub measurements: Vec<Measurement>,
}

/// Runs the benchmark `args` asks for on `device` with `threads` intra-op threads (already
/// set by the caller).
pub fn run(args: &BenchArgs, device: Device, threads: usize) -> anyhow::Result<Report> {
    let cancel = AtomicBool::new(false);
    let mut measurements = Vec::new();
    for &model in args.model.names() {
        for mode in args.mode.each() {
            let batch_size = args.batch_size.unwrap_or(if mode.is_training() {
                TRAIN_BATCH
            } else {
                EVAL_BATCH
            });
            let images = args
                .images
                .unwrap_or_else(|| default_images(model, mode, device));
            let (runs, cpu_runs) = if mode.is_training() {
                training(
                    model,
                    mode,
                    device,
                    batch_size,
                    images,
                    args.repeats,
                    args.precision,
                    &cancel,
                )?
            } else {
                evaluation(model, device, batch_size, images, args.repeats, &cancel)?
            };
            let m = Measurement {
                model,
                mode,
                batch_size,
                images,
                runs,
                cpu_runs,
            };
            tracing::info!(
                model,
                mode = mode.name(),
                images_per_second = format_args!("{:.1}", m.median()),
                "measured"
            );
            measurements.push(m);
        }
    }
    Ok(Report {
        device: crate::device::label(device),
        precision: args.precision,
        threads,
        repeats: args.repeats,
        measurements,
    })
}

/// Synthetic data with `train` training and `test` evaluation images on `device`.
fn synthetic_data(train: u32, test: usize, device: Device) -> anyhow::Result<Dataset> {
    let (train_split, test_split) = synthetic::generate(SEED, train as usize, test)?;
    Dataset::from_host(train_split, test_split, "bench".into(), device)
}

/// Images per second and per CPU-second of `repeats` training epochs over `images` images,
/// after a warm-up epoch over at most two batches.
#[allow(clippy::too_many_arguments)] // one measurement's settings, each a bench flag
fn training(
    model: &str,
    mode: BenchMode,
    device: Device,
    batch_size: u32,
    images: u32,
    repeats: u32,
    precision: Precision,
    cancel: &AtomicBool,
) -> anyhow::Result<(Vec<f64>, Vec<f64>)> {
    let warm_up = synthetic_data(images.min(2 * batch_size), TRAINING_TEST_IMAGES, device)?;
    let data = synthetic_data(images, TRAINING_TEST_IMAGES, device)?;
    tch::manual_seed(SEED as i64);
    let net = models::build(model, device)?;
    let defense = Defense {
        method: method(mode),
    };
    let config = |training| TrainConfig {
        training,
        defense: &defense,
        seed: SEED,
        space: EpsilonSpace::Pixel,
    };
    let spec = training_spec(batch_size, 1, precision);
    train(net.as_ref(), &warm_up, config(&spec), cancel, &mut |_| {
        Ok(())
    })?;
    let spec = training_spec(batch_size, repeats, precision);
    let mut runs = Vec::new();
    let mut cpu_runs = Vec::new();
    let mut cpu = process_cpu_seconds();
    train(
        net.as_ref(),
        &data,
        config(&spec),
        cancel,
        &mut |m: EpochMetrics| {
            runs.push(m.images_per_second);
            let now = process_cpu_seconds();
            cpu_runs.extend(per_cpu_second(images, cpu, now));
            cpu = now;
            Ok(())
        },
    )?;
    Ok((runs, cpu_runs))
}

/// Images per second and per CPU-second of `repeats` PGD-10 evaluation cells over `images`
/// images, after a warm-up cell over at most two batches.
fn evaluation(
    model: &str,
    device: Device,
    batch_size: u32,
    images: u32,
    repeats: u32,
    cancel: &AtomicBool,
) -> anyhow::Result<(Vec<f64>, Vec<f64>)> {
    let warm_up = synthetic_data(1, images.min(2 * batch_size) as usize, device)?;
    let data = synthetic_data(1, images as usize, device)?;
    tch::manual_seed(SEED as i64);
    let net = Defended::new(models::build(model, device)?, None, None)?;
    let attack = pgd10();
    let mut rng = Rng::new(SEED);
    let mut cell = |data: &Dataset| -> anyhow::Result<CellResult> {
        evaluate_cell(
            &net,
            data,
            &attack,
            Budget::pixel(EPSILON),
            batch_size,
            // Fresh each time: every timed pass does its clean pass, as the reference loop does.
            &mut CleanPredictions::default(),
            &mut rng,
            cancel,
        )
    };
    cell(&warm_up)?;
    let mut runs = Vec::new();
    let mut cpu_runs = Vec::new();
    for _ in 0..repeats {
        let before = process_cpu_seconds();
        runs.push(cell(&data)?.images_per_second);
        cpu_runs.extend(per_cpu_second(images, before, process_cpu_seconds()));
    }
    Ok((runs, cpu_runs))
}

impl Report {
    /// One JSON document: the configuration and, per (model, mode), the median and every
    /// repeat's images per second.
    pub fn to_json(&self) -> String {
        let mut out = String::new();
        let _ = write!(
            out,
            "{{\"benchmark\": \"worker-compute\", \"implementation\": \"advsweep-worker\", \
             \"version\": \"{}\", \"device\": \"{}\", \"precision\": \"{}\", \"threads\": {}, \
             \"repeats\": {}, \"results\": [",
            env!("CARGO_PKG_VERSION"),
            json_escape(&self.device),
            self.precision.name(),
            self.threads,
            self.repeats
        );
        for (i, m) in self.measurements.iter().enumerate() {
            let list = |v: &[f64]| -> String {
                v.iter()
                    .map(|r| json_number(*r))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let _ = write!(
                out,
                "{}\n  {{\"model\": \"{}\", \"mode\": \"{}\", \"batch_size\": {}, \"images\": {}, \
                 \"images_per_second\": {}, \"runs\": [{}], \"images_per_cpu_second\": {}, \
                 \"cpu_runs\": [{}]}}",
                if i == 0 { "" } else { "," },
                m.model,
                m.mode.name(),
                m.batch_size,
                m.images,
                json_number(m.median()),
                list(&m.runs),
                json_number(median(&m.cpu_runs)),
                list(&m.cpu_runs)
            );
        }
        out.push_str("\n]}");
        out
    }

    /// A Markdown table for people.
    pub fn to_table(&self) -> String {
        let mut out = format!(
            "advsweep-worker bench: device {}, {} training, {} threads, median of {} repeats\n\n\
             | model    | mode       | batch | images | images/s | repeats |\n\
             |----------|------------|------:|-------:|---------:|---------|\n",
            self.device,
            self.precision.name(),
            self.threads,
            self.repeats
        );
        for m in &self.measurements {
            let runs: Vec<String> = m.runs.iter().map(|r| format!("{r:.1}")).collect();
            let _ = writeln!(
                out,
                "| {:<8} | {:<10} | {:>5} | {:>6} | {:>8.1} | {} |",
                m.model,
                m.mode.name(),
                m.batch_size,
                m.images,
                m.median(),
                runs.join(" ")
            );
        }
        out
    }
}

/// A finite number as JSON (non-finite values, which JSON lacks, as null).
fn json_number(x: f64) -> String {
    if x.is_finite() {
        format!("{x:.3}")
    } else {
        "null".into()
    }
}

fn json_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        assert_eq!(median(&[]), 0.0);
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median(&[f64::NAN, 1.0]), 1.0);
    }

    /// A tiny run of every mode on the CPU: one measurement each, positive throughput, and a
    /// JSON document with one result per (model, mode).
    #[test]
    fn every_mode_runs_and_reports() -> anyhow::Result<()> {
        let args = BenchArgs {
            model: BenchModel::Basic,
            mode: BenchMode::All,
            batch_size: Some(16),
            images: Some(32),
            repeats: 2,
            precision: Precision::Fp32,
            json: true,
        };
        let report = run(&args, Device::Cpu, 1)?;
        assert_eq!(report.measurements.len(), 4);
        for m in &report.measurements {
            assert_eq!(m.runs.len(), 2, "{m:?}");
            assert!(m.median() > 0.0, "{m:?}");
            assert!(m.cpu_runs.iter().all(|&r| r > 0.0), "{m:?}");
        }
        assert!(process_cpu_seconds().is_some_and(|s| s > 0.0));
        let json = report.to_json();
        for mode in ["standard", "at-fgsm", "at-pgd", "pgd10-eval"] {
            assert!(json.contains(&format!("\"mode\": \"{mode}\"")), "{json}");
        }
        assert!(report.to_table().contains("| basic "));
        Ok(())
    }
}
