//! `advsweep export weights SWEEP [--run RUN] --out DIR`: each finished run's trained weights as
//! a plain PyTorch `state_dict` in safetensors, ready for a strict `load_state_dict` into the
//! reference definition (docs/CHECKPOINTS.md), with the run's resolved spec beside it.
//!
//! A stored checkpoint is for resuming: beside the model's keys it holds `advsweep.*` (epochs
//! done) and `optim.*` (the optimizer's state), which a strict load refuses. The export keeps
//! the model's keys only, from the run's newest checkpoint (its last epoch), and names each
//! file by what was trained: `<model>-<defense>[-eps<k>_255]-s<seed>.safetensors` plus a
//! `.json` with the run id, the checkpoint's epoch and SHA-256, and the spec.
//!
//! It reads the state directory directly (read-only, like offline `status`): checkpoint bytes
//! live on the coordinator's disk, so run it there (`--state-dir`, default ./advsweep-state).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use advsweep_coordinator::store::{SqliteStore, StateStore};
use advsweep_core::ShownState;
use anyhow::Context as _;
use safetensors::SafeTensors;
use sha2::{Digest as _, Sha256};

use super::BadInput;
use super::source::pick_sweep;

#[derive(Debug, Clone, clap::Args)]
pub struct WeightsArgs {
    /// A sweep id or name (the newest sweep of that name).
    pub sweep: String,
    /// Only this run (repeatable); default every finished run of the sweep.
    #[arg(long = "run")]
    pub runs: Vec<String>,
    /// Directory to write into (created if needed).
    #[arg(long)]
    pub out: PathBuf,
    /// The coordinator's state directory (default ./advsweep-state, where `advsweep run`
    /// writes).
    #[arg(long, default_value = "advsweep-state")]
    pub state_dir: PathBuf,
}

/// Keys a checkpoint holds for resuming, not for the model.
fn resume_only(key: &str) -> bool {
    key.starts_with("advsweep.") || key.starts_with("optim.")
}

