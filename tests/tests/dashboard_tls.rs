//! The dashboard over TLS (issue 22): a coordinator whose gRPC port is TLS serves its dashboard
//! over HTTPS with the same certificate, never plain HTTP beside it. Checked with Python's
//! `ssl`/`urllib` (the standard library's own TLS client): the certificate verifies against the
//! operator's CA, the client token is still required, and plain HTTP or an untrusted CA gets
//! nothing.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use advsweep_tests::pki::TestCa;
use advsweep_tests::{free_addr, workspace_bin};

const CLIENT_TOKEN: &str = "dashboard-client-token-0123456789";

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// GETs `url` from Python: `(status, body)`, or the exception's type and text as the body with
/// status 0 when no HTTP answer came.
fn python_get(url: &str, cafile: Option<&std::path::Path>, token: Option<&str>) -> (u16, String) {
    const SCRIPT: &str = r#"
import ssl, sys, urllib.request, urllib.error
url, cafile, token = sys.argv[1], sys.argv[2], sys.argv[3]
context = ssl.create_default_context(cafile=cafile if cafile != "-" else None)
request = urllib.request.Request(url)
if token != "-":
    request.add_header("Authorization", "Bearer " + token)
try:
    with urllib.request.urlopen(request, context=context, timeout=10) as r:
        print(r.status); print(r.read().decode())
except urllib.error.HTTPError as e:
    print(e.code); print(e.read().decode())
except Exception as e:
    print(0); print(type(e).__name__, e)
"#;
    let out = Command::new("python3")
        .args(["-c", SCRIPT, url])
        .arg(cafile.map_or("-".into(), |p| p.display().to_string()))
        .arg(token.unwrap_or("-"))
        .output()
        .expect("python3 runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (status, body) = text.split_once('\n').unwrap_or((&text, ""));
    (status.trim().parse().unwrap_or(0), body.to_owned())
}

#[test]
fn with_tls_configured_the_dashboard_is_https_with_the_same_certificate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let ca = TestCa::new(d, "operator");
    let server = ca.server();
    std::fs::write(d.join("client-tokens"), format!("{CLIENT_TOKEN}\n")).expect("write");
    std::fs::write(
        d.join("worker-tokens"),
        "dashboard-worker-token-0123456789\n",
    )
    .expect("write");
    let (grpc, http) = (free_addr(), free_addr());
    let config = d.join("advsweep.toml");
    std::fs::write(
        &config,
        format!(
            "[coordinator]\nlisten = \"{grpc}\"\nhttp_listen = \"{http}\"\nstate_dir = \"{}\"\n\
             tls_cert = \"{}\"\ntls_key = \"{}\"\nclient_tokens_file = \"{}\"\n\
             worker_tokens_file = \"{}\"\n",
            d.join("state").display(),
            server.cert.display(),
            server.key.display(),
            d.join("client-tokens").display(),
            d.join("worker-tokens").display(),
        ),
    )
    .expect("write config");
    let _coordinator = Killed(
        Command::new(workspace_bin("advsweep"))
            .args(["coordinator", "--config"])
            .arg(&config)
            .env_remove("ADVSWEEP_CONFIG")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("coordinator starts"),
    );
    let api = format!("https://{http}/api/v1/sweeps");
    let deadline = Instant::now() + Duration::from_secs(30);
    let (status, body) = loop {
        let answer = python_get(&api, Some(&ca.cert), Some(CLIENT_TOKEN));
        if answer.0 != 0 || Instant::now() > deadline {
            break answer;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"sweeps\""), "{body}");

    // Still the client token's to read.
    let (status, body) = python_get(&api, Some(&ca.cert), None);
    assert_eq!(status, 401, "{body}");
    // The page itself loads over HTTPS.
    let (status, page) = python_get(&format!("https://{http}/"), Some(&ca.cert), None);
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("/assets/app.js"), "{page}");
    // A client that does not trust the operator's CA gets no answer, and neither does plain
    // HTTP on the HTTPS port.
    let (status, body) = python_get(&api, None, Some(CLIENT_TOKEN));
    assert_eq!(status, 0, "{body}");
    assert!(body.contains("CERTIFICATE_VERIFY_FAILED"), "{body}");
    let (status, body) = python_get(
        &format!("http://{http}/api/v1/sweeps"),
        None,
        Some(CLIENT_TOKEN),
    );
    assert_eq!(status, 0, "plain HTTP was answered: {body}");
}
