//! The coordinator on a shared network: bearer tokens with roles, TLS, mutual TLS for
//! workers — over real gRPC, with certificates generated in the test — and the real
//! `advsweep` and `advsweep-worker` processes running a sweep through all of it.

use advsweep_core::ShownState;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use advsweep_coordinator::grpc::ServeOptions;
use advsweep_coordinator::grpc::auth::Auth;
use advsweep_coordinator::scheduler::LeaseSettings;
use advsweep_proto::v1 as pb;
use advsweep_proto::v1::sweep_service_client::SweepServiceClient;
use advsweep_proto::v1::worker_service_client::WorkerServiceClient;
use advsweep_settings::{AuthChannel, ClientAuth, ConnectionSettings, CoordinatorSettings, Secret};
use advsweep_tests::pki::{PemPair, TestCa};
use advsweep_tests::{KillOnDrop, TestCoordinator, free_port, text, workspace_bin};
use tonic::Code;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

const WORKER_TOKEN: &str = "worker-token-for-tests-0123456789";
const CLIENT_TOKEN: &str = "client-token-for-tests-0123456789";

fn auth() -> Auth {
    Auth::new(
        &[Secret::new(WORKER_TOKEN)],
        &[Secret::new(CLIENT_TOKEN)],
        false,
    )
}

/// Connection settings for `url` with an optional token, CA and client certificate.
fn connection(
    url: &str,
    token: Option<&str>,
    ca: Option<&std::path::Path>,
    client_cert: Option<&PemPair>,
) -> ConnectionSettings {
    ConnectionSettings {
        coordinator: url.to_owned(),
        token: token.map(Secret::new),
        tls_ca: ca.map(std::path::Path::to_path_buf),
        tls_cert: client_cert.map(|p| p.cert.clone()),
        tls_key: client_cert.map(|p| p.key.clone()),
        ..ConnectionSettings::default()
    }
}

async fn channel(c: &ConnectionSettings) -> Result<tonic::transport::Channel, String> {
    c.endpoint()
        .map_err(|e| e.to_string())?
        .connect()
        .await
        .map_err(|e| format!("{e:?}"))
}

async fn sweeps(c: &ConnectionSettings) -> Result<SweepServiceClient<AuthChannel>, String> {
    let bearer = c.bearer().map_err(|e| e.to_string())?;
    Ok(SweepServiceClient::with_interceptor(
        channel(c).await?,
        bearer,
    ))
}

async fn workers(c: &ConnectionSettings) -> Result<WorkerServiceClient<AuthChannel>, String> {
    let bearer = c.bearer().map_err(|e| e.to_string())?;
    Ok(WorkerServiceClient::with_interceptor(
        channel(c).await?,
        bearer,
    ))
}

async fn list(c: &ConnectionSettings) -> Result<(), Code> {
    let mut client = sweeps(c).await.map_err(|_| Code::Unavailable)?;
    client
        .list_sweeps(pb::ListSweepsRequest {})
        .await
        .map(|_| ())
        .map_err(|s| s.code())
}

async fn register(c: &ConnectionSettings) -> Result<(), Code> {
    let mut client = workers(c).await.map_err(|_| Code::Unavailable)?;
    client
        .register(pb::RegisterRequest {
            name: "w".into(),
            hostname: "h".into(),
            device: "cpu".into(),
            slots: 1,
            version: "test".into(),
        })
        .await
        .map(|_| ())
        .map_err(|s| s.code())
}

