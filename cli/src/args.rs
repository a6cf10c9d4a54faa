//! The command line. Settings come from the environment and `WEIR_CONFIG`;
//! flags override both.

use clap::{Args, Parser, Subcommand};

/// weir: a distributed job queue and worker platform.
#[derive(Debug, Parser)]
#[command(name = "weir", version, about, long_about = None)]
pub struct Cli {
    /// The broker, instead of WEIR_BROKER_URL (`sqlite://PATH` or
    /// `redis://HOST:PORT/DB`). A URL with a password belongs in the
    /// variable: a command line is visible to every user of the host.
    #[arg(long, global = true, value_name = "URL")]
    pub broker: Option<String>,
    /// A TOML configuration file, instead of WEIR_CONFIG.
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<std::path::PathBuf>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Every subcommand.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// API, worker and cron scheduler in one process, on the embedded SQLite broker by default: the one-command way to try weir.
    #[command(
        after_help = "Example:\n  weir dev\n  curl -s -XPOST localhost:8080/v1/jobs -d '{\"task\":\"weir.echo\",\"payload\":1}'"
    )]
    Dev(ServeArgs),
    /// The HTTP API alone (needs WEIR_API_KEYS or WEIR_API_KEYS_FILE, or WEIR_AUTH=disabled).
    #[command(
        after_help = "Example:\n  WEIR_BROKER_URL=redis://127.0.0.1:6379/0 WEIR_API_KEYS_FILE=./weir-keys weir api --addr 0.0.0.0:8080"
    )]
    Api(ServeArgs),
    /// A worker node: a supervisor and its child processes.
    #[command(
        after_help = "Example:\n  weir worker -Q priority_pipeline=6,pipeline=3,dataset=1 -c 8 --processes 2"
    )]
    Worker(WorkerArgs),
    /// Enqueue one job, or --count N of them.
    #[command(
        after_help = "Example:\n  weir enqueue weir.sleep --payload '{\"ms\":500}' --queue pipeline --delay 30s"
    )]
    Enqueue(EnqueueArgs),
    /// Queues and their counts; pause, resume or purge one.
    #[command(after_help = "Example:\n  weir queues\n  weir queues pause mail")]
    Queues(QueuesArgs),
    /// List, show, explain, retry or cancel jobs; act on many at once.
    #[command(
        after_help = "Example:\n  weir jobs list --state failed --queue dataset\n  weir jobs explain 01a21d78-...\n  weir jobs bulk retry --queue dataset --dry-run"
    )]
    Jobs(JobsArgs),
    /// Live worker nodes, from their heartbeats.
    #[command(after_help = "Example:\n  weir workers --json")]
    Workers(JsonFlag),
    /// Provider key pools: each key (masked), its state, requests, 429s and tokens in the last minute.
    #[command(after_help = "Example:\n  OPENAI_API_KEYS=sk-a,sk-b weir providers --json")]
    Providers(JsonFlag),
    /// A live terminal dashboard: queues, workers, failures (tab, j/k, p pause/resume, r retry, q quit).
    #[command(after_help = "Example:\n  WEIR_BROKER_URL=redis://127.0.0.1:6379/0 weir top")]
    Top,
    /// Concurrency caps and rate limits in force, their holders and waiting jobs.
    #[command(after_help = "Example:\n  WEIR_CONCURRENCY_LIMITS=document.index=5 weir limits")]
    Limits(JsonFlag),
    /// The cron scheduler; run several for availability: each tick is enqueued once.
    #[command(after_help = "Example:\n  WEIR_CONFIG=weir.toml weir scheduler")]
    Scheduler,
    /// Takes Celery's messages (kombu protocol v2, JSON) from its Redis and runs them as weir jobs.
    #[command(
        name = "celery-ingress",
        after_help = "Example:\n  weir celery-ingress --from redis://127.0.0.1:6379/1 -Q dataset,mail\n  weir celery-ingress --from $CELERY_BROKER_URL -Q mail --results redis://127.0.0.1:6379/2"
    )]
    CeleryIngress(CeleryIngressArgs),
    /// Cron schedules with their last and next fire; trigger, pause or resume one.
    #[command(
        after_help = "Example:\n  weir schedules\n  weir schedules trigger app-config-warmup"
    )]
    Schedules(SchedulesArgs),
    /// Workflows (DAGs of jobs): submit one from a JSON file; list, show, cancel or retry.
    #[command(
        after_help = "Example:\n  weir workflows submit index-doc.json\n  weir workflows show 01a21d78-...\n  weir workflows retry 01a21d78-..."
    )]
    Workflows(WorkflowsArgs),
    /// Datasets that document.index wrote: list them, their documents, search one, delete a document.
    #[command(
        after_help = "Example:\n  weir datasets list\n  weir datasets search kb \"how do retries work\" --top-k 3\n  weir datasets delete kb doc-42"
    )]
    Datasets(DatasetsArgs),
    /// API keys.
    #[command(after_help = "Example:\n  weir keys create --tenant acme > acme.key")]
    Keys(KeysArgs),
    /// Print a shell completion script: `weir completions bash > /etc/bash_completion.d/weir`.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
}

