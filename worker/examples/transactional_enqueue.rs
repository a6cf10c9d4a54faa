//! Enqueue a job in the same transaction as your own write, on the Postgres
//! broker: the order row and its confirmation job are stored together or
//! not at all (no job for an order that rolled back, no order without its
//! job).
//!
//! ```sh
//! WEIR_BROKER_URL=postgres://postgres@127.0.0.1:5432/test \
//!   cargo run -p weir-worker --example transactional_enqueue
//! weir jobs list --task mail.send     # the committed order's job, and only it
//! ```

use anyhow::bail;
use serde_json::json;
use weir_shared::broker::postgres::PostgresBroker;
use weir_shared::broker::{BrokerConfig, EnqueueRequest, Inspect, Scope};

fn confirmation(order: i64) -> EnqueueRequest {
    EnqueueRequest {
        id: None,
        tenant: "default".into(),
        task: "mail.send".into(),
        queue: "mail".into(),
        payload: json!({"to": "buyer@example.com", "subject": format!("Order {order} confirmed")}),
        priority: 5,
        run_at: None,
        max_retries: 3,
        timeout_ms: None,
        unique_key: Some(format!("order-{order}")),
        serial_key: None,
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut problems = Vec::new();
    let config = BrokerConfig::from_env(&|k| std::env::var(k).ok(), &mut problems);
    let BrokerConfig::Postgres(postgres) = config else {
        bail!("set WEIR_BROKER_URL=postgres://... (this example needs the Postgres broker)");
    };
    if let Some(p) = problems.first() {
        bail!("{}: {}", p.key, p.message);
    }
    let broker = PostgresBroker::open(&postgres).await?;

    // Your own table, in your own schema (the broker's connections search
    // weir's schema first, so name yours in full).
    let mut tx = broker.begin().await?;
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS public.demo_orders (id bigserial PRIMARY KEY, item text)",
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;

    for commit in [true, false] {
        let mut tx = broker.begin().await?;
        let order: i64 =
            sqlx::query_scalar("INSERT INTO public.demo_orders (item) VALUES ('tea') RETURNING id")
                .fetch_one(&mut *tx)
                .await?;
        let job = broker
            .enqueue_in(&mut tx, vec![confirmation(order)])
            .await?
            .remove(0)
            .job;
        if commit {
            tx.commit().await?;
            broker.announce(); // wake idle workers now rather than at their next poll
        } else {
            tx.rollback().await?;
        }
        let stored = broker
            .get(&Scope::All, job.id)
            .await?
            .map(|j| j.state.to_string());
        println!(
            "order {order} {}: job {} is {}",
            if commit { "committed" } else { "rolled back" },
            job.id,
            stored.as_deref().unwrap_or("absent")
        );
        if stored.is_some() != commit {
            bail!("the job did not follow the transaction");
        }
    }
    Ok(())
}
