//! Completions and the man page come from the CLI definition: every subcommand is in them.

use std::process::Command;

fn sgctl(args: &[&str]) -> String {
    let out = Command::new(sg_tests::sgctl_path()).args(args).output().expect("run sgctl");
    assert!(out.status.success(), "sgctl {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("utf-8")
}

const SUBCOMMANDS: [&str; 18] = [
    "attach",
    "detach",
    "status",
    "apply",
    "rule",
    "conntrack",
    "stats",
    "explain",
    "import",
    "export",
    "top",
    "completions",
    "man",
    "audit",
    "daemon",
    "flows",
    "replay",
    "fleet",
];

#[test]
fn completions_name_every_subcommand() {
    for shell in ["bash", "zsh", "fish"] {
        let script = sgctl(&["completions", shell]);
        for sub in SUBCOMMANDS {
            assert!(script.contains(sub), "{shell} completions lack `{sub}`");
        }
    }
    let bash = sgctl(&["completions", "bash"]);
    assert!(bash.contains("complete -F _sgctl"), "a bash completion function is registered");
}

#[test]
fn man_page_has_a_section_per_subcommand() {
    let page = sgctl(&["man"]);
    assert!(page.starts_with(".ie") || page.contains(".TH sgctl 8"), "roff with a title");
    assert!(page.contains(".TH sgctl 8"), "sgctl(8)");
    for sub in SUBCOMMANDS {
        let heading = format!(".SH \"SGCTL {}\"", sub.to_uppercase());
        assert!(page.contains(&heading), "no section {heading}");
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
    ] {
        assert!(unit.contains(key), "the unit lacks {key}");
    }
}
