//! One leased run, executed synchronously: seed, load data, build, train the classifier once,
//! then for each inference-time defense of the run's cells (none, inference noise, a denoiser
//! trained on top of the classifier) wrap the defended model ([`crate::defended::Defended`]:
//! inference noise → denoiser → classifier) and evaluate that defense's cells against it, with
//! every ε in the run's ε space.
//!
//! This is the part that runs on a dedicated blocking thread (libtorch calls block for
//! seconds); it knows nothing about gRPC. It reports through a callback — the agent turns
//! [`Progress`] events into `ReportMetrics`/`CompleteCell` RPCs — and stops between batches when
//! the shared cancel flag is set.
//!
//! The last data set stays cached on the device: the runs of a sweep usually share one
//! `DataSpec`, and reloading CIFAR-10 (or regenerating synthetic data) per run would waste
//! seconds each time.//!
//! Layout: this file is the executor, one function per phase of a run; `resume.rs` encodes and
//! decodes the training checkpoints it emits and resumes from; `tests.rs` runs it end to end.

mod resume;

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::Mutex;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use advsweep_core::{
    CellChunk, CellResult, CellSpec, DataSpec, EpochMetrics, InferenceDefense, RunSpec,
};
use anyhow::Context as _;
use tch::Device;
use tracing::{info, info_span};

use crate::attacks::Budget;
use crate::data::Dataset;
use crate::defended::Defended;
use crate::denoiser::{self, Denoiser, DenoiserTraining};
use crate::evaluate::{CellInput, Chunking, CleanPredictions, evaluate_cell_in_chunks};
use crate::model_files::ModelFileCache;
use crate::models::{self, torchscript::PROBE_IMAGES};
use crate::optim::Optim;
use crate::rng::{Rng, hash_str};
use crate::train::{self, TrainConfig};
use resume::{decode_checkpoint, encode_checkpoint};

/// What a run reports while it executes.
#[derive(Clone, PartialEq)]
pub enum Progress {
    Epoch(EpochMetrics),
    /// A resumable snapshot after `epoch` (safetensors bytes: weights, optimizer state, epoch).
    Checkpoint {
        epoch: u32,
        bytes: Vec<u8>,
    },
    Cell {
        cell_id: String,
        result: CellResult,
    },
    /// A finished part of a long cell's evaluation (the cell resumes after it on another
    /// lease of the run).
    Chunk {
        cell_id: String,
        chunk: CellChunk,
    },
}

/// The chunks stored by earlier attempts of a run, per unfinished cell (from the lease).
pub type CellProgress = HashMap<String, Vec<CellChunk>>;

impl std::fmt::Debug for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Progress::Epoch(m) => f.debug_tuple("Epoch").field(m).finish(),
            Progress::Checkpoint { epoch, bytes } => f
                .debug_struct("Checkpoint")
                .field("epoch", epoch)
                .field("bytes", &bytes.len())
                .finish(),
            Progress::Cell { cell_id, result } => f
                .debug_struct("Cell")
                .field("cell_id", cell_id)
                .field("result", result)
                .finish(),
            Progress::Chunk { cell_id, chunk } => f
                .debug_struct("Chunk")
                .field("cell_id", cell_id)
                .field("chunk", chunk)
                .finish(),
        }
    }
}

const CELL_STREAM: u64 = 0x4345_4c4c; // "CELL"

/// The seed of a cell's random stream (attack starts, Square's squares, a randomized model's
/// noise): a function of what the cell evaluates — the run's seed, the attack and ε — and not
/// of its id, so the parts of a sharded cell (whose ids differ by their run's slice) draw the
/// unsharded cell's numbers. Each batch then derives its own stream from this seed and its
/// first image ([`crate::evaluate`]).
fn cell_seed(run: &RunSpec, cell: &CellSpec) -> u64 {
    let attack = serde_json::to_string(&cell.attack).unwrap_or_default();
    crate::rng::derive_seed(&[
        run.seed,
        CELL_STREAM,
        hash_str(&attack),
        cell.epsilon.to_bits(),
    ])
}

