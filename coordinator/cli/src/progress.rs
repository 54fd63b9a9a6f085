//! Following a sweep through `WatchSweep`: progress bars on a terminal (overall, and one line
//! per run in flight with its worker, epoch and latest metrics), one line per event otherwise
//! (CI logs, pipes), or JSON lines for scripts.

use std::io::IsTerminal;

use advsweep_core::{ShownState, StateCounts};
use advsweep_proto::v1 as pb;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use serde::Serialize;

use super::connection::{Client, rpc_error};
use super::rows;

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
    attempt: u32,
    epoch: Option<u32>,
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
        attempt: r.attempt,
        epoch: last.map(|e| e.epoch),
        train_loss: last.map(|e| e.train_loss),
        test_accuracy: last.map(|e| e.test_accuracy),
    }
}

fn run_line(r: &pb::RunStatus) -> String {
    let mut s = format!(
        "  {} {}/{} seed {} on {} (attempt {})",
        r.run_id, r.model, r.defense_name, r.seed, r.worker_id, r.attempt
    );
    match r.epochs.last() {
        Some(e) => s.push_str(&format!(
            ": epoch {}, loss {:.3}, test acc {:.1}%",
            e.epoch,
            e.train_loss,
            100.0 * e.test_accuracy
        )),
        None => s.push_str(": starting"),
    }
    s
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
                "{spinner} [{elapsed_precise}] {bar:40.cyan/blue} {pos}/{len} cells (ETA {eta})  {msg}",
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
                bar.set_length(u64::from(total));
                bar.set_position(u64::from(cells.finished()));
                bar.set_message(format!(
                    "{} running, {} pending, {} failed",
                    cells.running, cells.pending, cells.failed
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
                    eprintln!("advsweep: {}", event.message);
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
