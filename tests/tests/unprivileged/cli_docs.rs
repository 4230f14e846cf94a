//! Completions and the man page come from the CLI definition: every subcommand is in them.

use std::process::Command;

fn sgctl(args: &[&str]) -> String {
    let out = Command::new(sg_tests::sgctl_path()).args(args).output().expect("run sgctl");
    assert!(out.status.success(), "sgctl {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("utf-8")
}

/// Every subcommand, from clap's own definition (a new one is checked without editing this).
fn subcommands() -> Vec<String> {
    use clap::CommandFactory as _;
    sg_userspace::cli::Cli::command()
        .get_subcommands()
        .filter(|s| !s.is_hide_set())
        .map(|s| s.get_name().to_string())
        .collect()
}

/// The documentation's table of verdict reasons lists every reason of `sg_common::Reason`, in number
/// order, with its action (the meanings are the the documentation's words).
#[test]
fn readme_reasons_table_is_every_reason_with_its_action() {
    let readme = sg_tests::docs();
    let rows: Vec<(String, String)> = readme
        .lines()
        .skip_while(|l| !l.starts_with("| reason | action | meaning |"))
        .skip(2)
        .take_while(|l| l.starts_with('|'))
        .map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            (cells[1].trim_matches('`').to_string(), cells[2].to_string())
        })
        .collect();
    let want: Vec<(String, String)> = sg_common::Reason::ALL
        .iter()
        .map(|r| (r.name().to_string(), r.action().as_str().to_string()))
        .collect();
    assert_eq!(rows, want, "the documentation's reasons table differs from sg_common::Reason");
}

/// The documentation's table of metrics is `metrics::METRICS`, row for row.
#[test]
fn readme_metrics_table_is_the_list() {
    let readme = sg_tests::docs();
    let rows: Vec<&str> = readme
        .lines()
        .skip_while(|l| !l.starts_with("| metric | labels | what |"))
        .skip(2)
        .take_while(|l| l.starts_with('|'))
        .collect();
    let want: Vec<String> = sg_userspace::metrics::METRICS
        .iter()
        .map(|m| format!("| `{}` | {} | {} |", m.exposed(), m.labels.join(", "), m.help))
        .collect();
    assert_eq!(rows, want, "the documentation's metrics table differs from metrics::METRICS");
}

#[test]
fn completions_name_every_subcommand() {
    let subs = subcommands();
    assert!(subs.len() >= 20, "{subs:?}");
    for shell in ["bash", "zsh", "fish"] {
        let script = sgctl(&["completions", shell]);
        for sub in &subs {
            assert!(script.contains(sub.as_str()), "{shell} completions lack `{sub}`");
        }
    }
    let bash = sgctl(&["completions", "bash"]);
    assert!(bash.contains("complete -F _sgctl"), "a bash completion function is registered");
}

#[test]
fn man_page_has_a_subsection_per_subcommand_and_the_usual_sections() {
    let page = sgctl(&["man"]);
    assert!(page.contains(".TH sgctl 8"), "sgctl(8)");
    for sub in subcommands() {
        let heading = format!(".SS \"sgctl {sub}\"");
        assert!(page.contains(&heading), "no subsection {heading}");
    }
    for section in [
        "NAME",
        "SYNOPSIS",
        "DESCRIPTION",
        "OPTIONS",
        "\"COMMANDS\"",
        "\"EXIT STATUS\"",
        "FILES",
        "\"SEE ALSO\"",
    ] {
        assert_eq!(page.matches(&format!(".SH {section}\n")).count(), 1, "section {section} once");
    }
    // The NAME line does not repeat the name.
    assert!(!page.contains("sgctl \\- sgctl"), "doubled name");
}

/// The documentation's subcommand table lists every subcommand.
#[test]
fn readme_lists_every_subcommand() {
    let readme = sg_tests::docs();
    for sub in subcommands() {
        assert!(
            readme.contains(&format!("| `sgctl {sub}")),
            "the documentation's subcommand table lacks `sgctl {sub}`"
        );
    }
}

/// The systemd unit starts a command line the CLI accepts.
#[test]
fn systemd_unit_runs_a_valid_daemon_command() {
    use clap::Parser as _;
    let unit =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../packaging/sgctl.service")).unwrap();
    let exec = unit.lines().find_map(|l| l.strip_prefix("ExecStart=")).expect("ExecStart");
    let argv: Vec<&str> = exec.split_whitespace().collect();
    assert!(argv[0].ends_with("/sgctl") && argv[1] == "daemon", "{exec}");
    let cli = sg_userspace::cli::Cli::try_parse_from(&argv).unwrap_or_else(|e| panic!("{exec}: {e}"));
    assert!(matches!(cli.command, sg_userspace::cli::Command::Daemon(_)));
    for key in [
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ReadWritePaths=/sys/fs/bpf",
        "RuntimeDirectoryPreserve=yes",
        // Readiness is reported (the daemon's READY=1), not assumed.
        "Type=notify",
        // Nothing is applied before the operator writes a rules file.
        "ConditionPathExists=/etc/sgctl/rules.toml",
    ] {
        assert!(unit.contains(key), "the unit lacks {key}");
    }
}

/// Every flag and argument of every subcommand says what it is for.
#[test]
fn every_flag_has_help_text() {
    use clap::CommandFactory as _;
    fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
        for a in cmd.get_arguments().filter(|a| !a.is_hide_set()) {
            let id = a.get_id().as_str();
            if matches!(id, "help" | "version") {
                continue;
            }
            if a.get_help().is_none() && a.get_long_help().is_none() {
                missing.push(format!("{path} {id}"));
            }
        }
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
            walk(sub, &format!("{path} {}", sub.get_name()), missing);
        }
    }
    let mut missing = Vec::new();
    walk(&sg_userspace::cli::Cli::command(), "sgctl", &mut missing);
    assert!(missing.is_empty(), "flags without help text:\n  {}", missing.join("\n  "));
}
