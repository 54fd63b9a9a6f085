//! The dashboard's HTTP side (issue 22), its routes called in process: the sweeps list, a
//! sweep's report (the same records and files as `advsweep report`), the event stream, the
//! Prometheus text; bad input answered 4xx naming the problem; tokens required when set.

mod common;

use std::sync::Arc;

use advsweep_coordinator::grpc::auth::Auth;
use advsweep_coordinator::grpc::{ChangeNotifier, convert, rows};
use advsweep_coordinator::metrics::Metrics;
use advsweep_coordinator::web::{WebState, dashboard_router, metrics_router};
use advsweep_report::{Layout, Pivot};
use advsweep_settings::Secret;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use common::{Fixture, held, typed};
use http_body_util::BodyExt;
use tower::ServiceExt;

fn state(f: &Fixture, auth: Auth) -> WebState {
    WebState::new(
        Arc::clone(&f.scheduler),
        Arc::new(Metrics::default()),
        ChangeNotifier::default(),
        auth,
    )
}

/// `request` answered by `router`: the status and the whole body as text.
async fn send(router: &axum::Router, request: Request<Body>) -> (StatusCode, String) {
    let response = router.clone().oneshot(request).await.expect("answered");
    let status = response.status();
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

/// `request` with `headers` added, without a body.
fn with_headers(
    mut request: axum::http::request::Builder,
    headers: &[(&str, &str)],
) -> Request<Body> {
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.body(Body::empty()).expect("request")
}

/// GET `path` (with `headers`): the status and the whole body as text.
async fn get(router: &axum::Router, path: &str, headers: &[(&str, &str)]) -> (StatusCode, String) {
    send(router, with_headers(Request::get(path), headers)).await
}

/// POST `path` (with `headers`, no body): the status and the body as text.
async fn post(router: &axum::Router, path: &str, headers: &[(&str, &str)]) -> (StatusCode, String) {
    send(router, with_headers(Request::post(path), headers)).await
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

#[tokio::test]
async fn the_api_shows_what_report_writes() {
    let f = Fixture::new().await;
    let router = dashboard_router(state(&f, Auth::default()));

    let (status, body) = get(&router, "/api/v1/sweeps", &[]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let list = json(&body);
    assert_eq!(list["sweeps"][0]["name"], "hostile", "{list}");
    assert_eq!(list["sweeps"][0]["cells"]["total"], 4, "{list}");
    assert_eq!(list["sweeps"][0]["state"], "running", "{list}");

    // By name and by id, the report `advsweep report` makes from the gRPC answer.
    let detail = f
        .scheduler
        .sweep_detail(&f.sweep_id.parse().expect("id"))
        .await
        .expect("detail");
    let expected = rows::sweep_report(&convert::detail(&detail)).expect("converts");
    for key in ["hostile", f.sweep_id.as_str()] {
        let (status, body) = get(&router, &format!("/api/v1/sweeps/{key}"), &[]).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body, advsweep_report::export::json(&expected));
    }
    // Gzipped for a browser that asks for it: the same report.
    let response = router
        .clone()
        .oneshot(
            Request::get("/api/v1/sweeps/hostile")
                .header(header::ACCEPT_ENCODING, "gzip, deflate, br")
                .body(Body::empty())
                .expect("request"),
        )
        .await
        .expect("answered");
    assert_eq!(response.headers()[header::CONTENT_ENCODING], "gzip");
    let gz = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    let mut plain = String::new();
    std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&gz[..]), &mut plain)
        .expect("gzip");
    assert_eq!(plain, advsweep_report::export::json(&expected));
    let (status, table) = get(&router, "/api/v1/sweeps/hostile/files/table.csv", &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(table, Pivot::new(&expected.cells, Layout::default()).csv());
    let (_, cells) = get(&router, "/api/v1/sweeps/hostile/files/cells.csv", &[]).await;
    assert_eq!(cells, advsweep_report::export::cells_csv(&expected));
    // Another layout, as `report --rows --cols --metric` takes it.
    let (status, by_seed) = get(
        &router,
        "/api/v1/sweeps/hostile/files/table.md?rows=attack&cols=defense,epsilon&metric=attack_success_rate",
        &[],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{by_seed}");
    let layout = Layout::parse("attack", "defense,epsilon", "attack_success_rate").expect("layout");
    assert_eq!(by_seed, Pivot::new(&expected.cells, layout).markdown());

    let (status, metrics) = get(&router, "/metrics", &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert!(metrics.contains("advsweep_cells"), "{metrics}");
}

#[tokio::test]
async fn bad_requests_are_refused_naming_the_problem() {
    let f = Fixture::new().await;
    let router = dashboard_router(state(&f, Auth::default()));
    for (path, status, says) in [
        (
            "/api/v1/sweeps/no-such-sweep",
            StatusCode::NOT_FOUND,
            "no sweep has the id or name",
        ),
        (
            "/api/v1/sweeps/s-0000000000000000",
            StatusCode::NOT_FOUND,
            "s-0000000000000000",
        ),
        (
            "/api/v1/sweeps/hostile/files/state.sqlite",
            StatusCode::NOT_FOUND,
            "not a report file",
        ),
        (
            "/api/v1/sweeps/hostile/files/..%2F..%2Fstate.sqlite",
            StatusCode::NOT_FOUND,
            "not a report file",
        ),
        (
            "/api/v1/sweeps/hostile/files/../../etc/passwd",
            StatusCode::NOT_FOUND,
            "no such page",
        ),
        (
            "/api/v1/sweeps/hostile/files/table.csv?rows=colour",
            StatusCode::BAD_REQUEST,
            "colour",
        ),
        (
            "/api/v1/sweeps/hostile/files/table.csv?metric=speed",
            StatusCode::BAD_REQUEST,
            "speed",
        ),
        (
            "/api/v1/sweeps/hostile/files/table.csv?rows=attack&cols=attack",
            StatusCode::BAD_REQUEST,
            "both",
        ),
        (
            "/api/v1/sweeps/no-such-sweep/events",
            StatusCode::NOT_FOUND,
            "no sweep",
        ),
        ("/nothing/here", StatusCode::NOT_FOUND, "no such page"),
    ] {
        let (got, body) = get(&router, path, &[]).await;
        assert_eq!(got, status, "{path}: {body}");
        let error = json(&body)["error"].as_str().unwrap_or_default().to_owned();
        assert!(error.contains(says), "{path}: {error}");
    }
}

#[tokio::test]
async fn with_tokens_nothing_is_readable_without_a_client_one() {
    let f = Fixture::new().await;
    let auth = Auth::new(
        &[Secret::new("worker-secret")],
        &[Secret::new("client-secret")],
        false,
    );
    let router = dashboard_router(state(&f, auth));
    for path in [
        "/api/v1/sweeps",
        "/api/v1/sweeps/hostile",
        "/api/v1/sweeps/hostile/files/cells.csv",
        "/metrics",
        "/api/v1/sweeps/hostile/events",
        "/api/v1/sweeps/hostile/runs",
        "/api/v1/access",
    ] {
        for headers in [
            vec![],
            vec![("authorization", "Bearer worker-secret")],
            vec![("authorization", "Bearer guess")],
            vec![(header::COOKIE.as_str(), "advsweep_token=guess")],
        ] {
            let (status, body) = get(&router, path, &headers).await;
            assert_eq!(
                status,
                StatusCode::UNAUTHORIZED,
                "{path} {headers:?}: {body}"
            );
            assert!(!body.contains("hostile"), "{body}");
        }
    }
    let (status, _) = get(
        &router,
        "/api/v1/sweeps",
        &[("authorization", "Bearer client-secret")],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = get(
        &router,
        "/api/v1/sweeps",
        &[("cookie", "theme=dark; advsweep_token=client-secret")],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    // The metrics port stays open (Prometheus scrapes it), and serves nothing else.
    let metrics = metrics_router(state(
        &f,
        Auth::new(&[], &[Secret::new("client-secret")], false),
    ));
    assert_eq!(get(&metrics, "/metrics", &[]).await.0, StatusCode::OK);
    assert_eq!(
        get(&metrics, "/api/v1/sweeps", &[]).await.0,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn the_event_stream_pushes_the_sweeps_summary() {
    let f = Fixture::new().await;
    let router = dashboard_router(state(&f, Auth::default()));
    let response = router
        .oneshot(
            Request::get("/api/v1/sweeps/hostile/events")
                .body(Body::empty())
                .expect("request"),
        )
        .await
        .expect("answered");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()[header::CONTENT_TYPE],
        "text/event-stream"
    );
    let mut body = response.into_body();
    let frame = tokio::time::timeout(std::time::Duration::from_secs(10), body.frame())
        .await
        .expect("a first event")
        .expect("a frame")
        .expect("data");
    let text = String::from_utf8_lossy(frame.data_ref().expect("data")).into_owned();
    assert!(text.starts_with("event: summary\ndata: {"), "{text}");
    assert!(text.contains("\"name\":\"hostile\""), "{text}");
    // Then the runs in flight: the fixture's leased run, on its worker, before any epoch.
    let frame = tokio::time::timeout(std::time::Duration::from_secs(10), body.frame())
        .await
        .expect("a second event")
        .expect("a frame")
        .expect("data");
    let text = String::from_utf8_lossy(frame.data_ref().expect("data")).into_owned();
    let data = text
        .strip_prefix("event: running\ndata: ")
        .unwrap_or_else(|| panic!("{text}"));
    let running = json(data.trim());
    assert_eq!(running[0]["run_id"], f.live().lease.run_id, "{running}");
    assert_eq!(running[0]["worker_name"], "fixture", "{running}");
    assert_eq!(running[0]["epochs_planned"], 4, "{running}");
    assert_eq!(running[0]["attempt"], 1, "{running}");
    assert_eq!(running[0]["max_attempts"], 3, "{running}");
}

#[tokio::test]
async fn runs_show_their_worker_attempts_and_checkpoint() {
    let f = Fixture::new().await;
    let router = dashboard_router(state(&f, Auth::default()));
    let live = f.live().lease;
    // The leased run fails once: its attempt is recorded with the worker and the reason.
    f.scheduler
        .fail_run(held(&live), "CUDA out of memory".into(), true)
        .await
        .expect("fails");
    let (status, body) = get(&router, "/api/v1/sweeps/hostile/runs", &[]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let runs = json(&body);
    let run = runs["runs"]
        .as_array()
        .expect("runs")
        .iter()
        .find(|r| r["run_id"] == live.run_id)
        .expect("the fixture's run")
        .clone();
    assert_eq!(run["attempts"][0]["outcome"], "failed", "{run}");
    assert_eq!(run["attempts"][0]["worker_id"], f.worker_id, "{run}");
    assert_eq!(run["attempts"][0]["reason"], "CUDA out of memory", "{run}");
    assert_eq!(runs["runs"].as_array().expect("runs").len(), 2, "{runs}");

    // One run, with the checkpoint it stored; the checkpoint's bytes as the coordinator keeps
    // them.
    let path = format!("/api/v1/sweeps/hostile/runs/{}", live.run_id);
    let (status, body) = get(&router, &path, &[]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let one = json(&body);
    assert_eq!(one["checkpoint"]["epoch"], 1, "{one}");
    let (status, bytes) = get(&router, &format!("{path}/checkpoint"), &[]).await;
    assert_eq!(status, StatusCode::OK, "{bytes}");
    assert_eq!(bytes, "not really a model");

    // The other run stored none; unknown and malformed runs are named.
    let other = runs["runs"]
        .as_array()
        .expect("runs")
        .iter()
        .find(|r| r["run_id"] != live.run_id)
        .expect("another run")["run_id"]
        .as_str()
        .expect("id")
        .to_owned();
    for (path, says) in [
        (
            format!("/api/v1/sweeps/hostile/runs/{other}/checkpoint"),
            "no stored checkpoint".to_owned(),
        ),
        (
            "/api/v1/sweeps/hostile/runs/r-0000000000000000".to_owned(),
            "has no run \"r-0000000000000000\"".to_owned(),
        ),
        (
            "/api/v1/sweeps/hostile/runs/..%2Fstate.sqlite/checkpoint".to_owned(),
            "has no run \"../state.sqlite\"".to_owned(),
        ),
        (
            "/api/v1/sweeps/nope/runs".to_owned(),
            "no sweep has the id or name".to_owned(),
        ),
    ] {
        let (status, body) = get(&router, &path, &[]).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}: {body}");
        assert!(
            json(&body)["error"].as_str().unwrap_or("").contains(&says),
            "{path}: {body}"
        );
    }
}

#[tokio::test]
async fn retry_from_the_page_needs_a_client_token_and_the_action_header() {
    let f = Fixture::new().await;
    let live = f.live().lease;
    // Fails for good: its cells are failed, for retry to re-queue.
    f.scheduler
        .fail_run(held(&live), "bad model file".into(), false)
        .await
        .expect("fails");
    // Without tokens the dashboard is read-only.
    let open = dashboard_router(state(&f, Auth::default()));
    let (status, body) = post(
        &open,
        "/api/v1/sweeps/hostile/retry",
        &[("x-advsweep-action", "retry")],
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(body.contains("read-only"), "{body}");
    let (_, access) = get(&open, "/api/v1/access", &[]).await;
    assert_eq!(json(&access)["actions"], serde_json::json!([]), "{access}");

    let auth = Auth::new(&[], &[Secret::new("client-secret")], false);
    let guarded = dashboard_router(state(&f, auth));
    let bearer = ("authorization", "Bearer client-secret");
    let (status, _) = post(
        &guarded,
        "/api/v1/sweeps/hostile/retry",
        &[("x-advsweep-action", "retry")],
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, body) = post(&guarded, "/api/v1/sweeps/hostile/retry", &[bearer]).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(body.contains("x-advsweep-action"), "{body}");
    let (status, body) = post(
        &guarded,
        "/api/v1/sweeps/nope/retry",
        &[bearer, ("x-advsweep-action", "retry")],
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (_, access) = get(&guarded, "/api/v1/access", &[bearer]).await;
    assert_eq!(
        json(&access)["actions"],
        serde_json::json!(["retry"]),
        "{access}"
    );

    let before = f
        .scheduler
        .sweep_summary(&typed(&f.sweep_id))
        .await
        .expect("summary");
    assert!(before.cells.failed > 0, "{before:?}");
    let (status, body) = post(
        &guarded,
        "/api/v1/sweeps/hostile/retry",
        &[bearer, ("x-advsweep-action", "retry")],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(json(&body)["cells_requeued"], before.cells.failed, "{body}");
    let after = f
        .scheduler
        .sweep_summary(&typed(&f.sweep_id))
        .await
        .expect("summary");
    assert_eq!(after.cells.failed, 0, "{after:?}");
}

#[tokio::test]
async fn the_pages_are_served_by_the_binary_and_sign_in_sets_the_cookie() {
    let f = Fixture::new().await;
    let auth = Auth::new(&[], &[Secret::new("client-secret")], false);
    let router = dashboard_router(state(&f, auth));
    // The pages hold no data, so they load without a token (the sign-in form is on them).
    for (path, kind, has) in [
        ("/", "text/html", "/assets/app.js"),
        ("/sweeps/hostile", "text/html", "/assets/app.js"),
        ("/assets/app.js", "text/javascript", "EventSource"),
        ("/assets/app.css", "text/css", "table"),
    ] {
        let response = router
            .clone()
            .oneshot(Request::get(path).body(Body::empty()).expect("request"))
            .await
            .expect("answered");
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        let headers = response.headers().clone();
        assert!(
            headers[header::CONTENT_TYPE]
                .to_str()
                .unwrap_or("")
                .starts_with(kind),
            "{path}"
        );
        let policy = headers[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .unwrap_or("");
        assert!(policy.contains("default-src 'self'"), "{path}: {policy}");
        let body = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        let text = String::from_utf8_lossy(&body);
        assert!(text.contains(has), "{path}");
        assert!(!text.contains("https://"), "{path}: nothing from elsewhere");
    }
    let login = |token: &str| {
        Request::post("/login")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from(format!("token={token}")))
            .expect("request")
    };
    let ok = router
        .clone()
        .oneshot(login("client-secret"))
        .await
        .expect("answered");
    assert_eq!(ok.status(), StatusCode::SEE_OTHER);
    let cookie = ok.headers()[header::SET_COOKIE]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert!(
        cookie.starts_with("advsweep_token=client-secret;") && cookie.contains("HttpOnly"),
        "{cookie}"
    );
    let (status, _) = get(
        &router,
        "/api/v1/sweeps",
        &[("cookie", cookie.split(';').next().unwrap_or(""))],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    for bad in ["guess", "", "client-secret%3B%20x"] {
        let refused = router.clone().oneshot(login(bad)).await.expect("answered");
        assert_eq!(refused.headers()[header::LOCATION], "/?refused", "{bad}");
        assert!(refused.headers().get(header::SET_COOKIE).is_none(), "{bad}");
    }
    // An oversized or malformed sign-in is a 4xx saying so, never a panic.
    let huge = "x".repeat(3 << 20);
    for (body, kind) in [
        (format!("token={huge}"), "application/x-www-form-urlencoded"),
        ("token=client-secret".to_owned(), "text/plain"),
        (
            "nothing=here".to_owned(),
            "application/x-www-form-urlencoded",
        ),
    ] {
        let request = Request::post("/login")
            .header(header::CONTENT_TYPE, kind)
            .body(Body::from(body))
            .expect("request");
        let (status, text) = send(&router, request).await;
        assert!(status.is_client_error(), "{kind}: {status} {text}");
        assert!(!text.is_empty(), "{kind}: {status} says nothing");
    }
    // One-time sign-in links: unknown codes go to the form.
    let (status, _) = get(&router, "/signin/not-a-code", &[]).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn pages_share_one_build_yet_never_see_the_state_from_before_their_request() {
    let f = Fixture::new().await;
    let web = state(&f, Auth::default());
    let router = dashboard_router(web.clone());
    let (_, before) = get(&router, "/api/v1/sweeps/hostile", &[]).await;
    assert!(!before.contains("\"failed\""), "{before}");
    // Nothing changed: the same bytes, from the same build.
    let (_, again) = get(&router, "/api/v1/sweeps/hostile", &[]).await;
    assert_eq!(before, again);
    // A change (as the services notify it): the next request sees it, though the last build
    // is younger than the rebuild period.
    f.scheduler
        .fail_run(held(&f.live().lease), "bad model file".into(), false)
        .await
        .expect("fails");
    web.changes.notify();
    let (_, after) = get(&router, "/api/v1/sweeps/hostile", &[]).await;
    assert!(after.contains("bad model file"), "{after}");
    let (_, runs) = get(&router, "/api/v1/sweeps/hostile/runs", &[]).await;
    assert!(runs.contains("bad model file"), "{runs}");
}
