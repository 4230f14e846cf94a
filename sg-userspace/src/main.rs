//! `sgctl` binary: parse arguments, run, print errors in one line (anyhow at the edge only).
use clap::Parser as _;
use sg_userspace::cli::{self, Cli};

fn main() -> std::process::ExitCode {
    // A closed pipe (`sgctl stats | head -1`) ends sgctl quietly, as it does other Unix tools
    // (killed by SIGPIPE), instead of a panic in `println!`. Rust ignores SIGPIPE by default.
    // SAFETY: restoring a signal's default disposition before any thread exists.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
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
            eprintln!("sgctl: error: {}", one_line(&e));
            std::process::ExitCode::FAILURE
        }
    }
}

/// The error and its causes in one line, each cause once: a library error's message already
/// names its source (`reading X: No such file or directory (os error 2)`), which anyhow's
/// chain would repeat.
fn one_line(e: &anyhow::Error) -> String {
    let mut msg = e.to_string();
    for cause in e.chain().skip(1) {
        let c = cause.to_string();
        if !msg.contains(&c) {
            msg.push_str(": ");
            msg.push_str(&c);
        }
    }
    msg
}
