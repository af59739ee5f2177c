use std::process::ExitCode;

use clap::Parser;
use switchboard::cli::Cli;

/// Many small, short-lived allocations on two threads (HTTP bodies, JSON, query buffers): glibc's
/// allocator spent about an eighth of the service's CPU on them under the benchmark.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let settings = match switchboard::load_settings() {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("switchboard: invalid configuration: {error}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("switchboard: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(switchboard::run(cli, settings)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("switchboard: error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
