//! The long-running roles: `weir dev`, `weir api`, `weir worker`.

use crate::args::{ServeArgs, WorkerArgs};
use crate::failure::{Failure, Outcome};
use crate::signals::shutdown_token;
use anyhow::Context as _;
use metrics_exporter_prometheus::PrometheusBuilder;
use std::sync::Arc;
use weir_api::AppState;
use weir_shared::broker::maintain;
use weir_shared::config::Settings;
use weir_worker::Registry;

/// Buckets of `weir_http_request_duration_seconds` (a histogram, so
/// replicas aggregate with `histogram_quantile`).
const HTTP_BUCKETS: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Installs this process's Prometheus recorder and records
/// `weir_build_info{version}`; `None` (with a warning) if it cannot.
fn install_metrics() -> Option<metrics_exporter_prometheus::PrometheusHandle> {
    use metrics_exporter_prometheus::Matcher;
    let builder = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full("weir_http_request_duration_seconds".into()),
            &HTTP_BUCKETS,
        )
        .and_then(|b| {
            b.set_buckets_for_metric(
                Matcher::Full("weir_job_duration_seconds".into()),
                &weir_worker::JOB_BUCKETS,
            )
        })
        .and_then(|b| {
            b.set_buckets_for_metric(
                Matcher::Full("weir_job_wait_seconds".into()),
                &weir_worker::JOB_BUCKETS,
            )
        })
        .unwrap_or_else(|_| PrometheusBuilder::new());
    match builder.install_recorder() {
        Ok(handle) => {
            describe_metrics();
            metrics::gauge!("weir_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
            Some(handle)
        }
        Err(e) => {
            tracing::warn!(error = %e, "Metrics recorder not installed; /metrics will be empty");
            None
        }
    }
}

/// HELP text of every family, and the label-less counters at zero.
fn describe_metrics() {
    weir_api::families::describe();
    for counter in [
        "weir_leases_reaped_total",
        "weir_stale_acks_total",
        "weir_acks_abandoned_total",
    ] {
        metrics::counter!(counter).increment(0);
    }
}

fn api_state(settings: &Arc<Settings>, connected: weir_shared::broker::Connected) -> AppState {
    let mut state = AppState::new(connected.broker, settings.clone());
    state.limiter = connected.limiter;
    state.metrics = install_metrics();
    state
}

async fn listen(addr: std::net::SocketAddr) -> Result<tokio::net::TcpListener, Failure> {
    tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| {
            format!("cannot listen on {addr} (set WEIR_HTTP_ADDR or --addr to another address)")
        })
        .map_err(Failure::Runtime)
}

/// `weir dev`: API and worker in one process.
pub async fn dev(mut settings: Settings, args: ServeArgs) -> Outcome {
    settings.auth.read_keys_file().map_err(Failure::usage)?;
    if let Some(addr) = args.addr {
        settings
            .overlay("WEIR_HTTP_ADDR", &addr.to_string(), "--addr")
            .map_err(Failure::usage)?;
    }
    if !settings.auth.required() && !settings.http.addr.ip().is_loopback() {
        return Err(Failure::usage(format!(
            "without API keys weir dev listens on loopback only; {} is not a loopback address (configure WEIR_API_KEYS to listen elsewhere)",
            settings.http.addr
        )));
    }
    let settings = Arc::new(settings);
    let connected = super::connect_with_limiter(&settings).await?;
    let broker = connected.broker.clone();
    let listener = listen(settings.http.addr).await?;
    let addr = listener
        .local_addr()
        .map_err(|e| Failure::Runtime(e.into()))?;
    let shutdown = shutdown_token();
    tracing::info!(
        api = %format!("http://{addr}"),
        broker = %settings.broker.display_url(),
        slots = settings.worker.concurrency,
        "weir dev is up; try: curl -s -XPOST http://{addr}/v1/jobs -d '{{\"task\":\"weir.echo\",\"payload\":{{\"hello\":\"world\"}}}}'"
    );
    let worker = tokio::spawn(weir_worker::run_in_process(
        broker.clone(),
        Registry::with_builtins(),
        settings.clone(),
        shutdown.clone(),
    ));
    let scheduler = tokio::spawn(weir_scheduler::run(
        broker.clone(),
        settings.clone(),
        shutdown.clone(),
    ));
    let companions = tokio::spawn(async move {
        let _ = tokio::join!(worker, scheduler);
    });
    serve_api(
        listener,
        api_state(&settings, connected),
        shutdown,
        companions,
    )
    .await
}

/// `weir scheduler`: the cron scheduler alone.
pub async fn scheduler(settings: Settings) -> Outcome {
    let settings = Arc::new(settings);
    let broker = super::open_role(&settings).await?;
    let shutdown = shutdown_token();
    let running = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let ops = ops_server(&settings, &broker, "scheduler", running, &shutdown).await?;
    weir_scheduler::run(broker, settings, shutdown).await;
    if let Some(ops) = ops {
        let _ = ops.await;
    }
    Ok(())
}

