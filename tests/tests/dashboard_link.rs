//! `advsweep run` serves the live dashboard of its embedded coordinator and prints a one-time
//! sign-in link (issue 22): the link signs a browser in (the embedded coordinator's client
//! token is random, nobody could type it) and lands on the sweep's page; a second use of the
//! link, or no cookie, reads nothing.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use advsweep_tests::{long_sweep, workspace_bin};

/// Follows `link` with a cookie jar, then reads `api` with the same jar: each answer's status
/// and body, or status 0 and the exception when no HTTP answer came.
fn browse(link: &str, api: &str) -> Vec<(u16, String)> {
    const SCRIPT: &str = r#"
import http.cookiejar, sys, urllib.request, urllib.error
opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
for url in sys.argv[1:]:
    try:
        with opener.open(url, timeout=10) as r:
            print(r.status, r.geturl(), "|", r.read().decode().replace("\n", " "))
    except urllib.error.HTTPError as e:
        print(e.code, url, "|", e.read().decode().replace("\n", " "))
    except Exception as e:
        print(0, url, "|", type(e).__name__, e)
"#;
    let out = Command::new("python3")
        .args(["-c", SCRIPT, link, api])
        .output()
        .expect("python3 runs");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let (status, rest) = l.split_once(' ').unwrap_or((l, ""));
            (status.parse().unwrap_or(0), rest.to_owned())
        })
        .collect()
}

#[test]
fn run_prints_a_one_time_sign_in_link_to_its_live_dashboard() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("long.toml"), long_sweep(500)).expect("write");
    let mut run = Command::new(workspace_bin("advsweep"))
        .args([
            "run",
            "long.toml",
            "--workers",
            "1",
            "--device",
            "cpu",
            "--threads",
            "1",
        ])
        .current_dir(dir.path())
        .env_remove("ADVSWEEP_CONFIG")
        .env("XDG_CACHE_HOME", dir.path().join("cache"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("advsweep run starts");
    // Its progress lines go on while the test browses: read them all, the link handed over.
    let stderr = BufReader::new(run.stderr.take().expect("stderr"));
    let (found, links) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in stderr.lines().map_while(Result::ok) {
            if let Some(rest) = line.split("live dashboard: ").nth(1) {
                let _ = found.send(rest.split_whitespace().next().unwrap_or("").to_owned());
            }
        }
    });
    let link = links
        .recv_timeout(Duration::from_secs(60))
        .expect("a dashboard link printed");
    assert!(link.starts_with("http://127.0.0.1:"), "{link}");
    let base = &link[..link.find("/signin/").expect("a sign-in path")];
    let sweep = link
        .rsplit("/sweeps/")
        .next()
        .expect("the sweep's page")
        .to_owned();
    let api = format!("{base}/api/v1/sweeps/{sweep}");

    // The link signs in and lands on the sweep's page; the cookie then reads the sweep.
    let answers = browse(&link, &api);
    assert_eq!(answers.len(), 2, "{answers:?}");
    assert_eq!(answers[0].0, 200, "{answers:?}");
    assert!(
        answers[0].1.starts_with(&format!("{base}/sweeps/{sweep} ")),
        "{answers:?}"
    );
    assert_eq!(answers[1].0, 200, "{answers:?}");
    assert!(answers[1].1.contains("\"name\": \"long\""), "{answers:?}");
    // Used once: a second browser gets the sign-in form and no data.
    let again = browse(&link, &api);
    assert!(again[0].1.contains("/?refused "), "{again:?}");
    assert_eq!(again[1].0, 401, "{again:?}");

    // Stopped as Ctrl-C stops it, so its worker stops too.
    let _ = Command::new("kill")
        .args(["-INT", &run.id().to_string()])
        .status();
    let status = run.wait().expect("advsweep run exits");
    assert!(
        !status.success(),
        "an interrupted run reports it: {status:?}"
    );
}
