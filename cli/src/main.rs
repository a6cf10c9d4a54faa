//! The `weir` binary: parses the command line, loads settings, sets up
//! logging and calls the libraries. Exit status: 0 success, 1 a runtime
//! failure (broker unreachable...), 2 a usage error.

mod args;
mod commands;
mod failure;
mod output;
mod signals;

use clap::Parser;
use std::process::ExitCode;

// Enqueue and claim paths allocate many small, short-lived values per job
// (JSON values, ids, script arguments); mimalloc serves them faster than
// the system allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = args::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(commands::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => failure.report(),
    }
}
