//! Settings as a user meets them: layering, errors that name the culprit, masked output.

use std::collections::HashMap;
use std::path::Path;

use super::*;

const TOKEN_W: &str = "worker-token-0123456789abcdef";
const TOKEN_C: &str = "client-token-0123456789abcdef";

fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write test file");
    path
}

fn coordinator(
    file: Option<&Path>,
    env_pairs: &[(&str, &str)],
    overrides: &Overrides,
) -> Result<Loaded<CoordinatorSettings>, SettingsError> {
    load_from(file, &env(env_pairs), overrides)
}

#[test]
fn defaults_without_file_or_environment() -> Result<(), SettingsError> {
    let c = coordinator(None, &[], &Overrides::new())?.settings;
    assert_eq!(c.listen, "127.0.0.1:50051");
    assert_eq!(c.max_cells_per_sweep, 100_000);
    assert!(!c.auth_enabled() && c.server_tls()?.is_none());
    let w: WorkerSettings = load_from(None, &env(&[]), &Overrides::new())?.settings;
    assert_eq!((w.slots, w.device), (1, DeviceSetting::Auto));
    assert_eq!(w.connection.coordinator, "http://127.0.0.1:50051");
    Ok(())
}

#[test]
fn flag_beats_environment_beats_file() -> Result<(), SettingsError> {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = write(
        dir.path(),
        "a.toml",
        "[coordinator]\nlisten = \"0.0.0.0:1\"\nstate_dir = \"/from/file\"\nlease_ttl_s = 60\n\
         [worker]\nslots = 4\n",
    );
    let env_pairs = [
        ("ADVSWEEP_STATE_DIR", "/from/env"),
        ("ADVSWEEP_LEASE_TTL_S", "90"),
        ("ADVSWEEP_MAX_CELLS_PER_SWEEP", "77"),
        ("ADVSWEEP_CIFAR10_DIR", "/unrelated/variables/are/ignored"),
    ];
    let flags = Overrides::new().set("state_dir", Some("/from/flag"));
    let loaded = coordinator(Some(&file), &env_pairs, &flags)?;
    let c = &loaded.settings;
    assert_eq!(c.listen, "0.0.0.0:1");
    assert_eq!(c.state_dir, Path::new("/from/flag"));
    assert_eq!((c.lease_ttl_s, c.max_cells_per_sweep), (90.0, 77));
    assert_eq!(
        loaded.env_vars,
        [
            "ADVSWEEP_STATE_DIR",
            "ADVSWEEP_LEASE_TTL_S",
            "ADVSWEEP_MAX_CELLS_PER_SWEEP"
        ]
    );
    // The same file serves the worker's table.
    let w: WorkerSettings = load_from(
        Some(&file),
        &env(&[("ADVSWEEP_EXIT_WHEN_IDLE", "true")]),
        &Overrides::new(),
    )?
    .settings;
    assert_eq!(w.slots, 4);
    assert!(w.exit_when_idle);
    Ok(())
}

#[test]
fn mistakes_are_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let typo = write(
        dir.path(),
        "typo.toml",
        "[coordinator]\ntls_crt = \"x.pem\"\n",
    );
    let e = coordinator(Some(&typo), &[], &Overrides::new())
        .unwrap_err()
        .0;
    assert!(
        e.contains("unknown key `tls_crt`") && e.contains("tls_cert"),
        "{e}"
    );
    let table = write(dir.path(), "table.toml", "[coordinatr]\nlisten = \"x\"\n");
    let e = coordinator(Some(&table), &[], &Overrides::new())
        .unwrap_err()
        .0;
    assert!(e.contains("`coordinatr`"), "{e}");
    let e = coordinator(None, &[("ADVSWEEP_LEASE_TTL_S", "soon")], &Overrides::new())
        .unwrap_err()
        .0;
    assert!(
        e.contains("lease_ttl_s") || e.contains("ADVSWEEP_LEASE_TTL_S"),
        "{e}"
    );
    let e = coordinator(
        None,
        &[("ADVSWEEP_HEARTBEAT_INTERVAL_S", "20")],
        &Overrides::new(),
    )
    .unwrap_err()
    .0;
    assert!(e.contains("heartbeat_interval_s = 20"), "{e}");
    let e = coordinator(
        Some(&dir.path().join("missing.toml")),
        &[],
        &Overrides::new(),
    )
    .unwrap_err()
    .0;
    assert!(e.contains("missing.toml"), "{e}");
    let e = coordinator(None, &[("ADVSWEEP_TLS_CERT", "/c.pem")], &Overrides::new())
        .unwrap_err()
        .0;
    assert!(e.contains("tls_cert and tls_key"), "{e}");
    let bad_toml = write(dir.path(), "bad.toml", "[coordinator\n");
    let e = coordinator(Some(&bad_toml), &[], &Overrides::new())
        .unwrap_err()
        .0;
    assert!(e.contains("bad.toml"), "{e}");
}