/// Executes runs on one device; shared (behind an `Arc`) with the blocking threads.
#[derive(Debug)]
pub struct Executor {
    device: Device,
    threads: usize,
    /// How long a cell evaluates before it reports a chunk (and between chunks).
    chunk_interval: Duration,
    cache: Mutex<Option<(DataSpec, Dataset)>>,
    /// Where model files (researchers' modules and weights) are found by hash; the agent
    /// downloads a run's file there before the run starts.
    model_files: ModelFileCache,
}

impl Executor {
    pub fn new(device: Device, threads: usize) -> Executor {
        Executor {
            device,
            threads,
            chunk_interval: Duration::from_secs_f64(
                advsweep_settings::worker::DEFAULT_CELL_PROGRESS_INTERVAL_S,
            ),
            cache: Mutex::new(None),
            model_files: ModelFileCache::new(ModelFileCache::default_root()),
        }
    }

    /// Model files are looked up in `cache` (`model_cache` setting).
    pub fn with_model_files(mut self, cache: ModelFileCache) -> Executor {
        self.model_files = cache;
        self
    }

    pub fn model_files(&self) -> &ModelFileCache {
        &self.model_files
    }

    /// Cells report a chunk every `interval` of evaluation (`cell_progress_interval_s`).
    pub fn with_chunk_interval(mut self, interval: Duration) -> Executor {
        self.chunk_interval = interval;
        self
    }

    pub fn device(&self) -> Device {
        self.device
    }

    /// [`Executor::run`] without a checkpoint to resume from, through [`Executor::catching`].
    pub fn run_catching(
        &self,
        run: &RunSpec,
        cells: &[CellSpec],
        cancel: &AtomicBool,
        emit: &mut dyn FnMut(Progress) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        self.catching(|| self.run(run, cells, None, &CellProgress::new(), cancel, emit))
    }

    /// `work` (an [`Executor::run`]), with a panic anywhere below turned into a (retryable) error
    /// so that one bad run cannot take the worker down.
    pub fn catching(&self, work: impl FnOnce() -> anyhow::Result<()>) -> anyhow::Result<()> {
        match std::panic::catch_unwind(AssertUnwindSafe(work)) {
            Ok(result) => result,
            Err(panic) => {
                // The cached data set may be half-built; drop it.
                *self.cache.lock().unwrap_or_else(|p| p.into_inner()) = None;
                let message = panic
                    .downcast_ref::<String>()
                    .map(String::as_str)
                    .or_else(|| panic.downcast_ref::<&str>().copied())
                    .unwrap_or("(no message)");
                Err(anyhow::anyhow!("panic while executing the run: {message}"))
            }
        }
    }

    /// Trains the run's model (from the `resume` checkpoint's bytes when there is one) and
    /// evaluates its cells (each after its stored chunks in `progress`), reporting through
    /// `emit`.
    pub fn run(
        &self,
        run: &RunSpec,
        cells: &[CellSpec],
        resume: Option<&[u8]>,
        progress: &CellProgress,
        cancel: &AtomicBool,
        emit: &mut dyn FnMut(Progress) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        let started = Instant::now();
        crate::device::set_threads(self.threads);
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        // Shards of one grid point share the loaded data set; each evaluates its slice.
        let whole = DataSpec {
            shard: None,
            ..run.data.clone()
        };
        let data = &self
            .cached_data(&mut cache, &whole)?
            .shard(run.data.shard, run.training.eval_batch_size)?;
        if let Some(shard) = run.data.shard {
            info!(shard = %shard.label(), images = data.test_len(), first = data.test_offset, "evaluating one shard of the test images");
        }
        // Weights come from torch's generator, seeded right before the model is built (the data
        // is loaded first: the model's outputs are the data's classes); everything else comes
        // from our own streams.
        tch::manual_seed((run.seed & (i64::MAX as u64)) as i64);
        let label = model_label(run);
        let file = run.model.file.as_ref().map(|f| self.model_files.path(f));
        let model = models::load(
            &run.model,
            file.as_deref(),
            &label,
            (data.classes, self.device),
        )
        .with_context(|| format!("building {label}"))?;
        info!(
            model = model.name(),
            parameters = models::trainable_parameters(model.as_ref()),
            classes = data.classes,
            "model built"
        );
        let (probe, _) = data.test_batch(0, PROBE_IMAGES.min(data.test_len()))?;
        model.check_contract(&probe, data.classes)?;
        let resume = match resume {
            Some(_) if !model.resumable() => {
                info!(
                    "this model's checkpoints cannot restore it exactly; training from the start"
                );
                None
            }
            other => other,
        };
        if run.training.epochs > 0 {
            train_classifier(model.as_ref(), data, run, resume, cancel, emit)?;
        } else {
            info!("epochs = 0: evaluating the model as given");
        }
        // The trained classifier is shared by every defense of the run's cells: each wraps it
        // (inference noise, a denoiser trained on top of it) for its own cells, then hands it
        // to the next.
        let mut model = model;
        for (inference, defense_name, group) in by_inference(cells) {
            let span = info_span!("defense", defense = %defense_name);
            let _entered = span.enter();
            let denoiser = train_denoiser(model.as_ref(), data, run, &inference, cancel)?;
            let defended = Defended::new(model, denoiser, inference.inference_noise)?;
            let evaluation = Evaluation {
                defended: &defended,
                data,
                run,
                progress,
                chunk_interval: self.chunk_interval,
            };
            evaluate_cells(&evaluation, &group, cancel, emit)?;
            model = defended.into_parts().0;
        }
        info!(
            seconds = format_args!("{:.1}", started.elapsed().as_secs_f64()),
            cells = cells.len(),
            "run finished"
        );
        Ok(())
    }