/// Serves `/healthz`, `/readyz` and `/metrics` on `WEIR_METRICS_ADDR` for a
/// role without an API, until `shutdown`; `working` is what readiness adds
/// to a broker that answers.
pub(super) async fn ops_server(
    settings: &Arc<Settings>,
    broker: &weir_shared::broker::SharedBroker,
    role: &'static str,
    working: Arc<std::sync::atomic::AtomicBool>,
    shutdown: &tokio_util::sync::CancellationToken,
) -> Result<Option<tokio::task::JoinHandle<()>>, Failure> {
    let Some(addr) = settings.http.metrics_addr else {
        return Ok(None);
    };
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| {
            format!("cannot listen on {addr} (set WEIR_METRICS_ADDR to another address)")
        })
        .map_err(Failure::Runtime)?;
    let metrics = install_metrics();
    let state = weir_api::ops::OpsState {
        broker: broker.clone(),
        metrics,
        working: Arc::new(move || working.load(std::sync::atomic::Ordering::Relaxed)),
        role,
    };
    tracing::info!(addr = %addr, role, "Serving /healthz, /readyz and /metrics");
    let settings = settings.clone();
    let stop = shutdown.clone();
    Ok(Some(tokio::spawn(async move {
        let app = weir_api::ops::router(state);
        let served = weir_api::serve_app(
            listener,
            app,
            &settings.http,
            tokio_util::sync::CancellationToken::new(),
            async move { stop.cancelled().await },
            std::time::Duration::from_secs(1),
        )
        .await;
        if let Err(e) = served {
            tracing::warn!(error = %e, "The operations endpoints stopped");
        }
    })))
}

/// Serves the API until `shutdown`, then waits for `companion` (the
/// in-process worker or the maintenance loop) to finish.
async fn serve_api(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: tokio_util::sync::CancellationToken,
    companion: tokio::task::JoinHandle<()>,
) -> Outcome {
    let stop = shutdown.clone();
    let drain = state.settings.worker.shutdown_timeout;
    let served = weir_api::serve(
        listener,
        state,
        async move { stop.cancelled().await },
        drain,
    )
    .await;
    shutdown.cancel();
    let _ = companion.await;
    served.context("the API stopped").map_err(Failure::Runtime)
}

/// `weir api`: the HTTP API alone.
pub async fn api(mut settings: Settings, args: ServeArgs) -> Outcome {
    settings.auth.read_keys_file().map_err(Failure::usage)?;
    if let Some(addr) = args.addr {
        settings
            .overlay("WEIR_HTTP_ADDR", &addr.to_string(), "--addr")
            .map_err(Failure::usage)?;
    }
    if !settings.auth.required() && !settings.auth.disabled {
        return Err(Failure::usage(
            "weir api needs API keys: set WEIR_API_KEYS or WEIR_API_KEYS_FILE (`weir keys create --tenant T` makes one), \
             or WEIR_AUTH=disabled to serve without authentication on a trusted network",
        ));
    }
    let settings = Arc::new(settings);
    let connected = super::connect_with_limiter(&settings).await?;
    let broker = connected.broker.clone();
    let listener = listen(settings.http.addr).await?;
    let shutdown = shutdown_token();
    tracing::info!(addr = %settings.http.addr, broker = %settings.broker.display_url(), "API listening");
    // The API keeps due jobs promoted and expired leases returned even when
    // no worker runs, so counts and states stay true.
    let maintainer = {
        let broker = broker.clone();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            maintain::run(broker, maintain::MAINTENANCE_EVERY, stop.cancelled_owned()).await;
        })
    };
    serve_api(
        listener,
        api_state(&settings, connected),
        shutdown,
        maintainer,
    )
    .await
}

/// `weir worker`: a supervisor and its children (or, in a child, its share).
pub async fn worker(mut settings: Settings, args: WorkerArgs) -> Outcome {
    // Each flag goes through its variable's setter (`config/vars.rs`).
    fn overlay(settings: &mut Settings, var: &str, value: String, flag: &str) -> Outcome {
        settings.overlay(var, &value, flag).map_err(Failure::usage)
    }
    if let Some(spec) = args.queues {
        overlay(&mut settings, "WEIR_QUEUES", spec, "-Q")?;
    }
    if let Some(c) = args.concurrency {
        overlay(
            &mut settings,
            "WEIR_CONCURRENCY",
            c.to_string(),
            "-c/--concurrency",
        )?;
    }
    if let Some(p) = args.processes {
        overlay(
            &mut settings,
            "WEIR_PROCESSES",
            p.to_string(),
            "--processes",
        )?;
    }
    if let Some(spec) = args.autoscale {
        let (max, min) = spec.split_once(',').ok_or_else(|| {
            Failure::usage(format!(
                "--autoscale `{spec}`: give MAX,MIN with 1 <= MIN <= MAX, e.g. --autoscale 8,1"
            ))
        })?;
        overlay(
            &mut settings,
            "WEIR_AUTOSCALE",
            "true".into(),
            "--autoscale",
        )?;
        overlay(&mut settings, "WEIR_MAX_WORKERS", max.into(), "--autoscale")?;
        overlay(&mut settings, "WEIR_MIN_WORKERS", min.into(), "--autoscale")?;
        if settings.worker.min_workers > settings.worker.max_workers {
            return Err(Failure::usage(format!(
                "--autoscale `{spec}`: give MAX,MIN with 1 <= MIN <= MAX, e.g. --autoscale 8,1"
            )));
        }
    }
    if let Some(n) = args.max_tasks_per_child {
        overlay(
            &mut settings,
            "WEIR_MAX_TASKS_PER_CHILD",
            n.to_string(),
            "--max-tasks-per-child",
        )?;
    }
    let settings = Arc::new(settings);
    let broker = super::open_role(&settings).await?;
    let shutdown = shutdown_token();
    let consuming = Arc::new(std::sync::atomic::AtomicBool::new(false));
    // The supervisor serves the node's endpoints; its children do not.
    let ops = if weir_worker::is_child() {
        None
    } else {
        ops_server(&settings, &broker, "worker", consuming.clone(), &shutdown).await?
    };
    let ran = weir_worker::run_reporting(
        broker,
        Registry::with_builtins(),
        settings,
        consuming,
        shutdown,
    )
    .await
    .map_err(|e| Failure::Runtime(e.into()));
    if let Some(ops) = ops {
        let _ = ops.await;
    }
    ran
}
