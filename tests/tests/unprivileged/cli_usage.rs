//! Flags that would do nothing are refused before anything is touched.

use std::process::Command;

/// `sgctl ARGS`: (success, stderr).
fn sgctl(args: &[&str]) -> (bool, String) {
    let out = Command::new(sg_tests::sgctl_path()).args(args).output().expect("run sgctl");
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// `--ingress-order` places sgctl in the TCX ingress chain: without `--ingress-hook tcx` it
/// means nothing, and attach, apply and the daemon say so.
#[test]
fn an_ingress_order_without_the_tcx_hook_is_refused() {
    for cmd in [
        vec!["attach", "sgt-none0"],
        vec!["apply", "/nonexistent/rules.toml"],
        vec!["daemon", "--config", "/nonexistent/rules.toml"],
    ] {
        let (ok, err) = sgctl(&[&cmd[..], &["--ingress-order", "last"]].concat());
        assert!(!ok && err.contains("--ingress-hook"), "{cmd:?} without a hook: {err}");
        let (ok, err) = sgctl(&[&cmd[..], &["--ingress-hook", "xdp", "--ingress-order", "last"]].concat());
        assert!(!ok && err.contains("it needs --ingress-hook tcx"), "{cmd:?} at xdp: {err}");
    }
}
