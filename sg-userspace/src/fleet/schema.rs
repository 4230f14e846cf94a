//! The key schema under a prefix (default `/sgctl/v1/`), and the policy as key/value pairs.
//!
//! | key (after the prefix) | value (JSON) | written by |
//! |---|---|---|
//! | `groups/<group>` | the group's table of the rules file (`description`, `ingress`, `egress`, `members`, `member_groups`) | `fleet put` |
//! | `prefix_lists/<list>` | `{"entries": [...]}` | `fleet put` |
//! | `acls/<acl>` | the network ACL's table (`ingress`, `egress` entries) | `fleet put` |
//! | `quotas` | `{"rules_per_group": N, "groups_per_interface": N}` | `fleet put` |
//! | `fleet` | `{"member_ranges": [...]}`: where registered member addresses must lie | `fleet put` |
//! | `hosts/<host>/interfaces/<iface>` | the interface's table (`groups`, `acl`, `timeouts`, `implicit`, `monitor`) | `fleet put` |
//! | `hosts/<host>/addresses` | `[...]`: the host's pinned addresses (its registrations may add only these) | `fleet put` |
//! | `meta` | `{"keys": N, "written_at": unix seconds}`: the policy's last write | `fleet put` |
//! | `members/<host>/<iface>` | `{"groups": [...], "addresses": [...]}`, under the host's lease | each daemon |
//! | `status/<host>` | the revision the host enforces, when, its error | each daemon |
//! | `traffic/<host>` | with `--learn`: a bounded summary of the flows the host observed (at most [`TRAFFIC_MAX_ENTRIES`], the busiest), for `sgctl fleet learn` | each daemon |
//!
//! The policy is every key of the first eight rows: a rules file's meaning, split so that a
//! change rewrites only the keys it touches, in one transaction (one revision). Reading it back
//! assembles the same TOML document and puts it through the rules file's own parser and
//! validator, so a value written by hand (etcdctl) is checked exactly as a file is.

use std::{collections::BTreeMap, net::IpAddr};

use ipnet::IpNet;

use super::FleetError;
use crate::rules::{AwsContext, Format, Loc, RuleErrors, RuleSet};

/// The default key prefix.
pub const DEFAULT_PREFIX: &str = "/sgctl/v1/";

/// Policy key (after the prefix) -> JSON value.
pub type PolicyKeys = BTreeMap<String, String>;

/// Keys of one store under a prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Schema {
    prefix: String,
}

impl Schema {
    /// `prefix` must start and end with `/`.
    pub fn new(prefix: &str) -> Result<Schema, FleetError> {
        if !prefix.starts_with('/') || !prefix.ends_with('/') || prefix.contains("//") {
            return Err(FleetError::BadPrefix(prefix.to_string()));
        }
        Ok(Schema { prefix: prefix.to_string() })
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The full key of `rel`.
    pub fn key(&self, rel: &str) -> String {
        format!("{}{rel}", self.prefix)
    }

    /// The key relative to the prefix, when `key` is under it.
    pub fn rel<'a>(&self, key: &'a str) -> Option<&'a str> {
        key.strip_prefix(&self.prefix)
    }

    pub fn meta(&self) -> String {
        self.key(META)
    }

    /// The end (exclusive) of a host's view, which starts at the prefix: every key but the
    /// hosts' status keys, which sort after all others. Hosts neither read nor watch each
    /// other's status (with N hosts, every status write would be N deliveries).
    pub fn view_end(&self) -> String {
        self.key(STATUS)
    }
}

/// Where the status keys start (relative); every other key sorts before it but the traffic
/// summaries, which sort after it: hosts watch neither.
pub const STATUS: &str = "status/";

/// Where the hosts' traffic summaries are (relative; `traffic/<host>`).
pub const TRAFFIC: &str = "traffic/";

/// Entries a host's published traffic summary holds at most (about 150 bytes each: well
/// under etcd's default request limit of 1.5 MiB).
pub const TRAFFIC_MAX_ENTRIES: usize = 4_000;

/// The policy's write marker (compared by `fleet put`, so that two puts never interleave).
pub const META: &str = "meta";