#[test]
fn tokens_from_lists_files_and_environment() -> Result<(), SettingsError> {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = write(
        dir.path(),
        "clients",
        &format!("# one per line\n{TOKEN_C}\n\n{TOKEN_C}-second\n"),
    );
    let file_arg = file.to_string_lossy().into_owned();
    let c = coordinator(
        None,
        &[
            ("ADVSWEEP_WORKER_TOKENS", &format!("{TOKEN_W}, {TOKEN_W}-2")),
            ("ADVSWEEP_CLIENT_TOKENS_FILE", &file_arg),
        ],
        &Overrides::new(),
    )?
    .settings;
    assert!(c.auth_enabled());
    assert_eq!(c.worker_tokens.len(), 2);
    assert_eq!(c.client_tokens[1].expose(), format!("{TOKEN_C}-second"));

    let one_sided = coordinator(
        None,
        &[("ADVSWEEP_WORKER_TOKENS", TOKEN_W)],
        &Overrides::new(),
    );
    assert!(
        one_sided
            .unwrap_err()
            .0
            .contains("both worker and client tokens")
    );
    let shared = coordinator(
        None,
        &[
            ("ADVSWEEP_WORKER_TOKENS", TOKEN_W),
            ("ADVSWEEP_CLIENT_TOKENS", TOKEN_W),
        ],
        &Overrides::new(),
    );
    let e = shared.unwrap_err().0;
    assert!(
        e.contains("different tokens") && !e.contains(TOKEN_W),
        "{e}"
    );
    let weak = coordinator(
        None,
        &[
            ("ADVSWEEP_WORKER_TOKENS", "short"),
            ("ADVSWEEP_CLIENT_TOKENS", TOKEN_C),
        ],
        &Overrides::new(),
    );
    assert!(
        weak.unwrap_err()
            .0
            .contains("worker token #1 is 5 characters")
    );
    Ok(())
}

#[test]
fn printed_settings_mask_every_secret() -> Result<(), SettingsError> {
    let dir = tempfile::tempdir().expect("tempdir");
    let token_file = write(dir.path(), "token", &format!("{TOKEN_W}\n"));
    let loaded = coordinator(
        None,
        &[
            ("ADVSWEEP_WORKER_TOKENS", TOKEN_W),
            ("ADVSWEEP_CLIENT_TOKENS", TOKEN_C),
        ],
        &Overrides::new(),
    )?;
    let text = render(&loaded)?;
    assert!(!text.contains(TOKEN_W) && !text.contains(TOKEN_C), "{text}");
    assert!(text.contains("[coordinator]") && text.contains("worker_tokens = [\"********\"]"));
    assert!(!format!("{:?}", loaded.settings).contains(TOKEN_W));

    let worker: Loaded<WorkerSettings> = load_from(
        None,
        &env(&[("ADVSWEEP_TOKEN_FILE", &token_file.to_string_lossy())]),
        &Overrides::new(),
    )?;
    assert_eq!(
        worker
            .settings
            .connection
            .token
            .as_ref()
            .map(Secret::expose),
        Some(TOKEN_W)
    );
    let text = render(&worker)?;
    assert!(
        text.contains("token = \"********\"") && !text.contains(TOKEN_W),
        "{text}"
    );
    assert!(text.contains("slots = 1"), "{text}");
    Ok(())
}