/// `weir keys create`.
#[derive(Debug, Args)]
pub struct KeysArgs {
    /// What to do.
    #[command(subcommand)]
    pub action: KeyAction,
}

/// Key actions.
#[derive(Debug, Subcommand)]
pub enum KeyAction {
    /// Print a new API key once, and the line that grants it in WEIR_API_KEYS_FILE.
    Create {
        /// Tenant the key acts for.
        #[arg(long)]
        tenant: String,
        /// An admin key: admin routes, every tenant's jobs.
        #[arg(long)]
        admin: bool,
    },
}

/// `--json`.
#[derive(Debug, Args, Clone, Copy)]
pub struct JsonFlag {
    /// Print one JSON document (the shapes of the HTTP API) instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
}

/// Flags of `weir dev` and `weir api`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Listen address (overrides WEIR_HTTP_ADDR).
    #[arg(long)]
    pub addr: Option<std::net::SocketAddr>,
}

/// Flags of `weir celery-ingress`.
#[derive(Debug, Args)]
pub struct CeleryIngressArgs {
    /// Celery's broker: redis://HOST:PORT/DB (rediss:// for TLS).
    #[arg(long)]
    pub from: String,
    /// Celery queues to take, comma-separated; each goes to the weir queue of the same name.
    #[arg(short = 'Q', long = "queues", value_delimiter = ',', required = true)]
    pub queues: Vec<String>,
    /// Send a Celery queue to another weir queue: CELERY=WEIR (repeatable).
    #[arg(long = "map")]
    pub map: Vec<String>,
    /// Celery's global_keyprefix (Dify's REDIS_KEY_PREFIX), if any.
    #[arg(long, default_value = "")]
    pub key_prefix: String,
    /// kombu's priority_steps, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "0,3,6,9")]
    pub priority_steps: Vec<u8>,
    /// kombu's separator of priority lists (its default is the bytes 0x06 0x16).
    #[arg(long, default_value = "\x06\x16")]
    pub sep: String,
    /// The tenant the jobs belong to.
    #[arg(long, default_value = "default")]
    pub tenant: String,
    /// Celery's result backend (redis://...): results written where AsyncResult(id).get() reads them.
    #[arg(long)]
    pub results: Option<String>,
    /// Messages an ingress took and did not hand over (it crashed) are taken again after this.
    #[arg(long, default_value = "60s")]
    pub recover_after: String,
}

/// Flags of `weir worker`.
#[derive(Debug, Args)]
pub struct WorkerArgs {
    /// Queues to serve in priority order, or weighted: `-Q a=6,b=3,c=1` (overrides WEIR_QUEUES).
    #[arg(short = 'Q', long)]
    pub queues: Option<String>,
    /// Job slots of this node (overrides WEIR_CONCURRENCY).
    #[arg(short = 'c', long)]
    pub concurrency: Option<u32>,
    /// Child processes the slots are spread over (overrides WEIR_PROCESSES).
    #[arg(long)]
    pub processes: Option<u32>,
    /// Autoscale slots between MIN and MAX: `--autoscale 8,1` (overrides WEIR_AUTOSCALE and WEIR_MAX/MIN_WORKERS).
    #[arg(long, value_name = "MAX,MIN")]
    pub autoscale: Option<String>,
    /// Replace a child after this many tasks (overrides WEIR_MAX_TASKS_PER_CHILD).
    #[arg(long)]
    pub max_tasks_per_child: Option<u64>,
}

