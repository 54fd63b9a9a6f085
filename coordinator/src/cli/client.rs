//! The client commands: `submit`, `status`, `watch`, `cancel`.

use std::collections::HashMap;
use std::path::Path;
use std::process::ExitCode;

use advsweep_proto::v1 as pb;
use advsweep_proto::v1::sweep_service_client::SweepServiceClient;
use anyhow::Context;
use tonic::transport::Channel;

use super::{BadInput, progress, rows};
use crate::report::{Layout, Pivot};

#[derive(Debug, Clone, clap::Args)]
pub struct Target {
    /// Coordinator address.
    #[arg(
        long,
        default_value = "http://127.0.0.1:50051",
        env = "ADVSWEEP_COORDINATOR"
    )]
    pub coordinator: String,
}

pub async fn connect(url: &str) -> anyhow::Result<SweepServiceClient<Channel>> {
    let client = SweepServiceClient::connect(url.to_owned())
        .await
        .with_context(|| format!("cannot reach the coordinator at {url}"))?;
    Ok(client.max_decoding_message_size(64 << 20))
}

/// Maps a gRPC error to an error naming the call; `invalid_argument` counts as bad input.
pub fn rpc_error(call: &str, status: tonic::Status) -> anyhow::Error {
    if status.code() == tonic::Code::InvalidArgument || status.code() == tonic::Code::NotFound {
        BadInput(status.message().to_owned()).into()
    } else {
        anyhow::anyhow!("{call} failed: {}: {}", status.code(), status.message())
    }
}

pub fn submit_request(
    file: &Path,
    data_path: Option<String>,
) -> anyhow::Result<pb::SubmitSweepRequest> {
    let sweep_toml = std::fs::read_to_string(file)
        .map_err(|e| BadInput(format!("cannot read sweep file {}: {e}", file.display())))?;
    let mut overrides = HashMap::new();
    if let Some(path) = data_path {
        overrides.insert("data.path".to_owned(), path);
    }
    Ok(pb::SubmitSweepRequest {
        sweep_toml,
        overrides,
    })
}

pub async fn submit(
    target: &Target,
    file: &Path,
    data_path: Option<String>,
) -> anyhow::Result<ExitCode> {
    let request = submit_request(file, data_path)?;
    let mut client = connect(&target.coordinator).await?;
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
    let c = c.cloned().unwrap_or_default();
    let total = c.pending + c.running + c.done + c.failed + c.cancelled;
    let mut s = format!("{}/{} done", c.done, total);
    for (n, label) in [
        (c.running, "running"),
        (c.pending, "pending"),
        (c.failed, "failed"),
        (c.cancelled, "cancelled"),
    ] {
        if n > 0 {
            s.push_str(&format!(", {n} {label}"));
        }
    }
    s
}

pub fn print_detail(detail: &pb::SweepDetail) {
    if let Some(s) = &detail.summary {
        outln!("sweep {} ({}): {}", s.name, s.sweep_id, s.state);
        outln!("  runs:  {}", counts(s.runs.as_ref()));
        outln!("  cells: {}", counts(s.cells.as_ref()));
    }
    outln!();
    for run in &detail.runs {
        let last = run.epochs.last();
        outln!(
            "run {} {:<9} {}/{} seed={} attempt={}{}{}",
            run.run_id,
            run.state,
            run.model,
            run.defense_name,
            run.seed,
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
        if run.attempts.len() > 1 || run.attempts.iter().any(|a| a.outcome != "done") {
            for a in &run.attempts {
                outln!(
                    "    attempt {}/{} on {}: {}{}",
                    a.attempt,
                    run.max_attempts,
                    if a.worker_id.is_empty() {
                        "?"
                    } else {
                        &a.worker_id
                    },
                    a.outcome,
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
        Pivot::new(&rows::sweep_report(detail).cells, Layout::default()).markdown()
    );
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

pub async fn status(target: &Target, sweep: Option<&str>, json: bool) -> anyhow::Result<ExitCode> {
    let mut client = connect(&target.coordinator).await?;
    match sweep {
        None => {
            let list = client
                .list_sweeps(pb::ListSweepsRequest {})
                .await
                .map_err(|s| rpc_error("ListSweeps", s))?
                .into_inner();
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
                            cells_total: c.pending + c.running + c.done + c.failed + c.cancelled,
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
        Some(id) => {
            let detail = client
                .get_sweep(pb::GetSweepRequest {
                    sweep_id: id.to_owned(),
                })
                .await
                .map_err(|s| rpc_error("GetSweep", s))?
                .into_inner();
            if json {
                outln!(
                    "{}",
                    crate::report::export::json(&rows::sweep_report(&detail))
                );
            } else {
                print_detail(&detail);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn watch(target: &Target, sweep: &str, json: bool) -> anyhow::Result<ExitCode> {
    let mut client = connect(&target.coordinator).await?;
    let output = if json {
        progress::Output::Json
    } else {
        progress::Output::Human
    };
    let last = progress::follow(&mut client, sweep, output).await?;
    if !json {
        let c = last.cells.unwrap_or_default();
        outln!(
            "sweep {} {}: {} cells done, {} failed, {} cancelled",
            last.sweep_id,
            last.state,
            c.done,
            c.failed,
            c.cancelled
        );
    }
    Ok(if last.state == "done" {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

pub async fn retry(target: &Target, sweep: &str, cells: Vec<String>) -> anyhow::Result<ExitCode> {
    let mut client = connect(&target.coordinator).await?;
    let r = client
        .retry_sweep(pb::RetrySweepRequest {
            sweep_id: sweep.to_owned(),
            cell_ids: cells,
        })
        .await
        .map_err(|s| rpc_error("RetrySweep", s))?
        .into_inner();
    outln!(
        "re-queued {} cells ({} runs) of sweep {sweep}",
        r.cells_requeued,
        r.runs_requeued
    );
    Ok(ExitCode::SUCCESS)
}

pub async fn cancel(target: &Target, sweep: &str) -> anyhow::Result<ExitCode> {
    let mut client = connect(&target.coordinator).await?;
    let r = client
        .cancel_sweep(pb::CancelSweepRequest {
            sweep_id: sweep.to_owned(),
        })
        .await
        .map_err(|s| rpc_error("CancelSweep", s))?
        .into_inner();
    outln!(
        "cancelled sweep {sweep}: {} cells cancelled",
        r.cells_cancelled
    );
    Ok(ExitCode::SUCCESS)
}
