//! Every metric family weir exports, with its type and HELP text: given to
//! the recorder at start, and written into each `/metrics` page for the
//! families that have no sample yet, so a scrape shows every family (HELP
//! and TYPE) before its first event.

use metrics::{describe_counter, describe_gauge, describe_histogram};

/// (name, Prometheus type, help).
pub const FAMILIES: &[(&str, &str, &str)] = &[
    (
        "weir_jobs_enqueued_total",
        "counter",
        "Jobs enqueued, by queue and task",
    ),
    (
        "weir_jobs_finished_total",
        "counter",
        "Attempts ended, by queue, task and outcome",
    ),
    (
        "weir_job_duration_seconds",
        "histogram",
        "Time an attempt ran, by queue and task",
    ),
    (
        "weir_job_wait_seconds",
        "histogram",
        "Time from when a job was due to its claim, by queue",
    ),
    (
        "weir_queue_jobs",
        "gauge",
        "Jobs per queue and state (broker-wide)",
    ),
    (
        "weir_queue_oldest_age_seconds",
        "gauge",
        "How long the next job of a queue has been due (broker-wide)",
    ),
    (
        "weir_queue_consumers",
        "gauge",
        "Live worker nodes serving a queue (broker-wide)",
    ),
    (
        "weir_queue_paused",
        "gauge",
        "1 while a queue is paused (broker-wide)",
    ),
    (
        "weir_queue_unconsumed",
        "gauge",
        "1 while a queue has jobs and no consumer (broker-wide)",
    ),
    (
        "weir_postgres_oldest_xact_age_seconds",
        "gauge",
        "Age of the oldest transaction holding back vacuum on the Postgres broker's database",
    ),
    (
        "weir_worker_slots",
        "gauge",
        "A worker node's job slots by kind: busy, current, min, max",
    ),
    (
        "weir_leases_reaped_total",
        "counter",
        "Jobs whose lease expired and were returned or dead-lettered",
    ),
    (
        "weir_workflow_repairs_total",
        "counter",
        "Waiting workflow steps whose parents had all ended, released by the maintenance audit (a missed release; should stay 0)",
    ),
    (
        "weir_limit_waits_total",
        "counter",
        "Waits for a limit, by limit (provider:NAME)",
    ),
    (
        "weir_limit_holders",
        "gauge",
        "Jobs holding a task's permits (broker-wide)",
    ),
    (
        "weir_limit_waiting",
        "gauge",
        "Jobs waiting for a task's permits (broker-wide)",
    ),
    (
        "weir_http_requests_total",
        "counter",
        "API requests by route, method and status",
    ),
    (
        "weir_http_request_duration_seconds",
        "histogram",
        "API request duration by route",
    ),
    (
        "weir_http_streams_open",
        "gauge",
        "Event streams open in this process",
    ),
    (
        "weir_http_streams_jobs_followed",
        "gauge",
        "Jobs followed by this process's event streams",
    ),
    (
        "weir_http_connections_refused_total",
        "counter",
        "Connections refused past WEIR_HTTP_MAX_CONNECTIONS",
    ),
    (
        "weir_celery_messages_total",
        "counter",
        "Celery messages the ingress took, by Celery queue and outcome (taken, rejected)",
    ),
    (
        "weir_celery_recovered_total",
        "counter",
        "Messages an ingress took and did not hand over (it crashed), enqueued again by the ingress",
    ),
    (
        "weir_embedding_calls_total",
        "counter",
        "Embeddings calls the batcher sent, by provider (merged across a process's jobs)",
    ),
    (
        "weir_embedding_inputs_total",
        "counter",
        "Inputs in those calls, by provider: inputs per call = the rate of this over the rate of calls",
    ),
    (
        "weir_provider_requests_total",
        "counter",
        "Calls to providers by provider and status",
    ),
    (
        "weir_provider_keys",
        "gauge",
        "Provider keys by state: ok, cooling (broker-wide)",
    ),
    (
        "weir_stale_acks_total",
        "counter",
        "Completions ignored because the lease had moved on",
    ),
    (
        "weir_acks_abandoned_total",
        "counter",
        "Completions the broker refused every way (the lease brings the job back)",
    ),
    (
        "weir_child_recycles_total",
        "counter",
        "Worker children replaced after their task or memory limit",
    ),
    (
        "weir_child_restarts_total",
        "counter",
        "Worker children restarted after dying",
    ),
    (
        "weir_child_ready_seconds",
        "summary",
        "Time from a child's start to its first report",
    ),
    (
        "weir_autoscale_decisions_total",
        "counter",
        "Autoscaling decisions by direction",
    ),
    (
        "weir_schedule_fires_total",
        "counter",
        "Cron ticks enqueued, by schedule",
    ),
    ("weir_build_info", "gauge", "The running version"),
];

/// Gives the recorder every family's HELP text.
pub fn describe() {
    for (name, kind, help) in FAMILIES {
        match *kind {
            "counter" => describe_counter!(*name, *help),
            "gauge" => describe_gauge!(*name, *help),
            _ => describe_histogram!(*name, *help),
        }
    }
}

/// `page` with HELP and TYPE lines for every family it has no sample of.
pub fn complete(mut page: String) -> String {
    for (name, kind, help) in FAMILIES {
        if !page.contains(&format!("# TYPE {name} ")) {
            if !page.is_empty() && !page.ends_with('\n') {
                page.push('\n');
            }
            page.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
        }
    }
    page
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_gets_every_family_once() {
        let page = complete(
            "# HELP weir_build_info The running version\n# TYPE weir_build_info gauge\nweir_build_info{version=\"1\"} 1\n"
                .into(),
        );
        for (name, kind, _) in FAMILIES {
            assert_eq!(
                page.matches(&format!("# TYPE {name} {kind}")).count(),
                1,
                "{name}: {page}"
            );
        }
    }
}