/// Flags of `weir enqueue`.
#[derive(Debug, Args)]
pub struct EnqueueArgs {
    /// Task name, e.g. weir.echo.
    pub task: String,
    /// Queue (default: the task's configured queue, else `default`).
    #[arg(long)]
    pub queue: Option<String>,
    /// Payload as JSON.
    #[arg(long)]
    pub payload: Option<String>,
    /// Priority 0-9, higher first.
    #[arg(long)]
    pub priority: Option<i64>,
    /// Run after this delay, e.g. 10s or 5m.
    #[arg(long)]
    pub delay: Option<String>,
    /// Retries after the first attempt.
    #[arg(long)]
    pub max_retries: Option<i64>,
    /// Per-attempt timeout, e.g. 30s.
    #[arg(long)]
    pub timeout: Option<String>,
    /// Skip if an unfinished job of this task holds the same key.
    #[arg(long)]
    pub unique_key: Option<String>,
    /// Run one at a time, in enqueue order, with the tenant's other jobs of
    /// the same serial key (a retrying job keeps its place).
    #[arg(long)]
    pub serial_key: Option<String>,
    /// Tenant that owns the job.
    #[arg(long, default_value = "default")]
    pub tenant: String,
    /// Enqueue this many copies, in batches, with a progress bar; the ids of
    /// each batch are printed as soon as it is committed.
    #[arg(long, default_value_t = 1)]
    pub count: u64,
    /// With --count: copy i gets the unique key PREFIX-i, so running the same
    /// command again (after it was interrupted) adds only the copies that are
    /// not in yet (those still unfinished are skipped).
    #[arg(long, value_name = "PREFIX", conflicts_with = "unique_key")]
    pub unique_key_prefix: Option<String>,
    #[command(flatten)]
    pub output: JsonFlag,
}

/// `weir queues [pause|resume|purge]`.
#[derive(Debug, Args)]
pub struct QueuesArgs {
    /// Without an action: list queues.
    #[command(subcommand)]
    pub action: Option<QueueAction>,
    #[command(flatten)]
    pub output: JsonFlag,
}

/// Queue actions.
#[derive(Debug, Subcommand)]
pub enum QueueAction {
    /// Stop workers from taking jobs from a queue.
    Pause {
        /// Queue name.
        queue: String,
    },
    /// Let workers take jobs from a queue again.
    Resume {
        /// Queue name.
        queue: String,
    },
    /// Delete a queue's waiting jobs (scheduled, queued, retrying).
    Purge {
        /// Queue name.
        queue: String,
        /// Confirm: purging cannot be undone.
        #[arg(long)]
        yes: bool,
    },
}

/// `weir workflows ...`.
#[derive(Debug, Args)]
pub struct WorkflowsArgs {
    /// What to do.
    #[command(subcommand)]
    pub action: WorkflowAction,
    #[command(flatten)]
    pub output: JsonFlag,
}

/// Workflow actions.
#[derive(Debug, Subcommand)]
pub enum WorkflowAction {
    /// Submit a workflow: a JSON file (`-` for standard input) of the body of POST /v1/workflows.
    Submit {
        /// The file: {"name": ..., "steps": [{"id", "task", "needs", ...}]}.
        file: std::path::PathBuf,
        /// Tenant that owns it.
        #[arg(long, default_value = "default")]
        tenant: String,
    },
    /// Workflows, newest first.
    List {
        /// Only this state: running, succeeded, failed or cancelled.
        #[arg(long)]
        state: Option<String>,
        /// How many.
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// Start after this workflow id (the previous page's next_cursor).
        #[arg(long)]
        cursor: Option<String>,
    },
    /// One workflow: each step with its state and what it needs.
    Show {
        /// Workflow id.
        id: String,
    },
    /// Cancel every unfinished step.
    Cancel {
        /// Workflow id.
        id: String,
    },
    /// Put the failed and cancelled steps back (succeeded ones keep their results).
    Retry {
        /// Workflow id.
        id: String,
    },
}

/// `weir datasets ...`.
#[derive(Debug, Args)]
pub struct DatasetsArgs {
    /// What to do.
    #[command(subcommand)]
    pub action: DatasetAction,
    /// The tenant whose datasets these are.
    #[arg(long, global = true, default_value = "default")]
    pub tenant: String,
    #[command(flatten)]
    pub output: JsonFlag,
}

