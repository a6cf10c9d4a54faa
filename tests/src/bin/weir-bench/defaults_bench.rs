//! Out of the box: drains by `weir worker` with no flags (one slot per
//! core, one process per core), on each broker, several runs each. What a
//! user who tunes nothing gets; `WEIR_BIN` picks the binary, so two builds
//! can be run in turn.

use anyhow::Result;

/// Drain runs per broker.
const RUNS: usize = 3;

pub async fn report() -> Result<()> {
    println!("## Default worker settings (`weir worker`, no flags)\n");
    println!("Drain of `weir.noop` jobs queued first, jobs/s, {RUNS} runs each.\n");
    println!("| broker | jobs | runs | median |");
    println!("|---|---|---|---|");
    let mut sqlite = Vec::new();
    for _ in 0..RUNS {
        sqlite.push(crate::drain_with(20_000, &[], &[]).await?.drain);
    }
    row("SQLite (embedded)", 20_000, sqlite);
    let mut redis = Vec::new();
    for _ in 0..RUNS {
        redis.push(
            crate::redis_bench::drain("weir.noop", "{}", 50_000, &[], 1.0, &[])
                .await?
                .1,
        );
    }
    row("Redis", 50_000, redis);
    let mut postgres = Vec::new();
    for _ in 0..RUNS {
        postgres.push(crate::postgres_bench::drain_default(10_000).await?);
    }
    row("Postgres", 10_000, postgres);
    println!();
    Ok(())
}

fn row(broker: &str, jobs: u64, mut runs: Vec<f64>) {
    let shown: Vec<String> = runs.iter().map(|r| format!("{r:.0}")).collect();
    runs.sort_by(f64::total_cmp);
    let median = runs.get(runs.len() / 2).copied().unwrap_or(0.0);
    println!("| {broker} | {jobs} | {} | {median:.0} |", shown.join(", "));
}