    /// The run's data set on this device: the cached one when the run asks for the same data,
    /// else freshly loaded (after the old one is freed) and cached.
    fn cached_data<'c>(
        &self,
        cache: &'c mut Option<(DataSpec, Dataset)>,
        spec: &DataSpec,
    ) -> anyhow::Result<&'c Dataset> {
        let reuse = matches!(&*cache, Some((s, ds)) if s == spec && ds.device() == self.device);
        if !reuse {
            *cache = None; // free the old set before loading the new one
            let t0 = Instant::now();
            let ds = Dataset::load(spec, self.device).context("loading data")?;
            info!(data = %ds.description, seconds = t0.elapsed().as_secs_f64(), "data loaded");
            *cache = Some((spec.clone(), ds));
        }
        let Some((_, data)) = cache.as_ref() else {
            anyhow::bail!("data cache unexpectedly empty");
        };
        Ok(data)
    }
}

/// How errors and logs name a run's model: the sweep file's name, and its file's hash.
fn model_label(run: &RunSpec) -> String {
    match &run.model.file {
        None => format!("model `{}`", run.model_name),
        Some(f) => format!(
            "model `{}` ({} file {}…)",
            run.model_name,
            f.format.key(),
            &f.sha256[..f.sha256.len().min(12)]
        ),
    }
}

/// Trains the run's classifier (from its checkpoint when resuming), emitting every epoch's
/// metrics and a resumable checkpoint every `checkpoint_every` epochs and after the last.
fn train_classifier(
    model: &dyn models::Classifier,
    data: &Dataset,
    run: &RunSpec,
    resume: Option<&[u8]>,
    cancel: &AtomicBool,
    emit: &mut dyn FnMut(Progress) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let epochs = run.training.epochs;
    let resume = match resume {
        None => None,
        Some(bytes) => {
            let r =
                decode_checkpoint(model, bytes).context("resuming from the run's checkpoint")?;
            info!(
                epochs_done = r.epochs_done,
                of = epochs,
                "resuming from checkpoint"
            );
            Some(r)
        }
    };
    let every = run.training.checkpoint_every.max(1);
    train::train_from(
        model,
        data,
        TrainConfig {
            training: &run.training,
            defense: &run.defense,
            seed: run.seed,
            space: run.epsilon_space,
        },
        cancel,
        resume,
        &mut |m: EpochMetrics, opt: &Optim| {
            info!(
                epoch = m.epoch,
                of = epochs,
                loss = format_args!("{:.4}", m.train_loss),
                train_acc = format_args!("{:.4}", m.train_accuracy),
                test_acc = format_args!("{:.4}", m.test_accuracy),
                img_per_s = format_args!("{:.0}", m.images_per_second),
                seconds = format_args!("{:.1}", m.seconds),
                "epoch done"
            );
            let epoch = m.epoch;
            emit(Progress::Epoch(m))?;
            if epoch.is_multiple_of(every) || epoch == epochs {
                let bytes = encode_checkpoint(model, opt, epoch)?;
                emit(Progress::Checkpoint { epoch, bytes })?;
            }
            Ok(())
        },
    )
    .context("training")
}