/// What a key (relative to the prefix) holds: the one place the key layout above is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Key<'a> {
    Group(&'a str),
    PrefixList(&'a str),
    Acl(&'a str),
    Quotas,
    /// `fleet`: the bounds on registrations (`member_ranges`).
    Fleet,
    /// `hosts/<host>/interfaces/<iface>`: the policy's binding of one interface.
    Binding {
        host: &'a str,
        iface: &'a str,
    },
    /// `hosts/<host>/addresses`: the host's pinned addresses.
    HostAddresses {
        host: &'a str,
    },
    /// Another key under `hosts/<host>/`: policy, which the validator refuses with its key.
    HostOther {
        host: &'a str,
    },
    Meta,
    /// `members/<host>/<iface>`: a daemon's registration.
    Member {
        host: &'a str,
        iface: &'a str,
    },
    /// `status/<host>`: what a daemon enforces.
    Status {
        host: &'a str,
    },
    /// `traffic/<host>`: what a daemon observed (`--learn`).
    Traffic {
        host: &'a str,
    },
    Other,
}

impl<'a> Key<'a> {
    pub fn parse(rel: &'a str) -> Key<'a> {
        let (head, rest) = rel.split_once('/').unwrap_or((rel, ""));
        match (head, rest) {
            ("groups", g) => Key::Group(g),
            ("prefix_lists", l) => Key::PrefixList(l),
            ("acls", a) => Key::Acl(a),
            ("quotas", "") => Key::Quotas,
            ("fleet", "") => Key::Fleet,
            ("meta", "") => Key::Meta,
            ("hosts", rest) => {
                let (host, rest) = rest.split_once('/').unwrap_or((rest, ""));
                match rest.strip_prefix("interfaces/") {
                    Some(iface) if !iface.is_empty() && !iface.contains('/') => Key::Binding { host, iface },
                    _ if rest == "addresses" => Key::HostAddresses { host },
                    _ => Key::HostOther { host },
                }
            }
            ("members", rest) => {
                let (host, iface) = rest.split_once('/').unwrap_or((rest, ""));
                Key::Member { host, iface }
            }
            ("status", host) => Key::Status { host },
            ("traffic", host) => Key::Traffic { host },
            _ => Key::Other,
        }
    }

    /// Whether the key belongs to the policy (as opposed to members, status and meta).
    pub fn is_policy(self) -> bool {
        matches!(
            self,
            Key::Group(_)
                | Key::PrefixList(_)
                | Key::Acl(_)
                | Key::Quotas
                | Key::Fleet
                | Key::Binding { .. }
                | Key::HostAddresses { .. }
                | Key::HostOther { .. }
        )
    }

    /// The host a binding, registration or status key is about.
    pub fn host(self) -> Option<&'a str> {
        match self {
            Key::Binding { host, .. }
            | Key::HostAddresses { host }
            | Key::HostOther { host }
            | Key::Member { host, .. }
            | Key::Status { host }
            | Key::Traffic { host } => Some(host),
            _ => None,
        }
    }
}

/// Whether a relative key belongs to the policy (as opposed to members and status).
pub fn is_policy(rel: &str) -> bool {
    Key::parse(rel).is_policy()
}

fn json(v: &toml::Value) -> String {
    serde_json::to_string(v).expect("a TOML value is JSON")
}

fn tables<'a>(t: &'a toml::Table, key: &str) -> impl Iterator<Item = (&'a String, &'a toml::Value)> {
    t.get(key).and_then(toml::Value::as_table).into_iter().flatten()
}

/// The policy keys of a fleet rules file: `text` must be the TOML file `rs` was read from
/// (validated). A fleet file binds interfaces per host; a top-level `[interfaces]` table is an
/// error at its line.
pub fn policy_of_file(file: &str, text: &str, rs: &RuleSet) -> Result<PolicyKeys, RuleErrors> {
    if let Some(b) = rs.interfaces.first() {
        return Err(RuleErrors::one(
            b.loc.clone(),
            format!(
                "a fleet file binds interfaces per host: write [hosts.HOST.interfaces.{}] instead of [interfaces.{}]",
                b.iface, b.iface
            ),
        ));
    }
    let doc: toml::Table = toml::from_str(text).map_err(|e| {
        RuleErrors::one(Loc { file: file.to_string(), line: 0, col: 0 }, e.message().to_string())
    })?;
    let mut keys = PolicyKeys::new();
    for (name, g) in tables(&doc, "groups") {
        keys.insert(format!("groups/{name}"), json(g));
    }
    for (name, l) in tables(&doc, "prefix_lists") {
        keys.insert(format!("prefix_lists/{name}"), json(l));
    }
    for (name, a) in tables(&doc, "acls") {
        keys.insert(format!("acls/{name}"), json(a));
    }
    if let Some(q) = doc.get("quotas") {
        keys.insert("quotas".into(), json(q));
    }
    if let Some(f) = doc.get("fleet") {
        keys.insert(FLEET.into(), json(f));
    }
    for (host, h) in tables(&doc, "hosts") {
        for (iface, i) in h.as_table().map(|h| tables(h, "interfaces")).into_iter().flatten() {
            keys.insert(binding_key(host, iface), json(i));
        }
        if let Some(a) = h.as_table().and_then(|h| h.get("addresses")) {
            keys.insert(addresses_key(host), json(a));
        }
    }
    Ok(keys)
}

/// A bad key or value in the store.
fn bad(key: &str, why: impl std::fmt::Display) -> FleetError {
    FleetError::BadKey { key: key.to_string(), why: why.to_string() }
}

/// The TOML document the policy keys stand for (what `fleet get` prints).
pub fn document(keys: &PolicyKeys) -> Result<String, FleetError> {
    let mut doc = toml::Table::new();
    for (rel, value) in keys {
        let v: toml::Value = serde_json::from_str(value).map_err(|e| bad(rel, e))?;
        let path: Vec<&str> = rel.split('/').collect();
        let (table_path, leaf): (Vec<&str>, &str) = match path.as_slice() {
            ["quotas"] => (vec![], "quotas"),
            ["fleet"] => (vec![], "fleet"),
            ["hosts", h, "addresses"] => (vec!["hosts", h], "addresses"),
            ["groups" | "prefix_lists" | "acls", g] => (vec![path[0]], g),
            ["hosts", h, "interfaces", i] => (vec!["hosts", h, "interfaces"], i),
            _ => return Err(bad(rel, "not a policy key of this schema")),
        };
        if leaf.is_empty() {
            return Err(bad(rel, "empty name"));
        }
        let mut t = &mut doc;
        for p in table_path {
            t = t
                .entry(p.to_string())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()))
                .as_table_mut()
                .expect("built as tables");
        }
        t.insert(leaf.to_string(), v);
    }
    toml::to_string(&doc).map_err(|e| bad("(all)", e))
}

