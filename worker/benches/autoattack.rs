//! AutoAttack throughput against torchattacks (issue 19): images/s of APGD-CE (100 steps) and of
//! the whole standard cascade (APGD-CE → APGD-T → FAB-T → Square with the reference's budgets)
//! on the same trained BasicNet, the same images in one batch, the same threads and device.
//!
//! ```sh
//! source scripts/env.sh
//! cargo bench -p advsweep-worker --bench autoattack -- [--images 200] [--threads 1] \
//!     [--rounds 3] [--attacks apgd-ce,autoattack]
//! ```
//! Prints one JSON object on stdout (progress on stderr). The model is BasicNet trained two
//! epochs on 3,000 synthetic images (the reference test's model, `tests/common`), exported as
//! safetensors with the evaluation images; torchattacks 3.5.1 runs on them through
//! `bench/autoattack_reference.py` with the Python of `scripts/env.sh`. Each round times
//! advsweep (through `evaluate_cell`, what a sweep's cell runs: the clean pass, the attack, the
//! final forward) and then torchattacks (the attack call alone), each after one warm-up; the
//! result holds per attack the medians of both in images/s of wall time and of process CPU
//! time, their ratios (advsweep / torchattacks: above 1 is faster) and every sample. The robust
//! counts are printed too: the two must attack the same problem.

#[path = "../tests/common/mod.rs"]
mod common;

use std::process::Command;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use advsweep_core::catalogue::presets;
use advsweep_core::{EpsilonSpace, TrainingMethod};
use advsweep_worker::attacks::Budget;
use advsweep_worker::checkpoint;
use advsweep_worker::evaluate::{CleanPredictions, evaluate_cell};
use advsweep_worker::rng::Rng;
use common::{EPS8, data, defense, trained, training};
use serde_json::{Value, json};
use tch::Tensor;

struct Options {
    images: i64,
    threads: usize,
    rounds: usize,
    attacks: Vec<String>,
}

fn parse_args() -> Options {
    let mut opts = Options {
        images: 200,
        threads: 1,
        rounds: 3,
        attacks: vec!["apgd-ce".into(), "autoattack".into()],
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| panic!("{arg} needs a value"));
        match arg.as_str() {
            "--images" => opts.images = value().parse().expect("--images: a number"),
            "--threads" => opts.threads = value().parse().expect("--threads: a number"),
            "--rounds" => opts.rounds = value().parse().expect("--rounds: a number"),
            "--attacks" => opts.attacks = value().split(',').map(str::to_owned).collect(),
            "--bench" => {}
            other => panic!("unknown argument {other}"),
        }
    }
    opts
}

/// CPU seconds (user + system) this process has used.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    match xs.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => xs[n / 2],
        n => (xs[n / 2 - 1] + xs[n / 2]) / 2.0,
    }
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// One timed sample: (wall seconds, CPU seconds, robust images).
type Sample = (f64, f64, i64);

fn main() -> anyhow::Result<()> {
    let opts = parse_args();
    advsweep_worker::device::set_threads(opts.threads);
    let d = data(3000, opts.images as usize)?;
    eprintln!("training BasicNet (2 epochs, 3,000 synthetic images)");
    let model = trained(
        &d,
        &defense(TrainingMethod::Standard),
        &training(2),
        1,
        EpsilonSpace::Pixel,
    )?;
    let dir = tempfile::tempdir()?;
    let (x, y) = d.test_batch(0, opts.images)?;
    let ckpt = dir.path().join("model.safetensors");
    let input = dir.path().join("input.safetensors");
    checkpoint::save(model.as_ref(), &ckpt)?;
    Tensor::write_safetensors(&[("x", &x), ("y", &y)], &input)?;
    let python = std::env::var("ADVSWEEP_TORCH_PYTHON")
        .map_err(|_| anyhow::anyhow!("ADVSWEEP_TORCH_PYTHON is unset: source scripts/env.sh"))?;
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../bench/autoattack_reference.py"
    );

    let ours = |name: &str| -> anyhow::Result<Sample> {
        let attack =
            presets::attack(name).ok_or_else(|| anyhow::anyhow!("no built-in attack `{name}`"))?;
        let (wall, cpu) = (Instant::now(), cpu_seconds());
        let result = evaluate_cell(
            model.as_ref(),
            &d,
            attack,
            Budget::pixel(EPS8),
            u32::try_from(opts.images)?,
            &mut CleanPredictions::default(),
            &mut Rng::new(0),
            &AtomicBool::new(false),
        )?;
        let robust = (result.accuracy * opts.images as f64).round() as i64;
        Ok((wall.elapsed().as_secs_f64(), cpu_seconds() - cpu, robust))
    };
    let theirs = |name: &str| -> anyhow::Result<Vec<Sample>> {
        let out = Command::new(&python)
            .arg(script)
            .arg(&ckpt)
            .arg(&input)
            .arg(EPS8.to_string())
            .arg(opts.threads.to_string())
            .arg("1")
            .arg(name)
            .output()?;
        anyhow::ensure!(
            out.status.success(),
            "{script} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|line| {
                let f: Vec<&str> = line.split_whitespace().collect();
                anyhow::ensure!(f.len() == 5, "unexpected line `{line}`");
                Ok((f[2].parse()?, f[3].parse()?, f[4].parse()?))
            })
            .collect()
    };

    let mut results = serde_json::Map::new();
    for name in &opts.attacks {
        eprintln!("{name}: warm-up");
        ours(name)?;
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for round in 1..=opts.rounds {
            // The other order on even rounds, so neither side always runs on a warmer machine.
            if round % 2 == 1 {
                a.push(ours(name)?);
                b.extend(theirs(name)?);
            } else {
                b.extend(theirs(name)?);
                a.push(ours(name)?);
            }
            eprintln!(
                "{name}: round {round}: advsweep {:?}, torchattacks {:?}",
                a.last(),
                b.last()
            );
        }
        let n = opts.images as f64;
        let rate = |s: &[Sample], pick: fn(&Sample) -> f64| {
            median(s.iter().map(|x| n / pick(x)).collect())
        };
        let (ours_wall, theirs_wall) = (rate(&a, |s| s.0), rate(&b, |s| s.0));
        let (ours_cpu, theirs_cpu) = (rate(&a, |s| s.1), rate(&b, |s| s.1));
        let samples = |s: &[Sample]| -> Value {
            s.iter()
                .map(|x| json!({"wall_s": round3(x.0), "cpu_s": round3(x.1), "robust": x.2}))
                .collect()
        };
        results.insert(
            name.clone(),
            json!({
                "advsweep_images_per_s": round3(ours_wall),
                "torchattacks_images_per_s": round3(theirs_wall),
                "ratio": round3(ours_wall / theirs_wall),
                "advsweep_images_per_cpu_s": round3(ours_cpu),
                "torchattacks_images_per_cpu_s": round3(theirs_cpu),
                "cpu_ratio": round3(ours_cpu / theirs_cpu),
                "advsweep": samples(&a),
                "torchattacks": samples(&b),
            }),
        );
    }
    let report = json!({
        "bench": "autoattack",
        "images": opts.images,
        "threads": opts.threads,
        "rounds": opts.rounds,
        "device": "cpu",
        "channels_last": advsweep_worker::models::channels_last_on(
            tch::Device::Cpu,
            advsweep_worker::models::Layout::BASIC
        ),
        "attacks": results,
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}
