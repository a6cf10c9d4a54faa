//! One function per subcommand; this module loads settings and logging
//! first, so every command starts from the same validated configuration.

mod bulk;
mod celery;
mod datasets;
mod enqueue;
mod inspect;
mod keys;
mod schedules;
mod serve;
mod top;
mod workflows;

use crate::args::{Cli, Command};
use crate::failure::{Failure, Outcome};
use tracing_subscriber::EnvFilter;
use weir_shared::broker::{self, SharedBroker};
use weir_shared::config::{LogFormat, Settings};

/// Runs the parsed command line.
pub async fn run(cli: Cli) -> Outcome {
    if let Command::Completions { shell } = cli.command {
        let mut command = <Cli as clap::CommandFactory>::command();
        clap_complete::generate(shell, &mut command, "weir", &mut std::io::stdout());
        return Ok(());
    }
    let settings = load_settings(&cli)?;
    init_logging(&settings);
    match cli.command {
        Command::Dev(args) => serve::dev(settings, args).await,
        Command::Api(args) => serve::api(settings, args).await,
        Command::Worker(args) => serve::worker(settings, args).await,
        Command::Enqueue(args) => enqueue::run(settings, args).await,
        Command::Queues(args) => inspect::queues(settings, args).await,
        Command::Jobs(args) => inspect::jobs(settings, args).await,
        Command::Workers(flag) => inspect::workers(settings, flag).await,
        Command::Providers(flag) => inspect::providers(settings, flag).await,
        Command::Top => top::run(settings).await,
        Command::Limits(flag) => inspect::limits(settings, flag).await,
        Command::Scheduler => serve::scheduler(settings).await,
        Command::CeleryIngress(args) => celery::ingress(settings, args).await,
        Command::Schedules(args) => schedules::run(settings, args).await,
        Command::Workflows(args) => workflows::run(settings, args).await,
        Command::Datasets(args) => datasets::run(settings, args).await,
        Command::Keys(args) => keys::run(args),
        Command::Completions { .. } => Ok(()),
    }
}

/// The settings, with `--broker` and `--config` in place of their
/// variables (a worker's children get the same command line).
fn load_settings(cli: &Cli) -> Result<Settings, Failure> {
    if let Some(url) = &cli.broker
        && url::Url::parse(url).is_ok_and(|u| u.password().is_some())
    {
        return Err(Failure::usage(
            "--broker: this URL holds a password, which every user of the host could read from the command line; set WEIR_BROKER_URL instead",
        ));
    }
    let flag = |name: &str| match name {
        "WEIR_BROKER_URL" => cli.broker.clone(),
        "WEIR_CONFIG" => cli.config.as_ref().map(|p| p.display().to_string()),
        _ => None,
    };
    let settings =
        Settings::load(&|k| flag(k).or_else(|| std::env::var(k).ok())).map_err(Failure::usage)?;
    Ok(settings)
}

fn init_logging(settings: &Settings) {
    let filter =
        EnvFilter::try_new(&settings.log.filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let _ = match settings.log.format {
        // One object per line; a job's fields under `span`.
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
        LogFormat::Pretty => builder.compact().try_init(),
    };
}

/// Opens the broker named by `WEIR_BROKER_URL` for a command that reads or
/// steers it: a SQLite file that does not exist is refused (naming the
/// path looked at) rather than created empty from the wrong directory.
pub(crate) async fn connect(settings: &Settings) -> Result<SharedBroker, Failure> {
    settings
        .broker
        .connect_existing()
        .await
        .map(|c| c.broker)
        .map_err(|e| broker_failure(settings, e))
}

/// Opens the broker for a long-running role (`dev`, `api`, `worker`,
/// `scheduler`), creating a SQLite database that is not there yet.
pub(crate) async fn open_role(settings: &Settings) -> Result<SharedBroker, Failure> {
    Ok(connect_with_limiter(settings).await?.broker)
}

/// Opens the broker and its rate limiter, for a role.
pub(crate) async fn connect_with_limiter(
    settings: &Settings,
) -> Result<broker::Connected, Failure> {
    settings
        .broker
        .connect()
        .await
        .map_err(|e| broker_failure(settings, e))
}

/// The failure for a broker that did not open; driver messages lose the
/// URL's password.
fn broker_failure(settings: &Settings, e: weir_shared::broker::BrokerError) -> Failure {
    let scrub = |m: &str| settings.broker.scrub(m);
    match e {
        weir_shared::broker::BrokerError::Config(m) => {
            Failure::usage(format!("WEIR_BROKER_URL: {}", scrub(&m)))
        }
        other => Failure::Runtime(anyhow::anyhow!(
            "cannot open the broker at {}: {}",
            settings.broker.display_url(),
            scrub(&other.to_string())
        )),
    }
}