#[test]
fn connection_rules() {
    let client = |pairs: &[(&str, &str)]| {
        load_from::<ClientSettings>(None, &env(pairs), &Overrides::new()).map(|l| l.settings)
    };
    let e = client(&[("ADVSWEEP_COORDINATOR", "https://c:1")])
        .unwrap_err()
        .0;
    assert!(e.contains("tls_ca"), "{e}");
    let e = client(&[("ADVSWEEP_TLS_CA", "/ca.pem")]).unwrap_err().0;
    assert!(e.contains("plain http://"), "{e}");
    let e = client(&[("ADVSWEEP_COORDINATOR", "c:1")]).unwrap_err().0;
    assert!(e.contains("http:// or https://"), "{e}");
    let e = client(&[
        ("ADVSWEEP_TOKEN", "explicit-token-0123456789"),
        ("ADVSWEEP_TOKEN_FILE", "/nonexistent/token"),
    ])
    .unwrap_err()
    .0;
    assert!(e.contains("not both") && e.contains("environment"), "{e}");
    let e = client(&[("ADVSWEEP_TOKEN_FILE", "/nonexistent/token")])
        .unwrap_err()
        .0;
    assert!(
        e.contains("cannot read token_file /nonexistent/token"),
        "{e}"
    );
    // Empty variables mean unset.
    assert!(client(&[("ADVSWEEP_TLS_CA", ""), ("ADVSWEEP_TOKEN", "")]).is_ok());
    let e = client(&[
        ("ADVSWEEP_COORDINATOR", "https://c:1"),
        ("ADVSWEEP_TLS_CA", "/nonexistent/ca.pem"),
    ])
    .and_then(|s| s.connection.endpoint().map(|_| ()))
    .unwrap_err()
    .0;
    assert!(e.contains("tls_ca /nonexistent/ca.pem"), "{e}");
}

#[test]
fn worker_limits() {
    let worker = |pairs: &[(&str, &str)]| {
        load_from::<WorkerSettings>(None, &env(pairs), &Overrides::new()).map(|l| l.settings)
    };
    assert!(
        worker(&[("ADVSWEEP_SLOTS", "0")])
            .unwrap_err()
            .0
            .contains("slots = 0")
    );
    assert!(worker(&[("ADVSWEEP_SLOTS", "65")]).is_err());
    assert!(worker(&[("ADVSWEEP_DEVICE", "tpu")]).is_err());
    assert!(worker(&[("ADVSWEEP_THREADS", "0")]).is_err());
    let w = worker(&[("ADVSWEEP_DEVICE", "cuda"), ("ADVSWEEP_SLOTS", "3")]).expect("valid");
    assert_eq!((w.device, w.slots), (DeviceSetting::Cuda, 3));
    // How long a shutdown may take: seconds, named when out of range.
    assert_eq!(worker(&[]).expect("defaults").shutdown_grace_s, 120.0);
    for bad in ["-1", "NaN", "3601"] {
        let e = worker(&[("ADVSWEEP_SHUTDOWN_GRACE_S", bad)]).unwrap_err().0;
        assert!(e.contains("shutdown_grace_s"), "{bad}: {e}");
    }
    let w = worker(&[("ADVSWEEP_SHUTDOWN_GRACE_S", "2.5")]).expect("valid");
    assert_eq!(w.shutdown_grace(), std::time::Duration::from_millis(2500));
}

