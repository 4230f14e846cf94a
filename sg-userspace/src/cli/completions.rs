//! `sgctl completions bash|zsh|fish|elvish|powershell` and `sgctl man`: shell completions and
//! the man page, generated from the CLI definition (so they never drift from it).

use std::io::Write as _;

use clap::{Args, CommandFactory as _};
use clap_complete::Shell;

use super::Cli;

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to write completions for.
    #[arg(value_enum)]
    pub shell: Shell,
}

/// Prints the completion script for `args.shell` (install: see docs/operations.md, "Installing").
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
    // One subsection per subcommand, with its own synopsis, description and options.
    roff_section(&mut out, "COMMANDS")?;
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = sub.get_name().to_string();
        let page = clap_mangen::Man::new(sub.clone().bin_name(format!("sgctl {name}")));
        let mut part = Vec::new();
        page.render_synopsis_section(&mut part)?;
        page.render_description_section(&mut part)?;
        page.render_options_section(&mut part)?;
        if sub.has_subcommands() {
            page.render_subcommands_section(&mut part)?;
        }
        writeln!(out, ".SS \"sgctl {name}\"")?;
        out.extend(demote_sections(&String::from_utf8_lossy(&part)).as_bytes());
    }
    out.extend(EXTRA_SECTIONS.as_bytes());
    man.render_version_section(&mut out)?;
    write_stdout(&out)
}

/// A subcommand's sections as paragraphs of its subsection: its own `.SH` headings would be
/// top-level sections of the page.
fn demote_sections(roff: &str) -> String {
    roff.lines()
        .map(|l| match l.strip_prefix(".SH ") {
            Some("SYNOPSIS" | "DESCRIPTION") => ".PP".to_string(),
            Some(h) => format!(".PP\n\\fB{}\\fR", h.trim_matches('"').to_lowercase()),
            None => l.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

/// The sections clap does not write: exit status, files, where the rules format is described.
const EXTRA_SECTIONS: &str = r#".SH "EXIT STATUS"
.TP
\fB0\fR
Success (for \fBaudit\fR: no finding at or above \fB\-\-fail\-on\fR; for \fBreplay\fR with \fB\-\-fail\-on\-drop\fR: nothing dropped).
.TP
\fB1\fR
An error: one line on stderr (\fBsgctl: error: ...\fR); nothing was changed unless the line says so (applies are all or nothing).
.TP
\fB2\fR
Invalid command-line arguments (clap's usage error).
.TP
\fB141\fR
Killed by SIGPIPE: the reader of sgctl's output closed the pipe early (\fBsgctl stats | head \-1\fR); nothing was left half done.
.SH FILES
.TP
\fI/sys/fs/bpf/sg/<netns cookie>/<interface>/\fR
Each attached interface's programs, links and maps (pins), and \fBnext/\fR during an upgrade.
.TP
\fI/run/sgctl/<netns cookie>/\fR
\fBstate.json\fR (the applied rule set), \fBstate.prev.json\fR, \fBlock\fR (serialises applies), \fBdaemon.json\fR and \fBdaemon.lock\fR (the daemon), \fBconfirm.json\fR (an apply waiting for \fBsgctl confirm\fR).
.TP
\fI/etc/sgctl/rules.toml\fR
The rules file the packaged daemon watches (\fBsgctl daemon \-\-config\fR).
.SH "SEE ALSO"
The rules file format (groups, prefix lists, network ACLs, interfaces, quotas, timeouts) and the AWS JSON inputs are described in docs/rules.md of the source, the subcommands' JSON in docs/operations.md; \fBnsenter\fR(1) for network namespaces (not \fBip netns exec\fR, which hides /sys/fs/bpf).
"#;

fn roff_section(out: &mut impl std::io::Write, title: &str) -> std::io::Result<()> {
    writeln!(out, ".SH \"{title}\"")
}
