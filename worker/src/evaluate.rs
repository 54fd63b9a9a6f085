//! Evaluating one cell: an attack at one ε against a trained model, on the evaluation subset.
//!
//! The model is the *defended* model ([`crate::defended::Defended`] in runs): inference noise
//! and denoiser are part of every forward pass, clean ones included, and attacks are white-box
//! through all of it, with the cell's EOT sample count when the model is randomized (a
//! deterministic model needs one sample; see [`crate::attacks`]). Torch's generator is seeded
//! from the cell's `rng` first, so a randomized model's noise is reproducible too.
//!
//! Per batch of `eval_batch_size`: a clean forward pass (no autograd), the attack (input
//! gradients only, model in eval mode), and a forward pass on the adversarial inputs. A
//! randomized model is sampled once per forward pass, as it would be in deployment. A
//! deterministic model's clean predictions depend on nothing but the model and the data, so
//! the cells of a run share them ([`CleanPredictions`]: the first cell computes them, the
//! others reuse them), and the clean cell (`none`, or ε = 0) needs no second pass. Reported:
//! * `accuracy`: fraction of attacked inputs classified correctly;
//! * `attack_success_rate`: among clean-correct examples, the fraction the attack made wrong
//!   (0 when none was clean-correct);
//! * `mean_linf`, `mean_l2`: per-example perturbation norms averaged over all examples,
//!   always measured in **pixel space** (inputs in [0, 1]), whatever space the budget ε is
//!   measured in — with a normalized-space budget, `mean_linf` can exceed ε (it is at most
//!   ε · max_c std_c);
//! * throughput and wall time of the whole cell.

use std::collections::HashMap;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use advsweep_core::{Attack, CellChunk, CellResult, StageAccuracy};
use anyhow::Context as _;
use tch::{Kind, Tensor};

use crate::attacks::{self, Budget};
use crate::data::Dataset;
use crate::error::check_cancel;
use crate::models::Classifier;
use crate::rng::Rng;
use crate::train::correct_mask;

/// Which evaluation examples one trained, deterministic model classifies correctly, per batch
/// (`(first example, batch size)` → bool mask on the device): computed by the first cell that
/// needs a batch, reused by every later cell of the same run. Make one per trained model and
/// data set and pass it to each of that model's cells; it is never used for a randomized
/// model, whose clean pass draws its own noise in every cell.
#[derive(Debug, Default)]
pub struct CleanPredictions {
    batches: HashMap<(i64, i64), Tensor>,
}

impl CleanPredictions {
    fn hits(
        &mut self,
        model: &dyn Classifier,
        start: i64,
        batch: i64,
        x: &Tensor,
        y: &Tensor,
    ) -> anyhow::Result<Tensor> {
        let compute = || tch::no_grad(|| correct_mask(&model.forward(x, false)?, y));
        if model.randomized() {
            return Ok(compute()?);
        }
        if let Some(hits) = self.batches.get(&(start, batch)) {
            return Ok(hits.shallow_clone());
        }
        let hits = compute()?;
        self.batches.insert((start, batch), hits.shallow_clone());
        Ok(hits)
    }
}

/// How a long cell's evaluation is cut into chunks ([`CellChunk`]): the chunks an earlier
/// attempt stored (the evaluation resumes after the last one), how long to evaluate before
/// reporting the next one, and where to report it. Chunks end at batch boundaries and carry
/// the cell's random stream, so a resumed cell's result equals an uninterrupted one's.
pub struct Chunking<'a> {
    pub done: &'a [CellChunk],
    pub every: Duration,
    pub emit: &'a mut dyn FnMut(CellChunk) -> anyhow::Result<()>,
}

/// Host-side sums over the examples evaluated so far (or up to a chunk boundary).
#[derive(Debug, Clone, Default, PartialEq)]
struct Totals {
    adversarial_correct: i64,
    clean_correct: i64,
    flipped: i64,
    linf_sum: f64,
    l2_sum: f64,
    stage_robust: Vec<i64>,
    seconds: f64,
}