#[test]
fn token_and_token_file_follow_the_layers() -> Result<(), SettingsError> {
    let dir = tempfile::tempdir().expect("tempdir");
    let worker_token = write(dir.path(), "worker-token", &format!("{TOKEN_W}\n"));
    let client_token = write(dir.path(), "client-token", &format!("{TOKEN_C}\n"));
    let file = write(
        dir.path(),
        "f.toml",
        &format!("[client]\ntoken_file = \"{}\"\n", worker_token.display()),
    );
    let token = |loaded: Loaded<ClientSettings>| {
        loaded
            .settings
            .connection
            .token
            .map(|t| t.expose().to_owned())
    };
    // The environment's token beats the file's token_file (which is not even read).
    let env_wins = load_from::<ClientSettings>(
        Some(&file),
        &env(&[("ADVSWEEP_TOKEN", TOKEN_C)]),
        &Overrides::new(),
    )?;
    assert_eq!(token(env_wins).as_deref(), Some(TOKEN_C));
    // A --token-file flag beats the environment's token.
    let flag_wins = load_from::<ClientSettings>(
        Some(&file),
        &env(&[("ADVSWEEP_TOKEN", TOKEN_W)]),
        &Overrides::new().set_path("token_file", Some(&client_token)),
    )?;
    assert_eq!(token(flag_wins).as_deref(), Some(TOKEN_C));
    // Both in one file: refused.
    let both = write(
        dir.path(),
        "both.toml",
        &format!(
            "[client]\ntoken = \"{TOKEN_C}\"\ntoken_file = \"{}\"\n",
            worker_token.display()
        ),
    );
    let e = load_from::<ClientSettings>(Some(&both), &env(&[]), &Overrides::new())
        .unwrap_err()
        .0;
    assert!(
        e.contains("not both") && e.contains("config file") && !e.contains(TOKEN_C),
        "{e}"
    );
    Ok(())
}

#[test]
fn token_lists_take_a_string_too_and_never_echo_it() -> Result<(), SettingsError> {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = write(
        dir.path(),
        "t.toml",
        &format!("[coordinator]\nworker_tokens = \"{TOKEN_W}\"\nclient_tokens = [\"{TOKEN_C}\"]\n"),
    );
    let c = coordinator(Some(&file), &[], &Overrides::new())?.settings;
    assert_eq!(c.worker_tokens.len(), 1);
    let bad = write(
        dir.path(),
        "bad.toml",
        &format!("[coordinator]\nworker_tokens = {{ x = \"{TOKEN_W}\" }}\n"),
    );
    let e = coordinator(Some(&bad), &[], &Overrides::new())
        .unwrap_err()
        .0;
    assert!(!e.contains(TOKEN_W), "{e}");
    let e = coordinator(
        None,
        &[("ADVSWEEP_TLS_CLIENT_AUTH", "all")],
        &Overrides::new(),
    )
    .unwrap_err()
    .0;
    assert!(e.contains("needs tls_client_ca"), "{e}");
    let e = coordinator(
        None,
        &[("ADVSWEEP_MAX_MESSAGE_BYTES", "65536")],
        &Overrides::new(),
    )
    .unwrap_err()
    .0;
    assert!(e.contains("max_message_bytes = 65536"), "{e}");
    Ok(())
}

