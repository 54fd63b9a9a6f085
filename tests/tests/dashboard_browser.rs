//! The dashboard in a real browser (issue 22): headless Chromium (Debian's `chromium`, which
//! the README's test command installs when missing) opens a sweep's page while the sweep runs,
//! the page follows the server's events until the sweep is done — no reload — and shows the
//! table `advsweep report` writes, its charts (accuracy against ε, learning curves, trade-off),
//! its runs and a run's page; a coordinator with client tokens shows the sign-in form and
//! none of its sweeps.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use advsweep_tests::{free_addr, succeeded, text, workspace_bin};

const SWEEP: &str = r#"
version = 1
name = "browser"
[data]
source = "synthetic"
train_size = 3000
test_size = 200
[training]
epochs = 4
[evaluation]
limit = 200
[grid]
models = ["basic"]
defenses = ["standard", "at-fgsm"]
attacks = ["none", "fgsm", "pgd-linf"]
epsilons = ["8/255"]
"#;

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn chromium() -> PathBuf {
    ["chromium", "chromium-browser"]
        .iter()
        .find_map(|name| {
            std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
                .map(|dir| dir.join(name))
                .find(|p| p.is_file())
        })
        .expect(
            "chromium is not installed: the README's test command (scripts/test.sh) installs it",
        )
}

/// The page at `url` as the browser's DOM once its script has run and its event stream has
/// ended (or `budget_ms` of the page's time has passed).
fn dom(url: &str, budget_ms: u32, profile: &Path) -> String {
    let out = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            &format!("--user-data-dir={}", profile.display()),
            &format!("--virtual-time-budget={budget_ms}"),
            "--dump-dom",
            url,
        ])
        .stderr(Stdio::null())
        .output()
        .expect("chromium runs");
    assert!(out.status.success(), "{}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A coordinator process with the dashboard on `http`; `extra` flags appended.
fn coordinator(dir: &Path, grpc: &str, http: &str, extra: &[&str]) -> Killed {
    Killed(
        Command::new(workspace_bin("advsweep"))
            .args([
                "coordinator",
                "--listen",
                grpc,
                "--http-listen",
                http,
                "--state-dir",
            ])
            .arg(dir.join("state"))
            .args(extra)
            .env_remove("ADVSWEEP_CONFIG")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("coordinator starts"),
    )
}

fn cli(dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new(workspace_bin("advsweep"))
        .args(args)
        .current_dir(dir)
        .env_remove("ADVSWEEP_CONFIG")
        .env_remove("ADVSWEEP_COORDINATOR")
        .output()
        .expect("advsweep runs")
}

/// The texts of the cells of every row of the table with this id in `html`.
fn table_rows(html: &str, id: &str) -> Vec<Vec<String>> {
    let start = html
        .find(&format!("<table id=\"{id}\""))
        .unwrap_or_else(|| panic!("no table {id} in the page:\n{html}"));
    let table = &html[start..start + html[start..].find("</table>").expect("closed")];
    table
        .split("<tr")
        .skip(1)
        .map(|row| {
            row.split("<t")
                .skip(1)
                .filter(|c| c.starts_with('d') || c.starts_with('h'))
                .map(|c| {
                    let inner = &c[c.find('>').map_or(0, |i| i + 1)..];
                    let end = inner.find("</t").unwrap_or(inner.len());
                    inner[..end].replace("&amp;", "&").trim().to_owned()
                })
                .collect()
        })
        .collect()
}

/// The SVG element with this id in `html`.
fn svg<'a>(html: &'a str, id: &str) -> &'a str {
    let start = html
        .find(&format!("<svg id=\"{id}\""))
        .unwrap_or_else(|| panic!("no chart {id} in the page:\n{html}"));
    let end = start + html[start..].find("</svg>").expect("closed");
    &html[start..end]
}

/// The texts of the items of the list with this id in `html`.
fn list_items(html: &str, id: &str) -> Vec<String> {
    let start = html
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("no list {id} in the page"));
    let list = &html[start..start + html[start..].find("</ul>").expect("closed")];
    list.split("<li")
        .skip(1)
        .map(|item| {
            // The item's text after its (empty) swatch.
            let text = item.rsplit("</span>").next().unwrap_or("");
            text.split("</li>").next().unwrap_or("").trim().to_owned()
        })
        .collect()
}