impl Totals {
    fn add(&mut self, c: &CellChunk) {
        self.adversarial_correct += i64::from(c.adversarial_correct);
        self.clean_correct += i64::from(c.clean_correct);
        self.flipped += i64::from(c.flipped);
        self.linf_sum += c.linf_sum;
        self.l2_sum += c.l2_sum;
        if self.stage_robust.is_empty() {
            self.stage_robust = vec![0; c.stage_robust.len()];
        }
        for (sum, &r) in self.stage_robust.iter_mut().zip(&c.stage_robust) {
            *sum += i64::from(r);
        }
        self.seconds += c.seconds;
    }

    /// The chunk `[start, end)` between `self` (at `start`) and `now` (at `end`).
    fn chunk_until(&self, now: &Totals, start: i64, end: i64, rng_state: u64) -> CellChunk {
        let count = |a: i64, b: i64| u32::try_from(a - b).unwrap_or(0);
        CellChunk {
            start: u32::try_from(start).unwrap_or(u32::MAX),
            images: count(end, start),
            adversarial_correct: count(now.adversarial_correct, self.adversarial_correct),
            clean_correct: count(now.clean_correct, self.clean_correct),
            flipped: count(now.flipped, self.flipped),
            linf_sum: (now.linf_sum - self.linf_sum).max(0.0),
            l2_sum: (now.l2_sum - self.l2_sum).max(0.0),
            stage_robust: now
                .stage_robust
                .iter()
                .enumerate()
                .map(|(i, &r)| count(r, self.stage_robust.get(i).copied().unwrap_or(0)))
                .collect(),
            seconds: (now.seconds - self.seconds).max(0.0),
            rng_state,
        }
    }
}

/// Where stored chunks leave a cell of `m` examples in batches of `batch`: the next example,
/// the sums so far and the random stream's state. `Err` names why they cannot be resumed from
/// (not contiguous from 0, not on batch boundaries, past the data, another stage count).
fn resume_point(
    done: &[CellChunk],
    m: i64,
    batch: i64,
    stages: usize,
) -> Result<Option<(i64, Totals, u64)>, String> {
    let Some(last) = done.last() else {
        return Ok(None);
    };
    let mut totals = Totals::default();
    let mut end = 0i64;
    for chunk in done {
        if i64::from(chunk.start) != end {
            return Err(format!(
                "a chunk starts at {} where the last ended at {end}",
                chunk.start
            ));
        }
        end = i64::try_from(chunk.end()).unwrap_or(i64::MAX);
        if end > m || (end % batch != 0 && end != m) {
            return Err(format!(
                "a chunk ends at {end}, not a batch boundary of {m} examples in batches of {batch}"
            ));
        }
        if !chunk.stage_robust.is_empty() && chunk.stage_robust.len() != stages {
            return Err(format!(
                "a chunk has {} stage counts for {stages} stages",
                chunk.stage_robust.len()
            ));
        }
        totals.add(chunk);
    }
    Ok(Some((end, totals, last.rng_state)))
}

/// Evaluates `attack` at `budget`; `rng` seeds the attack's random starts and the model's
/// noise. `clean` holds (or receives) `model`'s clean predictions on `data`'s evaluation
/// examples: the same one for every cell of one trained model, a fresh one otherwise.
#[allow(clippy::too_many_arguments)] // the cell's inputs; a struct would only rename them
pub fn evaluate_cell(
    model: &dyn Classifier,
    data: &Dataset,
    attack: &Attack,
    budget: Budget,
    eval_batch_size: u32,
    clean: &mut CleanPredictions,
    rng: &mut Rng,
    cancel: &AtomicBool,
) -> anyhow::Result<CellResult> {
    let input = CellInput {
        model,
        data,
        attack,
        budget,
        eval_batch_size,
    };
    evaluate_cell_in_chunks(input, clean, rng, cancel, None)
}

/// What a cell evaluates: the model, the data, the attack at its budget, the batch size.
pub struct CellInput<'a> {
    pub model: &'a dyn Classifier,
    pub data: &'a Dataset,
    pub attack: &'a Attack,
    pub budget: Budget,
    pub eval_batch_size: u32,
}

