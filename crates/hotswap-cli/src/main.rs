//! The `hotswap` command.
//!
//! For now it has one job: `hotswap demo`, a live upgrade of a native module under load that
//! a newcomer can watch (see [`demo`]). The node server and its control tool come later.

mod demo;
mod report;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// The node's allocator. Modules keep their own (glibc's): no allocation ever changes owner
/// across the module boundary, so each side may choose.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Erlang/OTP-style hot code loading for native Rust.
#[derive(Debug, Parser)]
#[command(name = "hotswap", version, about, long_about = None, arg_required_else_help = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Watch a live upgrade: load module `demo` v1, serve clients, load v2, move every
    /// process to v2 with its state, free v1, and check that nothing was lost.
    ///
    /// Exit status: 0 when every check passes, 1 when one fails, 2 when the demo cannot
    /// start (e.g. the module libraries are not built).
    Demo {
        /// Print one JSON object per step (one per line) instead of text.
        #[arg(long)]
        json: bool,
        /// Directory holding the module libraries (libdemo_v1.so, libdemo_v2.so). Default:
        /// the directory of this executable (target/debug or target/release after a cargo build).
        #[arg(long, value_name = "DIR")]
        modules_dir: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    match cli.command {
        Command::Demo { json, modules_dir } => demo::run(demo::Options { json, modules_dir }),
    }
}

/// Runtime logs go to stderr; `RUST_LOG` selects them (default: warnings and errors).
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}
