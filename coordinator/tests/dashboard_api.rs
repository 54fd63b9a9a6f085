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
use common::Fixture;
use http_body_util::BodyExt;
use tower::ServiceExt;

fn state(f: &Fixture, auth: Auth) -> WebState {
    WebState {
        scheduler: Arc::clone(&f.scheduler),
        metrics: Arc::new(Metrics::default()),
        changes: ChangeNotifier::default(),
        auth,
    }
}

/// GET `path` (with `headers`): the status and the whole body as text.
async fn get(router: &axum::Router, path: &str, headers: &[(&str, &str)]) -> (StatusCode, String) {
    let mut request = Request::get(path);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = router
        .clone()
        .oneshot(request.body(Body::empty()).expect("request"))
        .await
        .expect("answered");
    let status = response.status();
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    (status, String::from_utf8_lossy(&bytes).into_owned())
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
}
