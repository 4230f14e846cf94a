//! A checked rule set written as `aws ec2 describe-security-groups` JSON (`sgctl export aws`).
//! `import aws` reads it back to the same rule set (a test holds every real fixture to that).

use serde::{Deserialize, Serialize};

use crate::{Dir, Peer, Ports, Proto, RuleSet};

/// `describe-security-groups` output, as sgctl writes it.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct DescribeOut {
    pub security_groups: Vec<GroupOut>,
}

#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct GroupOut {
    /// Absent for a group that had none (EC2-Classic, documentation fragments).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub group_id: Option<String>,
    pub group_name: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub description: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub vpc_id: Option<String>,
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

/// The GroupId `export` writes for group `name`: its AWS id, else its name.
pub fn export_id(rs: &RuleSet, name: &str) -> String {
    rs.group(name).and_then(|g| g.aws_id.clone()).unwrap_or_else(|| name.to_string())
}

/// The bindings as `import aws --bind` values (IFACE=GroupIds[,ACL id]): AWS JSON of groups
/// cannot hold them.
pub fn bindings(rs: &RuleSet) -> Vec<crate::AwsBinding> {
    rs.interfaces
        .iter()
        .map(|b| {
            let mut names: Vec<String> = b.groups.iter().map(|g| export_id(rs, g)).collect();
            if let Some(a) = b.acl.as_ref().and_then(|a| rs.acls.iter().find(|x| &x.name == a)) {
                names.push(a.aws_id.clone().unwrap_or_else(|| a.name.clone()));
            }
            crate::AwsBinding { iface: b.iface.clone(), names }
        })
        .collect()
}

/// The `import aws` line that reads the export and its members file back to this rule set.
pub fn import_hint(rs: &RuleSet, members: &std::path::Path) -> String {
    let acls = if rs.acls.is_empty() { "" } else { " --network-acls ACLS.json (sgctl export aws-acls)" };
    let binds: Vec<String> = bindings(rs).iter().map(|b| format!(" --bind {b}")).collect();
    format!(
        "wrote members and prefix-list entries to {m}; read back with: sgctl import aws GROUPS.json --members {m}{acls}{}",
        binds.concat(),
        m = members.display(),
    )
}

/// The rule set as AWS JSON: one permission per (protocol, ports) in first-seen order.
pub fn export(rs: &RuleSet) -> DescribeOut {
    let id_of = |name: &str| export_id(rs, name);
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
                group_id: g.aws_id.clone(),
                group_name: g.aws_name.clone().unwrap_or_else(|| g.name.clone()),
                description: g.description.clone(),
                vpc_id: g.aws_vpc.clone(),
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
    for g in v["SecurityGroups"].as_array().into_iter().flatten() {
        for (dir, key) in [("in", "IpPermissions"), ("out", "IpPermissionsEgress")] {
            for p in g[key].as_array().into_iter().flatten() {
                let head = format!(
                    "{} {dir} {} {} {}",
                    g["GroupId"].as_str().or(g["GroupName"].as_str()).unwrap_or("-"),
                    p["IpProtocol"].as_str().unwrap_or("-"),
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
