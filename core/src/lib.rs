//! The resolved experiment vocabulary: what a run trains and what a cell evaluates, with every
//! preset expanded and every default filled in.
//!
//! The coordinator produces these values from sweep files; the worker consumes them from the
//! wire. Both sides share this one definition so the meaning of a field cannot drift between
//! them, [`validate`] is the one statement of what a valid run and cell are (each type's
//! `validate()`), [`catalogue`] the one list of built-in presets, architectures and defaults, and
//! [`wire`] is the single place where they meet prost types.

pub mod catalogue;
pub mod experiment;
pub mod ids;
pub mod limits;
pub mod refusal;
pub mod results;
pub mod state;
pub mod suggest;
pub mod validate;
pub mod wire;

pub use catalogue::Arch;
pub use experiment::{
    ApgdLoss, Attack, CIFAR10_STD, CascadeVersion, CellSpec, DataShard, DataSource, DataSpec,
    Defense, DenoiserSpec, EpsilonSpace, InferenceDefense, InputNormalization, LrSchedule,
    MixStrategy, Model, ModelFile, ModelFormat, NoiseInjection, Norm, Optimizer, Precision,
    RunSpec, StepSize, TrainingMethod, TrainingSpec,
};
pub use ids::{CellId, ContentId, InvalidId, LeaseId, RunId, SweepId};
pub use results::{CellChunk, CellResult, EpochMetrics, StageAccuracy};
pub use state::{
    AttemptOutcome, CellState, RunState, ShownState, StateCounts, SweepState, UnknownState,
};
pub use validate::FieldError;
