//! Following a sweep through `WatchSweep`: progress bars on a terminal (overall, and one line
//! per run in flight with its worker, epoch and latest metrics), one line per event otherwise
//! (CI logs, pipes), or JSON lines for scripts.

use std::io::IsTerminal;

use advsweep_core::{ShownState, StateCounts};
use advsweep_proto::v1 as pb;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use serde::Serialize;

use super::connection::{Client, rpc_error};
use advsweep_coordinator::grpc::rows;

/// How to show progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// Bars on a terminal, plain lines otherwise.
    Human,
    /// One JSON object per event on stdout.
    Json,
}

#[derive(Debug, Serialize)]
struct Counts {
    pending: u32,
    running: u32,
    done: u32,
    failed: u32,
    cancelled: u32,
    total: u32,
}

impl From<&StateCounts> for Counts {
    fn from(c: &StateCounts) -> Self {
        Counts {
            pending: c.pending,
            running: c.running,
            done: c.done,
            failed: c.failed,
            cancelled: c.cancelled,
            total: c.total(),
        }
    }
}

#[derive(Debug, Serialize)]
struct RunInFlight<'a> {
    run_id: &'a str,
    model: &'a str,
    defense: &'a str,
    seed: u64,
    worker_id: &'a str,
    worker_name: &'a str,
    attempt: u32,
    epoch: Option<u32>,
    epochs_planned: u32,
    train_loss: Option<f64>,
    test_accuracy: Option<f64>,
}

#[derive(Debug, Serialize)]
struct JsonEvent<'a> {
    sweep_id: &'a str,
    name: &'a str,
    state: &'a str,
    finished: bool,
    message: &'a str,
    runs: Counts,
    cells: Counts,
    running: Vec<RunInFlight<'a>>,
}

fn in_flight(r: &pb::RunStatus) -> RunInFlight<'_> {
    let last = r.epochs.last();
    RunInFlight {
        run_id: &r.run_id,
        model: &r.model,
        defense: &r.defense_name,
        seed: r.seed,
        worker_id: &r.worker_id,
        worker_name: &r.worker_name,
        attempt: r.attempt,
        epoch: last.map(|e| e.epoch),
        epochs_planned: r.epochs_planned,
        train_loss: last.map(|e| e.train_loss),
        test_accuracy: last.map(|e| e.test_accuracy),
    }
}

/// A run in flight: `basic/standard seed 0 on gpu-node-1: epoch 5/8, loss 1.234, test acc
/// 56.7%` (the worker by its `--name`; the attempt when it is not the first).
fn run_line(r: &pb::RunStatus) -> String {
    let worker = if r.worker_name.is_empty() {
        &r.worker_id
    } else {
        &r.worker_name
    };
    let mut s = format!(
        "  {} {}/{} seed {} on {worker}",
        r.run_id, r.model, r.defense_name, r.seed
    );
    if r.attempt > 1 {
        s.push_str(&format!(" (attempt {})", r.attempt));
    }
    let planned = |epoch: u32| {
        if r.epochs_planned > 0 {
            format!("{epoch}/{}", r.epochs_planned)
        } else {
            epoch.to_string()
        }
    };
    match r.epochs.last() {
        Some(e) if r.epochs_planned > 0 && e.epoch >= r.epochs_planned => s.push_str(&format!(
            ": trained ({} epochs, test acc {:.1}%), evaluating",
            r.epochs_planned,
            100.0 * e.test_accuracy
        )),
        Some(e) => s.push_str(&format!(
            ": epoch {}, loss {:.3}, test acc {:.1}%",
            planned(e.epoch),
            e.train_loss,
            100.0 * e.test_accuracy
        )),
        None => s.push_str(": starting"),
    }
    s
}

/// The time left, from the cells finished since watching began: none before the first one
/// finishes (no "ETA 0s" at 0 %), and re-estimated only when the count changes, counting down
/// in between (no jumps while nothing happens).
struct Eta {
    started: std::time::Instant,
    base: Option<u32>,
    finished: u32,
    estimate: Option<(std::time::Instant, std::time::Duration)>,
}

