//! Read-only views of the state for `status`, `watch`, reports and metrics.

use advsweep_core::{
    Attack, AttemptOutcome, CellId, CellResult, CellState, EpochMetrics, EpsilonSpace,
    InferenceDefense, RunId, RunSpec, RunState, ShownState, StateCounts, SweepId, SweepState,
};

#[derive(Debug, Clone, PartialEq)]
pub struct SweepSummary {
    pub sweep_id: SweepId,
    pub name: String,
    pub description: String,
    pub state: SweepState,
    pub runs: StateCounts,
    pub cells: StateCounts,
    pub created_ms: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RunStatus {
    pub run_id: RunId,
    pub model: String,
    pub defense_name: String,
    pub defense_epsilon: Option<f64>,
    pub seed: u64,
    pub state: ShownState,
    pub attempt: u32,
    pub worker_id: Option<String>,
    pub error: Option<String>,
    pub epochs: Vec<EpochMetrics>,
    /// Signs of an unsound evaluation found when the run completed.
    pub warnings: Vec<String>,
    /// How each attempt ended, oldest first.
    pub attempts: Vec<AttemptRecord>,
    pub max_attempts: u32,
    /// The space the run's ε (defense and cells) are measured in.
    pub epsilon_space: EpsilonSpace,
    /// The run as resolved from the sweep file (in the sweep's detail; not in live progress).
    pub spec: Option<RunSpec>,
    /// The epochs the run trains for.
    pub epochs_planned: u32,
    /// The name the leasing worker registered with (`--name`).
    pub worker_name: Option<String>,
}

/// The end of one attempt at a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptRecord {
    pub attempt: u32,
    pub worker_id: Option<String>,
    pub outcome: AttemptOutcome,
    pub reason: Option<String>,
    pub ended_ms: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CellStatus {
    pub cell_id: CellId,
    pub run_id: RunId,
    pub attack_name: String,
    pub epsilon: f64,
    pub state: ShownState,
    pub result: Option<CellResult>,
    pub error: Option<String>,
    /// The attack as resolved from the sweep file.
    pub attack: Option<Attack>,
    /// The cell's defense preset (its run's for cells stored before cells had their own), the
    /// ε it is built for, and what wraps the run's classifier for the cell.
    pub defense_name: String,
    pub defense_epsilon: Option<f64>,
    pub inference: InferenceDefense,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SweepDetail {
    pub summary: SweepSummary,
    pub runs: Vec<RunStatus>,
    pub cells: Vec<CellStatus>,
}

/// Whole-coordinator gauges for the metrics endpoint.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Gauges {
    /// Cells by stored state, in the order of their spellings.
    pub cells: Vec<(CellState, u64)>,
    /// Runs by stored state, in the order of their spellings.
    pub runs: Vec<(RunState, u64)>,
    pub leases: u64,
    pub workers: u64,
    pub workers_alive: u64,
}
