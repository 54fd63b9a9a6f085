//! The flat records every report is made from: one per run and one per cell, with the run's
//! identity (model, seed) copied onto each cell, beside the cell's own defense, so tables and
//! exports need no joins.

use advsweep_core::{
    Attack, CellResult, EpochMetrics, EpsilonSpace, InferenceDefense, RunSpec, ShownState,
    SweepState,
};
use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunRecord {
    pub run_id: String,
    pub model: String,
    pub defense: String,
    /// The ε the defense was trained at (tied or fixed), if any.
    pub defense_epsilon: Option<f64>,
    pub seed: u64,
    /// The space of the run's ε (its defense's and its cells').
    pub epsilon_space: EpsilonSpace,
    pub state: ShownState,
    pub attempt: u32,
    pub error: Option<String>,
    pub warnings: Vec<String>,
    pub epochs: Vec<EpochMetrics>,
    /// The run as resolved from the sweep file (model, defense with its defaults, training,
    /// data), when the coordinator sent it.
    pub spec: Option<RunSpec>,
    /// Runs this record stands for: the slices of a sharded grid point ([`crate::shards`]),
    /// else 1. A merged record shows its first slice's id and spec.
    pub shards: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CellRecord {
    pub cell_id: String,
    pub run_id: String,
    pub model: String,
    /// The cell's defense preset: the cells of one run (one trained classifier) may come from
    /// several (`standard`, `noise-injection`, `dncnn` share a standard classifier).
    pub defense: String,
    pub defense_epsilon: Option<f64>,
    /// What wraps the run's classifier for this cell (inference noise, a denoiser).
    #[serde(skip_serializing_if = "InferenceDefense::is_empty")]
    pub inference: InferenceDefense,
    pub seed: u64,
    pub attack: String,
    /// The attack as resolved (norm, steps, step size, restarts, EOT samples, …), when the
    /// coordinator sent it.
    pub attack_spec: Option<Attack>,
    pub epsilon: f64,
    pub epsilon_space: EpsilonSpace,
    pub state: ShownState,
    pub result: Option<CellResult>,
    pub error: Option<String>,
    /// Cells this record merges: the parts of a sharded cell ([`crate::shards`]), else 1. A
    /// merged record shows its first part's cell id.
    pub shards: u32,
}

impl CellRecord {
    /// Whether the cell evaluates without an attack (`none`).
    pub fn is_clean(&self) -> bool {
        match &self.attack_spec {
            Some(a) => a.is_none(),
            None => self.attack == "none",
        }
    }
}

/// A sweep as reports see it (possibly partial).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SweepReport {
    pub sweep_id: String,
    pub name: String,
    pub state: SweepState,
    pub runs: Vec<RunRecord>,
    pub cells: Vec<CellRecord>,
}