/// Issue 18: `--token-file /dev/zero` (and a config file or certificate that is a device)
/// read until memory ran out. Every file settings read is a regular file under a cap.
#[test]
fn devices_and_huge_files_are_refused_without_reading_them() {
    let client = |pairs: &[(&str, &str)]| {
        load_from::<ClientSettings>(None, &env(pairs), &Overrides::new()).map(|l| l.settings)
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let zero = Path::new("/dev/zero");
    let e = coordinator(Some(zero), &[], &Overrides::new())
        .unwrap_err()
        .0;
    assert!(
        e.contains("config file /dev/zero: it is a character device, not a regular file"),
        "{e}"
    );
    let e = coordinator(Some(dir.path()), &[], &Overrides::new())
        .unwrap_err()
        .0;
    assert!(e.contains("it is a directory"), "{e}");
    assert!(crate::load::check_file(zero).is_err());
    let e = client(&[("ADVSWEEP_TOKEN_FILE", "/dev/zero")])
        .unwrap_err()
        .0;
    assert!(
        e.contains("cannot read token_file /dev/zero: it is a character device"),
        "{e}"
    );
    let huge = write(
        dir.path(),
        "tokens",
        &"x".repeat(crate::files::MAX_SETTINGS_FILE_BYTES as usize + 1),
    );
    let e = coordinator(
        None,
        &[("ADVSWEEP_WORKER_TOKENS_FILE", &huge.display().to_string())],
        &Overrides::new(),
    )
    .unwrap_err()
    .0;
    assert!(e.contains("more than the limit of 1048576 bytes"), "{e}");
    let e = client(&[
        ("ADVSWEEP_COORDINATOR", "https://c:1"),
        ("ADVSWEEP_TLS_CA", "/dev/urandom"),
    ])
    .and_then(|s| s.connection.endpoint().map(|_| ()))
    .unwrap_err()
    .0;
    assert!(
        e.contains("tls_ca /dev/urandom: it is a character device"),
        "{e}"
    );
}

#[test]
fn connection_and_transfer_limits_have_defaults_and_bounds() -> Result<(), SettingsError> {
    let c = coordinator(None, &[], &Overrides::new())?.settings;
    assert_eq!(
        (
            c.max_checkpoint_downloads,
            c.max_connections,
            c.max_streams_per_connection
        ),
        (32, 768, 128)
    );
    assert_eq!(c.first_bytes_timeout().as_secs(), 10);
    let c = coordinator(
        None,
        &[
            ("ADVSWEEP_MAX_CONNECTIONS", "64"),
            ("ADVSWEEP_FIRST_BYTES_TIMEOUT_S", "0.5"),
        ],
        &Overrides::new(),
    )?
    .settings;
    assert_eq!((c.max_connections, c.first_bytes_timeout_s), (64, 0.5));
    for (key, value) in [
        ("ADVSWEEP_MAX_CHECKPOINT_DOWNLOADS", "0"),
        ("ADVSWEEP_MAX_CONNECTIONS", "0"),
        ("ADVSWEEP_MAX_STREAMS_PER_CONNECTION", "0"),
        ("ADVSWEEP_FIRST_BYTES_TIMEOUT_S", "0"),
        ("ADVSWEEP_KEEPALIVE_INTERVAL_S", "inf"),
    ] {
        let e = coordinator(None, &[(key, value)], &Overrides::new()).expect_err(key);
        let name = key.trim_start_matches("ADVSWEEP_").to_lowercase();
        assert!(e.to_string().contains(&name), "{key}: {e}");
    }
    Ok(())
}

#[test]
fn tls_mismatches_get_a_hint_and_other_errors_none() {
    use crate::connection::tls_mismatch_hint;
    let plain = tls_mismatch_hint("Unavailable: h2 protocol error: http2 error").expect("hint");
    assert!(
        plain.contains("https://") && plain.contains("tls_ca"),
        "{plain}"
    );
    let tls =
        tls_mismatch_hint("transport error: received corrupt message of type InvalidContentType")
            .expect("hint");
    assert!(tls.contains("http://"), "{tls}");
    assert!(
        tls_mismatch_hint(
            "transport error: connection error: stream closed because of a broken pipe"
        )
        .is_some_and(|h| h.contains("https://"))
    );
    // The TLS server closed before answering (seen under load).
    assert!(
        tls_mismatch_hint(
            "operation was canceled: connection closed: transport error: operation was canceled"
        )
        .is_some_and(|h| h.contains("https://"))
    );
    assert_eq!(tls_mismatch_hint("connection refused"), None);
}

#[test]
fn a_listen_address_without_a_host_says_what_to_write() {
    let e = coordinator(None, &[("ADVSWEEP_LISTEN", "56074")], &Overrides::new())
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        e.contains("listen = `56074` is not an address") && e.contains("127.0.0.1:56074"),
        "{e}"
    );
    let e = coordinator(
        None,
        &[("ADVSWEEP_METRICS_LISTEN", "host:99999")],
        &Overrides::new(),
    )
    .err()
    .map(|e| e.to_string())
    .unwrap_or_default();
    assert!(e.contains("metrics_listen = `host:99999`"), "{e}");
    for good in ["0.0.0.0:50051", "localhost:1", "[::1]:50051"] {
        assert!(
            coordinator(None, &[("ADVSWEEP_LISTEN", good)], &Overrides::new()).is_ok(),
            "{good}"
        );
    }
}
