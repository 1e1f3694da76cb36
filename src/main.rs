//! The `sluice` binary: parses the command line and calls the library. Nothing else
//! lives here.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "sluice",
    version,
    about = "A streaming SQL engine: Kafka → Arrow → DataFusion"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate seed log records into Kafka, JSON-lines files or stdout.
    Gen(sluice::gen::GenOptions),
    /// Run a streaming SQL query file until stopped (or until the input is exhausted
    /// with --available-now).
    Run(sluice::exec::RunOptions),
    /// Print a query file's streaming plan as stages separated by the exchange.
    Explain(sluice::exec::explain::ExplainOptions),
}

/// mimalloc rather than glibc's malloc: Sluice's threads hand batches to each other (a
/// batch decoded on a fetch thread is kept as join or top-N state by an operator shard
/// and freed there), which glibc serves from per-thread arenas that fill with holes and
/// lock each other out. Measured on Nexmark over Kafka (5 M events, 2 cores, runs
/// alternated): q7 +25 %, q18 +10 %, q0 +5 % events/s, q20 within the noise; peak RSS
/// +25 % on q0 (~80 MB), +5 % on q7, −5 % on q18.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(sluice::secrets::RedactingStderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SLUICE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", sluice::error::report(&e));
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Gen(opts) => {
            let stop = interrupt_flag()?;
            sluice::gen::run(&opts, &mut std::io::stderr(), &|| {
                stop.load(Ordering::Relaxed)
            })
            .context("sluice gen")?;
            Ok(())
        }
        Command::Explain(mut opts) => {
            opts.run.status = opts.run.status.resolve(std::io::stderr().is_terminal());
            let stop = interrupt_flag()?;
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .thread_name("sluice-exec")
                .build()
                .context("starting the async runtime")?;
            print!(
                "{}",
                runtime.block_on(
                    sluice::exec::explain::explain(&opts, &|| stop.load(Ordering::Relaxed))
                )?
            );
            Ok(())
        }
        Command::Run(mut opts) => {
            opts.status = opts.status.resolve(std::io::stderr().is_terminal());
            let stop = interrupt_flag()?;
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .thread_name("sluice-exec")
                .build()
                .context("starting the async runtime")?;
            runtime.block_on(sluice::exec::run(&opts, &mut std::io::stderr(), &|| {
                stop.load(Ordering::Relaxed)
            }))
        }
    }
}

/// A flag that Ctrl-C (SIGINT) or SIGTERM sets, so loops can stop cleanly.
fn interrupt_flag() -> anyhow::Result<Arc<AtomicBool>> {
    let flag = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&flag))
            .context("installing a signal handler")?;
    }
    Ok(flag)
}
