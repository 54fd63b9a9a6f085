//! The server loop: open the state directory, bind, and serve the gRPC services (and Prometheus
//! metrics) until a stop signal. `advsweep coordinator` serves with [`serve_forever`]; the
//! embedded coordinator of `advsweep run` starts from [`start`] and stops on its own signal.
//! Argument parsing stays in the CLI (`advsweep-cli`).

use std::path::Path;
use std::sync::Arc;

use advsweep_settings::CoordinatorSettings;
use anyhow::Context;
use tokio::net::TcpListener;

use crate::grpc::{Coordinator, ServeOptions, serve};
use crate::scheduler::{LeaseSettings, Scheduler};
use crate::store::{SqliteStore, StateStore};
use crate::web;

/// The coordinator's settings cannot be served (bad TLS files, tokens): the caller's input is
/// at fault, which the CLI reports with exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BadSettings(pub String);

/// Opens the store in `state_dir` and binds `listen`: what both `advsweep coordinator` and the
/// embedded coordinator of `advsweep run` start from.
pub async fn start(
    state_dir: &Path,
    listen: &str,
    leases: LeaseSettings,
    options: ServeOptions,
) -> anyhow::Result<(Coordinator, TcpListener)> {
    let store = SqliteStore::open(state_dir)
        .with_context(|| format!("cannot open the state directory {}", state_dir.display()))?;
    // Uploads in flight when the previous coordinator stopped never finish: their temporary
    // files go before anything can upload again.
    let stale = store
        .artifacts()
        .sweep_stale_uploads()
        .with_context(|| format!("cannot clean {}/artifacts", state_dir.display()))?;
    if stale > 0 {
        tracing::info!(files = stale, "removed unfinished checkpoint uploads");
    }
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    Ok((
        Coordinator::new(Scheduler::new(Arc::new(store), leases)).with_options(options),
        listener,
    ))
}

/// `advsweep coordinator`: serve until SIGINT/SIGTERM. Settings that cannot be served (TLS
/// files, tokens) are a [`BadSettings`] error.
pub async fn serve_forever(settings: &CoordinatorSettings) -> anyhow::Result<()> {
    let options = ServeOptions::from_settings(settings).map_err(|e| BadSettings(e.to_string()))?;
    if !options.auth.tokens_required() && !is_loopback(&settings.listen) {
        tracing::warn!(
            listen = %settings.listen,
            "no worker or client tokens are configured: anyone who can reach this address can \
             submit, cancel and report (set worker_tokens_file and client_tokens_file)"
        );
    }
    if options.auth.tokens_required() && options.tls.is_none() && !is_loopback(&settings.listen) {
        tracing::warn!(
            listen = %settings.listen,
            "tokens are configured but TLS is off: tokens cross the network in clear text \
             (set tls_cert and tls_key)"
        );
    }
    let leases = LeaseSettings {
        lease_ttl: settings.lease_ttl(),
        heartbeat_interval: settings.heartbeat_interval(),
        ..LeaseSettings::default()
    };
    let (coordinator, listener) =
        start(&settings.state_dir, &settings.listen, leases, options).await?;
    if let Some(addr) = settings.metrics_listen.as_deref() {
        let metrics_listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen for metrics on {addr}"))?;
        tracing::info!(addr = %metrics_listener.local_addr()?, "serving Prometheus metrics on /metrics");
        let router = web::metrics_router(web::WebState::of(&coordinator));
        tokio::spawn(web::serve_http(metrics_listener, router));
    }
    if let Some(addr) = settings.http_listen.as_deref() {
        let https = web::https_config(settings).map_err(|e| BadSettings(format!("{e:#}")))?;
        let http_listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen for the dashboard on {addr}"))?;
        let local = http_listener.local_addr()?;
        let router = web::dashboard_router(web::WebState::of(&coordinator));
        let tokens = coordinator.options.auth.tokens_required();
        match https {
            Some(config) => {
                tracing::info!(addr = %local, tokens, "serving the dashboard on https://{local}/");
                tokio::spawn(web::serve_https(http_listener, config, router));
            }
            None => {
                tracing::info!(addr = %local, tokens, "serving the dashboard on http://{local}/");
                tokio::spawn(web::serve_http(http_listener, router));
            }
        }
    }
    let shutdown = async {
        wait_for_stop_signal().await;
        tracing::info!("stop signal received; shutting down");
    };
    serve(coordinator, listener, shutdown).await
}

/// SIGINT, or SIGTERM (what Kubernetes, systemd and Slurm send).
async fn wait_for_stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

fn is_loopback(listen: &str) -> bool {
    listen
        .parse::<std::net::SocketAddr>()
        .is_ok_and(|a| a.ip().is_loopback())
        || listen.starts_with("localhost:")
}
