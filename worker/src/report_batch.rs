//! Coalescing a job's queued progress into as few coordinator calls as keep its order.
//!
//! The job runs ahead of its reports (progress goes through a channel), so while one report is
//! in flight the next events queue up. Sending what queued in one call — all consecutive epochs
//! in one `ReportMetrics`, all consecutive cells in one `CompleteCells` — costs nothing when
//! events are far apart (a batch of one) and saves a round trip and a durable commit per event
//! when they are not: fast cells (clean accuracy, FGSM on a GPU) finish well inside one round
//! trip. Order is kept across kinds: epochs, checkpoints and cells are never reordered, only
//! neighbours of the same kind are merged.

use advsweep_core::{CellChunk, CellResult, EpochMetrics};

use crate::job::Progress;

/// Most cells in one `CompleteCells` call (the coordinator takes up to 10,000).
pub const MAX_CELLS_PER_CALL: usize = 256;
/// Most epoch points in one `ReportMetrics` call (the coordinator takes up to 10,000).
pub const MAX_EPOCHS_PER_CALL: usize = 256;

/// One coordinator call's worth of progress.
#[derive(Debug)]
pub enum Report {
    /// One `ReportMetrics` call.
    Epochs(Vec<EpochMetrics>),
    /// One checkpoint upload.
    Checkpoint { epoch: u32, bytes: Vec<u8> },
    /// One `CompleteCells` call.
    Cells(Vec<(String, CellResult)>),
    /// One `ReportCellChunk` call.
    Chunk { cell_id: String, chunk: CellChunk },
}

/// Merges neighbouring events of the same kind, in order, into calls of bounded size.
pub fn coalesce(events: impl IntoIterator<Item = Progress>) -> Vec<Report> {
    let mut reports: Vec<Report> = Vec::new();
    for event in events {
        match (event, reports.last_mut()) {
            (Progress::Epoch(m), Some(Report::Epochs(epochs)))
                if epochs.len() < MAX_EPOCHS_PER_CALL =>
            {
                epochs.push(m);
            }
            (Progress::Epoch(m), _) => reports.push(Report::Epochs(vec![m])),
            (Progress::Cell { cell_id, result }, Some(Report::Cells(cells)))
                if cells.len() < MAX_CELLS_PER_CALL =>
            {
                cells.push((cell_id, result));
            }
            (Progress::Cell { cell_id, result }, _) => {
                reports.push(Report::Cells(vec![(cell_id, result)]));
            }
            (Progress::Checkpoint { epoch, bytes }, _) => {
                reports.push(Report::Checkpoint { epoch, bytes });
            }
            (Progress::Chunk { cell_id, chunk }, _) => {
                reports.push(Report::Chunk { cell_id, chunk });
            }
        }
    }
    reports
}

#[cfg(test)]
mod tests {
    use super::*;

    fn epoch(n: u32) -> Progress {
        Progress::Epoch(EpochMetrics {
            epoch: n,
            train_loss: 1.0,
            train_accuracy: 0.5,
            test_accuracy: 0.5,
            seconds: 1.0,
            images_per_second: 100.0,
        })
    }

    fn cell(id: &str) -> Progress {
        Progress::Cell {
            cell_id: id.into(),
            result: CellResult {
                accuracy: 0.5,
                attack_success_rate: 0.1,
                mean_linf: 0.0,
                mean_l2: 0.0,
                images_per_second: 1.0,
                seconds: 1.0,
                examples: 10,
                stages: Vec::new(),
                warnings: Vec::new(),
                clean_correct: 10,
                flipped: 1,
            },
        }
    }

    /// The calls as (kind, ids) for comparison.
    fn shape(reports: &[Report]) -> Vec<(char, Vec<String>)> {
        reports
            .iter()
            .map(|r| match r {
                Report::Epochs(e) => ('E', e.iter().map(|m| m.epoch.to_string()).collect()),
                Report::Checkpoint { epoch, .. } => ('K', vec![epoch.to_string()]),
                Report::Cells(c) => ('C', c.iter().map(|(id, _)| id.clone()).collect()),
                Report::Chunk { cell_id, chunk } => {
                    ('P', vec![format!("{cell_id}@{}", chunk.start)])
                }
            })
            .collect()
    }

    #[test]
    fn neighbours_of_one_kind_share_a_call_and_order_is_kept() {
        let events = vec![
            epoch(1),
            epoch(2),
            Progress::Checkpoint {
                epoch: 2,
                bytes: vec![1, 2, 3],
            },
            epoch(3),
            cell("a"),
            cell("b"),
            cell("c"),
        ];
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(
            shape(&coalesce(events)),
            vec![
                ('E', s(&["1", "2"])),
                ('K', s(&["2"])),
                ('E', s(&["3"])),
                ('C', s(&["a", "b", "c"])),
            ]
        );
    }

    #[test]
    fn chunks_are_never_merged_and_keep_their_place_before_the_cell() {
        let chunk = |start| Progress::Chunk {
            cell_id: "c1".into(),
            chunk: CellChunk {
                start,
                images: 10,
                ..CellChunk::default()
            },
        };
        let reports = coalesce(vec![cell("c0"), chunk(0), chunk(10), cell("c1")]);
        assert_eq!(
            shape(&reports),
            [
                ('C', vec!["c0".to_owned()]),
                ('P', vec!["c1@0".to_owned()]),
                ('P', vec!["c1@10".to_owned()]),
                ('C', vec!["c1".to_owned()]),
            ]
        );
    }

    #[test]
    fn a_single_event_is_a_single_call() {
        assert_eq!(shape(&coalesce([cell("x")])), vec![('C', vec!["x".into()])]);
        assert!(coalesce(Vec::new()).is_empty());
    }

    #[test]
    fn big_batches_are_split_at_the_call_limit_without_losing_a_cell() {
        let n = 2 * MAX_CELLS_PER_CALL + 3;
        let ids: Vec<String> = (0..n).map(|i| format!("c{i}")).collect();
        let reports = coalesce(ids.iter().map(|id| cell(id)));
        let sizes: Vec<usize> = reports
            .iter()
            .map(|r| match r {
                Report::Cells(c) => c.len(),
                _ => panic!("only cells were queued"),
            })
            .collect();
        assert_eq!(sizes, vec![MAX_CELLS_PER_CALL, MAX_CELLS_PER_CALL, 3]);
        let sent: Vec<String> = shape(&reports).into_iter().flat_map(|(_, v)| v).collect();
        assert_eq!(sent, ids);
    }
}
