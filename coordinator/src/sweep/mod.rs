//! Sweep files and their expansion into runs and cells.
//!
//! `load` reads and validates a file; `expand` turns it into a [`Plan`]. Nothing here touches
//! the network or the state directory, so `advsweep plan` and every error path write nothing.

pub mod expand;
pub mod file;
pub mod ids;
pub mod model_files;
pub mod presets;

pub use expand::{
    Limits, Overrides, Plan, SweepError, expand, expand_within, load_plan, parse_sweep,
    read_sweep_file,
};