/// [`evaluate_cell`], resuming after `chunking.done` and reporting a [`CellChunk`] through
/// `chunking.emit` whenever `chunking.every` has passed since the last one (never after the
/// last batch: the cell's result follows).
pub fn evaluate_cell_in_chunks(
    input: CellInput<'_>,
    clean: &mut CleanPredictions,
    rng: &mut Rng,
    cancel: &AtomicBool,
    mut chunking: Option<Chunking<'_>>,
) -> anyhow::Result<CellResult> {
    let CellInput {
        model,
        data,
        attack,
        budget,
        eval_batch_size,
    } = input;
    let started = Instant::now();
    let m = data.test_len();
    let batch = i64::from(eval_batch_size.max(1));
    let stages = attack.stages().len();
    let done = chunking.as_ref().map_or(&[][..], |c| c.done);
    let resumed = match resume_point(done, m, batch, if attack.is_cascade() { stages } else { 0 }) {
        Ok(point) => point,
        Err(why) => {
            tracing::warn!(
                why,
                "the cell's stored chunks cannot be resumed from; starting over"
            );
            None
        }
    };
    let (mut start, before) = match resumed {
        Some((next, totals, rng_state)) => {
            tracing::info!(
                images_done = next,
                of = m,
                chunks = done.len(),
                "resuming the cell after its stored chunks"
            );
            *rng = Rng::new(rng_state);
            (next, totals)
        }
        None => (0, Totals::default()),
    };
    // Counts and norm sums stay on the device (`[adv correct, clean correct, flipped]` and
    // `[Σ‖δ‖∞, Σ‖δ‖₂]`) and are read once (or at a chunk's end), so the device never waits
    // for the host between batches.
    let mut counts = Tensor::f_from_slice(&[
        before.adversarial_correct,
        before.clean_correct,
        before.flipped,
    ])?
    .to_device(data.device());
    let mut norms =
        Tensor::f_from_slice(&[before.linf_sum, before.l2_sum])?.to_device(data.device());
    // A cascade's robust images after each stage, summed over the batches.
    let mut stage_robust: Vec<i64> = before.stage_robust.clone();
    // Where the last chunk ended, and the sums there.
    let (mut chunk_start, mut at_chunk_start) = (start, before.clone());
    let mut chunk_clock = Instant::now();
    // AutoAttack's sanity checks, on the first batch this attempt evaluates.
    let mut warnings: Option<Vec<String>> = None;
    let checked = matches!(
        attack,
        Attack::AutoAttack { .. }
            | Attack::Apgd { .. }
            | Attack::Fab { .. }
            | Attack::Square { .. }
    ) && !attacks::leaves_inputs_unchanged(attack, budget);
    while start < m {
        check_cancel(cancel)?;
        if checked && warnings.is_none() {
            // Before the batch's seeding: the checks' own draws change nothing after it.
            let (x, y) = data.test_batch(start, batch)?;
            let found = attacks::checks::sanity(model, &x, &y)?;
            for warning in &found {
                tracing::warn!(warning, "sanity check");
            }
            warnings = Some(found);
        }
        // A randomized model draws its noise from torch's generator, seeded per batch from
        // the cell's stream, so that a chunk boundary leaves nothing behind but `rng`.
        if model.randomized() {
            tch::manual_seed(rng.torch_seed());
        }
        let (x, y) = data.test_batch(start, batch)?;
        let clean_hit = clean.hits(model, start, batch, &x, &y)?;
        // The clean cell of a deterministic model: the inputs are the clean ones, and so are
        // the predictions.
        let unperturbed = attacks::leaves_inputs_unchanged(attack, budget);
        // A cascade's robust flags are its result (each stage's output judged by one forward
        // pass); its per-stage counts are read once per batch (the cascade synchronizes anyway).
        let (x_adv, robust) = if attack.is_cascade() && !unperturbed {
            let result = attacks::cascade(model, &x, &y, attack, budget, batch, rng)
                .with_context(|| format!("batch starting at example {start}"))?;
            if stage_robust.is_empty() {
                stage_robust = vec![0; result.after_stage.len()];
            }
            for (sum, stage) in stage_robust.iter_mut().zip(&result.after_stage) {
                *sum += stage.robust;
            }
            (result.images, Some(result.robust))
        } else {
            let x_adv = attacks::perturb(model, &x, &y, attack, budget, false, rng)
                .with_context(|| format!("batch starting at example {start}"))?;
            (x_adv, None)
        };
        tch::no_grad(|| -> anyhow::Result<()> {
            let adv_hit = if let Some(robust) = robust {
                robust
            } else if unperturbed && !model.randomized() {
                clean_hit.shallow_clone()
            } else {
                correct_mask(&model.forward(&x_adv, false)?, &y)?
            };
            let flipped = clean_hit.f_logical_and(&adv_hit.f_logical_not()?)?;
            let batch_counts = Tensor::f_stack(&[adv_hit, clean_hit, flipped], 0)?
                .f_sum_dim_intlist([1i64].as_slice(), false, Kind::Int64)?;
            let _ = counts.f_add_(&batch_counts)?;
            let _ = norms.f_add_(&attacks::perturbation_norm_sums(&x_adv, &x)?)?;
            Ok(())
        })?;
        start += batch;
        if let Some(chunking) = chunking.as_mut()
            && start < m
            && chunk_clock.elapsed() >= chunking.every
        {
            let now = read_totals(&counts, &norms, &stage_robust, &before, started)?;
            let chunk = at_chunk_start.chunk_until(&now, chunk_start, start, rng.state());
            (chunking.emit)(chunk)?;
            (chunk_start, at_chunk_start) = (start, now);
            chunk_clock = Instant::now();
        }
    }
    let totals = read_totals(&counts, &norms, &stage_robust, &before, started)?; // waits for the last batch
    let seconds = totals.seconds;
    let n = m.max(1) as f64;
    let accuracy = totals.adversarial_correct as f64 / n;
    // Per stage: its robust count, or, when nothing was attacked (ε = 0), the accuracy.
    let stages = attack
        .stages()
        .iter()
        .enumerate()
        .map(|(i, stage)| StageAccuracy {
            name: stage.label(),
            accuracy: totals
                .stage_robust
                .get(i)
                .map_or(accuracy, |&r| r as f64 / n),
        })
        .collect();
    Ok(CellResult {
        accuracy,
        attack_success_rate: if totals.clean_correct > 0 {
            totals.flipped as f64 / totals.clean_correct as f64
        } else {
            0.0
        },
        mean_linf: totals.linf_sum / n,
        mean_l2: totals.l2_sum / n,
        images_per_second: m as f64 / seconds.max(1e-9),
        seconds,
        examples: u32::try_from(m).unwrap_or(u32::MAX),
        stages,
        warnings: warnings.unwrap_or_default(),
    })
}

