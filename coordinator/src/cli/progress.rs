//! Following a sweep through `WatchSweep`: a progress bar on a terminal, one line per event
//! otherwise (CI logs, pipes).

use std::io::IsTerminal;

use advsweep_proto::v1 as pb;
use advsweep_proto::v1::sweep_service_client::SweepServiceClient;
use indicatif::{ProgressBar, ProgressStyle};
use tonic::transport::Channel;

use super::client::rpc_error;

/// Streams events until the sweep reaches a terminal state; returns the last summary.
pub async fn follow(
    client: &mut SweepServiceClient<Channel>,
    sweep_id: &str,
) -> anyhow::Result<pb::SweepSummary> {
    let mut stream = client
        .watch_sweep(pb::WatchSweepRequest {
            sweep_id: sweep_id.to_owned(),
        })
        .await
        .map_err(|s| rpc_error("WatchSweep", s))?
        .into_inner();
    let interactive = std::io::stderr().is_terminal();
    let bar = if interactive {
        let bar = ProgressBar::new(0);
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {bar:40.cyan/blue} {pos}/{len} cells  {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar.enable_steady_tick(std::time::Duration::from_millis(200));
        Some(bar)
    } else {
        None
    };
    let mut last = None;
    while let Some(event) = stream
        .message()
        .await
        .map_err(|s| rpc_error("WatchSweep", s))?
    {
        let summary = event.summary.unwrap_or_default();
        let cells = summary.cells.unwrap_or_default();
        let total = cells.pending + cells.running + cells.done + cells.failed + cells.cancelled;
        match &bar {
            Some(bar) => {
                bar.set_length(u64::from(total));
                bar.set_position(u64::from(cells.done + cells.failed + cells.cancelled));
                bar.set_message(format!(
                    "{} running, {} failed",
                    cells.running, cells.failed
                ));
            }
            None => eprintln!("advsweep: {}", event.message),
        }
        let finished = event.finished;
        last = Some(summary);
        if finished {
            break;
        }
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    last.ok_or_else(|| anyhow::anyhow!("the coordinator closed the watch stream without an event"))
}