/// The name errors of a stored policy carry: lines are those of `sgctl fleet get`'s output at
/// that revision.
pub fn source_name(schema: &Schema, revision: i64) -> String {
    format!("etcd:{}@{revision}", schema.prefix())
}

/// The rule set the policy keys stand for, checked as a rules file is.
pub fn ruleset(schema: &Schema, revision: i64, keys: &PolicyKeys) -> Result<RuleSet, FleetError> {
    let text = document(keys)?;
    crate::rules::parse_str(&source_name(schema, revision), &text, Format::Toml, &AwsContext::default())
        .map_err(FleetError::Policy)
}

/// Every key under the prefix (relative key -> value): the policy, members and status.
pub type AllKeys = BTreeMap<String, String>;

/// The relative key of the bounds on registrations.
pub const FLEET: &str = "fleet";

/// The relative key of a host's pinned addresses.
pub fn addresses_key(host: &str) -> String {
    format!("hosts/{host}/addresses")
}

/// Why an address is never a group member, whatever the ranges say: it names no host of the
/// fleet (unspecified, loopback, multicast, broadcast, link-local) or stands for another
/// address (IPv4-mapped IPv6).
pub fn reserved(a: IpAddr) -> Option<&'static str> {
    match a {
        IpAddr::V4(v4) if v4.is_unspecified() => Some("unspecified"),
        IpAddr::V4(v4) if v4.is_loopback() => Some("loopback"),
        IpAddr::V4(v4) if v4.is_multicast() => Some("multicast"),
        IpAddr::V4(v4) if v4.is_broadcast() => Some("broadcast"),
        IpAddr::V4(v4) if v4.is_link_local() => Some("link-local"),
        IpAddr::V6(v6) if v6.is_unspecified() => Some("unspecified"),
        IpAddr::V6(v6) if v6.is_loopback() => Some("loopback"),
        IpAddr::V6(v6) if v6.is_multicast() => Some("multicast"),
        IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some() => Some("IPv4-mapped"),
        IpAddr::V6(v6) if v6.segments()[0] & 0xffc0 == 0xfe80 => Some("link-local"),
        _ => None,
    }
}

