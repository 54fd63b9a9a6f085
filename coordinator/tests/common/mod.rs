//! Shared set-up of the hostile-input tests: a real store in a temporary state directory with a
//! submitted sweep, a registered worker, a live lease and a stored checkpoint, and the real gRPC
//! handlers over it.

#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use advsweep_coordinator::grpc::{ChangeNotifier, SweepApi, WorkerApi};
use advsweep_coordinator::metrics::Metrics;
use advsweep_coordinator::scheduler::{LeaseSettings, Scheduler};
use advsweep_coordinator::store::SqliteStore;
pub use advsweep_coordinator::store::StateStore;
use advsweep_coordinator::sweep::{Overrides, expand, parse_sweep};
use advsweep_proto::v1 as pb;
use advsweep_proto::v1::worker_service_server::WorkerService;
use tonic::Request;

/// A small synthetic sweep: 2 runs (standard, tied FGSM training) of 4 epochs, 5 cells.
pub const SWEEP: &str = r#"
version = 1
name = "hostile"
[data]
source = "synthetic"
[training]
epochs = 4
[grid]
models = ["basic"]
defenses = ["standard", "at-fgsm"]
attacks = ["none", "fgsm"]
epsilons = ["8/255"]
"#;

/// Where temporary state directories go: tmpfs when there is one (thousands of group commits
/// with `synchronous = FULL` stay fast), else the system temp dir.
pub fn temp_dir() -> tempfile::TempDir {
    let shm = PathBuf::from("/dev/shm");
    if shm.is_dir()
        && let Ok(dir) = tempfile::tempdir_in(&shm)
    {
        return dir;
    }
    tempfile::tempdir().expect("temp dir")
}

/// The fixture's live lease and the cells of its run.
#[derive(Debug, Clone)]
pub struct Live {
    pub lease: pb::LeaseRef,
    pub cells: Vec<String>,
}

/// A coordinator's handlers over a fresh store, with one sweep submitted, one worker registered,
/// one of its runs leased and a checkpoint stored for it.
pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub store: Arc<SqliteStore>,
    pub scheduler: Arc<Scheduler>,
    pub workers: WorkerApi,
    pub sweeps: SweepApi,
    pub sweep_id: String,
    pub cell_ids: Vec<String>,
    pub worker_id: String,
    /// A stored checkpoint: (run id, checkpoint id).
    pub checkpoint: (String, String),
    live: Mutex<Live>,
    /// Seeds of the sweeps [`Fixture::renew`] submits (fresh runs to lease).
    next_seed: AtomicU64,
}

/// Failed runs retry at once (no back-off), so a renewed lease is always at hand.
fn settings() -> LeaseSettings {
    LeaseSettings {
        retry_base: Duration::ZERO,
        retry_max: Duration::ZERO,
        ..LeaseSettings::default()
    }
}

impl Fixture {
    pub async fn new() -> Fixture {
        let dir = temp_dir();
        let store = Arc::new(SqliteStore::open(dir.path()).expect("store"));
        let scheduler = Arc::new(Scheduler::new(Arc::clone(&store) as _, settings()));
        let file = parse_sweep(SWEEP, "hostile.toml").expect("parses");
        let plan = expand(&file, &Overrides::default(), "hostile.toml").expect("expands");
        let outcome = scheduler
            .submit(plan.clone(), SWEEP.to_owned())
            .await
            .expect("submits");
        let changes = ChangeNotifier::default();
        let workers = WorkerApi::new(
            Arc::clone(&scheduler),
            changes.clone(),
            Arc::new(Metrics::default()),
        );
        let sweeps = SweepApi::new(Arc::clone(&scheduler), changes);
        let worker_id = workers
            .register(Request::new(pb::RegisterRequest {
                name: "fixture".into(),
                hostname: "localhost".into(),
                device: "cpu".into(),
                slots: 1,
                version: "test".into(),
            }))
            .await
            .expect("registers")
            .into_inner()
            .worker_id;
        let live = lease(&workers, &worker_id).await.expect("a run is ready");
        let checkpoint = store_checkpoint(&scheduler, &live.lease).await;
        Fixture {
            dir,
            store,
            scheduler,
            workers,
            sweeps,
            sweep_id: outcome.sweep_id.to_string(),
            cell_ids: plan.cells.iter().map(|c| c.id.to_string()).collect(),
            worker_id,
            checkpoint,
            live: Mutex::new(live),
            next_seed: AtomicU64::new(1),
        }
    }

    /// The live lease (renewed by [`Fixture::renew`]).
    pub fn live(&self) -> Live {
        self.live.lock().expect("lock").clone()
    }

