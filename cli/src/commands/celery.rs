//! `weir celery-ingress`: the command line of `weir_shared::celery::Ingress`.

use crate::args::CeleryIngressArgs;
use crate::failure::{Failure, Outcome};
use crate::signals::shutdown_token;
use std::sync::Arc;
use weir_shared::celery::{Ingress, IngressError, IngressOptions, QueueRoute};
use weir_shared::config::Settings;

/// `--sep` as written (`\x06\x16` escapes read as bytes).
fn separator(text: &str) -> Result<String, Failure> {
    let mut out = String::new();
    let mut rest = text;
    while let Some(i) = rest.find("\\x") {
        out.push_str(&rest[..i]);
        let hex = rest.get(i + 2..i + 4).ok_or_else(|| {
            Failure::usage(format!("--sep: `{text}` has a \\x without two hex digits"))
        })?;
        let byte = u8::from_str_radix(hex, 16)
            .map_err(|_| Failure::usage(format!("--sep: `\\x{hex}` is not a hex byte")))?;
        out.push(char::from(byte));
        rest = &rest[i + 4..];
    }
    out.push_str(rest);
    Ok(out)
}

fn routes(settings: &Settings, args: &CeleryIngressArgs) -> Result<Vec<QueueRoute>, Failure> {
    let mut mapped = std::collections::HashMap::new();
    for m in &args.map {
        let (from, to) = m
            .split_once('=')
            .ok_or_else(|| Failure::usage(format!("--map `{m}`: write CELERY_QUEUE=WEIR_QUEUE")))?;
        mapped.insert(from.trim().to_owned(), to.trim().to_owned());
    }
    let mut out = Vec::new();
    for q in args
        .queues
        .iter()
        .map(|q| q.trim())
        .filter(|q| !q.is_empty())
    {
        let weir = mapped.get(q).cloned().unwrap_or_else(|| q.to_owned());
        if !settings.declared_queues.contains(&weir) {
            return Err(Failure::usage(format!(
                "weir queue `{weir}` (for Celery queue `{q}`) is not declared: add it to [queues] declared or WEIR_QUEUES, or --map {q}=QUEUE"
            )));
        }
        out.push(QueueRoute {
            celery: q.to_owned(),
            weir,
        });
    }
    if out.is_empty() {
        return Err(Failure::usage("-Q names no queue, e.g. -Q dataset,mail"));
    }
    Ok(out)
}

/// `weir celery-ingress`.
pub async fn ingress(settings: Settings, args: CeleryIngressArgs) -> Outcome {
    let settings = Arc::new(settings);
    let options = IngressOptions {
        from: args.from.clone(),
        queues: routes(&settings, &args)?,
        key_prefix: args.key_prefix.clone(),
        sep: separator(&args.sep)?,
        priority_steps: args.priority_steps.clone(),
        tenant: args.tenant.clone(),
        results: args.results.clone(),
        recover_after: weir_shared::config::parse_duration(&args.recover_after)
            .ok()
            .filter(|d| !d.is_zero())
            .ok_or_else(|| {
                Failure::usage(format!(
                    "--recover-after `{}` is not a duration above zero, e.g. 60s",
                    args.recover_after
                ))
            })?,
    };
    if !options.priority_steps.contains(&0) || options.priority_steps.iter().any(|s| *s > 9) {
        return Err(Failure::usage(
            "--priority-steps: kombu's steps, 0 to 9, starting with 0 (e.g. 0,3,6,9)",
        ));
    }
    let broker = super::open_role(&settings).await?;
    let shutdown = shutdown_token();
    let running = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let ops =
        super::serve::ops_server(&settings, &broker, "celery-ingress", running, &shutdown).await?;
    let queues: Vec<&str> = options.queues.iter().map(|q| q.celery.as_str()).collect();
    tracing::info!(queues = ?queues, results = options.results.is_some(), "Taking Celery messages");
    let ingress = Ingress::open(options, broker, settings)
        .await
        .map_err(|e| match e {
            IngressError::Config(m) => Failure::usage(m),
            other => Failure::Runtime(anyhow::Error::new(other)),
        })?;
    let ran = ingress
        .run(shutdown.clone())
        .await
        .map_err(|e| Failure::Runtime(anyhow::Error::new(e)));
    shutdown.cancel();
    if let Some(ops) = ops {
        let _ = ops.await;
    }
    ran
}
