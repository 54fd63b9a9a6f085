//! What the dashboard reads, shared by every open page so that pages cost the coordinator
//! (almost) nothing more than one page: the coordinator's cells/s must not drop by more than
//! 10 % with 50 pages open on a busy sweep (`bench/dashboard-load.sh`).
//!
//! * **Progress** (the event streams): one task per watched sweep reads its summary and runs in
//!   flight after a change — at most once per [`PROGRESS_EVERY`] or twenty times the last
//!   read's duration, however many changes and however many streams — and publishes it on a
//!   watch channel every stream of that sweep follows. A change after a quiet spell is read
//!   [`PROGRESS_SETTLE`] later, not at once: changes come in bursts (a sweep's start is a
//!   hundred workers leasing in the same millisecond), and the burst is read once, whole. The
//!   task ends with its last subscriber.
//! * **The sweep's detail and report** (the report JSON, `table.md`, the runs): built once per
//!   change of the state and shared; while the state keeps changing, rebuilt at most once per
//!   [`DETAIL_EVERY`] or ten times the last build's duration, whichever is longer (builds never
//!   take more than a tenth of a core). A request never gets a detail older than itself: when the state changed
//!   since the cached one was read, the request waits for the next build rather than take it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use advsweep_core::SweepId;
use advsweep_report::SweepReport;

use crate::grpc::{ChangeNotifier, convert, rows};
use crate::scheduler::Scheduler;
use crate::store::{RunStatus, StoreError, SweepDetail, SweepSummary};

/// At most one progress read per watched sweep this often.
pub const PROGRESS_EVERY: Duration = Duration::from_millis(500);
/// How long after the first change of a burst its read waits for the rest of it.
pub const PROGRESS_SETTLE: Duration = Duration::from_millis(100);
/// At most one detail build per sweep this often while its state keeps changing.
pub const DETAIL_EVERY: Duration = Duration::from_secs(1);
/// A progress read even without a notification this often (a lease that expires changes the
/// state with no call), and how soon an unwatched sweep's task notices it is alone.
const PROGRESS_REFRESH: Duration = Duration::from_secs(5);
/// A cached detail is read again after this long even if nothing was notified.
const DETAIL_MAX_AGE: Duration = Duration::from_secs(30);
/// Sweeps whose detail stays cached.
const DETAILS_KEPT: usize = 8;

/// A sweep's counts and its runs in flight, as one read saw them, with the two events' data
/// rendered once for every stream.
#[derive(Debug, Clone, PartialEq)]
pub struct Progress {
    pub summary: SweepSummary,
    pub running: Vec<RunStatus>,
    /// `event: summary`'s data.
    pub summary_json: String,
    /// `event: running`'s data.
    pub running_json: String,
}

impl Progress {
    fn new(summary: SweepSummary, running: Vec<RunStatus>) -> Progress {
        let runs: Vec<_> = running.iter().map(super::runs::run_json).collect();
        Progress {
            summary_json: super::api::summary_json(&summary).to_string(),
            running_json: serde_json::Value::from(runs).to_string(),
            summary,
            running,
        }
    }

    /// Whether the sweep has settled: every cell finished and no run still held (a run's last
    /// cells are done a moment before the run itself is).
    pub fn settled(&self) -> bool {
        self.summary.state.is_terminal() && self.running.is_empty()
    }
}

/// The latest progress of a watched sweep (`None` until the first read, or once reading it
/// failed).
pub type ProgressFeed = watch::Receiver<Option<Arc<Progress>>>;

/// A sweep's detail and the report made from it, as of one version of the state.
#[derive(Debug)]
pub struct Built {
    pub detail: SweepDetail,
    pub report: SweepReport,
    /// The report as JSON (`sweep.json`), made once, on first use, and shared by every answer
    /// (not copied).
    json: std::sync::OnceLock<axum::body::Bytes>,
    /// The same, gzipped (what browsers ask for: a tenth of the bytes to send to every page).
    json_gzip: std::sync::OnceLock<axum::body::Bytes>,
    /// The runs as `/runs` answers them, made once.
    runs_json: std::sync::OnceLock<axum::body::Bytes>,
    /// Files already made from this report, by name and layout (`table.md?rows=…`): every
    /// page asks for the same ones.
    files: Mutex<HashMap<String, axum::body::Bytes>>,
    version: u64,
    at: Instant,
    /// How long reading and converting it took.
    took: Duration,
}