/// Trains the defense's denoiser against the trained classifier, when the defense has one.
/// The run's cells grouped by what wraps the classifier for them, in the order of their first
/// cell: (the inference defense, the first cell's defense name, its cells).
fn by_inference(cells: &[CellSpec]) -> Vec<(InferenceDefense, String, Vec<CellSpec>)> {
    let mut groups: Vec<(InferenceDefense, String, Vec<CellSpec>)> = Vec::new();
    for cell in cells {
        match groups.iter_mut().find(|(i, _, _)| *i == cell.inference) {
            Some((_, _, group)) => group.push(cell.clone()),
            None => groups.push((
                cell.inference.clone(),
                cell.defense_name.clone(),
                vec![cell.clone()],
            )),
        }
    }
    groups
}

/// The denoiser `inference` puts in front of the trained classifier, trained on top of it
/// (`None` without one).
fn train_denoiser(
    model: &dyn models::Classifier,
    data: &Dataset,
    run: &RunSpec,
    inference: &InferenceDefense,
    cancel: &AtomicBool,
) -> anyhow::Result<Option<Denoiser>> {
    Ok(match &inference.denoiser {
        None => None,
        Some(spec) => {
            let t0 = Instant::now();
            let d = denoiser::train(
                model,
                data,
                DenoiserTraining {
                    spec,
                    batch_size: run.training.batch_size,
                    space: run.epsilon_space,
                    seed: run.seed,
                },
                cancel,
                &mut |_, _| {},
            )
            .context("training the denoiser")?;
            info!(
                seconds = format_args!("{:.1}", t0.elapsed().as_secs_f64()),
                "denoiser trained"
            );
            Some(d)
        }
    })
}

/// What every cell of a run is evaluated against, and how its chunks go.
struct Evaluation<'a> {
    defended: &'a Defended,
    data: &'a Dataset,
    run: &'a RunSpec,
    progress: &'a CellProgress,
    chunk_interval: Duration,
}

/// Evaluates every cell against the defended model, emitting each result as it is done (and a
/// long cell's chunks as they are); the cells share the clean predictions
/// ([`CleanPredictions`]).
fn evaluate_cells(
    e: &Evaluation<'_>,
    cells: &[CellSpec],
    cancel: &AtomicBool,
    emit: &mut dyn FnMut(Progress) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let run = e.run;
    let mut clean = CleanPredictions::default();

    for cell in cells {
        let span = info_span!(
            "cell",
            cell_id = %cell.id,
            attack = %cell.attack_name,
            epsilon = cell.epsilon
        );
        let _entered = span.enter();
        let mut rng = Rng::new(cell_seed(run, cell));
        let cell_id = cell.id.to_string();
        let done = e.progress.get(&cell_id).map_or(&[][..], Vec::as_slice);
        let mut emit_chunk = |chunk: CellChunk| {
            info!(
                images_done = chunk.end(),
                seconds = format_args!("{:.1}", chunk.seconds),
                "cell chunk done"
            );
            emit(Progress::Chunk {
                cell_id: cell_id.clone(),
                chunk,
            })
        };
        let input = CellInput {
            model: e.defended,
            data: e.data,
            attack: &cell.attack,
            budget: Budget::new(cell.epsilon, run.epsilon_space),
            eval_batch_size: run.training.eval_batch_size,
        };
        let chunking = Chunking {
            done,
            every: e.chunk_interval,
            emit: &mut emit_chunk,
        };
        let result = evaluate_cell_in_chunks(input, &mut clean, &mut rng, cancel, Some(chunking))
            .with_context(|| {
            format!(
                "evaluating cell {} ({} at epsilon {})",
                cell.id, cell.attack_name, cell.epsilon
            )
        })?;
        info!(
            accuracy = format_args!("{:.4}", result.accuracy),
            success_rate = format_args!("{:.4}", result.attack_success_rate),
            mean_linf = format_args!("{:.5}", result.mean_linf),
            mean_l2 = format_args!("{:.4}", result.mean_l2),
            img_per_s = format_args!("{:.0}", result.images_per_second),
            "cell done"
        );
        emit(Progress::Cell { cell_id, result })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