impl Eta {
    fn new() -> Eta {
        Eta {
            started: std::time::Instant::now(),
            base: None,
            finished: 0,
            estimate: None,
        }
    }

    fn update(&mut self, finished: u32, total: u32) {
        let base = *self.base.get_or_insert(finished);
        if finished == self.finished && self.estimate.is_some() {
            return;
        }
        self.finished = finished;
        let done_here = finished.saturating_sub(base);
        if done_here == 0 || finished >= total {
            self.estimate = None;
            return;
        }
        let per_cell = self.started.elapsed().as_secs_f64() / f64::from(done_here);
        let left = per_cell * f64::from(total - finished);
        self.estimate = Some((
            std::time::Instant::now(),
            std::time::Duration::from_secs_f64(left),
        ));
    }

    fn text(&self) -> String {
        match self.estimate {
            None => "ETA —".to_owned(),
            Some((at, left)) => {
                let left = left.saturating_sub(at.elapsed()).as_secs();
                if left == 0 {
                    "ETA soon".to_owned()
                } else if left < 60 {
                    format!("ETA {left}s")
                } else if left < 3600 {
                    format!("ETA {}m{:02}s", left / 60, left % 60)
                } else {
                    format!("ETA {}h{:02}m", left / 3600, left / 60 % 60)
                }
            }
        }
    }
}

