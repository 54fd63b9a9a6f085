//! A cell evaluated in chunks: [`evaluate_cell_in_chunks`], the loop over a cell's batches that
//! every cell runs ([`super::evaluate_cell`] is it without chunks), and the [`CellChunk`]s it
//! reports on the way ([`Chunking`]).
//!
//! A long cell reports a chunk whenever [`Chunking::every`] has passed: the sums over the
//! batches since the last one (counts, norm sums, a cascade's per-stage robust counts, time)
//! and the state of the cell's random stream where it ends. Chunks end at batch boundaries and
//! every batch draws from its own stream, derived from the cell's seed and the batch's first
//! image in the run's whole evaluation set (attack starts, and a randomized model's noise
//! through torch's generator), so a cell resumed after its stored chunks ([`Chunking::done`], on
//! another lease of the run) continues exactly where they end, and its result equals an
//! uninterrupted evaluation's — as do a sharded cell's parts, summed. Stored chunks that cannot be
//! resumed from (not contiguous, not on batch boundaries, another stage count) are ignored,
//! with a warning: the cell starts over.

use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use advsweep_core::{Attack, CellChunk, CellResult, StageAccuracy};
use anyhow::Context as _;
use tch::{Kind, Tensor};

use super::CleanPredictions;
use crate::attacks::{self, Budget};
use crate::data::Dataset;
use crate::error::check_cancel;
use crate::models::Classifier;
use crate::rng::Rng;
use crate::train::correct_mask;

const BATCH_STREAM: u64 = 0x4241_5443_48; // "BATCH"

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

/// What a cell evaluates: the model, the data, the attack at its budget, the batch size.
pub struct CellInput<'a> {
    pub model: &'a dyn Classifier,
    pub data: &'a Dataset,
    pub attack: &'a Attack,
    pub budget: Budget,
    pub eval_batch_size: u32,
}

/// [`super::evaluate_cell`], resuming after `chunking.done` and reporting a [`CellChunk`] through
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
    // The cell's seed: every batch's stream is derived from it and the batch's first image in
    // the whole evaluation set, so a batch draws the same numbers however the images are cut
    // (resumed chunks, shards of the cell).
    let cell_seed = rng.state();
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
            let _ = rng_state; // each batch derives its own stream (below)
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
        *rng = Rng::from_words(&[cell_seed, BATCH_STREAM, (data.test_offset + start) as u64]);
        // A randomized model draws its noise from torch's generator, seeded per batch from
        // the batch's stream.
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
        clean_correct: u32::try_from(totals.clean_correct).unwrap_or(u32::MAX),
        flipped: u32::try_from(totals.flipped).unwrap_or(u32::MAX),
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
