//! The coordinator's HTTP side, on axum (over the hyper and tower that tonic already brings):
//! Prometheus metrics on `GET /metrics`, and the dashboard's read-only JSON API under
//! `/api/v1/`, and the pages that show it (`advsweep coordinator --http-listen ADDR`).
//!
//! Two routers share the handlers: [`metrics_router`] is `/metrics` alone, open, for the
//! `metrics_listen` port a Prometheus scrapes; [`dashboard_router`] is `/metrics` and the API,
//! behind the same client tokens as the gRPC `SweepService` when any are configured
//! ([`access`]: `Authorization: Bearer` or the `advsweep_token` cookie), so with tokens nothing
//! is readable without one. Every answer about a sweep is made by the same code as `advsweep
//! report` ([`crate::grpc::rows`] and `advsweep-report`), so the page and the files never
//! disagree. Bad input (an unknown sweep, a file that is not a report file, a path that tries
//! to leave the report) is a 4xx with a JSON `{"error": …}` naming the problem.

pub mod access;
mod actions;
mod api;
mod events;
mod pages;
mod runs;
mod tls;
pub mod views;

pub use tls::{TlsListener, server_config as https_config};

use std::sync::Arc;

use axum::Router;
use axum::routing::{get, post};
use tokio::net::TcpListener;

use crate::grpc::auth::Auth;
use crate::grpc::{ChangeNotifier, Coordinator};
use crate::metrics::Metrics;
use crate::scheduler::Scheduler;

/// What the handlers read: the scheduler (state), the metrics, change notifications (the
/// event stream) and the access policy.
#[derive(Clone)]
pub struct WebState {
    pub scheduler: Arc<Scheduler>,
    pub metrics: Arc<Metrics>,
    pub changes: ChangeNotifier,
    pub auth: Auth,
    /// One-time sign-in links (`advsweep run`).
    pub links: access::SignInLinks,
    /// The reads every open page shares.
    pub views: views::SweepViews,
}

impl WebState {
    /// The state of a running coordinator.
    pub fn of(coordinator: &Coordinator) -> WebState {
        WebState::new(
            Arc::clone(&coordinator.scheduler),
            Arc::clone(&coordinator.metrics),
            coordinator.changes.clone(),
            coordinator.options.auth.clone(),
        )
    }

    pub fn new(
        scheduler: Arc<Scheduler>,
        metrics: Arc<Metrics>,
        changes: ChangeNotifier,
        auth: Auth,
    ) -> WebState {
        WebState {
            scheduler,
            metrics,
            changes,
            auth,
            links: access::SignInLinks::default(),
            views: views::SweepViews::default(),
        }
    }
}

/// `GET /metrics` alone, without authentication (the `metrics_listen` port).
pub fn metrics_router(state: WebState) -> Router {
    Router::new()
        .route("/metrics", get(api::metrics))
        .fallback(api::not_found)
        .layer(axum::middleware::from_fn(access::refuse_grpc))
        .with_state(state)
}

/// The dashboard's routes: `/metrics` and the JSON API behind the client tokens; the pages
/// (which hold no data) and the sign-in form open.
pub fn dashboard_router(state: WebState) -> Router {
    let guarded = Router::new()
        .route("/metrics", get(api::metrics))
        .route("/api/v1/sweeps", get(api::sweeps))
        .route("/api/v1/sweeps/{sweep}", get(api::sweep))
        .route("/api/v1/sweeps/{sweep}/files/{file}", get(api::file))
        .route("/api/v1/sweeps/{sweep}/events", get(events::stream))
        .route("/api/v1/sweeps/{sweep}/runs", get(runs::runs))
        .route("/api/v1/sweeps/{sweep}/runs/{run}", get(runs::run))
        .route(
            "/api/v1/sweeps/{sweep}/runs/{run}/checkpoint",
            get(runs::checkpoint),
        )
        .route("/api/v1/sweeps/{sweep}/retry", post(actions::retry))
        .route("/api/v1/access", get(actions::access))
        .fallback(api::not_found)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            access::require_client_token,
        ));
    Router::new()
        .route("/", get(pages::index))
        .route("/sweeps/{sweep}", get(pages::index))
        .route("/sweeps/{sweep}/runs/{run}", get(pages::index))
        .route("/assets/app.js", get(pages::script))
        .route("/assets/charts.js", get(pages::charts))
        .route("/assets/app.css", get(pages::style))
        .route("/login", post(pages::login))
        .route("/signin/{code}", get(pages::sign_in_link))
        .merge(guarded)
        .layer(axum::middleware::from_fn(access::refuse_grpc))
        .with_state(state)
}

/// Serves `router` on `listener` until the process ends (or the listener fails).
pub async fn serve_http(listener: TcpListener, router: Router) -> std::io::Result<()> {
    axum::serve(listener, router).await
}

/// Serves `router` over TLS (`https_config`) on `listener` until the process ends.
pub async fn serve_https(
    listener: TcpListener,
    config: std::sync::Arc<tokio_rustls::rustls::ServerConfig>,
    router: Router,
) -> std::io::Result<()> {
    axum::serve(TlsListener::new(listener, config)?, router).await
}
