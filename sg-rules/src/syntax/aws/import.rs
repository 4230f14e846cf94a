//! `describe-security-groups` / `describe-security-group-rules` JSON into the raw form.
//!
//! - Each IpRanges/Ipv6Ranges/UserIdGroupPairs/PrefixListIds entry of a permission is one rule
//!   (AWS counts them so, and each has its own description).
//! - A group is named by its GroupName when that is a valid sgctl name, unique among the
//!   described groups and not another group's id; else by its GroupId (the GroupName is kept as
//!   `aws_name`); a group with neither is `unnamed-N`, with a warning.
//! - A group without `IpPermissionsEgress` keeps AWS's default egress (allow all).
//! - References (UserIdGroupPairs, ReferencedGroupInfo) are kept as written (GroupId, else
//!   GroupName); validation resolves them (`validate::resolve_group`: by GroupId, else by a
//!   GroupName that names one described group, an ambiguous one an error), as it resolves
//!   `--bind` names and a members file's `member_groups`. A pair whose peering is `deleted`
//!   allows nothing (as in AWS): warned and skipped. A referenced group that is not described needs members from
//!   `--members` or `--network-interfaces`, else the file is rejected with how to give them.
//!   A described group whose members no input gives gets `members = []` (it matches nothing,
//!   as a group without network interfaces in AWS) and a warning.
//! - A prefix list no input gives entries for matches nothing, with a warning.
//! - A CIDR with host bits set means its network, with a warning (AWS canonicalizes it).

use std::collections::{BTreeMap, BTreeSet};

use json_spanned_value::Spanned;
use serde::{Deserialize, de::IgnoredAny};

