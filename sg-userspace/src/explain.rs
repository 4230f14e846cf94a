//! Which rule decides a packet, by the reference model of the semantics (`rules::model`), for
//! `sgctl explain`: the security-group rule that allows it (if any) and, on an interface with
//! a network ACL, the ACL entry that decides (or its implicit final deny).

use std::net::IpAddr;

use serde::Serialize;

use crate::{
    error::{Error, Result},
    rules::{Dir, RuleSet, model},
};

/// The packet to explain.
#[derive(Clone, Copy, Debug)]
pub struct Query<'a> {
    pub iface: &'a str,
    pub dir: Dir,
    pub proto: u8,
    pub src: IpAddr,
    pub dst: IpAddr,
    /// Destination port (tcp, udp).
    pub dport: u16,
    pub icmp_type: u8,
    pub icmp_code: u8,
}

#[derive(Debug, Serialize)]
pub struct Explanation {
    /// pass or drop.
    pub verdict: &'static str,
    /// The verdict reason, as the datapath counts it.
    pub reason: &'static str,
    /// The deciding rule, if one allows the packet: its group, text, index and location.
    pub group: Option<String>,
    pub rule: Option<String>,
    pub index: Option<usize>,
    pub location: Option<String>,
    pub bound_groups: Vec<String>,
    /// The interface's network ACL and what it said, when it was consulted.
    pub acl: Option<AclExplanation>,
}

/// What the network ACL said of the packet.
#[derive(Debug, Serialize)]
pub struct AclExplanation {
    pub name: String,
    /// allow or deny.
    pub action: &'static str,
    /// The deciding entry (`None`: no entry matched, the implicit final deny).
    pub number: Option<u16>,
    pub entry: Option<String>,
    pub location: Option<String>,
}

/// Explains `q` under `rs`.
pub fn explain(rs: &RuleSet, q: &Query<'_>) -> Result<Explanation> {
    let Some(binding) = rs.binding(q.iface) else {
        return Err(Error::Usage {
            what: format!("{} is not bound to any group in the rule set", q.iface),
            detail: "name an interface of the rules file".into(),
        });
    };
    if q.src.is_ipv4() != q.dst.is_ipv4() {
        return Err(Error::Usage {
            what: "--src and --dst".into(),
            detail: "must be of the same address family".into(),
        });
    }
    let probe = model::Probe {
        src: q.src,
        dst: q.dst,
        proto: q.proto,
        dport: q.dport,
        icmp_type: q.icmp_type,
        icmp_code: q.icmp_code,
        later_fragment: false,
    };
    let d = model::evaluate(rs, q.iface, q.dir, &probe);
    let rule = d.rule.map(|i| rs.iface_rules(q.iface)[i].clone());
    let acl = match (rs.iface_acl(q.iface), d.acl) {
        (Some(acl), Some(v)) => {
            let entry = v.entry().map(|i| &acl.entries(q.dir)[i]);
            Some(AclExplanation {
                name: acl.name.clone(),
                action: if v.allows() { "allow" } else { "deny" },
                number: entry.map(|e| e.number),
                entry: entry.map(|e| e.describe(q.dir)),
                location: entry.map(|e| e.loc.to_string()),
            })
        }
        _ => None,
    };
    Ok(Explanation {
        verdict: d.reason.action().as_str(),
        reason: d.reason.name(),
        group: rule.as_ref().map(|r| r.group.clone()),
        rule: rule.as_ref().map(|r| r.rule.describe(r.dir)),
        index: rule.as_ref().map(|r| r.rule.index),
        location: rule.as_ref().map(|r| r.rule.loc.to_string()),
        bound_groups: binding.groups.clone(),
        acl,
    })
}
