//! The tracked flows of the attached interfaces, as `sgctl conntrack list|flush|gc` handles
//! them: listed with their endpoints and the rule that allowed them, removed by filter, or
//! collected when expired (with the presence filter rebuilt).

use std::net::IpAddr;

use serde::Serialize;
use sg_common::conntrack::{CT_F_SEEN_REPLY, CtKey, SEEN_SLOTS, state_name};

use crate::{
    error::{Error, Result},
    loader::{self, Attached},
    maps::{CtTable, InstanceMaps, ct_now_ns},
    names::{RuleRef, addr, endpoints, proto_name, rule_ref},
    pins,
    state::State,
};

/// One tracked flow, as listed.
#[derive(Debug, Serialize)]
pub struct Flow {
    pub iface: String,
    /// tcp, udp, icmp, icmpv6, or the protocol number.
    pub proto: String,
    /// The flow's first packet, as the flow log names a packet: the initiator is `src`,
    /// `sport` (the same JSON vocabulary as `sgctl flows`). ICMP echo flows have no ports:
    /// `icmp_id` is the echo identifier.
    pub src: IpAddr,
    pub sport: Option<u16>,
    pub dst: IpAddr,
    pub dport: Option<u16>,
    pub icmp_id: Option<u16>,
    /// The direction of the flow's first packet: `ingress` (opened from outside) or `egress`
    /// (opened by this host); the direction of the rule that allowed it too.
    pub direction: &'static str,
    pub state: &'static str,
    pub table: CtTable,
    pub age_s: f64,
    pub idle_s: f64,
    pub expired: bool,
    pub packets: [u64; 2],
    pub bytes: [u64; 2],
    pub replied: bool,
    /// The rule that allowed the flow (`group`, `index`, `rule`: as `sgctl stats` names it).
    #[serde(flatten)]
    pub rule: RuleRef,
}

/// The attached interfaces to look at: `iface`, or all of this network namespace.
pub fn targets(iface: Option<&str>) -> Result<Vec<Attached>> {
    let names = match iface {
        Some(i) => vec![i.to_string()],
        None => pins::attached_ifaces()?,
    };
    let mut out = Vec::new();
    for n in names {
        if let Some(a) = loader::open_attached(&n)? {
            out.push(a);
        } else if iface.is_some() {
            return Err(Error::NotAttached { iface: n.clone(), dir: pins::iface_dir(&n)? });
        }
    }
    Ok(out)
}

/// The flows of one interface, oldest first; expired ones only with `all`.
pub fn flows(maps: &InstanceMaps, iface: &str, state: Option<&State>, all: bool) -> Result<Vec<Flow>> {
    let cfg = maps.config()?;
    let now = ct_now_ns();
    let mut out = Vec::new();
    for (table, k, e) in maps.ct_entries()? {
        let expired = cfg.ct_timeouts.expired(k.proto, &e, now);
        if expired && !all {
            continue;
        }
        let (initiator, responder) = endpoints(&k, &e);
        let icmp = matches!(k.proto, 1 | 58);
        let ports = !icmp && matches!(k.proto, 6 | 17 | 132);
        out.push(Flow {
            iface: iface.to_string(),
            proto: proto_name(k.proto),
            src: initiator.ip(),
            sport: ports.then_some(initiator.port()),
            dst: responder.ip(),
            dport: ports.then_some(responder.port()),
            icmp_id: icmp.then_some(initiator.port()),
            direction: if e.origin == 0 { "ingress" } else { "egress" },
            state: state_name(e.state),
            table,
            age_s: now.saturating_sub(e.created_ns) as f64 / 1e9,
            idle_s: now.saturating_sub(e.last_seen_ns) as f64 / 1e9,
            expired,
            packets: e.packets,
            bytes: e.bytes,
            replied: e.flags & CT_F_SEEN_REPLY != 0,
            rule: rule_ref(state, iface, e.rule, e.policy_seq),
        });
    }
    out.sort_by(|a, b| a.age_s.total_cmp(&b.age_s).reverse());
    Ok(out)
}

/// Which flows a flush removes (`None`: any).
#[derive(Clone, Copy, Debug, Default)]
pub struct FlowFilter {
    pub proto: Option<u8>,
    /// Either end.
    pub addr: Option<IpAddr>,
    /// Either end.
    pub port: Option<u16>,
}

impl FlowFilter {
    pub fn matches(&self, k: &CtKey) -> bool {
        self.proto.is_none_or(|p| p == k.proto)
            && self.addr.is_none_or(|a| addr(k.family, &k.addr_lo) == a || addr(k.family, &k.addr_hi) == a)
            && self.port.is_none_or(|p| k.port_lo == p || k.port_hi == p)
    }
}

/// Removes the flows of `a` that `filter` matches; returns how many. Their next packet is new.
pub fn flush(a: &mut Attached, filter: &FlowFilter) -> Result<usize> {
    let mut n = 0;
    for (t, k, _) in a.maps.ct_entries()? {
        if filter.matches(&k) {
            a.maps.ct_remove(t, &k)?;
            n += 1;
        }
    }
    Ok(n)
}

/// What one interface's gc did.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct GcReport {
    /// Expired flows removed.
    pub removed: usize,
    /// Live flows marked in the rebuilt presence filter.
    pub flows: usize,
    /// Share of the presence filter's slots set afterwards (bank 0).
    pub filled: f64,
}

/// Removes `a`'s expired flows and rebuilds its presence filter.
pub fn gc(a: &mut Attached) -> Result<GcReport> {
    let removed = a.maps.ct_gc(ct_now_ns())?.len();
    let st = a.maps.seen_rebuild()?;
    Ok(GcReport { removed, flows: st.flows, filled: f64::from(st.filled[0]) / f64::from(SEEN_SLOTS) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_match_either_end() {
        let k = crate::names::sample_key();
        assert!(FlowFilter::default().matches(&k));
        assert!(FlowFilter { port: Some(40000), ..FlowFilter::default() }.matches(&k));
        assert!(FlowFilter { addr: Some("192.0.2.1".parse().unwrap()), ..FlowFilter::default() }.matches(&k));
        assert!(!FlowFilter { proto: Some(17), ..FlowFilter::default() }.matches(&k));
        assert!(
            !FlowFilter { addr: Some("192.0.2.3".parse().unwrap()), ..FlowFilter::default() }.matches(&k)
        );
    }
}
