//! `sgctl` binary: parse arguments, run, print errors in one line (anyhow at the edge only).
use clap::Parser as _;
use sg_userspace::cli::{self, Cli};

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let level = match cli.verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(level))
        .format_timestamp(None)
        .init();
    match cli::run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sgctl: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
