//! `aws ec2 describe-network-acls` output (`--network-acls FILE`) into raw network ACLs.
//!
//! - An ACL is named by its NetworkAclId (kept as `aws_id`, with its VpcId); `--bind
//!   IFACE=...,acl-ID` binds it (at most one per interface). `Associations` (its subnets) are
//!   not bindings: a host says which of its interfaces routes for which subnet.
//! - Entries: RuleNumber, RuleAction, Egress, Protocol (a number as text, "-1" for all),
//!   CidrBlock or Ipv6CidrBlock, PortRange {From, To} (tcp, udp), IcmpTypeCode {Type, Code}
//!   (icmp, icmpv6; -1 any). The implicit final rules AWS lists, `*` deny all with RuleNumber
//!   32767 (IPv4) and 32768 (IPv6), are sgctl's implicit final deny and are not entries.
//! - A CIDR with host bits set means its network, with a warning (as for the groups).

use json_spanned_value::Spanned;
use serde::Deserialize;

use super::inputs::{Cx, ProtoJ, proto_at};
use crate::{
    Diagnostic, RuleErrors,
    raw::{At, PortsText, ProtoText, RawAcl, RawAclEntry, RawRule},
};

/// AWS's RuleNumber of the implicit final deny: IPv4, IPv6.
const DEFAULT_RULES: [i64; 2] = [32767, 32768];

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct TopT {
    network_acls: Option<Vec<Spanned<AclT>>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct AclT {
    network_acl_id: Option<Spanned<String>>,
    vpc_id: Option<Spanned<String>>,
    #[serde(default)]
    entries: Vec<Spanned<EntryT>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct EntryT {
    rule_number: Option<Spanned<i64>>,
    protocol: Option<Spanned<ProtoJ>>,
    rule_action: Option<Spanned<String>>,
    egress: Option<bool>,
    cidr_block: Option<Spanned<String>>,
    ipv6_cidr_block: Option<Spanned<String>>,
    port_range: Option<Spanned<PortRangeT>>,
    icmp_type_code: Option<Spanned<IcmpT>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct PortRangeT {
    from: Option<i64>,
    to: Option<i64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct IcmpT {
    r#type: Option<i64>,
    code: Option<i64>,
}

/// The ACLs of one `describe-network-acls` output; warnings are pushed to `warnings`.
pub fn parse(file: &str, text: &str, warnings: &mut Vec<Diagnostic>) -> Result<Vec<RawAcl>, RuleErrors> {
    let cx = Cx::new(file, text);
    let top: TopT = cx.json()?;
    let Some(acls) = top.network_acls else {
        return Err(RuleErrors::one(cx.loc(0), "no NetworkAcls: not the output of describe-network-acls"));
    };
    let mut out = Vec::new();
    for a in &acls {
        let loc = cx.loc(a.start());
        let a = a.get_ref();
        let Some(id) = &a.network_acl_id else {
            return Err(RuleErrors::one(loc, "network ACL without NetworkAclId"));
        };
        let mut acl = RawAcl {
            name: cx.at(id),
            aws_id: Some(cx.at(id)),
            aws_vpc: a.vpc_id.as_ref().map(|v| cx.at(v)),
            ingress: Vec::new(),
            egress: Vec::new(),
        };
        for e in &a.entries {
            let (egress, entry) = entry(&cx, e, warnings)?;
            if let Some(entry) = entry {
                if egress { acl.egress.push(entry) } else { acl.ingress.push(entry) }
            }
        }
        out.push(acl);
    }
    Ok(out)
}

/// One entry: its direction, and the entry (`None` for AWS's implicit final deny).
fn entry(
    cx: &Cx<'_>,
    e: &Spanned<EntryT>,
    warnings: &mut Vec<Diagnostic>,
) -> Result<(bool, Option<RawAclEntry>), RuleErrors> {
    let loc = cx.loc(e.start());
    let t = e.get_ref();
    let Some(egress) = t.egress else {
        return Err(RuleErrors::one(loc, "network ACL entry without Egress (true or false)"));
    };
    let proto = proto_at(cx, t.protocol.as_ref());
    let all = |c: &Option<Spanned<String>>, net: &str| c.as_ref().is_some_and(|c| c.get_ref() == net);
    let is_all_proto = proto.as_ref().is_some_and(|p| matches!(&p.v, ProtoText::Name(n) if n == "-1"));
    let number = t.rule_number.as_ref().map(|n| At::new(*n.get_ref(), cx.loc(n.start())));
    if number.as_ref().is_some_and(|n| DEFAULT_RULES.contains(&n.v))
        && t.rule_action.as_ref().is_some_and(|a| a.get_ref() == "deny")
        && is_all_proto
        && (all(&t.cidr_block, "0.0.0.0/0") || all(&t.ipv6_cidr_block, "::/0"))
    {
        return Ok((egress, None));
    }
    let cidr = match (&t.cidr_block, &t.ipv6_cidr_block) {
        (Some(c), None) | (None, Some(c)) => Some(cx.lenient_cidr(c, warnings)),
        (Some(_), Some(c)) => {
            return Err(RuleErrors::one(cx.loc(c.start()), "entry with both CidrBlock and Ipv6CidrBlock"));
        }
        (None, None) => None,
    };
    let ports = t.port_range.as_ref().map(|p| {
        let r = p.get_ref();
        At::new(PortsText::Pair(r.from.unwrap_or(-1), r.to.unwrap_or(-1)), cx.loc(p.start()))
    });
    let icmp = t.icmp_type_code.as_ref();
    let icmp_at = |f: fn(&IcmpT) -> Option<i64>| {
        icmp.and_then(|i| f(i.get_ref()).map(|v| At::new(v, cx.loc(i.start()))))
    };
    let matches = RawRule {
        loc: loc.clone(),
        proto,
        ports,
        icmp_type: icmp_at(|i| i.r#type),
        icmp_code: icmp_at(|i| i.code),
        peers: Vec::new(),
        wrong_direction: Vec::new(),
        peer_kinds: Vec::new(),
        description: None,
    };
    Ok((
        egress,
        Some(RawAclEntry { loc, number, action: t.rule_action.as_ref().map(|a| cx.at(a)), cidr, matches }),
    ))
}

/// `describe-network-acls` output, as `sgctl export aws-acls` writes it.
#[derive(Debug, serde::Serialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct NaclsOut {
    pub network_acls: Vec<NaclOut>,
}

#[derive(Debug, serde::Serialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct NaclOut {
    /// The AWS id, else the ACL's name.
    pub network_acl_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vpc_id: Option<String>,
    pub is_default: bool,
    pub entries: Vec<EntryOut>,
}

#[derive(Debug, serde::Serialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct EntryOut {
    pub rule_number: i64,
    pub protocol: String,
    pub rule_action: String,
    pub egress: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cidr_block: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ipv6_cidr_block: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port_range: Option<PortRangeOut>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub icmp_type_code: Option<IcmpOut>,
}

#[derive(Debug, serde::Serialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct PortRangeOut {
    pub from: i64,
    pub to: i64,
}

#[derive(Debug, serde::Serialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct IcmpOut {
    pub r#type: i64,
    pub code: i64,
}

