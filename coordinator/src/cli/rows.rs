//! v1 sweep details → report rows.

use std::collections::HashMap;

use advsweep_proto::v1 as pb;

use crate::report::CellRow;

pub fn cell_rows(detail: &pb::SweepDetail) -> Vec<CellRow> {
    let runs: HashMap<&str, &pb::RunStatus> =
        detail.runs.iter().map(|r| (r.run_id.as_str(), r)).collect();
    detail
        .cells
        .iter()
        .map(|c| {
            let run = runs.get(c.run_id.as_str());
            CellRow {
                model: run.map(|r| r.model.clone()).unwrap_or_default(),
                defense: run.map(|r| r.defense_name.clone()).unwrap_or_default(),
                attack: c.attack_name.clone(),
                epsilon: c.epsilon,
                seed: run.map(|r| r.seed).unwrap_or_default(),
                state: c.state.clone(),
                accuracy: c.result.as_ref().map(|r| r.accuracy),
            }
        })
        .collect()
}