async fn healthy(c: &ConnectionSettings) -> bool {
    let Ok(ch) = channel(c).await else {
        return false;
    };
    HealthClient::new(ch)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_admit_each_role_to_its_own_service_only() {
    let options = ServeOptions {
        auth: auth(),
        ..ServeOptions::default()
    };
    let coordinator =
        TestCoordinator::start_serving("127.0.0.1:0", LeaseSettings::default(), options).await;
    let url = &coordinator.url;
    let none = connection(url, None, None, None);
    let worker = connection(url, Some(WORKER_TOKEN), None, None);
    let client = connection(url, Some(CLIENT_TOKEN), None, None);
    let wrong = connection(url, Some("not-a-token-of-this-coordinator"), None, None);

    assert_eq!(list(&client).await, Ok(()));
    assert_eq!(register(&worker).await, Ok(()));
    assert_eq!(list(&none).await, Err(Code::Unauthenticated));
    assert_eq!(register(&none).await, Err(Code::Unauthenticated));
    assert_eq!(list(&wrong).await, Err(Code::Unauthenticated));
    assert_eq!(register(&wrong).await, Err(Code::Unauthenticated));
    assert_eq!(list(&worker).await, Err(Code::PermissionDenied));
    assert_eq!(register(&client).await, Err(Code::PermissionDenied));
    // Health stays open for probes.
    assert!(healthy(&none).await);
    // A worker token cannot submit work either.
    let mut as_worker = sweeps(&worker).await.expect("channel");
    let submit = as_worker
        .submit_sweep(pb::SubmitSweepRequest {
            sweep_toml: "version = 1".into(),
            overrides: Default::default(),
            ..Default::default()
        })
        .await;
    assert_eq!(submit.err().map(|s| s.code()), Some(Code::PermissionDenied));

    // Streaming calls are guarded the same way, in both directions.
    let watch = as_worker
        .watch_sweep(pb::WatchSweepRequest {
            sweep_id: "s-0123456789abcdef".into(),
        })
        .await;
    assert_eq!(watch.err().map(|s| s.code()), Some(Code::PermissionDenied));
    let mut as_client = workers(&client).await.expect("channel");
    let download = as_client
        .download_checkpoint(pb::DownloadCheckpointRequest {
            worker_id: "w-x".into(),
            run_id: "r-0123456789abcdef".into(),
            checkpoint_id: "k-x".into(),
        })
        .await;
    assert_eq!(
        download.err().map(|s| s.code()),
        Some(Code::PermissionDenied)
    );
    let mut anonymous = workers(&none).await.expect("channel");
    let upload = anonymous
        .upload_checkpoint(tokio_stream::iter(vec![pb::CheckpointChunk::default()]))
        .await;
    assert_eq!(upload.err().map(|s| s.code()), Some(Code::Unauthenticated));

    // Reflection (grpcurl) needs a client token.
    let reflect = |c: ConnectionSettings| async move {
        use tonic_reflection::pb::v1::ServerReflectionRequest;
        use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
        use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
        let bearer = c.bearer().expect("bearer");
        let mut r =
            ServerReflectionClient::with_interceptor(channel(&c).await.expect("ch"), bearer);
        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        r.server_reflection_info(tokio_stream::iter(vec![request]))
            .await
            .map(|_| ())
            .map_err(|s| s.code())
    };
    assert_eq!(reflect(none.clone()).await, Err(Code::Unauthenticated));
    assert_eq!(reflect(worker.clone()).await, Err(Code::PermissionDenied));
    assert_eq!(reflect(client.clone()).await, Ok(()));
}

fn tls_options(ca: &TestCa, client_ca: Option<&TestCa>, client_auth: ClientAuth) -> ServeOptions {
    let server = ca.server();
    let settings = CoordinatorSettings {
        tls_cert: Some(server.cert),
        tls_key: Some(server.key),
        tls_client_ca: client_ca.map(|c| c.cert.clone()),
        tls_client_auth: client_auth,
        ..CoordinatorSettings::default()
    };
    ServeOptions::from_settings(&settings).expect("TLS settings load")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_is_verified_against_the_named_ca() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = TestCa::new(dir.path(), "real");
    let impostor = TestCa::new(dir.path(), "impostor");
    let coordinator = TestCoordinator::start_serving(
        "127.0.0.1:0",
        LeaseSettings::default(),
        tls_options(&ca, None, ClientAuth::Workers),
    )
    .await;
    let url = &coordinator.url;
    assert!(url.starts_with("https://"), "{url}");

    let trusted = connection(url, None, Some(&ca.cert), None);
    assert!(healthy(&trusted).await);
    assert_eq!(list(&trusted).await, Ok(()));
    assert_eq!(register(&trusted).await, Ok(()));

    // A client that trusts another CA refuses the server's certificate.
    let fooled = connection(url, None, Some(&impostor.cert), None);
    let err = channel(&fooled).await.expect_err("wrong CA must fail");
    assert!(
        err.contains("UnknownIssuer") || err.contains("certificate"),
        "{err}"
    );
    // Plaintext against the TLS port gets nowhere.
    let plain = connection(&url.replace("https://", "http://"), None, None, None);
    assert!(list(&plain).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_speaks_plaintext_to_a_tls_port_is_told_to_use_https() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = TestCa::new(dir.path(), "real");
    let coordinator = TestCoordinator::start_serving(
        "127.0.0.1:0",
        LeaseSettings::default(),
        tls_options(&ca, None, ClientAuth::Workers),
    )
    .await;
    let plain = coordinator.url.replace("https://", "http://");
    let log = dir.path().join("worker.log");
    let _worker = advsweep_tests::spawn_worker(&plain, &log, &[]);
    // Depending on timing the first call fails as a malformed frame (the TLS alert read as
    // HTTP/2; the worker gives up) or as a broken pipe (retried): both lines carry the hint.
    advsweep_tests::poll_until(
        Duration::from_secs(30),
        Duration::from_millis(100),
        || {
            advsweep_tests::log_text(&log)
                .contains("use an https:// address")
                .then_some(())
        },
        || {
            format!(
                "the worker's log says what to change:\n{}",
                advsweep_tests::log_text(&log)
            )
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_asks_workers_for_a_certificate_from_the_client_ca() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = TestCa::new(dir.path(), "cluster");
    let workers_ca = TestCa::new(dir.path(), "workers");
    let rogue_ca = TestCa::new(dir.path(), "rogue");
    let good_cert = workers_ca.issue("gpu-node-1", &["gpu-node-1"]);
    let rogue_cert = rogue_ca.issue("gpu-node-2", &["gpu-node-2"]);

    let coordinator = TestCoordinator::start_serving(
        "127.0.0.1:0",
        LeaseSettings::default(),
        tls_options(&ca, Some(&workers_ca), ClientAuth::Workers),
    )
    .await;
    let url = &coordinator.url;
    let with_cert = connection(url, None, Some(&ca.cert), Some(&good_cert));
    let without = connection(url, None, Some(&ca.cert), None);
    let rogue = connection(url, None, Some(&ca.cert), Some(&rogue_cert));
    assert_eq!(register(&with_cert).await, Ok(()));
    assert_eq!(register(&without).await, Err(Code::Unauthenticated));
    // A certificate from another CA fails the handshake (or the first call).
    assert!(register(&rogue).await.is_err());
    // CLI clients need no certificate in `workers` mode.
    assert_eq!(list(&without).await, Ok(()));

    let strict = TestCoordinator::start_serving(
        "127.0.0.1:0",
        LeaseSettings::default(),
        tls_options(&ca, Some(&workers_ca), ClientAuth::All),
    )
    .await;
    let url = &strict.url;
    assert!(
        list(&connection(url, None, Some(&ca.cert), None))
            .await
            .is_err()
    );
    assert_eq!(
        list(&connection(url, None, Some(&ca.cert), Some(&good_cert))).await,
        Ok(())
    );
}

/// Under mutual TLS a worker id is bound to the client certificate it registered with: a
/// second machine with a certificate of the same CA that learned the worker id and the lease
/// id cannot heartbeat, report or lease as that worker (issue 18).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_id_is_bound_to_the_certificate_it_registered_with() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = TestCa::new(dir.path(), "cluster");
    let workers_ca = TestCa::new(dir.path(), "workers");
    let node1 = workers_ca.issue("gpu-node-1", &["gpu-node-1"]);
    let node2 = workers_ca.issue("gpu-node-2", &["gpu-node-2"]);
    let coordinator = TestCoordinator::start_serving(
        "127.0.0.1:0",
        LeaseSettings::default(),
        tls_options(&ca, Some(&workers_ca), ClientAuth::Workers),
    )
    .await;
    let url = &coordinator.url;
    let one = connection(url, None, Some(&ca.cert), Some(&node1));
    let two = connection(url, None, Some(&ca.cert), Some(&node2));
    sweeps(&one)
        .await
        .expect("client")
        .submit_sweep(pb::SubmitSweepRequest {
            sweep_toml: SWEEP.into(),
            ..Default::default()
        })
        .await
        .expect("submits");
    let mut first = workers(&one).await.expect("worker one");
    let worker_id = first
        .register(pb::RegisterRequest {
            name: "one".into(),
            hostname: "gpu-node-1".into(),
            device: "cpu".into(),
            slots: 1,
            version: "test".into(),
        })
        .await
        .expect("registers")
        .into_inner()
        .worker_id;
    let lease = first
        .lease(pb::LeaseRequest {
            worker_id: worker_id.clone(),
            ..Default::default()
        })
        .await
        .expect("leases")
        .into_inner()
        .lease
        .expect("a run");
    let quote = pb::LeaseRef {
        worker_id: worker_id.clone(),
        run_id: lease.run.as_ref().expect("run").run_id.clone(),
        lease_id: lease.lease_id.clone(),
        attempt: lease.attempt,
    };
    let heartbeat = pb::HeartbeatRequest {
        lease: Some(quote.clone()),
    };
    let mut second = workers(&two).await.expect("worker two");
    let forged = second
        .heartbeat(heartbeat.clone())
        .await
        .expect_err("another certificate");
    assert_eq!(forged.code(), Code::PermissionDenied, "{forged:?}");
    let forged = second
        .complete_run(pb::CompleteRunRequest {
            lease: Some(quote.clone()),
        })
        .await
        .expect_err("another certificate");
    assert_eq!(forged.code(), Code::PermissionDenied, "{forged:?}");
    let forged = second
        .lease(pb::LeaseRequest {
            worker_id: worker_id.clone(),
            ..Default::default()
        })
        .await
        .expect_err("another certificate");
    assert_eq!(forged.code(), Code::PermissionDenied, "{forged:?}");
    // The certificate the worker registered with still holds its lease.
    assert!(
        first
            .heartbeat(heartbeat)
            .await
            .expect("its own certificate")
            .into_inner()
            .keep_going
    );
}

const SWEEP: &str = r#"
version = 1
name = "secured"
[data]
source = "synthetic"
seed = 5
train_size = 256
test_size = 64
[training]
epochs = 1
batch_size = 64
[evaluation]
limit = 64
batch_size = 64
[grid]
models = ["basic"]
defenses = ["standard"]
attacks = ["none", "fgsm"]
epsilons = ["8/255"]
"#;

/// The deployment path end to end: a config file with TLS, mutual TLS for workers and token
/// files; `advsweep coordinator`, `advsweep health|submit|status|config print` and a real
/// `advsweep-worker`, all as separate processes.
#[test]
fn processes_run_a_sweep_over_mutual_tls_with_tokens() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let ca = TestCa::new(d, "cluster");
    let server = ca.server();
    let worker_cert = ca.issue("worker", &["worker"]);
    std::fs::write(
        d.join("worker-tokens"),
        format!("# workers\n{WORKER_TOKEN}\n"),
    )
    .expect("w");
    std::fs::write(d.join("client-tokens"), format!("{CLIENT_TOKEN}\n")).expect("c");
    std::fs::write(d.join("worker-token"), format!("{WORKER_TOKEN}\n")).expect("t");
    let port = free_port();
    let url = format!("https://127.0.0.1:{port}");
    let config = d.join("advsweep.toml");
    let p = |name: &str| d.join(name).display().to_string();
    std::fs::write(
        &config,
        format!(
            r#"[coordinator]
listen = "127.0.0.1:{port}"
state_dir = "{state}"
tls_cert = "{cert}"
tls_key = "{key}"
tls_client_ca = "{ca}"
worker_tokens_file = "{wt}"
client_tokens_file = "{ct}"
heartbeat_interval_s = 0.5

[worker]
coordinator = "{url}"
tls_ca = "{ca}"
tls_cert = "{wcert}"
tls_key = "{wkey}"
token_file = "{wtoken}"
device = "cpu"
threads = 1
exit_when_idle = true

[client]
coordinator = "{url}"
tls_ca = "{ca}"
"#,
            state = p("state"),
            cert = server.cert.display(),
            key = server.key.display(),
            ca = ca.cert.display(),
            wt = p("worker-tokens"),
            ct = p("client-tokens"),
            wcert = worker_cert.cert.display(),
            wkey = worker_cert.key.display(),
            wtoken = p("worker-token"),
        ),
    )
    .expect("config");
    let advsweep = |args: &[&str], token: Option<&str>| -> Output {
        let mut c = Command::new(workspace_bin("advsweep"));
        c.args(args)
            .env("ADVSWEEP_CONFIG", &config)
            .env_remove("ADVSWEEP_TOKEN");
        if let Some(t) = token {
            c.env("ADVSWEEP_TOKEN", t);
        }
        c.output().expect("advsweep runs")
    };

    // The effective settings, secrets masked.
    let out = advsweep(&["config", "print"], Some(CLIENT_TOKEN));
    assert!(out.status.success(), "{}", text(&out));
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(
        printed.contains("[coordinator]") && printed.contains("[worker]"),
        "{printed}"
    );
    assert!(
        printed.contains("worker_tokens = [\"********\"]"),
        "{printed}"
    );
    assert!(
        !printed.contains(WORKER_TOKEN) && !printed.contains(CLIENT_TOKEN),
        "{printed}"
    );

    let _coordinator = KillOnDrop(
        Command::new(workspace_bin("advsweep"))
            .args(["coordinator", "--config"])
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(d.join("coordinator.log")).expect("log"))
            .spawn()
            .expect("coordinator starts"),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = advsweep(&["health"], None);
        if out.status.success() {
            assert!(String::from_utf8_lossy(&out.stdout).contains("SERVING"));
            break;
        }
        assert!(Instant::now() < deadline, "never healthy: {}", text(&out));
        std::thread::sleep(Duration::from_millis(200));
    }

    // No token, or the worker's token: refused, and the CLI says why.
    let out = advsweep(&["status"], None);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("missing bearer token"),
        "{}",
        text(&out)
    );
    let out = advsweep(&["status"], Some(WORKER_TOKEN));
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("PermissionDenied: this token's role may not call SweepService"),
        "{}",
        text(&out)
    );

    let sweep = d.join("sweep.toml");
    std::fs::write(&sweep, SWEEP).expect("sweep");
    let out = advsweep(
        &["submit", &sweep.display().to_string()],
        Some(CLIENT_TOKEN),
    );
    assert!(out.status.success(), "{}", text(&out));

    // A worker whose certificate is missing cannot work, even with the right token.
    let bare = Command::new(workspace_bin("advsweep-worker"))
        .env("ADVSWEEP_CONFIG", &config)
        .env("ADVSWEEP_TLS_CERT", "")
        .env("ADVSWEEP_TLS_KEY", "")
        .output()
        .expect("worker runs");
    assert!(!bare.status.success(), "{}", text(&bare));
    assert!(
        String::from_utf8_lossy(&bare.stderr).contains("client certificate"),
        "{}",
        text(&bare)
    );

    // The configured worker runs the sweep to the end.
    let worker = Command::new(workspace_bin("advsweep-worker"))
        .env("ADVSWEEP_CONFIG", &config)
        .env_remove("ADVSWEEP_TOKEN")
        .output()
        .expect("worker runs");
    assert!(worker.status.success(), "{}", text(&worker));
    let worker_log = String::from_utf8_lossy(&worker.stderr);
    assert!(
        !worker_log.contains(WORKER_TOKEN),
        "token leaked into the log"
    );

    let out = advsweep(&["status", "secured", "--json"], Some(CLIENT_TOKEN));
    assert!(out.status.success(), "{}", text(&out));
    let detail: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let cells = detail["cells"].as_array().expect("cells");
    assert_eq!(cells.len(), 2);
    assert!(
        cells
            .iter()
            .all(|c| c["state"] == ShownState::Done.as_str()),
        "{}",
        serde_json::to_string_pretty(&detail).unwrap_or_default()
    );
    let log = std::fs::read_to_string(d.join("coordinator.log")).unwrap_or_default();
    assert!(
        !log.contains(WORKER_TOKEN) && !log.contains(CLIENT_TOKEN),
        "token leaked"
    );
}