impl Built {
    /// The runs as `GET /api/v1/sweeps/{sweep}/runs` answers them.
    pub fn runs_json(&self) -> axum::body::Bytes {
        self.runs_json
            .get_or_init(|| {
                let runs: Vec<_> = self.detail.runs.iter().map(super::runs::run_json).collect();
                serde_json::json!({
                    "sweep_id": self.detail.summary.sweep_id.as_str(),
                    "runs": runs,
                })
                .to_string()
                .into()
            })
            .clone()
    }

    /// The file `key` names (a file and its layout), made by `make` the first time.
    pub fn file(&self, key: String, make: impl FnOnce() -> String) -> axum::body::Bytes {
        if let Some(made) = self.files.lock().ok().and_then(|f| f.get(&key).cloned()) {
            return made;
        }
        let made: axum::body::Bytes = make().into();
        if let Ok(mut files) = self.files.lock()
            && files.len() < 64
        {
            files.insert(key, made.clone());
        }
        made
    }

    /// [`Self::report_json`], gzipped.
    pub fn report_json_gzip(&self) -> axum::body::Bytes {
        self.json_gzip
            .get_or_init(|| {
                use std::io::Write as _;
                let json = self.report_json();
                let mut gz = flate2::write::GzEncoder::new(
                    Vec::with_capacity(json.len() / 8),
                    flate2::Compression::fast(),
                );
                // Writing into a Vec cannot fail.
                let _ = gz.write_all(&json);
                gz.finish().unwrap_or_default().into()
            })
            .clone()
    }

    /// The report as `sweep.json` holds it.
    pub fn report_json(&self) -> axum::body::Bytes {
        self.json
            .get_or_init(|| advsweep_report::export::json(&self.report).into())
            .clone()
    }
}

type Slot = Arc<tokio::sync::Mutex<Option<Arc<Built>>>>;
/// Where a watched sweep's reader publishes.
type Feed = Arc<watch::Sender<Option<Arc<Progress>>>>;

/// The shared reads of the dashboard (see the module's doc).
#[derive(Debug, Clone, Default)]
pub struct SweepViews {
    feeds: Arc<Mutex<HashMap<SweepId, Feed>>>,
    details: Arc<Mutex<HashMap<SweepId, Slot>>>,
}

impl SweepViews {
    /// The progress feed of `sweep`, starting its reader when nobody watched it yet.
    pub fn progress(
        &self,
        scheduler: &Arc<Scheduler>,
        changes: &ChangeNotifier,
        sweep: &SweepId,
    ) -> ProgressFeed {
        let Ok(mut feeds) = self.feeds.lock() else {
            // A panicked holder: serve this stream without sharing rather than not at all.
            let (tx, rx) = watch::channel(None);
            spawn_reader(self.clone(), Arc::new(tx), scheduler, changes, sweep);
            return rx;
        };
        if let Some(tx) = feeds.get(sweep) {
            return tx.subscribe();
        }
        let (tx, rx) = watch::channel(None);
        let tx = Arc::new(tx);
        feeds.insert(sweep.clone(), Arc::clone(&tx));
        spawn_reader(self.clone(), tx, scheduler, changes, sweep);
        rx
    }

    /// Forgets `sweep`'s feed when nobody follows it any more (checked under the lock
    /// [`Self::progress`] subscribes under); whether it did.
    fn retire(&self, sweep: &SweepId, tx: &Feed) -> bool {
        let Ok(mut feeds) = self.feeds.lock() else {
            return tx.receiver_count() == 0;
        };
        if tx.receiver_count() > 0 {
            return false;
        }
        if feeds.get(sweep).is_some_and(|t| Arc::ptr_eq(t, tx)) {
            feeds.remove(sweep);
        }
        true
    }