/// The rows of the Markdown table `report` writes, cell texts trimmed, separator left out.
fn markdown_rows(markdown: &str) -> Vec<Vec<String>> {
    markdown
        .lines()
        .filter(|l| l.starts_with('|'))
        .map(|l| {
            l.trim_matches('|')
                .split('|')
                .map(|c| c.trim().to_owned())
                .collect::<Vec<_>>()
        })
        .filter(|cells| {
            !cells
                .iter()
                .all(|c| c.chars().all(|ch| ch == '-' || ch == ':'))
        })
        .collect()
}

#[test]
fn the_sweep_page_follows_the_sweep_live_and_shows_reports_table() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (grpc, http) = (free_addr(), free_addr());
    let _coordinator = coordinator(dir.path(), &grpc, &http, &[]);
    let url = format!("http://{grpc}");
    std::fs::write(dir.path().join("sweep.toml"), SWEEP).expect("write");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !cli(dir.path(), &["submit", "sweep.toml", "--coordinator", &url])
        .status
        .success()
    {
        assert!(Instant::now() < deadline, "the coordinator never came up");
        std::thread::sleep(Duration::from_millis(200));
    }
    let _worker = Killed(
        Command::new(workspace_bin("advsweep-worker"))
            .args(["--coordinator", &url, "--device", "cpu", "--threads", "1"])
            .env("XDG_CACHE_HOME", dir.path().join("cache"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("worker starts"),
    );
    // The page is opened while the sweep runs; its script must see it finish.
    let before = cli(
        dir.path(),
        &["status", "browser", "--json", "--coordinator", &url],
    );
    let state: serde_json::Value = serde_json::from_slice(&before.stdout).expect("JSON");
    assert_eq!(state["state"], "running", "{state}");
    let page = dom(
        &format!("http://{http}/sweeps/browser"),
        300_000,
        &dir.path().join("profile"),
    );
    assert!(
        page.contains("id=\"state\" class=\"state-done\">done<"),
        "{page}"
    );
    // Pushed while the page was open: the summary it opened on, then the sweep's changes.
    let updates: u32 = page
        .split("data-updates=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(updates >= 2, "{updates} live updates: {page}");
    assert!(
        page.contains("6 done, 0 failed, 0 running, 0 pending of 6"),
        "{page}"
    );

    // The page's table is the one `advsweep report` writes.
    succeeded(cli(
        dir.path(),
        &[
            "report",
            "browser",
            "--coordinator",
            &url,
            "--out",
            "report",
            "--no-plots",
        ],
    ));
    let markdown = std::fs::read_to_string(dir.path().join("report/table.md")).expect("table.md");
    assert_eq!(
        table_rows(&page, "pivot"),
        markdown_rows(&markdown),
        "{page}"
    );
    // The accuracy chart: a line per setting and attack (standard; at-fgsm at its tied 8/255),
    // a point per ε with its value on hover, and a legend entry each.
    let chart = &page[page.find("<svg id=\"chart-accuracy\"").expect("the chart")..];
    let chart = &chart[..chart.find("</svg>").expect("closed")];
    assert_eq!(chart.matches("<g class=\"series\"").count(), 4, "{chart}");
    assert_eq!(chart.matches("<circle").count(), 8, "{chart}");
    assert!(
        chart.contains("<title>basic/standard · fgsm at ε=8/255: "),
        "{chart}"
    );
    let legend = list_items(&page, "chart-accuracy-legend");
    assert_eq!(legend.len(), 4, "{legend:?}");
    assert!(
        legend
            .iter()
            .any(|l| l == "basic/at-fgsm ε=8/255 · pgd-linf"),
        "{legend:?}"
    );
    // Every cell is listed, done, with its accuracy.
    let cells = table_rows(&page, "cells");
    assert_eq!(cells.len(), 1 + 6, "{cells:?}");
    assert!(
        cells[1..]
            .iter()
            .all(|c| c[5] == "done" && !c[6].is_empty()),
        "{cells:?}"
    );
    // Learning curves: a line per setting, a point per epoch with its value on hover.
    let curves = svg(&page, "chart-curves");
    assert_eq!(curves.matches("<g class=\"series\"").count(), 2, "{curves}");
    assert_eq!(curves.matches("<circle").count(), 2 * 4, "{curves}");
    assert!(
        curves.contains("<title>basic/standard epoch 4: "),
        "{curves}"
    );
    // The trade-off at the last attack and ε (pgd-linf at 8/255): a point per setting at its
    // clean and robust accuracy, the numbers of the cells table.
    let accuracy = |defense: &str, attack: &str| {
        cells[1..]
            .iter()
            .find(|c| c[1] == defense && c[3] == attack)
            .map(|c| c[6].clone())
            .unwrap_or_else(|| panic!("no {defense} {attack} cell: {cells:?}"))
    };
    let tradeoff = svg(&page, "chart-tradeoff");
    assert_eq!(
        tradeoff.matches("<g class=\"series\"").count(),
        2,
        "{tradeoff}"
    );
    let point = format!(
        "<title>basic/standard: clean {} %, robust {} %</title>",
        accuracy("standard", "none"),
        accuracy("standard", "pgd-linf")
    );
    assert!(tradeoff.contains(&point), "{point} in {tradeoff}");
    // Nothing in flight or failed once done; every run with its worker, epochs and checkpoint.
    assert!(page.contains("id=\"running-none\""), "{page}");
    assert!(page.contains("id=\"failed-none\""), "{page}");
    let runs = table_rows(&page, "runs");
    assert_eq!(runs.len(), 1 + 2, "{runs:?}");
    assert!(
        runs[1..]
            .iter()
            .all(|r| r[1] == "done" && !r[2].is_empty() && r[4] == "4/4"),
        "{runs:?}"
    );
    assert_eq!(
        page.matches("/checkpoint\">safetensors</a>").count(),
        2,
        "{page}"
    );

    // A run's page: its epochs, its cells, its one attempt and the worker that ran it.
    let run_path = page
        .split("href=\"")
        .map(|rest| rest.split('"').next().unwrap_or(""))
        .find(|href| {
            href.starts_with("/sweeps/") && href.contains("/runs/") && !href.ends_with("checkpoint")
        })
        .expect("a link to a run's page")
        .to_owned();
    let run_page = dom(
        &format!("http://{http}{run_path}"),
        20_000,
        &dir.path().join("profile"),
    );
    assert_eq!(table_rows(&run_page, "epochs").len(), 1 + 4, "{run_page}");
    assert_eq!(
        table_rows(&run_page, "run-cells").len(),
        1 + 3,
        "{run_page}"
    );
    let attempts = table_rows(&run_page, "attempts");
    assert_eq!(attempts.len(), 1 + 1, "{attempts:?}");
    assert_eq!(attempts[1][2], "done", "{attempts:?}");
    assert!(attempts[1][1].starts_with("w-"), "{attempts:?}");
    assert!(run_page.contains("id=\"checkpoint\""), "{run_page}");
    assert!(
        svg(&run_page, "chart-run-curve").contains("<circle"),
        "{run_page}"
    );

    // The sweeps list links to it.
    let list = dom(
        &format!("http://{http}/"),
        10_000,
        &dir.path().join("profile"),
    );
    assert!(list.contains("href=\"/sweeps/s-"), "{list}");
    assert_eq!(
        table_rows(&list, "sweeps")[0].last().map(String::as_str),
        Some("ETA"),
        "{list}"
    );
}

#[test]
fn a_token_protected_dashboard_shows_only_the_sign_in_form() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("clients"), "client-token-0123456789\n").expect("write");
    std::fs::write(dir.path().join("workers"), "worker-token-0123456789\n").expect("write");
    let (grpc, http) = (free_addr(), free_addr());
    let file = |name: &str| dir.path().join(name).display().to_string();
    let _coordinator = coordinator(
        dir.path(),
        &grpc,
        &http,
        &[
            "--client-tokens-file",
            &file("clients"),
            "--worker-tokens-file",
            &file("workers"),
        ],
    );
    std::fs::write(dir.path().join("sweep.toml"), SWEEP).expect("write");
    std::fs::write(dir.path().join("token"), "client-token-0123456789\n").expect("write");
    let url = format!("http://{grpc}");
    let token = dir.path().join("token").display().to_string();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !cli(
        dir.path(),
        &[
            "submit",
            "sweep.toml",
            "--coordinator",
            &url,
            "--token-file",
            &token,
        ],
    )
    .status
    .success()
    {
        assert!(Instant::now() < deadline, "the coordinator never came up");
        std::thread::sleep(Duration::from_millis(200));
    }
    for path in ["/", "/sweeps/browser"] {
        let page = dom(
            &format!("http://{http}{path}"),
            10_000,
            &dir.path().join("profile"),
        );
        // What the page shows (its <main>), not the form's template.
        let start = page.find("<main id=\"main\">").expect("main");
        let shown = &page[start..start + page[start..].find("</main>").expect("closed")];
        assert!(shown.contains("action=\"/login\""), "{path}: {shown}");
        assert!(
            !shown.contains("browser") && !shown.contains("<table"),
            "{path}: {shown}"
        );
    }
}