    /// Makes sure [`Fixture::live`] is a live lease again after a case ended it: leases another
    /// run, submitting a sweep with a fresh seed when none is ready.
    pub async fn renew(&self) {
        let held = held(&self.live().lease);
        if self.scheduler.verify_lease(&held).await.is_ok() {
            return;
        }
        let next = match lease(&self.workers, &self.worker_id).await {
            Some(next) => next,
            None => {
                let seed = self.next_seed.fetch_add(1, Ordering::Relaxed);
                let text = SWEEP.replace("[grid]", &format!("[grid]\nseeds = [{seed}]"));
                let file = parse_sweep(&text, "renew.toml").expect("parses");
                let plan = expand(&file, &Overrides::default(), "renew.toml").expect("expands");
                self.scheduler.submit(plan, text).await.expect("submits");
                lease(&self.workers, &self.worker_id)
                    .await
                    .expect("a fresh run is ready")
            }
        };
        *self.live.lock().expect("lock") = next;
    }
}

/// An id the fixture holds as the wire has it, as the typed id (`RunId`, `SweepId`, …) the
/// scheduler and the store take.
pub fn typed<T>(id: &str) -> T
where
    T: std::str::FromStr,
    T::Err: std::fmt::Debug,
{
    id.parse().expect("a well-formed id")
}

/// A lease as the wire quotes it, as the scheduler takes it.
pub fn held(lease: &pb::LeaseRef) -> advsweep_coordinator::store::LeaseRef {
    advsweep_coordinator::store::LeaseRef {
        worker_id: lease.worker_id.clone(),
        run_id: typed(&lease.run_id),
        lease_id: typed(&lease.lease_id),
        attempt: lease.attempt,
    }
}

async fn lease(workers: &WorkerApi, worker_id: &str) -> Option<Live> {
    let lease = workers
        .lease(Request::new(pb::LeaseRequest {
            worker_id: worker_id.to_owned(),
            ..Default::default()
        }))
        .await
        .expect("leases")
        .into_inner()
        .lease?;
    let run = lease.run.expect("a lease carries its run");
    Some(Live {
        cells: run.cells.iter().map(|c| c.cell_id.clone()).collect(),
        lease: pb::LeaseRef {
            worker_id: worker_id.to_owned(),
            run_id: run.run_id,
            lease_id: lease.lease_id,
            attempt: lease.attempt,
        },
    })
}

/// A checkpoint file stored the way an upload stores one; returns (run id, checkpoint id).
async fn store_checkpoint(scheduler: &Scheduler, lease: &pb::LeaseRef) -> (String, String) {
    use sha2::Digest;
    let bytes = b"not really a model".to_vec();
    let sha: String = sha2::Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let held = held(lease);
    let dir = scheduler.artifacts_dir(&held.run_id);
    std::fs::create_dir_all(&dir).expect("artifacts dir");
    let path = dir.join("epoch-00001.ckpt");
    std::fs::write(&path, &bytes).expect("checkpoint file");
    let id = scheduler
        .record_checkpoint(&held, 1, &sha, bytes.len() as u64, &path)
        .await
        .expect("records");
    (lease.run_id.clone(), id)
}

/// The fixture's WorkerService over real gRPC on 127.0.0.1 (8 MiB messages, as the
/// coordinator allows); returns its address.
pub async fn serve_workers(f: &Fixture) -> std::net::SocketAddr {
    use advsweep_proto::v1::worker_service_server::WorkerServiceServer;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("binds");
    let addr = listener.local_addr().expect("address");
    let service = WorkerServiceServer::new(f.workers.clone()).max_decoding_message_size(8 << 20);
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    addr
}

/// A multi-threaded runtime for driving handlers from synchronous (proptest) code.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// The codes a hostile or confused caller may get: its own mistakes, never ours (quoting
/// another worker's lease is `PermissionDenied`).
pub fn is_callers_fault(code: tonic::Code) -> bool {
    matches!(
        code,
        tonic::Code::InvalidArgument
            | tonic::Code::NotFound
            | tonic::Code::FailedPrecondition
            | tonic::Code::Unauthenticated
            | tonic::Code::PermissionDenied
    )
}

/// The plan of a shipped sweep file (`sweeps/…`): read, parsed and expanded like `load_plan`,
/// with stand-ins for the model files it names (sweeps/own-model.toml's are the user's to
/// export), so every shipped file is checked here.
pub fn shipped_plan(path: &std::path::Path) -> advsweep_coordinator::sweep::Plan {
    let origin = path.display().to_string();
    let text = advsweep_coordinator::sweep::read_sweep_file(path).unwrap_or_else(|e| panic!("{e}"));
    let file = parse_sweep(&text, &origin).unwrap_or_else(|e| panic!("{e}"));
    let overrides = Overrides {
        model_files: advsweep_coordinator::sweep::model_files::stand_ins(&file),
        ..Overrides::default()
    };
    expand(&file, &overrides, &origin).unwrap_or_else(|e| panic!("{e}"))
}
