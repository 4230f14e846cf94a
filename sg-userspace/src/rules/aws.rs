//! AWS JSON as `aws ec2 describe-security-groups` prints it: read into the raw form (apply,
//! import) and written from a checked rule set (export).
//!
//! AWS JSON has no interfaces, no member addresses and no prefix-list entries: bindings come
//! from `--bind IFACE=GROUP[,GROUP]` (GroupId or GroupName), members and prefix lists from a
//! members file in sgctl's TOML (`[groups.<GroupId or name>] members = [...]`,
//! `[prefix_lists.<pl-id>] entries = [...]`). A group referenced through UserIdGroupPairs must
//! have known members; otherwise the file is rejected.
//!
//! Each IpRanges/Ipv6Ranges/UserIdGroupPairs/PrefixListIds entry of a permission is one rule
//! (AWS counts them so, and each has its own description). A group is named by its GroupName
//! when that is a valid sgctl name, else by its GroupId.

use std::collections::BTreeMap;

use json_spanned_value::Spanned;
use serde::{Deserialize, Serialize};

use super::{
    AwsContext, Dir, LineIndex, Loc, Peer, Ports, Proto, RuleErrors, RuleSet,
    raw::{At, PortsText, ProtoText, RawBinding, RawGroup, RawPeer, RawRule, RawRuleSet},
    toml_front,
};

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DescribeT {
    security_groups: Vec<Spanned<GroupT>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct GroupT {
    group_id: Option<Spanned<String>>,
    group_name: Option<Spanned<String>>,
    description: Option<Spanned<String>>,
    #[serde(default)]
    ip_permissions: Vec<Spanned<PermissionT>>,
    #[serde(default)]
    ip_permissions_egress: Vec<Spanned<PermissionT>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct PermissionT {
    ip_protocol: Option<Spanned<ProtoJ>>,
    from_port: Option<Spanned<i64>>,
    to_port: Option<Spanned<i64>>,
    #[serde(default)]
    ip_ranges: Vec<Spanned<RangeT>>,
    #[serde(default)]
    ipv6_ranges: Vec<Spanned<Range6T>>,
    #[serde(default)]
    user_id_group_pairs: Vec<Spanned<PairT>>,
    #[serde(default)]
    prefix_list_ids: Vec<Spanned<PrefixListT>>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum ProtoJ {
    Text(String),
    Number(i64),
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RangeT {
    cidr_ip: Spanned<String>,
    description: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Range6T {
    cidr_ipv6: Spanned<String>,
    description: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct PairT {
    group_id: Option<Spanned<String>>,
    group_name: Option<Spanned<String>>,
    description: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct PrefixListT {
    prefix_list_id: Spanned<String>,
    description: Option<Spanned<String>>,
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= super::validate::MAX_NAME
        && !s.starts_with('.')
        && s.chars().all(|c| c.is_ascii_alphanumeric() || "._:@+=-".contains(c))
}

struct Cx<'a> {
    file: &'a str,
    text: &'a str,
    lines: LineIndex,
}

impl Cx<'_> {
    fn loc(&self, off: usize) -> Loc {
        self.lines.loc(self.file, self.text, off)
    }
    fn at(&self, s: &Spanned<String>) -> At<String> {
        At::new(s.get_ref().clone(), self.loc(s.start()))
    }
}

/// Parses describe-security-groups JSON (with bindings and a members file) into raw rules.
pub fn parse(file: &str, text: &str, ctx: &AwsContext) -> Result<RawRuleSet, RuleErrors> {
    let parsed: DescribeT = json_spanned_value::from_str(text).map_err(|e| {
        RuleErrors::one(
            Loc { file: file.to_string(), line: e.line().max(1), col: e.column().max(1) },
            e.to_string().split(" at line ").next().unwrap_or_default().to_string(),
        )
    })?;
    let cx = Cx { file, text, lines: LineIndex::new(text) };
    let mut out = RawRuleSet { file: file.to_string(), ..RawRuleSet::default() };
    let members = match &ctx.members {
        Some((name, text)) => Some(toml_front::parse(name, text)?),
        None => None,
    };
    let member_group = |key: &str| members.as_ref().and_then(|m| m.groups.iter().find(|g| g.name.v == key));

    // Our name for each group: GroupName when valid, else GroupId.
    let mut names: BTreeMap<String, String> = BTreeMap::new();
    let mut diags = Vec::new();
    for g in &parsed.security_groups {
        let g = g.get_ref();
        let id = g.group_id.as_ref().map(|s| s.get_ref().clone());
        let gname = g.group_name.as_ref().map(|s| s.get_ref().clone());
        let ours = match (&gname, &id) {
            (Some(n), _) if valid_name(n) => n.clone(),
            (_, Some(i)) => i.clone(),
            (Some(n), None) => n.clone(),
            (None, None) => String::new(),
        };
        for key in [id, gname].into_iter().flatten() {
            names.insert(key, ours.clone());
        }
    }
    let name_of = |key: &str| names.get(key).cloned();

    for (gi, g) in parsed.security_groups.iter().enumerate() {
        let loc = cx.loc(g.start());
        let g = g.get_ref();
        let id = g.group_id.as_ref().map(|s| cx.at(s));
        let gname = g.group_name.as_ref().map(|s| cx.at(s));
        let Some(key) = id.as_ref().or(gname.as_ref()) else {
            diags.push(super::Diagnostic { loc, msg: "security group without GroupId or GroupName".into() });
            continue;
        };
        let ours = name_of(&key.v).unwrap_or_else(|| format!("group{gi}"));
        let extra = id
            .as_ref()
            .and_then(|i| member_group(&i.v))
            .or_else(|| gname.as_ref().and_then(|n| member_group(&n.v)));
        let mut raw = RawGroup {
            name: At::new(ours, key.loc.clone()),
            description: g.description.as_ref().map(|d| cx.at(d)),
            aws_id: id.clone(),
            members: extra.map(|m| m.members.clone()).unwrap_or_default(),
            member_groups: extra
                .map(|m| {
                    m.member_groups
                        .iter()
                        .map(|x| At::new(name_of(&x.v).unwrap_or(x.v.clone()), x.loc.clone()))
                        .collect()
                })
                .unwrap_or_default(),
            ingress: Vec::new(),
            egress: Some(Vec::new()),
        };
        for (dir, perms) in [(Dir::Ingress, &g.ip_permissions), (Dir::Egress, &g.ip_permissions_egress)] {
            let mut rules = Vec::new();
            for p in perms {
                permission(&cx, p, &name_of, &mut rules, &mut diags);
            }
            match dir {
                Dir::Ingress => raw.ingress = rules,
                Dir::Egress => raw.egress = Some(rules),
            }
        }
        out.groups.push(raw);
    }

    // Groups referenced but not described: members-only groups from the members file.
    let mut referenced: Vec<At<String>> = Vec::new();
    for g in &out.groups {
        for r in g.ingress.iter().chain(g.egress.iter().flatten()) {
            for p in &r.peers {
                if let RawPeer::Group(n) = &p.v {
                    referenced.push(At::new(n.clone(), p.loc.clone()));
                }
            }
        }
    }
    for r in referenced {
        let known = out.groups.iter().any(|g| g.name.v == r.v);
        match (known, member_group(&r.v)) {
            (true, _) => {
                let g = out.groups.iter().find(|g| g.name.v == r.v).expect("known");
                if g.members.is_empty() && g.member_groups.is_empty() {
                    diags.push(super::Diagnostic {
                        loc: r.loc,
                        msg: format!("group {} is referenced but its members are unknown: list them in the members file", r.v),
                    });
                }
            }
            (false, Some(m)) => {
                let mut g = m.clone();
                g.ingress.clear();
                g.egress = Some(Vec::new());
                out.groups.push(g);
            }
            (false, None) => diags.push(super::Diagnostic {
                loc: r.loc,
                msg: format!("group {} is referenced but neither described nor in the members file", r.v),
            }),
        }
    }
    if let Some(m) = &members {
        out.prefix_lists.clone_from(&m.prefix_lists);
    }
    for b in &ctx.bindings {
        let loc = Loc { file: "--bind".into(), line: 1, col: 1 };
        let Some((iface, groups)) = b.split_once('=') else {
            diags.push(super::Diagnostic {
                loc,
                msg: format!("bad binding '{b}': write IFACE=GROUP[,GROUP...]"),
            });
            continue;
        };
        out.interfaces.push(RawBinding {
            timeouts: Vec::new(),
            no_implicit: 0,
            monitor: None,
            iface: At::new(iface.to_string(), loc.clone()),
            groups: groups
                .split(',')
                .map(|g| At::new(name_of(g.trim()).unwrap_or_else(|| g.trim().to_string()), loc.clone()))
                .collect(),
        });
    }
    if diags.is_empty() { Ok(out) } else { Err(RuleErrors(diags)) }
}

fn permission(
    cx: &Cx<'_>,
    p: &Spanned<PermissionT>,
    name_of: &dyn Fn(&str) -> Option<String>,
    rules: &mut Vec<RawRule>,
    diags: &mut Vec<super::Diagnostic>,
) {
    let loc = cx.loc(p.start());
    let p = p.get_ref();
    let proto = p.ip_protocol.as_ref().map(|s| {
        let v = match s.get_ref() {
            ProtoJ::Text(t) => ProtoText::Name(t.clone()),
            ProtoJ::Number(n) => ProtoText::Number(*n),
        };
        At::new(v, cx.loc(s.start()))
    });
    let ports = match (&p.from_port, &p.to_port) {
        (None, None) => None,
        (f, t) => {
            let at = f.as_ref().or(t.as_ref()).map_or(0, Spanned::start);
            let from = f.as_ref().map_or(-1, |s| *s.get_ref());
            let to = t.as_ref().map_or(-1, |s| *s.get_ref());
            Some(At::new(PortsText::Pair(from, to), cx.loc(at)))
        }
    };
    let mut peers: Vec<(At<RawPeer>, Option<At<String>>)> = Vec::new();
    for r in &p.ip_ranges {
        let r = r.get_ref();
        peers.push((
            At::new(RawPeer::Cidr(r.cidr_ip.get_ref().clone()), cx.loc(r.cidr_ip.start())),
            r.description.as_ref().map(|d| cx.at(d)),
        ));
    }
    for r in &p.ipv6_ranges {
        let r = r.get_ref();
        peers.push((
            At::new(RawPeer::Cidr(r.cidr_ipv6.get_ref().clone()), cx.loc(r.cidr_ipv6.start())),
            r.description.as_ref().map(|d| cx.at(d)),
        ));
    }
    for r in &p.user_id_group_pairs {
        let r = r.get_ref();
        let Some(key) = r.group_id.as_ref().or(r.group_name.as_ref()) else {
            diags.push(super::Diagnostic {
                loc: loc.clone(),
                msg: "UserIdGroupPairs entry without GroupId".into(),
            });
            continue;
        };
        let name = name_of(key.get_ref()).unwrap_or_else(|| key.get_ref().clone());
        peers.push((
            At::new(RawPeer::Group(name), cx.loc(key.start())),
            r.description.as_ref().map(|d| cx.at(d)),
        ));
    }
    for r in &p.prefix_list_ids {
        let r = r.get_ref();
        peers.push((
            At::new(
                RawPeer::PrefixList(r.prefix_list_id.get_ref().clone()),
                cx.loc(r.prefix_list_id.start()),
            ),
            r.description.as_ref().map(|d| cx.at(d)),
        ));
    }
    if peers.is_empty() {
        diags.push(super::Diagnostic {
            loc,
            msg: "permission without IpRanges, Ipv6Ranges, UserIdGroupPairs or PrefixListIds".into(),
        });
        return;
    }
    for (peer, description) in peers {
        let kind = match peer.v {
            RawPeer::Cidr(_) => "CidrIp",
            RawPeer::Group(_) => "UserIdGroupPairs",
            RawPeer::PrefixList(_) => "PrefixListIds",
        };
        rules.push(RawRule {
            loc: peer.loc.clone(),
            proto: proto.clone(),
            ports: ports.clone(),
            icmp_type: None,
            icmp_code: None,
            peer_kinds: vec![At::new(kind, peer.loc.clone())],
            peers: vec![peer],
            wrong_direction: Vec::new(),
            description,
        });
    }
}

// ---- export ----

/// `describe-security-groups` output, as sgctl writes it.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct DescribeOut {
    pub security_groups: Vec<GroupOut>,
}

#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct GroupOut {
    pub group_id: String,
    pub group_name: String,
    pub description: String,
    pub ip_permissions: Vec<PermissionOut>,
    pub ip_permissions_egress: Vec<PermissionOut>,
}

#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct PermissionOut {
    pub ip_protocol: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub from_port: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub to_port: Option<i64>,
    pub ip_ranges: Vec<CidrOut>,
    pub ipv6_ranges: Vec<Cidr6Out>,
    pub user_id_group_pairs: Vec<PairOut>,
    pub prefix_list_ids: Vec<PrefixListOut>,
}

#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct CidrOut {
    pub cidr_ip: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub description: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct Cidr6Out {
    pub cidr_ipv6: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub description: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct PairOut {
    pub group_id: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub description: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct PrefixListOut {
    pub prefix_list_id: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub description: Option<String>,
}

fn port_fields(proto: Proto, ports: Ports) -> (Option<i64>, Option<i64>) {
    match (proto, ports) {
        (Proto::All, _) | (_, Ports::All) => (None, None),
        (_, Ports::Range(lo, hi)) => (Some(i64::from(lo)), Some(i64::from(hi))),
        (_, Ports::Icmp { icmp_type, code }) => {
            (Some(icmp_type.map_or(-1, i64::from)), Some(code.map_or(-1, i64::from)))
        }
    }
}

/// The rule set as AWS JSON: one permission per (protocol, ports) in first-seen order.
pub fn export(rs: &RuleSet) -> DescribeOut {
    let id_of =
        |name: &str| rs.group(name).and_then(|g| g.aws_id.clone()).unwrap_or_else(|| name.to_string());
    let groups = rs
        .groups
        .iter()
        .map(|g| {
            let perms = |dir: Dir| {
                let mut out: Vec<PermissionOut> = Vec::new();
                for r in g.rules(dir) {
                    let (from_port, to_port) = port_fields(r.proto, r.ports);
                    let proto = r.proto.aws_name();
                    let idx = match out.iter().position(|p| {
                        p.ip_protocol == proto && p.from_port == from_port && p.to_port == to_port
                    }) {
                        Some(i) => i,
                        None => {
                            out.push(PermissionOut {
                                ip_protocol: proto,
                                from_port,
                                to_port,
                                ip_ranges: Vec::new(),
                                ipv6_ranges: Vec::new(),
                                user_id_group_pairs: Vec::new(),
                                prefix_list_ids: Vec::new(),
                            });
                            out.len() - 1
                        }
                    };
                    let p = &mut out[idx];
                    let description = r.description.clone();
                    match &r.peer {
                        Peer::Cidr(n @ ipnet::IpNet::V4(_)) => {
                            p.ip_ranges.push(CidrOut { cidr_ip: n.to_string(), description });
                        }
                        Peer::Cidr(n) => {
                            p.ipv6_ranges.push(Cidr6Out { cidr_ipv6: n.to_string(), description });
                        }
                        Peer::Group(name) => {
                            p.user_id_group_pairs.push(PairOut { group_id: id_of(name), description });
                        }
                        Peer::PrefixList(l) => {
                            p.prefix_list_ids.push(PrefixListOut { prefix_list_id: l.clone(), description });
                        }
                    }
                }
                out
            };
            GroupOut {
                group_id: g.aws_id.clone().unwrap_or_else(|| g.name.clone()),
                group_name: g.name.clone(),
                description: g.description.clone().unwrap_or_default(),
                ip_permissions: perms(Dir::Ingress),
                ip_permissions_egress: perms(Dir::Egress),
            }
        })
        .collect();
    DescribeOut { security_groups: groups }
}

/// The meaning of describe-security-groups JSON, whatever the grouping of permissions:
/// every (group id, direction, protocol, ports, peer, description), plus each group's id,
/// name and description. Two documents are equivalent when their meanings are equal.
pub fn meaning(v: &serde_json::Value) -> std::collections::BTreeSet<String> {
    let mut out = std::collections::BTreeSet::new();
    for g in v["SecurityGroups"].as_array().expect("SecurityGroups") {
        for (dir, key) in [("in", "IpPermissions"), ("out", "IpPermissionsEgress")] {
            for p in g[key].as_array().into_iter().flatten() {
                let head = format!(
                    "{} {dir} {} {} {}",
                    g["GroupId"].as_str().unwrap(),
                    p["IpProtocol"].as_str().unwrap(),
                    p["FromPort"],
                    p["ToPort"]
                );
                for (list, field) in [
                    ("IpRanges", "CidrIp"),
                    ("Ipv6Ranges", "CidrIpv6"),
                    ("UserIdGroupPairs", "GroupId"),
                    ("PrefixListIds", "PrefixListId"),
                ] {
                    for e in p[list].as_array().into_iter().flatten() {
                        out.insert(format!("{head} {list}={} desc={}", e[field], e["Description"]));
                    }
                }
            }
        }
        out.insert(format!("{} name={} desc={}", g["GroupId"], g["GroupName"], g["Description"]));
    }
    out
}