/// The model's tensors of a stored checkpoint, re-serialized without the resume-only keys.
pub fn plain_state_dict(checkpoint: &[u8]) -> anyhow::Result<(Vec<u8>, usize)> {
    let tensors = SafeTensors::deserialize(checkpoint)
        .map_err(|e| anyhow::anyhow!("not a safetensors checkpoint: {e:?}"))?;
    let kept: Vec<(String, safetensors::tensor::TensorView<'_>)> = tensors
        .tensors()
        .into_iter()
        .filter(|(name, _)| !resume_only(name))
        .collect();
    let count = kept.len();
    let bytes = safetensors::serialize(kept, &None)
        .map_err(|e| anyhow::anyhow!("cannot write the state_dict: {e:?}"))?;
    Ok((bytes, count))
}

fn file_stem(run: &advsweep_coordinator::store::RunStatus) -> String {
    let mut stem = format!("{}-{}", run.model, run.defense_name);
    if let Some(e) = run.defense_epsilon {
        let label = advsweep_report::epsilon::label_in(e, run.epsilon_space);
        stem.push_str(&format!("-eps{}", label.replace('/', "_")));
    }
    stem.push_str(&format!("-s{}", run.seed));
    advsweep_report::plots::slug(&stem)
}

pub fn weights(args: WeightsArgs) -> anyhow::Result<ExitCode> {
    let store =
        SqliteStore::open_read_only(&args.state_dir).map_err(|e| BadInput(e.to_string()))?;
    let summaries: Vec<_> = store
        .list_sweeps()?
        .iter()
        .map(advsweep_coordinator::grpc::convert::summary)
        .collect();
    let sweep_id = pick_sweep(&summaries, &args.sweep)?;
    let sweep_id = advsweep_core::SweepId::new(sweep_id).map_err(|e| BadInput(e.to_string()))?;
    let detail = store.sweep_detail(&sweep_id)?;
    for wanted in &args.runs {
        if !detail.runs.iter().any(|r| &r.run_id == wanted) {
            return Err(BadInput(format!(
                "--run {wanted}: no such run in sweep {sweep_id} (`advsweep status {sweep_id}` lists them)"
            ))
            .into());
        }
    }
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    let mut written = 0usize;
    for run in detail
        .runs
        .iter()
        .filter(|r| args.runs.is_empty() || args.runs.iter().any(|w| r.run_id == *w))
    {
        if run.state != ShownState::Done {
            errln!(
                "advsweep: run {} ({}/{} seed {}) is {}: skipped (only finished runs are exported)",
                run.run_id,
                run.model,
                run.defense_name,
                run.seed,
                run.state
            );
            continue;
        }
        let Some(checkpoint) = store.latest_checkpoint(&run.run_id)? else {
            errln!(
                "advsweep: run {} has no stored checkpoint: skipped",
                run.run_id
            );
            continue;
        };
        let bytes = std::fs::read(&checkpoint.path).with_context(|| {
            format!(
                "cannot read run {}'s checkpoint {}",
                run.run_id,
                checkpoint.path.display()
            )
        })?;
        let digest = hex(&Sha256::digest(&bytes));
        if digest != checkpoint.sha256 {
            anyhow::bail!(
                "run {}'s checkpoint {} is corrupt (SHA-256 {digest}, recorded {})",
                run.run_id,
                checkpoint.path.display(),
                checkpoint.sha256
            );
        }
        let (state_dict, tensors) =
            plain_state_dict(&bytes).with_context(|| format!("run {}'s checkpoint", run.run_id))?;
        let stem = file_stem(run);
        let weights = args.out.join(format!("{stem}.safetensors"));
        write_new(&weights, &state_dict)?;
        let about = serde_json::json!({
            "run_id": run.run_id,
            "model": run.model,
            "defense": run.defense_name,
            "defense_epsilon": run.defense_epsilon,
            "epsilon_space": run.epsilon_space,
            "seed": run.seed,
            "epoch": checkpoint.epoch,
            "checkpoint_sha256": checkpoint.sha256,
            "tensors": tensors,
            "spec": run.spec,
        });
        write_new(
            &args.out.join(format!("{stem}.json")),
            serde_json::to_string_pretty(&about)?.as_bytes(),
        )?;
        outln!(
            "{} ({} tensors, epoch {})",
            weights.display(),
            tensors,
            checkpoint.epoch
        );
        written += 1;
    }
    if written == 0 {
        return Err(BadInput(format!("sweep {sweep_id} has no finished run to export")).into());
    }
    Ok(ExitCode::SUCCESS)
}

/// Writes `bytes` to `path` through a temporary file and a rename (never half-written).
fn write_new(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resume_keys_are_dropped_and_the_rest_kept_bit_for_bit() {
        use safetensors::tensor::{Dtype, TensorView};
        let w = [1u8, 2, 3, 4, 5, 6, 7, 8];
        let step = [0u8; 8];
        let tensors = vec![
            (
                "conv1.weight",
                TensorView::new(Dtype::F32, vec![2], &w).expect("view"),
            ),
            (
                "optim.step",
                TensorView::new(Dtype::I64, vec![1], &step).expect("view"),
            ),
            (
                "advsweep.epochs_done",
                TensorView::new(Dtype::I64, vec![1], &step).expect("view"),
            ),
        ];
        let checkpoint = safetensors::serialize(tensors, &None).expect("serialize");
        let (plain, count) = plain_state_dict(&checkpoint).expect("plain");
        assert_eq!(count, 1);
        let read = SafeTensors::deserialize(&plain).expect("reads");
        assert_eq!(read.names(), vec!["conv1.weight"]);
        assert_eq!(read.tensor("conv1.weight").expect("kept").data(), &w);
        assert!(plain_state_dict(b"not a checkpoint").is_err());
    }
}