/// Dataset actions.
#[derive(Debug, Subcommand)]
pub enum DatasetAction {
    /// The tenant's datasets: documents, segments, tokens, model.
    List,
    /// A dataset's documents.
    Documents {
        /// Dataset name.
        name: String,
    },
    /// The segments nearest to a query, best first.
    Search {
        /// Dataset name.
        name: String,
        /// What to look for.
        query: String,
        /// How many segments (1-100).
        #[arg(long, default_value_t = 5)]
        top_k: usize,
    },
    /// Remove a document's segments and vectors.
    Delete {
        /// Dataset name.
        name: String,
        /// Document id.
        document_id: String,
    },
}

/// `weir schedules [trigger|pause|resume]`.
#[derive(Debug, Args)]
pub struct SchedulesArgs {
    /// Without an action: list schedules.
    #[command(subcommand)]
    pub action: Option<ScheduleAction>,
    #[command(flatten)]
    pub output: JsonFlag,
}

/// Schedule actions.
#[derive(Debug, Subcommand)]
pub enum ScheduleAction {
    /// Enqueue one run of a schedule now.
    Trigger {
        /// Schedule name.
        name: String,
    },
    /// Stop a schedule from firing (on every scheduler replica).
    Pause {
        /// Schedule name.
        name: String,
    },
    /// Let a paused schedule fire again.
    Resume {
        /// Schedule name.
        name: String,
    },
}

/// `weir jobs ...`.
#[derive(Debug, Args)]
pub struct JobsArgs {
    /// What to do.
    #[command(subcommand)]
    pub action: JobAction,
}

/// Job actions.
#[derive(Debug, Subcommand)]
pub enum JobAction {
    /// Jobs, newest first.
    List {
        /// Only this queue.
        #[arg(long)]
        queue: Option<String>,
        /// Only this state.
        #[arg(long)]
        state: Option<String>,
        /// Only this task.
        #[arg(long)]
        task: Option<String>,
        /// Only this tenant's jobs.
        #[arg(long)]
        tenant: Option<String>,
        /// Only jobs created at or after this: an RFC 3339 time or a duration ago (`2h`).
        #[arg(long)]
        after: Option<String>,
        /// Only jobs created before this (same forms).
        #[arg(long)]
        before: Option<String>,
        /// Page size, 1-500.
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// Continue after this job id (next_cursor of the previous page).
        #[arg(long)]
        cursor: Option<String>,
        #[command(flatten)]
        output: JsonFlag,
    },
    /// One job in full.
    Show {
        /// Job id.
        id: String,
        #[command(flatten)]
        output: JsonFlag,
    },
    /// Queue a failed or cancelled job again.
    Retry {
        /// Job id.
        id: String,
        #[command(flatten)]
        output: JsonFlag,
    },
    /// Cancel a job that has not finished.
    Cancel {
        /// Job id.
        id: String,
        #[command(flatten)]
        output: JsonFlag,
    },
    /// Why a job is not running: schedule, paused queue, no consumer, caps, rates, jobs ahead.
    Explain {
        /// Job id.
        id: String,
        #[command(flatten)]
        output: JsonFlag,
    },
    /// Retry, cancel or delete many jobs of a queue at once, in steps:
    /// `weir jobs bulk retry --queue dataset --task document.index --after 2h`.
    Bulk(BulkArgs),
}

/// `weir jobs bulk ACTION --queue Q [filters]`.
#[derive(Debug, Args)]
pub struct BulkArgs {
    /// retry (failed or cancelled jobs), cancel (waiting jobs) or delete (finished jobs).
    pub action: String,
    /// The queue.
    #[arg(long)]
    pub queue: String,
    /// Only jobs in this state (default: failed for retry and delete, queued for cancel).
    #[arg(long)]
    pub state: Option<String>,
    /// Only this task.
    #[arg(long)]
    pub task: Option<String>,
    /// Only this tenant.
    #[arg(long)]
    pub tenant: Option<String>,
    /// Only jobs that finished (unfinished: were created) at or after this:
    /// an RFC 3339 time, or a duration ago (`2h`).
    #[arg(long)]
    pub after: Option<String>,
    /// ... and before this.
    #[arg(long)]
    pub before: Option<String>,
    /// Count what would be done; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Confirm a delete.
    #[arg(long)]
    pub yes: bool,
    /// Jobs per step (each step is one bounded pass over the broker).
    #[arg(long, default_value_t = 1000)]
    pub batch: usize,
    #[command(flatten)]
    pub output: JsonFlag,
}