/// The network ACLs of `rs` as `describe-network-acls` output, with AWS's final rules (32767
/// and 32768, deny all) listed as AWS lists them; `--network-acls` reads it back to the same ACLs.
pub fn export(rs: &crate::RuleSet) -> NaclsOut {
    use crate::{Dir, Ports, Proto};
    let network_acls = rs
        .acls
        .iter()
        .map(|a| {
            let mut entries = Vec::new();
            for dir in Dir::BOTH {
                let egress = dir == Dir::Egress;
                for e in a.entries(dir) {
                    let (cidr_block, ipv6_cidr_block) = match e.cidr {
                        ipnet::IpNet::V4(n) => (Some(n.to_string()), None),
                        ipnet::IpNet::V6(n) => (None, Some(n.to_string())),
                    };
                    let (port_range, icmp_type_code) = match (e.proto, e.ports) {
                        (Proto::All, _) | (_, Ports::All) => (None, None),
                        (_, Ports::Range(lo, hi)) => {
                            (Some(PortRangeOut { from: i64::from(lo), to: i64::from(hi) }), None)
                        }
                        (_, Ports::Icmp { icmp_type, code }) => {
                            let f = |v: Option<u8>| v.map_or(-1, i64::from);
                            (None, Some(IcmpOut { r#type: f(icmp_type), code: f(code) }))
                        }
                    };
                    entries.push(EntryOut {
                        rule_number: i64::from(e.number),
                        protocol: match e.proto {
                            Proto::All => "-1".to_string(),
                            Proto::Num(n) => n.to_string(),
                        },
                        rule_action: e.action.as_str().to_string(),
                        egress,
                        cidr_block,
                        ipv6_cidr_block,
                        port_range,
                        icmp_type_code,
                    });
                }
                for (number, v4, v6) in
                    [(DEFAULT_RULES[0], Some("0.0.0.0/0"), None), (DEFAULT_RULES[1], None, Some("::/0"))]
                {
                    entries.push(EntryOut {
                        rule_number: number,
                        protocol: "-1".into(),
                        rule_action: "deny".into(),
                        egress,
                        cidr_block: v4.map(Into::into),
                        ipv6_cidr_block: v6.map(Into::into),
                        port_range: None,
                        icmp_type_code: None,
                    });
                }
            }
            NaclOut {
                network_acl_id: a.aws_id.clone().unwrap_or_else(|| a.name.clone()),
                vpc_id: a.aws_vpc.clone(),
                is_default: false,
                entries,
            }
        })
        .collect();
    NaclsOut { network_acls }
}
