//! Turning stored results into what researchers read. For now the results table printed at the
//! end of `advsweep run` and by `advsweep status`; tables and plots for papers come later.

pub mod epsilon;
pub mod results_table;
pub mod sanity;

pub use results_table::{CellRow, ResultsTable};
