//! One simulated worker: the real worker's RPC sequence (register, lease, heartbeat, report
//! epochs and cells, complete) without the compute, and what it measured.

use super::*;

#[derive(Debug, Default)]
pub(super) struct WorkerStats {
    /// Seconds, granted leases only.
    pub(super) lease_latency: Vec<f64>,
    pub(super) cell_latency: Vec<f64>,
    /// (cell id, lease id) of every acknowledged `CompleteCell`.
    pub(super) acks: Vec<(String, String)>,
    pub(super) points: u64,
    pub(super) runs: u64,
    pub(super) waits: u64,
    pub(super) transient_errors: u64,
    pub(super) errors: Vec<String>,
    pub(super) first_lease: Option<Instant>,
    pub(super) last_done: Option<Instant>,
}

/// SplitMix64: a worker's own reproducible sequence of run lengths.
pub(super) struct SplitMix64(u64);

impl SplitMix64 {
    /// Uniform in [0, 1).
    pub(super) fn next_unit(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}

pub(super) fn accuracy_for(attack: &str, epsilon: f64) -> f64 {
    let strength = if attack.starts_with("pgd") { 1.2 } else { 1.0 };
    (0.85 - 9.0 * epsilon * strength).max(0.02)
}

/// One simulated worker: the real worker's RPC sequence without the compute.
pub(super) async fn worker(
    channel: Channel,
    index: usize,
    go: Arc<tokio::sync::Barrier>,
    reporting: Reporting,
    compute: Duration,
) -> WorkerStats {
    let client = WorkerServiceClient::new(channel);
    let mut stats = WorkerStats::default();
    let mut jitter = SplitMix64(index as u64);
    let register = pb::RegisterRequest {
        name: format!("bench-{index}"),
        hostname: "bench".into(),
        device: "none".into(),
        slots: 1,
        version: "bench".into(),
    };
    // Like the worker's `register`, retried while the coordinator is not reachable; a
    // connection dropped while the coordinator accepts hundreds of others (Cancelled) too.
    let worker_id = loop {
        let session: Result<pb::RegisterResponse, Status> =
            call!(stats, client, register, register);
        match session {
            Ok(s) => break s.worker_id,
            Err(status) if status.code() == Code::Cancelled => {
                stats.transient_errors += 1;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(status) => panic!("register: {status}"),
        }
    };
    go.wait().await;
    loop {
        let request = pb::LeaseRequest {
            worker_id: worker_id.clone(),
            ..Default::default()
        };
        let sent = Instant::now();
        stats.first_lease.get_or_insert(sent);
        let response: Result<pb::LeaseResponse, Status> = call!(stats, client, lease, request);
        let response = match response {
            Ok(r) => r,
            Err(status) => {
                stats.errors.push(format!("Lease: {status}"));
                tokio::time::sleep(IDLE_POLL_MIN).await;
                continue;
            }
        };
        let Some(lease) = response.lease else {
            if response.idle {
                return stats;
            }
            stats.waits += 1;
            let wait =
                Duration::from_millis(response.retry_after_ms).clamp(IDLE_POLL_MIN, IDLE_POLL_MAX);
            tokio::time::sleep(wait).await;
            continue;
        };
        stats.lease_latency.push(sent.elapsed().as_secs_f64());
        let run = lease.run.expect("lease carries a run");
        let lease_ref = pb::LeaseRef {
            worker_id: worker_id.clone(),
            run_id: run.run_id.clone(),
            lease_id: lease.lease_id.clone(),
            attempt: lease.attempt,
        };
        let epochs: Vec<pb::EpochMetrics> = (1..=EPOCHS)
            .map(|epoch| pb::EpochMetrics {
                epoch,
                train_loss: 2.3 / f64::from(epoch),
                train_accuracy: 0.3 + 0.1 * f64::from(epoch),
                test_accuracy: 0.25 + 0.1 * f64::from(epoch),
                seconds: 1.0,
                images_per_second: 10_000.0,
            })
            .collect();
        if !compute.is_zero() {
            tokio::time::sleep(compute.mul_f64(0.5 + jitter.next_unit())).await;
        }
        let metric_calls: Vec<Vec<pb::EpochMetrics>> = match reporting {
            Reporting::Batched => vec![epochs],
            Reporting::PerEvent => epochs.into_iter().map(|e| vec![e]).collect(),
        };
        let mut lost = false;
        for epochs in metric_calls {
            let n = epochs.len() as u64;
            let request = pb::ReportMetricsRequest {
                lease: Some(lease_ref.clone()),
                epochs,
            };
            let r: Result<pb::Ack, Status> = call!(stats, client, report_metrics, request);
            match r {
                Ok(_) => stats.points += n,
                Err(status) => {
                    stats.errors.push(format!("ReportMetrics: {status}"));
                    lost = true;
                    break;
                }
            }
        }
        let reports: Vec<pb::CellReport> = run
            .cells
            .iter()
            .map(|cell| {
                let accuracy = accuracy_for(&cell.attack_name, cell.epsilon);
                pb::CellReport {
                    cell_id: cell.cell_id.clone(),
                    result: Some(pb::CellResult {
                        accuracy,
                        attack_success_rate: (0.85 - accuracy) / 0.85,
                        mean_linf: cell.epsilon,
                        mean_l2: cell.epsilon * 40.0,
                        images_per_second: 5_000.0,
                        seconds: 0.2,
                        examples: 1_000,
                        ..Default::default()
                    }),
                }
            })
            .collect();
        let cell_calls: Vec<Vec<pb::CellReport>> = match reporting {
            Reporting::Batched => vec![reports],
            Reporting::PerEvent => reports.into_iter().map(|r| vec![r]).collect(),
        };
        for cells in cell_calls {
            if lost {
                break;
            }
            let sent = Instant::now();
            let r: Result<pb::Ack, Status> = if reporting == Reporting::Batched {
                let request = pb::CompleteCellsRequest {
                    lease: Some(lease_ref.clone()),
                    cells: cells.clone(),
                };
                call!(stats, client, complete_cells, request)
            } else {
                let cell = cells[0].clone();
                let request = pb::CompleteCellRequest {
                    lease: Some(lease_ref.clone()),
                    cell_id: cell.cell_id,
                    result: cell.result,
                };
                call!(stats, client, complete_cell, request)
            };
            match r {
                Ok(_) => {
                    stats.cell_latency.push(sent.elapsed().as_secs_f64());
                    for cell in &cells {
                        stats
                            .acks
                            .push((cell.cell_id.clone(), lease.lease_id.clone()));
                    }
                }
                Err(status) => {
                    stats.errors.push(format!("CompleteCell(s): {status}"));
                    lost = true;
                }
            }
        }
        if lost {
            continue;
        }
        let request = pb::CompleteRunRequest {
            lease: Some(lease_ref),
        };
        let r: Result<pb::Ack, Status> = call!(stats, client, complete_run, request);
        match r {
            Ok(_) => {
                stats.runs += 1;
                stats.last_done = Some(Instant::now());
            }
            Err(status) => stats.errors.push(format!("CompleteRun: {status}")),
        }
    }
}