/// What bounds the addresses hosts register: the fleet's `member_ranges` (empty: none) and
/// each host's pinned addresses. Read from the stored policy keys (a malformed value bounds
/// nothing here; the policy's validation reports it).
struct Bounds {
    ranges: Vec<IpNet>,
    pinned: BTreeMap<String, Vec<IpNet>>,
}

impl Bounds {
    fn of(all: &AllKeys) -> Bounds {
        let nets = |v: &serde_json::Value| -> Vec<IpNet> {
            v.as_array()
                .into_iter()
                .flatten()
                .filter_map(|n| n.as_str())
                .filter_map(|n| n.parse::<IpNet>().ok().or_else(|| n.parse::<IpAddr>().ok().map(IpNet::from)))
                .collect()
        };
        let ranges = all
            .get(FLEET)
            .and_then(|v| serde_json::from_str::<serde_json::Value>(v).ok())
            .map(|v| nets(&v["member_ranges"]))
            .unwrap_or_default();
        let pinned = all
            .iter()
            .filter_map(|(k, v)| match Key::parse(k) {
                Key::HostAddresses { host } => {
                    Some((host.to_string(), nets(&serde_json::from_str(v).unwrap_or_default())))
                }
                _ => None,
            })
            .collect();
        Bounds { ranges, pinned }
    }

    /// Why `host` may not register `a` (`None`: it may).
    fn refuses(&self, host: &str, a: IpAddr) -> Option<String> {
        if let Some(why) = reserved(a) {
            return Some(format!("{why} addresses are never members"));
        }
        if !self.ranges.is_empty() && !self.ranges.iter().any(|r| r.contains(&a)) {
            return Some("outside the fleet's member_ranges".to_string());
        }
        match self.pinned.get(host) {
            Some(p) if !p.iter().any(|n| n.contains(&a)) => {
                Some(format!("not among host {host}'s pinned addresses"))
            }
            _ => None,
        }
    }
}

/// The relative key of the policy's binding of a host's interface.
pub fn binding_key(host: &str, iface: &str) -> String {
    format!("hosts/{host}/interfaces/{iface}")
}

/// The relative key of a member registration.
/// Keyed by host first, so that an etcd role can let a host write only its own keys
/// (`members/<host>/` and `status/<host>`).
pub fn member_key(host: &str, iface: &str) -> String {
    format!("members/{host}/{iface}")
}

/// The relative key of a host's status.
/// `traffic/<host>`: what the host observed (`daemon --learn` in fleet mode).
pub fn traffic_key(host: &str) -> String {
    format!("{TRAFFIC}{host}")
}

/// Every host's published traffic summary (`traffic/<host>`) in `all`; a value that does not
/// parse is named in the warnings and left out.
pub fn traffic(all: &AllKeys) -> (Vec<(String, crate::rules::learn::Observations)>, Vec<String>) {
    let (mut out, mut warnings) = (Vec::new(), Vec::new());
    for (k, v) in all.range(TRAFFIC.to_string()..).take_while(|(k, _)| k.starts_with(TRAFFIC)) {
        let Key::Traffic { host } = Key::parse(k) else { continue };
        match crate::rules::learn::Observations::from_json(v, usize::MAX) {
            Ok(o) => out.push((host.to_string(), o)),
            Err(e) => warnings.push(format!("{k}: not a traffic summary ({e}); left out")),
        }
    }
    (out, warnings)
}

pub fn status_key(host: &str) -> String {
    format!("{STATUS}{host}")
}

/// A member registration's value.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MemberValue {
    /// The groups the interface is bound to (the policy's `hosts/<host>/interfaces/<iface>`).
    pub groups: Vec<String>,
    pub addresses: Vec<IpAddr>,
}

/// The groups host `host` binds to each of its interfaces, read from the policy keys
/// (interface -> groups); a value that is not a JSON object with a `groups` list binds none.
pub fn host_bindings(all: &AllKeys, host: &str) -> BTreeMap<String, Vec<String>> {
    let start = format!("hosts/{host}/interfaces/");
    all.range(start.clone()..)
        .take_while(|(k, _)| k.starts_with(&start))
        .filter_map(|(k, v)| {
            let iface = &k[start.len()..];
            let groups: Vec<String> = serde_json::from_str::<serde_json::Value>(v)
                .ok()?
                .get("groups")?
                .as_array()?
                .iter()
                .filter_map(|g| g.as_str().map(str::to_string))
                .collect();
            Some((iface.to_string(), groups))
        })
        .collect()
}