/// Streams events until the sweep reaches a terminal state; returns the last summary.
pub async fn follow(
    client: &mut Client,
    sweep_id: &str,
    output: Output,
) -> anyhow::Result<pb::SweepSummary> {
    let mut stream = client
        .watch_sweep(pb::WatchSweepRequest {
            sweep_id: sweep_id.to_owned(),
        })
        .await
        .map_err(|s| rpc_error("WatchSweep", s))?
        .into_inner();
    let interactive = output == Output::Human && std::io::stderr().is_terminal();
    let multi = MultiProgress::new();
    let bar = interactive.then(|| {
        let bar = multi.add(ProgressBar::new(0));
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {bar:40.cyan/blue} {pos}/{len} cells  {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar.enable_steady_tick(std::time::Duration::from_millis(200));
        bar
    });
    // One bar per cell state under the overall one.
    let state_bars: Vec<(ShownState, ProgressBar)> = if interactive {
        [
            (ShownState::Done, "green"),
            (ShownState::Running, "yellow"),
            (ShownState::Pending, "white"),
            (ShownState::Failed, "red"),
        ]
        .into_iter()
        .map(|(state, colour)| {
            let b = multi.add(ProgressBar::new(0));
            b.set_style(
                ProgressStyle::with_template(&format!(
                    "  {{prefix:>8}} {{bar:40.{colour}}} {{pos}}/{{len}}"
                ))
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            b.set_prefix(state.as_str());
            (state, b)
        })
        .collect()
    } else {
        Vec::new()
    };
    let mut run_lines: Vec<ProgressBar> = Vec::new();
    let mut eta = Eta::new();
    let mut last = None;
    let mut last_message = String::new();
    while let Some(event) = stream
        .message()
        .await
        .map_err(|s| rpc_error("WatchSweep", s))?
    {
        let summary = event.summary.clone().unwrap_or_default();
        let cells = rows::counts(summary.cells.as_ref());
        let total = cells.total();
        match (output, &bar) {
            (Output::Json, _) => {
                let json = JsonEvent {
                    sweep_id: &summary.sweep_id,
                    name: &summary.name,
                    state: &summary.state,
                    finished: event.finished,
                    message: &event.message,
                    runs: Counts::from(&rows::counts(summary.runs.as_ref())),
                    cells: Counts::from(&cells),
                    running: event.running.iter().map(in_flight).collect(),
                };
                outln!("{}", serde_json::to_string(&json)?);
            }
            (Output::Human, Some(bar)) => {
                // Headline, bars and message from this one event (one snapshot).
                eta.update(cells.finished(), total);
                bar.set_length(u64::from(total));
                bar.set_position(u64::from(cells.finished()));
                bar.set_message(format!(
                    "({})  {} running, {} pending, {} failed",
                    eta.text(),
                    cells.running,
                    cells.pending,
                    cells.failed
                ));
                for (state, b) in &state_bars {
                    b.set_length(u64::from(total));
                    b.set_position(u64::from(cells.get(*state)));
                }
                while run_lines.len() < event.running.len() {
                    let line = multi.add(ProgressBar::new_spinner());
                    line.set_style(
                        ProgressStyle::with_template("{msg}")
                            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                    );
                    run_lines.push(line);
                }
                while run_lines.len() > event.running.len() {
                    if let Some(line) = run_lines.pop() {
                        line.finish_and_clear();
                    }
                }
                for (line, run) in run_lines.iter().zip(&event.running) {
                    line.set_message(run_line(run));
                }
            }
            (Output::Human, None) => {
                if event.message != last_message {
                    errln!("advsweep: {}", event.message);
                    last_message = event.message.clone();
                }
            }
        }
        let finished = event.finished;
        last = Some(summary);
        if finished {
            break;
        }
    }
    for line in run_lines {
        line.finish_and_clear();
    }
    for (_, b) in state_bars {
        b.finish_and_clear();
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    last.ok_or_else(|| anyhow::anyhow!("the coordinator closed the watch stream without an event"))
}

/// What stays on the screen when a sweep ends (`run` and `watch`): the results table with
/// its legend, the sweep's end state, failed runs and every sanity warning.
pub fn final_screen(
    detail: &pb::SweepDetail,
    summary: &pb::SweepSummary,
    logs: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    outln!();
    out!(
        "{}",
        advsweep_report::Pivot::new(
            &rows::sweep_report(detail)?.cells,
            advsweep_report::Layout::default()
        )
        .shown()
    );
    outln!();
    let cells = summary.cells.unwrap_or_default();
    outln!(
        "sweep {}: {} ({} cells done, {} failed{}){}",
        summary.sweep_id,
        summary.state,
        cells.done,
        cells.failed,
        if cells.cancelled > 0 {
            format!(", {} cancelled", cells.cancelled)
        } else {
            String::new()
        },
        logs.map(|l| format!("; logs in {}", l.display()))
            .unwrap_or_default()
    );
    for run in detail.runs.iter().filter(|r| !r.error.is_empty()) {
        outln!("  run {} {}: {}", run.run_id, run.state, run.error);
    }
    for run in &detail.runs {
        for w in &run.warnings {
            outln!(
                "  warning ({}/{} seed {}): {w}",
                run.model,
                run.defense_name,
                run.seed
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_eta_waits_for_a_first_cell_and_holds_still_between_changes() {
        let mut eta = Eta::new();
        eta.update(3, 10);
        assert_eq!(
            eta.text(),
            "ETA —",
            "cells finished before watching say nothing"
        );
        eta.started -= std::time::Duration::from_secs(20);
        eta.update(5, 10);
        // 2 cells in 20 s, 5 left: about 50 s.
        let text = eta.text();
        assert!(text == "ETA 50s" || text == "ETA 49s", "{text}");
        let (at, _) = eta.estimate.expect("estimate");
        eta.update(5, 10);
        assert_eq!(
            eta.estimate.map(|e| e.0),
            Some(at),
            "no new estimate without progress"
        );
        eta.update(10, 10);
        assert_eq!(eta.text(), "ETA —");
    }

    #[test]
    fn a_run_line_names_the_worker_and_counts_epochs_of_the_plan() {
        let run = pb::RunStatus {
            run_id: "r-1".into(),
            model: "basic".into(),
            defense_name: "standard".into(),
            worker_id: "w-7f3a".into(),
            worker_name: "gpu-node-1".into(),
            attempt: 1,
            epochs_planned: 8,
            epochs: vec![pb::EpochMetrics {
                epoch: 5,
                train_loss: 1.0,
                test_accuracy: 0.5,
                ..Default::default()
            }],
            ..Default::default()
        };
        let line = run_line(&run);
        assert!(line.contains("on gpu-node-1: epoch 5/8"), "{line}");
        assert!(!line.contains("attempt"), "{line}");
    }
}
