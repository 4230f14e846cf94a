//! Verdict tables: rows of {description, direction, frame, expected action, expected reason},
//! each run once through BPF_PROG_TEST_RUN against a real loaded instance (programs and maps).
//! A row passes when the program returns the expected action AND exactly one counter moved:
//! the expected reason's, by one packet.

use sg_common::{
    Action, Direction, Reason,
    policy::{NO_RULE, rule_slot, slot_rule},
};
use sg_userspace::{
    loader::{IngressHook, PrivateInstance},
    maps::InstanceMaps,
};

/// XDP return codes.
const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
/// TC return codes (pass is TC_ACT_UNSPEC, -1).
const TC_ACT_UNSPEC: u32 = u32::MAX;
const TC_ACT_SHOT: u32 = 2;

#[derive(Clone, Debug)]
pub struct Row {
    pub desc: String,
    pub dir: Direction,
    pub frame: Vec<u8>,
    pub action: Action,
    pub reason: Reason,
    /// Expected rule id on the interface (checked through the recorded packet summary, so the
    /// instance needs `CONFIG_RECORD_PARSE`).
    pub rule: Option<u32>,
}

impl Row {
    /// A row whose action is the reason's fixed action.
    pub fn new(desc: impl Into<String>, dir: Direction, frame: Vec<u8>, reason: Reason) -> Self {
        Row { desc: desc.into(), dir, frame, action: reason.action(), reason, rule: None }
    }

    /// An allowed row: reason `rule_allow`, attributed to rule `id`.
    pub fn allow(desc: impl Into<String>, dir: Direction, frame: Vec<u8>, id: u32) -> Self {
        Row { rule: Some(id), ..Row::new(desc, dir, frame, Reason::RuleAllow) }
    }

    /// A denied row: reason `no_rule`.
    pub fn deny(desc: impl Into<String>, dir: Direction, frame: Vec<u8>) -> Self {
        Row::new(desc, dir, frame, Reason::NoRule)
    }
}

/// The action a program return value means for `dir`, or `None` for an unexpected value
/// (ingress at XDP; [`action_at`] for an instance whose ingress is at TCX).
pub fn action_of(dir: Direction, ret: u32) -> Option<Action> {
    action_at(IngressHook::Xdp, dir, ret)
}

/// The action a return value of `dir`'s program means, ingress being at `hook`: XDP actions,
/// or TC actions for egress and for ingress at TCX.
pub fn action_at(hook: IngressHook, dir: Direction, ret: u32) -> Option<Action> {
    let xdp = dir == Direction::Ingress && hook == IngressHook::Xdp;
    match (xdp, ret) {
        (true, XDP_PASS) | (false, TC_ACT_UNSPEC) => Some(Action::Pass),
        (true, XDP_DROP) | (false, TC_ACT_SHOT) => Some(Action::Drop),
        _ => None,
    }
}

fn snapshot(maps: &InstanceMaps) -> Vec<(Direction, Reason, u64)> {
    let mut v = Vec::new();
    for dir in Direction::ALL {
        for &r in Reason::ALL {
            v.push((dir, r, maps.counter(dir, r).expect("read counter").packets));
        }
    }
    v
}

/// Runs every row as a packet of its own (the conntrack tables are emptied before each row);
/// panics listing every failing row. Returns the number of rows run.
pub fn run_table(inst: &mut PrivateInstance, table: &str, rows: &[Row]) -> usize {
    run_rows(inst, table, rows, true)
}

/// Runs the rows in order as one story: conntrack state carries from row to row.
pub fn run_sequence(inst: &mut PrivateInstance, table: &str, rows: &[Row]) -> usize {
    run_rows(inst, table, rows, false)
}

fn run_rows(inst: &mut PrivateInstance, table: &str, rows: &[Row], fresh: bool) -> usize {
    let mut failures = Vec::new();
    for row in rows {
        if fresh {
            inst.maps_mut().ct_flush().expect("flush conntrack");
        }
        let before = snapshot(inst.maps());
        let ret = match inst.run(row.dir, &row.frame) {
            Ok(r) => r,
            Err(e) => {
                failures.push(format!("{}: test run failed: {e:?}", row.desc));
                continue;
            }
        };
        let after = snapshot(inst.maps());
        let moved: Vec<(Direction, Reason, u64)> = before
            .iter()
            .zip(&after)
            .filter(|(b, a)| b.2 != a.2)
            .map(|(b, a)| (a.0, a.1, a.2 - b.2))
            .collect();
        let got = action_at(inst.ingress_hook(), row.dir, ret);
        let ok_action = got == Some(row.action);
        let ok_reason = moved == [(row.dir, row.reason, 1)];
        if let Some(want) = row.rule {
            let cfg = inst.maps().config().expect("config");
            let want_slot = rule_slot(cfg.active_gen, want);
            let got_slot = inst.maps().last_parse().expect("summary").rule;
            if got_slot != want_slot {
                let shown =
                    if got_slot == NO_RULE { "none".to_string() } else { slot_rule(got_slot).to_string() };
                failures.push(format!(
                    "{} ({}): expected rule #{want}, got rule {shown}",
                    row.desc,
                    row.dir.as_str()
                ));
            }
        }
        if !(ok_action && ok_reason) {
            let moved: Vec<String> =
                moved.iter().map(|(d, r, n)| format!("{}/{}+{n}", d.as_str(), r.name())).collect();
            failures.push(format!(
                "{} ({}): expected {} by {}, got return {ret} ({:?}) with counters [{}]",
                row.desc,
                row.dir.as_str(),
                row.action.as_str(),
                row.reason.name(),
                got,
                moved.join(", ")
            ));
        }
    }
    println!("verdict table {table}: {} rows run, {} failed", rows.len(), failures.len());
    assert!(failures.is_empty(), "verdict table {table}:\n  {}", failures.join("\n  "));
    rows.len()
}
