//! The demos the README names (`cargo xtask demo`, `cargo xtask demo fleet`) run to the end
//! and show what they say: each checks its own claims and exits non-zero when one fails.

use std::process::Command;

use sg_tests::require_bpf;

fn run_demo(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_sg-demo"))
        .args(args)
        .env("SGCTL", sg_tests::sgctl_path())
        .output()
        .expect("run sg-demo");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "sg-demo {args:?} failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn the_single_host_demo_runs_to_the_end() {
    if !require_bpf("the_single_host_demo_runs_to_the_end") {
        return;
    }
    let out = run_demo(&[]);
    assert!(out.contains("got back \"hello\""), "{out}");
    assert!(out.contains("nothing of the demo is left"), "{out}");
}

#[test]
fn the_fleet_demo_shows_a_group_following_a_host() {
    if !require_bpf("the_fleet_demo_shows_a_group_following_a_host") {
        return;
    }
    let out = run_demo(&["fleet"]);
    for want in [
        "web1   -> db1:5432  connects",
        "web2   -> db1:5432  dropped    (no daemon",
        "client -> db1:5432  dropped",
        "web2   -> db1:5432  connects,",
        "web2   -> db1:5432  dropped, ",
        "nothing of the demo is left",
    ] {
        assert!(out.contains(want), "missing {want:?} in\n{out}");
    }
    eprintln!("{out}");
}