use super::inputs::{self, Cx, Eni, ProtoJ, proto_at};
use crate::{
    AwsContext, Diagnostic, Loc, RuleErrors,
    raw::{At, PortsText, ProtoText, RawBinding, RawGroup, RawPeer, RawPrefixList, RawRule, RawRuleSet},
    toml_front,
};

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct TopT {
    security_groups: Option<Vec<Spanned<GroupT>>>,
    security_group_rules: Option<Vec<Spanned<SgRuleT>>>,
    stale_security_group_set: Option<IgnoredAny>,
    network_acls: Option<IgnoredAny>,
    prefix_lists: Option<IgnoredAny>,
    entries: Option<IgnoredAny>,
    network_interfaces: Option<IgnoredAny>,
    /// `authorize-security-group-*` and `revoke-security-group-*` answer `Return`.
    #[serde(rename = "Return")]
    returned: Option<IgnoredAny>,
    revoked_security_group_rules: Option<IgnoredAny>,
    unknown_ip_permissions: Option<IgnoredAny>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct GroupT {
    group_id: Option<Spanned<String>>,
    group_name: Option<Spanned<String>>,
    description: Option<Spanned<String>>,
    vpc_id: Option<Spanned<String>>,
    owner_id: Option<String>,
    #[serde(default)]
    ip_permissions: Vec<Spanned<PermissionT>>,
    ip_permissions_egress: Option<Vec<Spanned<PermissionT>>>,
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
    user_id: Option<String>,
    peering_status: Option<String>,
    description: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct PrefixListT {
    prefix_list_id: Spanned<String>,
    description: Option<Spanned<String>>,
}

/// One entry of `describe-security-group-rules`.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct SgRuleT {
    group_id: Option<Spanned<String>>,
    group_owner_id: Option<String>,
    is_egress: Option<bool>,
    ip_protocol: Option<Spanned<ProtoJ>>,
    from_port: Option<Spanned<i64>>,
    to_port: Option<Spanned<i64>>,
    cidr_ipv4: Option<Spanned<String>>,
    cidr_ipv6: Option<Spanned<String>>,
    prefix_list_id: Option<Spanned<String>>,
    referenced_group_info: Option<RefGroupT>,
    description: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RefGroupT {
    group_id: Option<Spanned<String>>,
    user_id: Option<String>,
    peering_status: Option<String>,
}

// ---- the shape both inputs are read into ----

struct G {
    loc: Loc,
    id: Option<At<String>>,
    name: Option<At<String>>,
    description: Option<At<String>>,
    vpc: Option<At<String>>,
    owner: Option<String>,
    ingress: Vec<P>,
    /// `None`: AWS's default egress.
    egress: Option<Vec<P>>,
}

struct P {
    loc: Loc,
    proto: Option<At<ProtoText>>,
    ports: Option<At<PortsText>>,
    peers: Vec<(PeerIn, Option<At<String>>)>,
}

enum PeerIn {
    Cidr(At<String>),
    Pair(PairIn),
    PrefixList(At<String>),
}

/// A UserIdGroupPairs / ReferencedGroupInfo entry: where it is, the group it names (GroupId,
/// GroupName), the account that owns it (UserId) and its VPC peering status.
struct PairIn {
    loc: Loc,
    id: Option<At<String>>,
    name: Option<At<String>>,
    user: Option<String>,
    status: Option<String>,
}

/// FromPort/ToPort with their location. AWS writes every port of tcp or udp as 0-65535 and
/// documents -1 only for ICMP types and codes: -1/-1 on tcp or udp is read as all ports, as
/// AWS accepts it, with a warning (hand-written or converted JSON says this, AWS does not).
fn ports_at(
    cx: &Cx<'_>,
    proto: Option<&Spanned<ProtoJ>>,
    from: Option<&Spanned<i64>>,
    to: Option<&Spanned<i64>>,
    warnings: &mut Vec<Diagnostic>,
) -> Option<At<PortsText>> {
    if from.is_none() && to.is_none() {
        return None;
    }
    let name = match proto.map(Spanned::get_ref) {
        Some(ProtoJ::Text(t)) => match t.to_ascii_lowercase().as_str() {
            "tcp" | "6" => Some("tcp"),
            "udp" | "17" => Some("udp"),
            _ => None,
        },
        Some(ProtoJ::Number(6)) => Some("tcp"),
        Some(ProtoJ::Number(17)) => Some("udp"),
        _ => None,
    };
    if let (Some(name), Some(f), Some(t)) = (name, from, to)
        && *f.get_ref() == -1
        && *t.get_ref() == -1
    {
        warnings.push(Diagnostic {
            loc: cx.loc(f.start()),
            msg: format!(
                "{name} with FromPort/ToPort -1: taken as every port (0-65535); AWS itself lists every port as 0-65535 and means -1 only for ICMP, so check where this file came from"
            ),
        });
    }
    let at = from.or(to).map_or(0, Spanned::start);
    Some(At::new(
        PortsText::Pair(from.map_or(-1, |s| *s.get_ref()), to.map_or(-1, |s| *s.get_ref())),
        cx.loc(at),
    ))
}

fn permission(cx: &Cx<'_>, p: &Spanned<PermissionT>, warnings: &mut Vec<Diagnostic>) -> P {
    let loc = cx.loc(p.start());
    let p = p.get_ref();
    let desc = |d: &Option<Spanned<String>>| d.as_ref().map(|d| cx.at(d));
    let mut peers = Vec::new();
    for r in &p.ip_ranges {
        let r = r.get_ref();
        peers.push((PeerIn::Cidr(cx.lenient_cidr(&r.cidr_ip, warnings)), desc(&r.description)));
    }
    for r in &p.ipv6_ranges {
        let r = r.get_ref();
        peers.push((PeerIn::Cidr(cx.lenient_cidr(&r.cidr_ipv6, warnings)), desc(&r.description)));
    }
    for r in &p.user_id_group_pairs {
        let at = cx.loc(r.start());
        let r = r.get_ref();
        peers.push((
            PeerIn::Pair(PairIn {
                loc: at,
                id: r.group_id.as_ref().map(|s| cx.at(s)),
                name: r.group_name.as_ref().map(|s| cx.at(s)),
                user: r.user_id.clone(),
                status: r.peering_status.clone(),
            }),
            desc(&r.description),
        ));
    }
    for r in &p.prefix_list_ids {
        let r = r.get_ref();
        peers.push((PeerIn::PrefixList(cx.at(&r.prefix_list_id)), desc(&r.description)));
    }
    P {
        loc,
        proto: proto_at(cx, p.ip_protocol.as_ref()),
        ports: ports_at(cx, p.ip_protocol.as_ref(), p.from_port.as_ref(), p.to_port.as_ref(), warnings),
        peers,
    }
}

fn from_groups(cx: &Cx<'_>, groups: &[Spanned<GroupT>], warnings: &mut Vec<Diagnostic>) -> Vec<G> {
    groups
        .iter()
        .map(|g| {
            let loc = cx.loc(g.start());
            let g = g.get_ref();
            let perms = |ps: &[Spanned<PermissionT>], w: &mut Vec<Diagnostic>| {
                ps.iter().map(|p| permission(cx, p, w)).collect::<Vec<_>>()
            };
            G {
                loc,
                id: g.group_id.as_ref().map(|s| cx.at(s)),
                name: g.group_name.as_ref().map(|s| cx.at(s)),
                description: g.description.as_ref().map(|s| cx.at(s)),
                vpc: g.vpc_id.as_ref().map(|s| cx.at(s)),
                owner: g.owner_id.clone(),
                ingress: perms(&g.ip_permissions, warnings),
                egress: g.ip_permissions_egress.as_deref().map(|ps| perms(ps, warnings)),
            }
        })
        .collect()
}

/// `describe-security-group-rules`: one rule per entry, grouped by GroupId in first-seen
/// order. The output lists every rule of a group, so a group's egress is what it lists.
fn from_rules(
    cx: &Cx<'_>,
    rules: &[Spanned<SgRuleT>],
    warnings: &mut Vec<Diagnostic>,
    diags: &mut Vec<Diagnostic>,
) -> Vec<G> {
    let mut out: Vec<G> = Vec::new();
    for r in rules {
        let loc = cx.loc(r.start());
        let r = r.get_ref();
        let Some(gid) = &r.group_id else {
            diags.push(Diagnostic { loc, msg: "security group rule without GroupId".into() });
            continue;
        };
        let idx =
            if let Some(i) = out.iter().position(|g| g.id.as_ref().is_some_and(|i| &i.v == gid.get_ref())) {
                i
            } else {
                out.push(G {
                    loc: cx.loc(gid.start()),
                    id: Some(cx.at(gid)),
                    name: None,
                    description: None,
                    vpc: None,
                    owner: r.group_owner_id.clone(),
                    ingress: Vec::new(),
                    egress: Some(Vec::new()),
                });
                out.len() - 1
            };
        let mut peers = Vec::new();
        for c in [&r.cidr_ipv4, &r.cidr_ipv6].into_iter().flatten() {
            peers.push(PeerIn::Cidr(cx.lenient_cidr(c, warnings)));
        }
        if let Some(g) = &r.referenced_group_info {
            peers.push(PeerIn::Pair(PairIn {
                loc: loc.clone(),
                id: g.group_id.as_ref().map(|s| cx.at(s)),
                name: None,
                user: g.user_id.clone(),
                status: g.peering_status.clone(),
            }));
        }
        if let Some(l) = &r.prefix_list_id {
            peers.push(PeerIn::PrefixList(cx.at(l)));
        }
        if peers.len() != 1 {
            diags.push(Diagnostic {
                loc,
                msg: format!(
                    "a security group rule has exactly one of CidrIpv4, CidrIpv6, ReferencedGroupInfo, PrefixListId ({} given)",
                    peers.len()
                ),
            });
            continue;
        }
        let description = r.description.as_ref().map(|d| cx.at(d));
        let p = P {
            loc: loc.clone(),
            proto: proto_at(cx, r.ip_protocol.as_ref()),
            ports: ports_at(cx, r.ip_protocol.as_ref(), r.from_port.as_ref(), r.to_port.as_ref(), warnings),
            peers: peers.into_iter().map(|p| (p, description.clone())).collect(),
        };
        let g = &mut out[idx];
        if r.is_egress == Some(true) {
            g.egress.get_or_insert_with(Vec::new).push(p);
        } else {
            g.ingress.push(p);
        }
    }
    for g in &out {
        if g.egress.as_ref().is_some_and(Vec::is_empty) {
            let id = g.id.as_ref().map_or("?", |i| i.v.as_str());
            warnings.push(Diagnostic {
                loc: g.loc.clone(),
                msg: format!(
                    "group {id} has no egress rule here: it allows no outbound traffic (AWS lists a group's default egress as a rule, so a complete describe-security-group-rules output shows it; a filtered one loses it)"
                ),
            });
        }
    }
    out
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= crate::validate::MAX_NAME
        && !s.starts_with('.')
        && s.chars().all(|c| c.is_ascii_alphanumeric() || "._:@+=-".contains(c))
}

/// Members and entries from `--members`, `--network-interfaces` and `--prefix-lists`.
struct Known {
    file: Option<RawRuleSet>,
    enis: Option<Vec<Eni>>,
    lists: BTreeMap<String, Vec<At<String>>>,
}

impl Known {
    fn read(ctx: &AwsContext, warnings: &mut Vec<Diagnostic>) -> Result<Known, RuleErrors> {
        let file = match &ctx.members {
            Some((name, text)) => Some(members_file(name, text)?),
            None => None,
        };
        let enis = if ctx.network_interfaces.is_empty() {
            None
        } else {
            let mut all = Vec::new();
            for (name, text) in &ctx.network_interfaces {
                all.extend(inputs::network_interfaces(name, text, warnings)?);
            }
            Some(all)
        };
        let mut lists = BTreeMap::new();
        if let Some(f) = &file {
            for l in &f.prefix_lists {
                lists.insert(l.name.v.clone(), l.entries.clone());
            }
        }
        for input in &ctx.prefix_lists {
            for (id, entries) in inputs::prefix_lists(input, warnings)? {
                lists.entry(id).or_insert_with(Vec::new).extend(entries);
            }
        }
        Ok(Known { file, enis, lists })
    }

    /// The members file's group for any of `keys`.
    fn file_group(&self, keys: &[&str]) -> Option<&RawGroup> {
        self.file.as_ref()?.groups.iter().find(|g| keys.contains(&g.name.v.as_str()))
    }

    /// Addresses of the network interfaces in group `id`.
    fn eni_members(&self, id: &str) -> Vec<At<String>> {
        let mut out: Vec<At<String>> = Vec::new();
        for e in self.enis.iter().flatten().filter(|e| e.groups.iter().any(|g| g == id)) {
            for a in &e.addrs {
                if !out.iter().any(|x| x.v == a.v) {
                    out.push(a.clone());
                }
            }
        }
        out
    }

    /// Whether any input speaks for the members of a group with these keys (an ENI input
    /// lists every interface: a group on none of them has no members).
    fn speaks_for(&self, keys: &[&str]) -> bool {
        self.file_group(keys).is_some() || self.enis.is_some()
    }
}

/// A `--members` file: sgctl TOML holding only groups' members (`members`, `member_groups`)
/// and prefix-list entries. A file with rules, network ACLs or interfaces is a rules file given
/// by mistake: what it says beyond members would be dropped without a word, so it is refused.
fn members_file(name: &str, text: &str) -> Result<RawRuleSet, RuleErrors> {
    let f = toml_front::parse(name, text)?;
    let rules = f.groups.iter().find_map(|g| {
        g.ingress.first().map(|r| r.loc.clone()).or_else(|| g.egress.as_ref().map(|_| g.name.loc.clone()))
    });
    let what = rules
        .map(|l| (l, "rules"))
        .or_else(|| f.acls.first().map(|a| (a.name.loc.clone(), "network ACLs")))
        .or_else(|| f.interfaces.first().map(|b| (b.iface.loc.clone(), "[interfaces]")));
    if let Some((loc, what)) = what {
        return Err(RuleErrors::one(
            loc,
            format!(
                "a members file holds only members and prefix-list entries, this one has {what}: it looks like a rules file (apply it as one, or keep only [groups.ID] members = [...] and [prefix_lists.ID] entries = [...])"
            ),
        ));
    }
    Ok(f)
}

/// The name each described group gets, and lookups by id and by AWS name.
struct Names {
    ours: Vec<String>,
    by_id: BTreeMap<String, usize>,
    by_name: BTreeMap<String, Vec<usize>>,
}

impl Names {
    fn new(groups: &[G], warnings: &mut Vec<Diagnostic>) -> Names {
        let mut by_id = BTreeMap::new();
        let mut by_name: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        for (i, g) in groups.iter().enumerate() {
            if let Some(id) = &g.id {
                by_id.entry(id.v.clone()).or_insert(i);
            }
            if let Some(n) = &g.name {
                by_name.entry(n.v.clone()).or_default().push(i);
            }
        }
        let mut unnamed = 0;
        let ours = groups
            .iter()
            .map(|g| match (&g.name, &g.id) {
                (Some(n), _)
                    if valid_name(&n.v)
                        && by_name[&n.v].len() == 1
                        && by_id.get(&n.v).is_none_or(|&i| groups[i].name.as_ref() == Some(n)) =>
                {
                    n.v.clone()
                }
                (_, Some(id)) => id.v.clone(),
                (Some(n), None) => n.v.clone(),
                (None, None) => {
                    unnamed += 1;
                    let name = format!("unnamed-{unnamed}");
                    warnings.push(Diagnostic {
                        loc: g.loc.clone(),
                        msg: format!("security group without GroupId or GroupName: named {name}"),
                    });
                    name
                }
            })
            .collect();
        Names { ours, by_id, by_name }
    }

    /// Whether a described group has this GroupId or GroupName.
    fn describes(&self, key: &str) -> bool {
        self.by_id.contains_key(key) || self.by_name.contains_key(key)
    }

    /// The described group a GroupId or GroupName means; an ambiguous name is an error.
    fn lookup(&self, groups: &[G], key: &str) -> Result<Option<usize>, String> {
        if let Some(&i) = self.by_id.get(key) {
            return Ok(Some(i));
        }
        match self.by_name.get(key).map(Vec::as_slice) {
            None | Some([]) => Ok(None),
            Some([i]) => Ok(Some(*i)),
            Some(many) => {
                let ids: Vec<String> = many
                    .iter()
                    .map(|&i| {
                        let g = &groups[i];
                        let id = g.id.as_ref().map_or("(no GroupId)", |s| s.v.as_str());
                        match &g.vpc {
                            Some(v) => format!("{id} in {}", v.v),
                            None => id.to_string(),
                        }
                    })
                    .collect();
                Err(format!("group name '{key}' is ambiguous: it names {} (use the GroupId)", ids.join(", ")))
            }
        }
    }
}

/// Parses AWS JSON (with bindings, members, network interfaces and prefix lists) into raw
/// rules. Warnings are in the result's `warnings`.
#[expect(clippy::redundant_closure_call, reason = "the conversion closure is called for ingress and egress")]
pub fn parse(file: &str, text: &str, ctx: &AwsContext) -> Result<RawRuleSet, RuleErrors> {
    let cx = Cx::new(file, text);
    let top: TopT = cx.json()?;
    let mut warnings = Vec::new();
    let mut diags = Vec::new();
    let wrong = |what: &str| Err(RuleErrors::one(cx.loc(0), what));
    if top.returned.is_some()
        || top.revoked_security_group_rules.is_some()
        || top.unknown_ip_permissions.is_some()
    {
        return wrong(
            "output of authorize- or revoke-security-group-ingress/-egress: a change to a group (the rules it added or removed), not the group; import `aws ec2 describe-security-groups --group-ids ID` or `aws ec2 describe-security-group-rules --filters Name=group-id,Values=ID` instead",
        );
    }
    let groups = match (&top.security_groups, &top.security_group_rules) {
        (Some(gs), None) => from_groups(&cx, gs, &mut warnings),
        (None, Some(rs)) => from_rules(&cx, rs, &mut warnings, &mut diags),
        (Some(_), Some(_)) => return wrong("both SecurityGroups and SecurityGroupRules: give one per file"),
        (None, None) if top.stale_security_group_set.is_some() => {
            return wrong(
                "describe-stale-security-groups output lists only a group's stale rules, not the group: import describe-security-groups output",
            );
        }
        (None, None) if top.network_acls.is_some() => {
            return wrong(
                "describe-network-acls output: give it with --network-acls FILE beside the security groups (and bind with --bind IFACE=GROUPS,acl-ID)",
            );
        }
        (None, None) if top.prefix_lists.is_some() => {
            return wrong("prefix-list output: give it with --prefix-lists FILE beside the security groups");
        }
        (None, None) if top.entries.is_some() => {
            return wrong(
                "get-managed-prefix-list-entries output: give it with --prefix-lists PL-ID=FILE beside the security groups",
            );
        }
        (None, None) if top.network_interfaces.is_some() => {
            return wrong(
                "describe-network-interfaces output: give it with --network-interfaces beside the security groups",
            );
        }
        (None, None) => {
            return wrong(
                "neither SecurityGroups nor SecurityGroupRules: not the output of describe-security-groups or describe-security-group-rules",
            );
        }
    };
    let known = Known::read(ctx, &mut warnings)?;
    let names = Names::new(&groups, &mut warnings);
    let mut out = RawRuleSet { file: file.to_string(), ..RawRuleSet::default() };
    // Groups referenced but not described, by our name (their id, else their GroupName).
    let mut external: BTreeMap<String, RawGroup> = BTreeMap::new();
    let mut referenced: BTreeSet<String> = BTreeSet::new();
    let mut lists_used: BTreeMap<String, Loc> = BTreeMap::new();

    for (gi, g) in groups.iter().enumerate() {
        let ours = &names.ours[gi];
        let key_loc = g.id.as_ref().or(g.name.as_ref()).map_or_else(|| g.loc.clone(), |k| k.loc.clone());
        let mut raw = RawGroup {
            name: At::new(ours.clone(), key_loc),
            description: g.description.clone(),
            aws_id: g.id.clone(),
            aws_name: g.name.clone().filter(|n| &n.v != ours),
            aws_vpc: g.vpc.clone(),
            members: Vec::new(),
            member_groups: Vec::new(),
            ingress: Vec::new(),
            egress: None,
        };
        let mut convert = |ps: &[P]| {
            let mut rules = Vec::new();
            for p in ps {
                for (peer, description) in &p.peers {
                    let (peer, kind) = match peer {
                        PeerIn::Cidr(c) => (At::new(RawPeer::Cidr(c.v.clone()), c.loc.clone()), "CidrIp"),
                        PeerIn::PrefixList(l) => {
                            lists_used.entry(l.v.clone()).or_insert_with(|| l.loc.clone());
                            (At::new(RawPeer::PrefixList(l.v.clone()), l.loc.clone()), "PrefixListIds")
                        }
                        PeerIn::Pair(pin) => {
                            let loc = &pin.loc;
                            match pair(&names, &known, g, pin) {
                                Ok(Resolved::Stale(msg)) => {
                                    warnings.push(Diagnostic { loc: loc.clone(), msg });
                                    continue;
                                }
                                Ok(Resolved::Group(n, ext)) => {
                                    // For the warning below only: validation resolves `n`.
                                    if let Ok(Some(i)) = names.lookup(&groups, &n) {
                                        referenced.insert(names.ours[i].clone());
                                    }
                                    if let Some(e) = ext {
                                        external.entry(n.clone()).or_insert(*e);
                                    }
                                    (At::new(RawPeer::Group(n), loc.clone()), "UserIdGroupPairs")
                                }
                                Err(msg) => {
                                    // Once per group, at its first reference.
                                    if !diags.iter().any(|d| d.msg == msg) {
                                        diags.push(Diagnostic { loc: loc.clone(), msg });
                                    }
                                    continue;
                                }
                            }
                        }
                    };
                    rules.push(RawRule {
                        loc: peer.loc.clone(),
                        proto: p.proto.clone(),
                        ports: p.ports.clone(),
                        icmp_type: None,
                        icmp_code: None,
                        peer_kinds: vec![At::new(kind, peer.loc.clone())],
                        peers: vec![peer],
                        wrong_direction: Vec::new(),
                        description: description.clone(),
                    });
                }
                if p.peers.is_empty() {
                    diags.push(Diagnostic {
                        loc: p.loc.clone(),
                        msg: "permission without IpRanges, Ipv6Ranges, UserIdGroupPairs or PrefixListIds"
                            .into(),
                    });
                }
            }
            rules
        };
        raw.ingress = convert(&g.ingress);
        raw.egress = g.egress.as_deref().map(&mut convert);
        // Members: the members file (by id or name), then network interfaces (by id).
        let keys: Vec<&str> =
            [g.id.as_ref(), g.name.as_ref()].into_iter().flatten().map(|k| k.v.as_str()).collect();
        if let Some(m) = known.file_group(&keys) {
            raw.members.extend(m.members.iter().cloned());
            raw.member_groups.extend(m.member_groups.iter().cloned());
        }
        if let Some(id) = &g.id {
            raw.members.extend(known.eni_members(&id.v));
        }
        out.groups.push(raw);
    }
    // Member groups of the members file name groups by id or name, as references do:
    // validation resolves them (`validate::resolve_group`).
    // Described groups referenced with no input speaking for their members match nothing.
    for g in &out.groups {
        let keys: Vec<&str> = [Some(&g.name), g.aws_id.as_ref(), g.aws_name.as_ref()]
            .into_iter()
            .flatten()
            .map(|k| k.v.as_str())
            .collect();
        if referenced.contains(&g.name.v)
            && g.members.is_empty()
            && g.member_groups.is_empty()
            && !known.speaks_for(&keys)
        {
            warnings.push(Diagnostic {
                loc: g.name.loc.clone(),
                msg: format!(
                    "group {} is referenced but no input lists its members: it matches nothing until they come from --network-interfaces or --members",
                    g.name.v
                ),
            });
        }
    }
    out.groups.extend(external.into_values());
    for (id, loc) in lists_used {
        let entries = known.lists.get(&id).cloned().unwrap_or_else(|| {
            warnings.push(Diagnostic {
                loc: loc.clone(),
                msg: format!(
                    "prefix list {id} has no known entries: it matches nothing until they come from --prefix-lists {id}=FILE (get-managed-prefix-list-entries) or --prefix-lists FILE (describe-prefix-lists)"
                ),
            });
            Vec::new()
        });
        out.prefix_lists.push(RawPrefixList { name: At::new(id, loc), entries });
    }
    for (file, text) in &ctx.network_acls {
        out.acls.extend(super::nacl::parse(file, text, &mut warnings)?);
    }
    for b in &ctx.bindings {
        let loc = Loc { file: "--bind".into(), line: 1, col: 1 };
        let iface = &b.iface;
        let mut bound = Vec::new();
        let mut acl: Option<At<String>> = None;
        for t in b.names.iter().map(String::as_str) {
            if out.acls.iter().any(|a| a.name.v == t) {
                if let Some(first) = &acl {
                    diags.push(Diagnostic {
                        loc: loc.clone(),
                        msg: format!(
                            "--bind {b}: two network ACLs ({} and {t}): an interface has at most one",
                            first.v
                        ),
                    });
                }
                acl = Some(At::new(t.to_string(), loc.clone()));
                continue;
            }
            // A group's GroupId or GroupName: validation resolves it (`validate::resolve_group`).
            bound.push(At::new(t.to_string(), loc.clone()));
        }
        out.interfaces.push(RawBinding {
            timeouts: Vec::new(),
            no_implicit: 0,
            monitor: None,
            acl,
            iface: At::new(iface.clone(), loc.clone()),
            groups: bound,
        });
    }
    out.warnings = warnings;
    if diags.is_empty() { Ok(out) } else { Err(RuleErrors(diags)) }
}

enum Resolved {
    /// The group as the pair names it (its GroupId, else its GroupName: validation resolves
    /// it against the groups' names, ids and names), and the group to add when it is not
    /// described.
    Group(String, Option<Box<RawGroup>>),
    /// A pair that allows nothing: the warning.
    Stale(String),
}

/// One UserIdGroupPairs / ReferencedGroupInfo entry of group `owner`.
fn pair(names: &Names, known: &Known, owner: &G, pin: &PairIn) -> Result<Resolved, String> {
    let PairIn { loc, id, name, user, status } = pin;
    let (id, name) = (id.as_ref(), name.as_ref());
    let Some(key) = id.or(name) else {
        return Err("UserIdGroupPairs entry without GroupId or GroupName".into());
    };
    if status.as_deref() == Some("deleted") {
        return Ok(Resolved::Stale(format!(
            "stale reference to group {}: its VPC peering connection is deleted, so it allows nothing (as in AWS); skipped",
            key.v
        )));
    }
    // A group described here (by id, or by a name some described group has: an ambiguous one
    // is validation's error): referenced as written.
    if names.describes(&key.v) {
        return Ok(Resolved::Group(key.v.clone(), None));
    }
    // Not described: its members must come from the operator.
    let ours = key.v.clone();
    let keys: Vec<&str> = [id, name].into_iter().flatten().map(|k| k.v.as_str()).collect();
    let mut members = id.map(|i| known.eni_members(&i.v)).unwrap_or_default();
    let mut member_groups = Vec::new();
    if let Some(m) = known.file_group(&keys) {
        members.extend(m.members.iter().cloned());
        member_groups.extend(m.member_groups.iter().cloned());
    }
    if members.is_empty() && member_groups.is_empty() && known.file_group(&keys).is_none() {
        let foreign = match (user, &owner.owner) {
            (Some(u), _) if !u.chars().all(|c| c.is_ascii_digit()) => true,
            (Some(u), Some(o)) => u != o,
            _ => false,
        };
        let how = format!("give them with --members FILE ([groups.\"{}\"] members = [...])", key.v);
        return Err(if foreign {
            format!(
                "group {} of another account (UserId {}) is referenced: AWS does not list its members to this account; {how}",
                key.v,
                user.as_deref().unwrap_or("?")
            )
        } else {
            format!(
                "group {} is referenced but not described: add its describe-security-groups output, or {how} or --network-interfaces FILE",
                key.v
            )
        });
    }
    let group = RawGroup {
        name: At::new(ours.clone(), loc.clone()),
        // Its GroupName (unique nowhere: another account's, or another VPC's) is only a note:
        // the group is keyed by its id, and `export aws` writes the id as its name.
        description: name
            .filter(|n| n.v != ours)
            .map(|n| At::new(format!("GroupName {}, not described here", n.v), n.loc.clone())),
        aws_id: id.cloned(),
        aws_name: None,
        aws_vpc: None,
        members,
        member_groups,
        ingress: Vec::new(),
        egress: Some(Vec::new()),
    };
    Ok(Resolved::Group(ours, Some(Box::new(group))))
}