/// The policy keys with every registered member added to its group's `members`. A
/// registration `members/<host>/<iface>` counts only for the groups the policy binds to that
/// host's interface: a host cannot join a group by naming it (nor stay in one the policy
/// moved it out of). A registration that does not parse is skipped; both are named in the
/// returned warnings.
pub fn with_members(all: &AllKeys) -> (PolicyKeys, Vec<String>) {
    let mut warnings = Vec::new();
    let bounds = Bounds::of(all);
    let mut added: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (k, v) in all.range("members/".to_string()..).take_while(|(k, _)| k.starts_with("members/")) {
        let m = match serde_json::from_str::<MemberValue>(v) {
            Ok(m) => m,
            Err(e) => {
                warnings.push(format!("member registration {k}: {e}; skipped"));
                continue;
            }
        };
        let Key::Member { host, iface } = Key::parse(k) else { continue };
        let bound = host_bindings(all, host).remove(iface).unwrap_or_default();
        // Each address the bounds refuse is ignored by every host, with a word; the rest of
        // the registration counts.
        let addresses: Vec<IpAddr> = m
            .addresses
            .iter()
            .copied()
            .filter(|a| match bounds.refuses(host, *a) {
                Some(why) => {
                    warnings.push(format!(
                        "member registration {k}: host {host} interface {iface} registered {a}, {why}; ignored"
                    ));
                    false
                }
                None => true,
            })
            .collect();
        for g in m.groups {
            if bound.contains(&g) {
                added.entry(g).or_default().extend(addresses.iter().map(ToString::to_string));
            } else {
                warnings.push(format!(
                    "member registration {k} names group {g}, which the policy does not bind to {host} {iface}; ignored"
                ));
            }
        }
    }
    let mut keys: PolicyKeys =
        all.iter().filter(|(k, _)| is_policy(k)).map(|(k, v)| (k.clone(), v.clone())).collect();
    for (group, addrs) in added {
        let Some(v) = keys.get_mut(&format!("groups/{group}")) else { continue };
        let Ok(serde_json::Value::Object(mut g)) = serde_json::from_str::<serde_json::Value>(v) else {
            continue;
        };
        let members = g.entry("members").or_insert_with(|| serde_json::Value::Array(Vec::new()));
        if let serde_json::Value::Array(list) = members {
            for a in addrs {
                let a = serde_json::Value::String(a);
                if !list.contains(&a) {
                    list.push(a);
                }
            }
        }
        *v = serde_json::Value::Object(g).to_string();
    }
    (keys, warnings)
}

/// One host as `fleet status` shows it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct HostRow {
    pub host: String,
    /// Interfaces the policy binds on it.
    pub interfaces: Vec<String>,
    /// Its daemon holds a live lease (member keys present).
    pub alive: bool,
    /// What its daemon last reported (`None`: never).
    pub status: Option<serde_json::Value>,
}

/// Every host the policy names or that reported a status, in name order.
pub fn host_rows(all: &AllKeys) -> Vec<HostRow> {
    fn row<'a>(rows: &'a mut BTreeMap<String, HostRow>, h: &str) -> &'a mut HostRow {
        rows.entry(h.to_string()).or_insert_with(|| HostRow {
            host: h.to_string(),
            interfaces: Vec::new(),
            alive: false,
            status: None,
        })
    }
    let mut rows: BTreeMap<String, HostRow> = BTreeMap::new();
    for (k, v) in all {
        match Key::parse(k) {
            Key::Binding { host, iface } => row(&mut rows, host).interfaces.push(iface.to_string()),
            Key::Member { host, .. } => row(&mut rows, host).alive = true,
            Key::Status { host } => row(&mut rows, host).status = serde_json::from_str(v).ok(),
            _ => {}
        }
    }
    rows.into_values().collect()
}

/// What `fleet put` changes: keys to write (new or changed) and keys to delete.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct KeyDiff {
    pub added: Vec<String>,
    pub changed: Vec<String>,
    pub removed: Vec<String>,
}