/// The device-side sums read back (a synchronization), with the wall time of this attempt
/// added to what stored chunks took.
fn read_totals(
    counts: &Tensor,
    norms: &Tensor,
    stage_robust: &[i64],
    before: &Totals,
    started: Instant,
) -> anyhow::Result<Totals> {
    let counts = Vec::<i64>::try_from(counts)?;
    let norms = Vec::<f64>::try_from(norms)?;
    let [adversarial_correct, clean_correct, flipped] = counts[..] else {
        anyhow::bail!("expected three counts, got {counts:?}");
    };
    let [linf_sum, l2_sum] = norms[..] else {
        anyhow::bail!("expected two norm sums, got {norms:?}");
    };
    Ok(Totals {
        adversarial_correct,
        clean_correct,
        flipped,
        linf_sum,
        l2_sum,
        stage_robust: stage_robust.to_vec(),
        seconds: before.seconds + started.elapsed().as_secs_f64(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{Dataset, synthetic};
    use crate::models;
    use crate::train::{TrainConfig, train};
    use advsweep_core::catalogue::{defaults, presets};
    use advsweep_core::{Defense, TrainingSpec};
    use tch::Device;

    /// Trains BasicNet briefly on synthetic data and checks the attack ordering
    /// PGD ≤ FGSM ≤ clean at ε = 8/255.
    fn attack_ordering(seed: u64) -> anyhow::Result<(f64, f64, f64)> {
        let (train_split, test_split) = synthetic::generate(7, 3000, 300)?;
        let data = Dataset::from_host(train_split, test_split, "synthetic".into(), Device::Cpu)?;
        let training = TrainingSpec {
            learning_rate: 0.03,
            eval_batch_size: 150,
            ..defaults::training(2, 32)
        };
        let cancel = AtomicBool::new(false);
        tch::manual_seed(seed as i64);
        let model = models::build("basic", Device::Cpu)?;
        let cfg = TrainConfig {
            training: &training,
            defense: &Defense::standard(),
            seed,
            space: advsweep_core::EpsilonSpace::Pixel,
        };
        train(model.as_ref(), &data, cfg, &cancel, &mut |_| Ok(()))?;

        let eps = 8.0 / 255.0;
        let mut rng = Rng::new(seed);
        let mut clean = CleanPredictions::default();
        let mut eval = |attack: &Attack, e: f64| {
            evaluate_cell(
                model.as_ref(),
                &data,
                attack,
                Budget::pixel(e),
                150,
                &mut clean,
                &mut rng,
                &cancel,
            )
        };
        let clean = eval(&Attack::None, 0.0)?;
        let fgsm = eval(&fgsm(), eps)?;
        let pgd = eval(&presets::PGD_LINF, eps)?;
        assert_eq!(clean.examples, 300);
        assert_eq!(clean.attack_success_rate, 0.0);
        assert!(fgsm.mean_linf <= eps + 1e-6 && fgsm.mean_linf > eps * 0.9);
        assert!(pgd.attack_success_rate > 0.0);
        Ok((clean.accuracy, fgsm.accuracy, pgd.accuracy))
    }

    /// Counts the forward passes of the model it wraps.
    struct Counting {
        inner: Box<dyn Classifier>,
        forwards: std::sync::atomic::AtomicUsize,
    }

    impl Classifier for Counting {
        fn name(&self) -> &str {
            self.inner.name()
        }
        fn weights(&self) -> &dyn crate::models::Weights {
            self.inner.weights()
        }
        fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor, tch::TchError> {
            self.forwards
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            self.inner.forward(x, train)
        }
        fn randomized(&self) -> bool {
            self.inner.randomized()
        }
    }

    /// (result, forward passes) of one cell on 300 synthetic examples in batches of 100.
    fn cell(
        model: &Counting,
        data: &Dataset,
        attack: &Attack,
        epsilon: f64,
        clean: &mut CleanPredictions,
    ) -> anyhow::Result<(CellResult, usize)> {
        let before = model.forwards.load(std::sync::atomic::Ordering::Relaxed);
        let result = evaluate_cell(
            model,
            data,
            attack,
            Budget::pixel(epsilon),
            100,
            clean,
            &mut Rng::new(5),
            &AtomicBool::new(false),
        )?;
        let after = model.forwards.load(std::sync::atomic::Ordering::Relaxed);
        Ok((result, after - before))
    }

    fn fgsm() -> Attack {
        presets::FGSM
    }

    fn same(a: &CellResult, b: &CellResult) -> bool {
        (
            a.accuracy,
            a.attack_success_rate,
            a.mean_linf,
            a.mean_l2,
            a.examples,
        ) == (
            b.accuracy,
            b.attack_success_rate,
            b.mean_linf,
            b.mean_l2,
            b.examples,
        )
    }

    #[test]
    fn the_cells_of_a_run_share_the_clean_predictions() -> anyhow::Result<()> {
        let (train_split, test_split) = synthetic::generate(7, 100, 300)?;
        let data = Dataset::from_host(train_split, test_split, "synthetic".into(), Device::Cpu)?;
        let model = Counting {
            inner: models::build("basic", Device::Cpu)?,
            forwards: Default::default(),
        };
        let eps = 8.0 / 255.0;
        let mut shared = CleanPredictions::default();
        let (first, n_first) = cell(&model, &data, &fgsm(), eps, &mut shared)?;
        let (second, n_second) = cell(&model, &data, &fgsm(), eps, &mut shared)?;
        let (alone, n_alone) = cell(&model, &data, &fgsm(), eps, &mut Default::default())?;
        // Three batches: the second cell skips their three clean passes, and nothing changes.
        assert_eq!(n_second + 3, n_first);
        assert_eq!(n_alone, n_first);
        assert!(
            same(&first, &alone) && same(&second, &alone),
            "{second:?} vs {alone:?}"
        );
        assert!(
            alone.attack_success_rate > 0.0,
            "the attack did something: {alone:?}"
        );

        // The clean cell: no pass at all once the predictions are known, one per batch alone.
        let (clean, n_clean) = cell(&model, &data, &Attack::None, 0.0, &mut shared)?;
        let (clean_alone, n_clean_alone) =
            cell(&model, &data, &Attack::None, 0.0, &mut Default::default())?;
        assert_eq!((n_clean, n_clean_alone), (0, 3));
        assert!(same(&clean, &clean_alone), "{clean:?} vs {clean_alone:?}");
        assert_eq!(clean.attack_success_rate, 0.0);
        Ok(())
    }

    #[test]
    fn a_randomized_model_draws_its_clean_passes_in_every_cell() -> anyhow::Result<()> {
        let (train_split, test_split) = synthetic::generate(7, 100, 300)?;
        let data = Dataset::from_host(train_split, test_split, "synthetic".into(), Device::Cpu)?;
        let spec = advsweep_core::Model {
            name: "basic".into(),
            noise: Some(advsweep_core::NoiseInjection {
                sigma: 0.1,
                layers: vec!["input".into()],
                learnable: false,
            }),
        };
        let model = Counting {
            inner: models::build(&spec, Device::Cpu)?,
            forwards: Default::default(),
        };
        assert!(model.randomized());
        let mut shared = CleanPredictions::default();
        // (Only the counts: the noise comes from torch's one global generator, which tests
        // running in parallel draw from too.)
        let (_, n_first) = cell(&model, &data, &fgsm(), 8.0 / 255.0, &mut shared)?;
        let (_, n_second) = cell(&model, &data, &fgsm(), 8.0 / 255.0, &mut shared)?;
        assert_eq!(n_first, n_second);
        let (_, n_clean) = cell(&model, &data, &Attack::None, 0.0, &mut shared)?;
        assert_eq!(n_clean, 6, "a clean and a second noisy pass per batch");
        Ok(())
    }

    #[test]
    fn a_cascade_reports_its_stages_and_the_worst_case() -> anyhow::Result<()> {
        let (train_split, test_split) = synthetic::generate(7, 100, 60)?;
        let data = Dataset::from_host(train_split, test_split, "synthetic".into(), Device::Cpu)?;
        let model = models::build("basic", Device::Cpu)?;
        let norm = advsweep_core::Norm::Linf;
        let cascade = Attack::AutoAttack {
            norm,
            version: advsweep_core::CascadeVersion::Custom,
            stages: vec![
                Attack::Apgd {
                    norm,
                    loss: advsweep_core::ApgdLoss::Ce,
                    targets: 0,
                    steps: 5,
                    restarts: 1,
                    eot: 1,
                },
                Attack::Square {
                    norm,
                    queries: 20,
                    p_init: 0.8,
                    restarts: 1,
                },
            ],
        };
        let cancel = AtomicBool::new(false);
        let mut clean = CleanPredictions::default();
        let mut run = |attack: &Attack, eps: f64| {
            evaluate_cell(
                model.as_ref(),
                &data,
                attack,
                Budget::pixel(eps),
                25,
                &mut clean,
                &mut Rng::new(3),
                &cancel,
            )
        };
        let none = run(&Attack::None, 0.0)?;
        let result = run(&cascade, 8.0 / 255.0)?;
        let names: Vec<&str> = result.stages.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["apgd-ce", "square"]);
        assert!(result.stages[0].accuracy <= none.accuracy + 1e-12);
        assert!(result.stages[1].accuracy <= result.stages[0].accuracy);
        assert_eq!(result.stages[1].accuracy, result.accuracy);
        assert!(result.mean_linf <= 8.0 / 255.0 + 1e-6);
        // At ε = 0 nothing is attacked: every stage keeps the clean accuracy.
        let zero = run(&cascade, 0.0)?;
        assert!(zero.stages.iter().all(|s| s.accuracy == zero.accuracy));
        assert!(run(&presets::PGD_LINF, 8.0 / 255.0)?.stages.is_empty());
        Ok(())
    }

    #[test]
    fn pgd_is_stronger_than_fgsm_on_a_trained_model() -> anyhow::Result<()> {
        // Seeds 1–5 gave clean 0.83–0.98, FGSM 0.36–0.62, PGD 0.21–0.45 when calibrated.
        let (clean, fgsm, pgd) = attack_ordering(1)?;
        println!("clean {clean:.3} fgsm {fgsm:.3} pgd {pgd:.3}");
        assert!(
            clean > 0.5,
            "BasicNet did not learn the synthetic data: {clean}"
        );
        assert!(fgsm <= clean, "fgsm {fgsm} > clean {clean}");
        assert!(pgd <= fgsm, "pgd {pgd} > fgsm {fgsm}");
        assert!(
            pgd < clean - 0.2,
            "PGD at 8/255 barely hurts: {pgd} vs {clean}"
        );
        Ok(())
    }
}
