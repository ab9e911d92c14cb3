//! The `strata` binary: the broker daemon and its command-line client.

use clap::Parser;

mod cli;

fn main() -> std::process::ExitCode {
    let args = cli::Cli::parse();
    // Before the runtime's threads exist.
    strata::memory::init();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            strata::logging::last_words(&format!("strata: cannot start the async runtime: {e}"));
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(cli::run(args));
    match result {
        Ok(()) => {
            // The last log lines, before the process ends.
            strata::logging::flush();
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            strata::logging::last_words(&format!("strata: {e}"));
            std::process::ExitCode::FAILURE
        }
    }
}