impl KeyDiff {
    pub fn between(old: &PolicyKeys, new: &PolicyKeys) -> KeyDiff {
        let mut d = KeyDiff::default();
        for (k, v) in new {
            match old.get(k) {
                None => d.added.push(k.clone()),
                Some(o) if o != v => d.changed.push(k.clone()),
                Some(_) => {}
            }
        }
        d.removed = old.keys().filter(|k| !new.contains_key(*k)).cloned().collect();
        d
    }

    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.changed.is_empty() && self.removed.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"
[groups.web]
ingress = [ { proto = "tcp", ports = "443", from = "0.0.0.0/0" } ]

[groups.db]
ingress = [ { proto = "tcp", ports = "5432", from_group = "web" } ]
egress = []

[prefix_lists.office]
entries = ["203.0.113.0/28"]

[hosts.db1.interfaces.eth0]
groups = ["db"]

[hosts.web1.interfaces.eth0]
groups = ["web"]
monitor = true
"#;

    fn rs(text: &str) -> RuleSet {
        crate::rules::parse_str("f.toml", text, Format::Toml, &AwsContext::default()).unwrap()
    }

    #[test]
    fn a_file_is_split_into_keys_and_reassembled_to_the_same_rule_set() {
        let keys = policy_of_file("f.toml", FILE, &rs(FILE)).unwrap();
        assert_eq!(
            keys.keys().map(String::as_str).collect::<Vec<_>>(),
            [
                "groups/db",
                "groups/web",
                "hosts/db1/interfaces/eth0",
                "hosts/web1/interfaces/eth0",
                "prefix_lists/office"
            ]
        );
        assert_eq!(keys["hosts/web1/interfaces/eth0"], r#"{"groups":["web"],"monitor":true}"#);
        let schema = Schema::new(DEFAULT_PREFIX).unwrap();
        let back = ruleset(&schema, 7, &keys).unwrap();
        let mut want = rs(FILE).without_locations();
        // Group order is the document's (sorted keys), not the file's.
        want.groups.sort_by(|a, b| a.name.cmp(&b.name));
        let mut got = back.without_locations();
        got.groups.sort_by(|a, b| a.name.cmp(&b.name));
        for (g, w) in got.groups.iter_mut().zip(&mut want.groups) {
            g.loc = w.loc.clone();
        }
        assert_eq!(got, want);
        assert_eq!(back.for_host("db1").interfaces[0].groups, ["db"]);
        assert!(back.for_host("nobody").interfaces.is_empty());
    }

    #[test]
    fn network_acls_are_policy_keys_and_come_back_whole() {
        let text = FILE.replace(
            "[hosts.web1.interfaces.eth0]\ngroups = [\"web\"]\n",
            "[hosts.web1.interfaces.eth0]\ngroups = [\"web\"]\nacl = \"edge\"\n",
        ) + "\n[acls.edge]\ningress = [{ rule = 10, action = \"deny\", proto = \"all\", cidr = \"203.0.113.0/24\" }]\n";
        let keys = policy_of_file("f.toml", &text, &rs(&text)).unwrap();
        assert!(is_policy("acls/edge") && keys.contains_key("acls/edge"), "{keys:?}");
        let back = ruleset(&Schema::new(DEFAULT_PREFIX).unwrap(), 1, &keys).unwrap();
        assert_eq!(back.without_locations().acls, rs(&text).without_locations().acls);
        assert_eq!(back.for_host("web1").iface_acl("eth0").map(|a| a.name.as_str()), Some("edge"));
    }

    #[test]
    fn top_level_interfaces_are_refused_with_their_line() {
        let text = format!("{FILE}\n[interfaces.eth1]\ngroups = [\"web\"]\n");
        let e = policy_of_file("f.toml", &text, &rs(&text)).unwrap_err().to_string();
        assert!(e.starts_with("f.toml:19:") && e.contains("[hosts.HOST.interfaces.eth1]"), "{e}");
    }

    #[test]
    fn stored_values_are_checked_as_a_file_is() {
        let schema = Schema::new(DEFAULT_PREFIX).unwrap();
        let mut keys = PolicyKeys::new();
        keys.insert(
            "groups/web".into(),
            r#"{"ingress":[{"proto":"tcp","ports":"99999","from":"0.0.0.0/0"}]}"#.into(),
        );
        let e = ruleset(&schema, 3, &keys).unwrap_err().to_string();
        assert!(e.starts_with("etcd:/sgctl/v1/@3:") && e.contains("99999"), "{e}");
        keys.insert("groups/web".into(), "{not json".into());
        assert!(matches!(ruleset(&schema, 3, &keys), Err(FleetError::BadKey { .. })));
        let mut keys = PolicyKeys::new();
        keys.insert("hosts/h1/eth0".into(), "{}".into());
        assert!(matches!(document(&keys), Err(FleetError::BadKey { .. })));
    }

    #[test]
    fn registered_members_join_the_groups_their_value_names() {
        let keys = policy_of_file("f.toml", FILE, &rs(FILE)).unwrap();
        let mut all: AllKeys = keys.into_iter().collect();
        // web1 is bound to web: it joins web, not db.
        all.insert(
            member_key("web1", "eth0"),
            r#"{"groups":["web","db"],"addresses":["198.51.100.2","2001:db8::2"]}"#.into(),
        );
        all.insert(member_key("web2", "eth0"), "not json".into());
        all.insert(
            member_key("ghost", "eth0"),
            r#"{"groups":["nosuch"],"addresses":["198.51.100.9"]}"#.into(),
        );
        all.insert(status_key("db1"), r#"{"revision":3}"#.into());
        let (with, warnings) = with_members(&all);
        assert_eq!(warnings.len(), 3, "{warnings:?}");
        assert!(warnings[0].contains("members/ghost/eth0 names group nosuch"), "{warnings:?}");
        assert!(warnings[1].contains("members/web1/eth0 names group db"), "{warnings:?}");
        assert!(warnings[2].contains("members/web2/eth0"), "{warnings:?}");
        let schema = Schema::new(DEFAULT_PREFIX).unwrap();
        let back = ruleset(&schema, 1, &with).unwrap();
        let web = back.groups.iter().find(|g| g.name == "web").unwrap();
        let m: Vec<String> = web.members.iter().map(ToString::to_string).collect();
        assert_eq!(m, ["198.51.100.2/32", "2001:db8::2/128"]);
        let db = back.groups.iter().find(|g| g.name == "db").unwrap();
        assert!(db.members.is_empty(), "{:?}", db.members);
        let rows = host_rows(&all);
        let names: Vec<&str> = rows.iter().map(|r| r.host.as_str()).collect();
        assert_eq!(names, ["db1", "ghost", "web1", "web2"]);
        assert!(rows[0].status.is_some() && !rows[0].alive && rows[0].interfaces == ["eth0"]);
        assert!(rows[2].alive);
    }

    /// The policy bounds what registrations add: reserved addresses never, the fleet's ranges
    /// when given, a pinned host's own addresses only; the rest of a registration counts, and
    /// each ignored address is named with its host and interface. Without ranges, any address
    /// but the reserved ones (as before).
    #[test]
    fn registrations_are_bounded_by_the_policy() {
        let bounded = format!(
            "[fleet]\nmember_ranges = [\"198.51.100.0/28\", \"2001:db8::/64\"]\n\n{FILE}\n[hosts.web2.interfaces.eth0]\ngroups = [\"web\"]\n[hosts.web2]\naddresses = [\"198.51.100.3\"]\n"
        );
        let keys = policy_of_file("f.toml", &bounded, &rs(&bounded)).unwrap();
        assert_eq!(
            keys.get(FLEET).map(String::as_str),
            Some(r#"{"member_ranges":["198.51.100.0/28","2001:db8::/64"]}"#)
        );
        assert_eq!(keys.get(&addresses_key("web2")).map(String::as_str), Some(r#"["198.51.100.3"]"#));
        let schema = Schema::new(DEFAULT_PREFIX).unwrap();
        assert_eq!(
            ruleset(&schema, 1, &keys).unwrap().member_ranges.len(),
            2,
            "the document reads them back"
        );
        let mut all: AllKeys = keys.into_iter().collect();
        all.insert(
            member_key("web1", "eth0"),
            r#"{"groups":["web"],"addresses":["198.51.100.2","203.0.113.66","127.0.0.1","fe80::1","::ffff:198.51.100.2","224.0.0.1","2001:db8::2"]}"#.into(),
        );
        all.insert(
            member_key("web2", "eth0"),
            r#"{"groups":["web"],"addresses":["198.51.100.3","198.51.100.4"]}"#.into(),
        );
        let (with, warnings) = with_members(&all);
        let web = ruleset(&schema, 1, &with).unwrap();
        let m: Vec<String> = web
            .groups
            .iter()
            .find(|g| g.name == "web")
            .unwrap()
            .members
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(m, ["198.51.100.2/32", "198.51.100.3/32", "2001:db8::2/128"]);
        for (addr, why) in [
            ("203.0.113.66", "outside the fleet's member_ranges"),
            ("127.0.0.1", "loopback addresses are never members"),
            ("fe80::1", "link-local addresses are never members"),
            ("::ffff:198.51.100.2", "IPv4-mapped addresses are never members"),
            ("224.0.0.1", "multicast addresses are never members"),
        ] {
            assert!(
                warnings
                    .iter()
                    .any(|w| w.contains(&format!("host web1 interface eth0 registered {addr}, {why}"))),
                "{addr}: {warnings:?}"
            );
        }
        assert!(
            warnings.iter().any(|w| w.contains(
                "host web2 interface eth0 registered 198.51.100.4, not among host web2's pinned addresses"
            )),
            "{warnings:?}"
        );
        assert_eq!(warnings.len(), 6, "{warnings:?}");
        // Without ranges: any address but the reserved ones, as before.
        let open = policy_of_file("f.toml", FILE, &rs(FILE)).unwrap();
        let mut all: AllKeys = open.into_iter().collect();
        all.insert(
            member_key("web1", "eth0"),
            r#"{"groups":["web"],"addresses":["203.0.113.66","127.0.0.1"]}"#.into(),
        );
        let (with, warnings) = with_members(&all);
        let m = ruleset(&schema, 1, &with)
            .unwrap()
            .groups
            .iter()
            .find(|g| g.name == "web")
            .unwrap()
            .members
            .clone();
        assert_eq!(m, ["203.0.113.66/32".parse::<IpNet>().unwrap()]);
        assert_eq!(warnings.len(), 1, "{warnings:?}");
    }

    #[test]
    fn diff_names_added_changed_and_removed_keys() {
        let old: PolicyKeys = [("a".into(), "1".into()), ("b".into(), "2".into())].into();
        let new: PolicyKeys = [("b".into(), "3".into()), ("c".into(), "4".into())].into();
        let d = KeyDiff::between(&old, &new);
        assert_eq!((d.added, d.changed, d.removed), (vec!["c".into()], vec!["b".into()], vec!["a".into()]));
        assert!(KeyDiff::between(&new, &new).is_empty());
    }

    #[test]
    fn every_key_but_status_sorts_before_the_status_keys() {
        let keys = policy_of_file("f.toml", FILE, &rs(FILE)).unwrap();
        let mut all: Vec<String> = keys.into_keys().collect();
        all.extend([
            META.to_string(),
            member_key("zz", "zz"),
            "quotas".to_string(),
            "prefix_lists/zz".to_string(),
        ]);
        for k in all {
            assert!(k.as_str() < STATUS, "{k} sorts after {STATUS}");
        }
        assert!(status_key("a").as_str() >= STATUS);
    }

    #[test]
    fn keys_are_read_as_the_layout_says() {
        assert_eq!(Key::parse("groups/web"), Key::Group("web"));
        assert_eq!(Key::parse(&binding_key("db1", "eth0")), Key::Binding { host: "db1", iface: "eth0" });
        assert_eq!(Key::parse("hosts/db1/other"), Key::HostOther { host: "db1" });
        assert_eq!(Key::parse(&member_key("web1", "eth0")), Key::Member { host: "web1", iface: "eth0" });
        assert_eq!(Key::parse(&status_key("web1")), Key::Status { host: "web1" });
        assert_eq!(Key::parse("quotas"), Key::Quotas);
        assert_eq!(Key::parse(META), Key::Meta);
        assert_eq!(Key::parse("nonsense"), Key::Other);
        assert!(Key::parse("hosts/db1/other").is_policy() && !Key::parse("members/a/b").is_policy());
        assert_eq!(Key::parse("members/web1/eth0").host(), Some("web1"));
    }

    #[test]
    fn prefixes_must_be_absolute_directories() {
        for p in ["sgctl/", "/sgctl", "/a//b/"] {
            assert!(Schema::new(p).is_err(), "{p}");
        }
        assert_eq!(Schema::new("/x/").unwrap().key("meta"), "/x/meta");
    }
}
