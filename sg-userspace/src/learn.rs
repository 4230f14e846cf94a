//! The candidate of `sgctl learn` checked by the real datapath: every observed flow start of
//! the window, built as a packet (a TCP SYN, a UDP datagram, an ICMP echo request from the
//! peer's side or to it), run through a private instance of the programs holding the
//! candidate, interface by interface (as `replay` runs a capture).

use std::{collections::BTreeMap, net::IpAddr};

use etherparse::PacketBuilder;
use sg_common::{Action, IfaceConfig, Reason, config::CONFIG_RECORD_PARSE};

use crate::{
    error::Result,
    loader::PrivateInstance,
    pins,
    rules::{
        Dir, ICMP, ICMPV6, RuleSet, TCP, UDP, compile,
        learn::{Evidence, ObsKey, Observations},
    },
};

/// What the datapath said of the observed flows.
#[derive(Clone, Debug, Default)]
pub struct DatapathCheck {
    /// Flows run (an observation counts its flows).
    pub flows: u64,
    pub allowed: u64,
    /// Observations refused, with the reason.
    pub refused: Vec<(ObsKey, &'static str)>,
    /// Flows no packet can stand for (protocols without ports or echo): not run.
    pub skipped: u64,
}

/// Runs the observations `keep` selects through private instances holding `rs`.
pub fn check(
    rs: &RuleSet,
    obs: &Observations,
    keep: impl Fn(&ObsKey, &Evidence) -> bool,
) -> Result<DatapathCheck> {
    pins::check_root()?;
    let mut by_iface: BTreeMap<&str, Vec<(&ObsKey, &Evidence)>> = BTreeMap::new();
    for (k, e) in obs.entries.iter().filter(|(k, e)| keep(k, e)) {
        if rs.interfaces.iter().any(|b| b.iface == k.iface && !b.groups.is_empty()) {
            by_iface.entry(k.iface.as_str()).or_default().push((k, e));
        }
    }
    let mut out = DatapathCheck::default();
    for (iface, list) in by_iface {
        let plan = compile::compile_iface(rs, iface)?;
        let mut inst =
            PrivateInstance::load(&IfaceConfig { flags: CONFIG_RECORD_PARSE, ..IfaceConfig::default() })?;
        inst.apply_plan(&plan, 1)?;
        for (i, (k, e)) in list.into_iter().enumerate() {
            // A port (and an echo id) of its own per probe: each is a new flow.
            let Some(frame) = flow_start(k, 32_768 + (i % 28_000) as u16) else {
                out.skipped += e.flows;
                continue;
            };
            inst.run(k.dir.datapath(), &frame)?;
            let reason = Reason::from_u32(inst.maps().last_parse()?.reason).unwrap_or(Reason::InternalError);
            out.flows += e.flows;
            if reason.action() == Action::Pass {
                out.allowed += e.flows;
            } else {
                out.refused.push((k.clone(), reason.name()));
            }
        }
    }
    Ok(out)
}

/// The first packet of the observed flow (`sport`: the client's port, or the echo id).
fn flow_start(k: &ObsKey, sport: u16) -> Option<Vec<u8>> {
    let local = k.local_end();
    let (src, dst) = match k.dir {
        Dir::Ingress => (k.peer, local),
        Dir::Egress => (local, k.peer),
    };
    let eth = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]);
    let ip = match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => eth.ipv4(s.octets(), d.octets(), 64),
        (IpAddr::V6(s), IpAddr::V6(d)) => eth.ipv6(s.octets(), d.octets(), 64),
        _ => return None,
    };
    let mut out = Vec::new();
    let (icmp_type, code) = ((k.service >> 8) as u8, k.service as u8);
    let written = match (k.proto, src) {
        (TCP, _) => ip.tcp(sport, k.service, 1, 64_240).syn().write(&mut out, &[]),
        (UDP, _) => ip.udp(sport, k.service).write(&mut out, &[]),
        (ICMP, IpAddr::V4(_)) if icmp_type == 8 && code == 0 => {
            ip.icmpv4_echo_request(sport, 1).write(&mut out, &[])
        }
        (ICMPV6, IpAddr::V6(_)) if icmp_type == 128 && code == 0 => {
            ip.icmpv6_echo_request(sport, 1).write(&mut out, &[])
        }
        _ => return None,
    };
    written.ok()?;
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(proto: u8, service: u16, peer: &str) -> ObsKey {
        ObsKey { iface: "eth0".into(), dir: Dir::Ingress, proto, service, peer: peer.parse().unwrap() }
    }

    #[test]
    fn flow_starts_are_built_for_ports_and_echo_only() {
        assert!(flow_start(&key(TCP, 22, "192.0.2.9"), 40_000).is_some());
        assert!(flow_start(&key(UDP, 53, "2001:db8::9"), 40_000).is_some());
        assert!(flow_start(&key(ICMP, 0x0800, "192.0.2.9"), 40_000).is_some());
        assert!(flow_start(&key(ICMPV6, 0x8000, "2001:db8::9"), 40_000).is_some());
        assert!(flow_start(&key(ICMP, 0x0300, "192.0.2.9"), 40_000).is_none(), "not a flow start");
        assert!(flow_start(&key(47, 0, "192.0.2.9"), 40_000).is_none(), "GRE: no packet stands for it");
    }
}
