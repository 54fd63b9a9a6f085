//! The client commands: `submit`, `status`, `watch`, `retry`, `cancel`. Every command that takes
//! a sweep accepts its id or its name (the newest sweep of that name).

use std::collections::HashMap;
use std::path::Path;
use std::process::ExitCode;

use advsweep_core::{AttemptOutcome, ShownState, SweepState};
use advsweep_proto::v1 as pb;

use super::connection::{Client, Target, connect, error_chain, rpc_error};
use super::source::pick_sweep;
use super::upload::upload_model_files;
use super::{BadInput, progress};
use advsweep_coordinator::grpc::rows;
use advsweep_coordinator::sweep::{self, model_files::LocalModelFile};
use advsweep_report::{Layout, Pivot};

/// `advsweep health`: asks the coordinator's gRPC health service whether it is SERVING.
pub async fn health(target: &Target) -> anyhow::Result<ExitCode> {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    let settings = target.settings()?;
    let url = settings.connection.coordinator.clone();
    let channel = settings
        .connection
        .endpoint()
        .map_err(|e| BadInput(e.to_string()))?
        .timeout(std::time::Duration::from_secs(5))
        .connect()
        .await
        .map_err(|e| {
            anyhow::anyhow!("cannot reach the coordinator at {url}: {}", error_chain(&e))
        })?;
    let status = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .map_err(|s| rpc_error("Health/Check", s))?
        .into_inner()
        .status();
    outln!("{url}: {}", status.as_str_name());
    Ok(if status == ServingStatus::Serving {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The id of the sweep `id_or_name` names: an id as it is, else the newest sweep with that name.
pub async fn resolve_sweep(client: &mut Client, id_or_name: &str) -> anyhow::Result<String> {
    let list = client
        .list_sweeps(pb::ListSweepsRequest {})
        .await
        .map_err(|s| rpc_error("ListSweeps", s))?
        .into_inner();
    pick_sweep(&list.sweeps, id_or_name)
}

pub fn submit_request(
    file: &Path,
    data_path: Option<String>,
    model_files: &[LocalModelFile],
) -> anyhow::Result<pb::SubmitSweepRequest> {
    // The same bounded read as `plan`: a regular file within the one sweep-file cap.
    let sweep_toml = sweep::read_sweep_file(file).map_err(|e| BadInput(e.to_string()))?;
    Ok(request_of(sweep_toml, data_path, model_files))
}

/// The request that submits `sweep_toml` with its data path override and model files.
fn request_of(
    sweep_toml: String,
    data_path: Option<String>,
    model_files: &[LocalModelFile],
) -> pb::SubmitSweepRequest {
    let mut overrides = HashMap::new();
    if let Some(path) = data_path {
        overrides.insert("data.path".to_owned(), path);
    }
    pb::SubmitSweepRequest {
        sweep_toml,
        overrides,
        model_files: model_files
            .iter()
            .map(|l| {
                (
                    l.written.clone(),
                    pb::ModelFileRef {
                        sha256: l.file.sha256.clone(),
                        bytes: l.file.bytes,
                    },
                )
            })
            .collect(),
    }
}

/// `advsweep submit`: the file is read once; the model files it names are found beside it and
/// hashed once (a missing one is a [`BadInput`]), then uploaded before the sweep is submitted.
/// A file that does not parse is sent as it is: the coordinator names its error (and its own
/// limits, which may differ from this machine's defaults, decide what it accepts).
pub async fn submit(
    target: &Target,
    file: &Path,
    data_path: Option<String>,
) -> anyhow::Result<ExitCode> {
    let origin = file.display().to_string();
    let text = sweep::read_sweep_file(file).map_err(|e| BadInput(e.to_string()))?;
    let parsed = sweep::parse_sweep(&text, &origin).ok();
    let files = match &parsed {
        None => Vec::new(),
        Some(parsed) => {
            let base = file.parent().unwrap_or(Path::new("."));
            sweep::model_files::hash_local(parsed, base, &origin)
                .map_err(|e| BadInput(e.to_string()))?
        }
    };
    let overrides = sweep::Overrides {
        data_path: data_path.clone(),
        model_files: sweep::model_files::refs(&files),
    };
    if let Some(plan) = parsed.and_then(|p| sweep::expand(&p, &overrides, &origin).ok()) {
        for problem in super::data_check::problems(&plan) {
            errln!("advsweep: warning: {problem}; submitting anyway (the workers must see it)");
        }
    }
    let request = request_of(text, data_path, &files);
    let mut client = connect(target).await?;
    upload_model_files(&mut client, &files).await?;
    let r = client
        .submit_sweep(request)
        .await
        .map_err(|s| rpc_error("SubmitSweep", s))?
        .into_inner();
    outln!(
        "submitted sweep {} ({}): {} runs, {} cells, {} already done",
        r.name,
        r.sweep_id,
        r.runs,
        r.cells,
        r.cells_already_done
    );
    outln!("follow it with: advsweep watch {}", r.sweep_id);
    Ok(ExitCode::SUCCESS)
}

fn counts(c: Option<&pb::StateCounts>) -> String {
    let c = rows::counts(c);
    let mut s = format!("{}/{} done", c.done, c.total());
    for state in [
        ShownState::Running,
        ShownState::Pending,
        ShownState::Failed,
        ShownState::Cancelled,
    ] {
        let n = c.get(state);
        if n > 0 {
            s.push_str(&format!(", {n} {state}"));
        }
    }
    s
}

pub fn print_detail(detail: &pb::SweepDetail) -> anyhow::Result<()> {
    if let Some(s) = &detail.summary {
        outln!("sweep {} ({}): {}", s.name, s.sweep_id, s.state);
        outln!("  runs:  {}", counts(s.runs.as_ref()));
        outln!("  cells: {}", counts(s.cells.as_ref()));
    }
    outln!();
    for run in &detail.runs {
        let last = run.epochs.last();
        outln!(
            "run {} {:<9} {}/{} seed={}{} attempt={}{}{}",
            run.run_id,
            run.state,
            run.model,
            run.defense_name,
            run.seed,
            run.spec
                .as_ref()
                .and_then(|s| s.data.as_ref())
                .and_then(|d| d.shard)
                .map(|s| format!(" shard={}/{}", s.index + 1, s.count))
                .unwrap_or_default(),
            run.attempt,
            last.map(|e| format!(
                " epoch={} loss={:.3} test_acc={:.1}%",
                e.epoch,
                e.train_loss,
                100.0 * e.test_accuracy
            ))
            .unwrap_or_default(),
            if run.error.is_empty() {
                String::new()
            } else {
                format!("\n    error: {}", run.error)
            }
        );
        for w in &run.warnings {
            outln!("    warning: {w}");
        }
        if run.attempts.len() > 1
            || run
                .attempts
                .iter()
                .any(|a| a.outcome != AttemptOutcome::Done.as_str())
        {
            for a in &run.attempts {
                outln!(
                    "    attempt {} on {}: {}{}{}",
                    a.attempt,
                    if a.worker_id.is_empty() {
                        "?"
                    } else {
                        &a.worker_id
                    },
                    a.outcome,
                    attempt_budget(&a.outcome, run.max_attempts),
                    if a.reason.is_empty() {
                        String::new()
                    } else {
                        format!(" ({})", a.reason)
                    }
                );
            }
        }
    }
    for cell in detail.cells.iter().filter(|c| !c.error.is_empty()) {
        outln!("cell {} {}: {}", cell.cell_id, cell.state, cell.error);
    }
    outln!();
    out!(
        "{}",
        Pivot::new(&rows::sweep_report(detail)?.cells, Layout::default()).shown()
    );
    Ok(())
}

/// What an attempt's outcome costs the run: only reported errors count toward the sweep's
/// `max_attempts`; a lost worker's expired lease has a budget of its own, and a run handed back
/// (shutdown, Ctrl-C) costs nothing.
fn attempt_budget(outcome: &str, max_attempts: u32) -> String {
    match AttemptOutcome::parse(outcome) {
        Ok(AttemptOutcome::Failed) => format!(", counted toward max_attempts = {max_attempts}"),
        Ok(AttemptOutcome::Expired) => ", lost worker: not counted toward max_attempts".into(),
        Ok(AttemptOutcome::Preempted) => ", handed back: not counted".into(),
        Ok(AttemptOutcome::Done) | Err(_) => String::new(),
    }
}

#[derive(serde::Serialize)]
struct SweepLine {
    sweep_id: String,
    name: String,
    state: String,
    created_unix_ms: i64,
    cells_done: u32,
    cells_total: u32,
    cells_failed: u32,
}

pub async fn status(
    target: &Target,
    state_dir: Option<&std::path::Path>,
    sweep: Option<&str>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let mut sweeps = super::source::Sweeps::open(target, state_dir).await?;
    match sweep {
        None => {
            let list = pb::ListSweepsResponse {
                sweeps: sweeps.list().await?,
            };
            if json {
                let lines: Vec<SweepLine> = list
                    .sweeps
                    .iter()
                    .map(|s| {
                        let c = s.cells.unwrap_or_default();
                        SweepLine {
                            sweep_id: s.sweep_id.clone(),
                            name: s.name.clone(),
                            state: s.state.clone(),
                            created_unix_ms: s.created_unix_ms,
                            cells_done: c.done,
                            cells_total: rows::counts(Some(&c)).total(),
                            cells_failed: c.failed,
                        }
                    })
                    .collect();
                outln!("{}", serde_json::to_string_pretty(&lines)?);
                return Ok(ExitCode::SUCCESS);
            }
            if list.sweeps.is_empty() {
                outln!("no sweeps");
            }
            for s in list.sweeps {
                outln!(
                    "{}  {:<10} {:<24} cells: {}",
                    s.sweep_id,
                    s.state,
                    s.name,
                    counts(s.cells.as_ref())
                );
            }
        }
        Some(sweep) => {
            let detail = sweeps.detail(sweep).await?;
            if json {
                outln!(
                    "{}",
                    advsweep_report::export::json(&rows::sweep_report(&detail)?)
                );
            } else {
                print_detail(&detail)?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn watch(target: &Target, sweep: &str, json: bool) -> anyhow::Result<ExitCode> {
    let mut client = connect(target).await?;
    let output = if json {
        progress::Output::Json
    } else {
        progress::Output::Human
    };
    let sweep_id = resolve_sweep(&mut client, sweep).await?;
    let last = progress::follow(&mut client, &sweep_id, output).await?;
    if !json {
        // The final screen keeps what the bars showed: the table and the warnings.
        let detail = client
            .get_sweep(pb::GetSweepRequest {
                sweep_id: sweep_id.clone(),
            })
            .await
            .map_err(|s| rpc_error("GetSweep", s))?
            .into_inner();
        progress::final_screen(&detail, &last, None)?;
    }
    Ok(if SweepState::parse(&last.state) == Ok(SweepState::Done) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// What `retry` and `resume` re-queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requeue {
    /// `retry`: failed cells (or the named ones).
    Failed,
    /// `resume`: failed and cancelled cells.
    Resume,
}

/// `1 cell`, `2 cells`.
pub fn count(n: u32, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// Checks a cell id a user typed before it goes out, so the error names the argument, not a
/// request field.
fn cell_argument(id: &str) -> Result<(), BadInput> {
    if advsweep_core::ids::ContentId::Cell.matches(id) {
        Ok(())
    } else {
        Err(BadInput(format!(
            "--cell {}: not a cell id (`c-` and 16 hex digits, as `advsweep status SWEEP` lists them)",
            advsweep_core::validate::shown(id, 40)
        )))
    }
}

pub async fn retry(
    target: &Target,
    sweep: &str,
    cells: Vec<String>,
    what: Requeue,
) -> anyhow::Result<ExitCode> {
    for id in &cells {
        cell_argument(id)?;
    }
    let mut client = connect(target).await?;
    let sweep_id = resolve_sweep(&mut client, sweep).await?;
    let r = client
        .retry_sweep(pb::RetrySweepRequest {
            sweep_id: sweep_id.clone(),
            cell_ids: cells,
            include_cancelled: what == Requeue::Resume,
        })
        .await
        .map_err(|s| rpc_error("RetrySweep", s))?
        .into_inner();
    if r.cells_requeued == 0 {
        let summary = client
            .get_sweep(pb::GetSweepRequest {
                sweep_id: sweep_id.clone(),
            })
            .await
            .map_err(|s| rpc_error("GetSweep", s))?
            .into_inner()
            .summary
            .unwrap_or_default();
        let c = rows::counts(summary.cells.as_ref());
        let hint = if what == Requeue::Failed && c.cancelled > 0 {
            format!(
                "; `advsweep resume {sweep}` re-queues its {}",
                count(c.cancelled, "cancelled cell", "cancelled cells")
            )
        } else {
            String::new()
        };
        outln!(
            "nothing to {}: sweep {sweep_id} is {} with no {} cells{hint}",
            if what == Requeue::Resume {
                "resume"
            } else {
                "retry"
            },
            summary.state,
            if what == Requeue::Resume {
                "failed or cancelled"
            } else {
                "failed"
            }
        );
        return Ok(ExitCode::SUCCESS);
    }
    outln!(
        "re-queued {} ({}, each with a fresh budget of attempts) of sweep {sweep_id}",
        count(r.cells_requeued, "cell", "cells"),
        count(r.runs_requeued, "run", "runs")
    );
    Ok(ExitCode::SUCCESS)
}

pub async fn cancel(target: &Target, sweep: &str) -> anyhow::Result<ExitCode> {
    let mut client = connect(target).await?;
    let sweep_id = resolve_sweep(&mut client, sweep).await?;
    let r = client
        .cancel_sweep(pb::CancelSweepRequest {
            sweep_id: sweep_id.clone(),
        })
        .await
        .map_err(|s| rpc_error("CancelSweep", s))?
        .into_inner();
    outln!(
        "cancelled sweep {sweep_id}: {} cancelled",
        count(r.cells_cancelled, "cell", "cells")
    );
    if r.cells_shared > 0 {
        outln!(
            "{} keep running: another active sweep shares them (the cancelled sweep shows them \
             as running, and reads done if they all finish); `advsweep resume {sweep}` undoes the cancel",
            count(r.cells_shared, "cell", "cells")
        );
    }
    Ok(ExitCode::SUCCESS)
}
