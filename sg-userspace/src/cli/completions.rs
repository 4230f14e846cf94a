//! `sgctl completions bash|zsh|fish|elvish|powershell` and `sgctl man`: shell completions and
//! the man page, generated from the CLI definition (so they never drift from it).

use clap::{Args, CommandFactory as _};
use clap_complete::Shell;

use super::Cli;

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to write completions for.
    #[arg(value_enum)]
    pub shell: Shell,
}

/// Prints the completion script for `args.shell` (install: see README, "Installing").
pub fn run(args: &CompletionsArgs) -> anyhow::Result<()> {
    let mut cmd = Cli::command();
    let mut buf = Vec::new();
    clap_complete::generate(args.shell, &mut cmd, "sgctl", &mut buf);
    write_stdout(&buf)
}

/// Writes to stdout; a closed pipe (`| head`) ends quietly.
fn write_stdout(bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write as _;
    match std::io::stdout().write_all(bytes) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => Ok(r?),
    }
}

/// Prints the man page, sgctl(8), in roff: the top-level page with every subcommand and its
/// options.
pub fn man() -> anyhow::Result<()> {
    let cmd = Cli::command();
    let mut out = Vec::new();
    let man = clap_mangen::Man::new(cmd.clone()).section("8");
    man.render_title(&mut out)?;
    man.render_name_section(&mut out)?;
    man.render_synopsis_section(&mut out)?;
    man.render_description_section(&mut out)?;
    man.render_options_section(&mut out)?;
    // One section per subcommand, with its own options.
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = sub.get_name().to_string();
        let page = clap_mangen::Man::new(sub.clone().bin_name(format!("sgctl {name}")));
        roff_section(&mut out, &format!("SGCTL {}", name.to_uppercase()))?;
        page.render_synopsis_section(&mut out)?;
        page.render_description_section(&mut out)?;
        page.render_options_section(&mut out)?;
        if sub.has_subcommands() {
            page.render_subcommands_section(&mut out)?;
        }
    }
    man.render_version_section(&mut out)?;
    write_stdout(&out)
}

fn roff_section(out: &mut impl std::io::Write, title: &str) -> std::io::Result<()> {
    writeln!(out, ".SH \"{title}\"")
}