    /// `sweep`'s detail and report, no older than this call: the cached one when the state has
    /// not changed since it was read, else a new one (at most one build per sweep at a time,
    /// and one per [`DETAIL_EVERY`]; concurrent callers share it).
    pub async fn built(
        &self,
        scheduler: &Scheduler,
        changes: &ChangeNotifier,
        sweep: &SweepId,
    ) -> Result<Arc<Built>, BuildError> {
        let wanted = changes.version();
        let slot = self.slot(sweep);
        let mut cached = slot.lock().await;
        if let Some(built) = cached.as_ref() {
            // Unchanged since it was read, or read since this call arrived (and not so old
            // that a change the notifications missed could hide in it).
            // Read no earlier than this call (versions only grow: a build that started after
            // the call arrived serves it and every call queued with it).
            if built.version >= wanted && built.at.elapsed() < DETAIL_MAX_AGE {
                return Ok(Arc::clone(built));
            }
            // At most one build per DETAIL_EVERY, and never more than a tenth of a core on
            // builds: a sweep whose build takes 300 ms is built at most every 3 s.
            let gap = DETAIL_EVERY.max(built.took * 10);
            let since = built.at.elapsed();
            if since < gap {
                tokio::time::sleep(gap - since).await;
            }
        }
        // The version first: a change during the read makes the next caller read again.
        let version = changes.version();
        let started = Instant::now();
        let detail = scheduler
            .sweep_detail(sweep)
            .await
            .map_err(BuildError::Store)?;
        let report = rows::sweep_report(&convert::detail(&detail)).map_err(|e| {
            tracing::error!(error = %e, sweep_id = sweep.as_str(), "dashboard: a stored sweep does not convert");
            BuildError::Unreadable
        })?;
        let built = Arc::new(Built {
            detail,
            report,
            json: std::sync::OnceLock::new(),
            json_gzip: std::sync::OnceLock::new(),
            runs_json: std::sync::OnceLock::new(),
            files: Mutex::default(),
            version,
            at: Instant::now(),
            took: started.elapsed(),
        });
        *cached = Some(Arc::clone(&built));
        Ok(built)
    }

    /// The cache slot of `sweep` (the oldest sweep's dropped beyond [`DETAILS_KEPT`]).
    fn slot(&self, sweep: &SweepId) -> Slot {
        let Ok(mut details) = self.details.lock() else {
            return Slot::default();
        };
        if !details.contains_key(sweep) && details.len() >= DETAILS_KEPT {
            // Evict a slot nobody is building or reading right now.
            let idle = details
                .iter()
                .filter(|(_, slot)| Arc::strong_count(slot) == 1)
                .min_by_key(|(_, slot)| slot.try_lock().ok().and_then(|c| c.as_ref().map(|b| b.at)))
                .map(|(id, _)| id.clone());
            if let Some(id) = idle {
                details.remove(&id);
            }
        }
        Arc::clone(details.entry(sweep.clone()).or_default())
    }
}

/// Why a detail could not be built.
#[derive(Debug)]
pub enum BuildError {
    Store(StoreError),
    /// The stored sweep does not convert to a report (logged).
    Unreadable,
}

fn spawn_reader(
    views: SweepViews,
    tx: Feed,
    scheduler: &Arc<Scheduler>,
    changes: &ChangeNotifier,
    sweep: &SweepId,
) {
    let scheduler = Arc::clone(scheduler);
    let mut changed = changes.subscribe();
    let sweep = sweep.clone();
    tokio::spawn(async move {
        loop {
            let started = Instant::now();
            let read = scheduler.sweep_progress(&sweep).await;
            // Reads never take more than a twentieth of a core (the summary joins every cell of
            // the sweep: ~1.3 ms on 1,000 cells, in proportion beyond).
            let gap = PROGRESS_EVERY.max(started.elapsed() * 20);
            let progress = match read {
                Ok((summary, running)) => Some(Arc::new(Progress::new(summary, running))),
                Err(e) => {
                    tracing::warn!(error = %e, sweep_id = sweep.as_str(), "dashboard: reading a sweep's progress failed");
                    None
                }
            };
            tx.send_if_modified(|current| {
                let same = match (current.as_deref(), progress.as_deref()) {
                    (Some(a), Some(b)) => a.summary == b.summary && a.running == b.running,
                    (None, None) => true,
                    _ => false,
                };
                if !same {
                    *current = progress;
                }
                !same
            });
            let read_at = Instant::now();
            tokio::select! {
                woke = changed.changed() => {
                    if woke.is_err() {
                        // No more notifications (the coordinator is going away): look now
                        // and then until the last stream ends.
                        tokio::time::sleep(PROGRESS_REFRESH).await;
                    }
                }
                _ = tokio::time::sleep(PROGRESS_REFRESH) => {}
            }
            if views.retire(&sweep, &tx) {
                return;
            }
            // Changes that come while this waits are folded into the next read.
            let since = read_at.elapsed();
            tokio::time::sleep(gap.saturating_sub(since).max(PROGRESS_SETTLE)).await;
        }
    });
}
