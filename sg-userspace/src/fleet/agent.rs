//! The daemon's fleet side (`sgctl daemon --etcd URLS --host NAME`): it reads the policy and
//! the group members at one revision, watches from that revision, and hands the host's rule
//! set to the daemon after every change; it registers the addresses of the host's bound
//! interfaces as members of their groups under a lease it keeps alive; it writes the status
//! the daemon reports into `status/<host>`.
//!
//! When the store is unreachable it says so (`Update::Connected(false)`) and retries with
//! backoff (0.25 s doubling to 10 s); the daemon keeps enforcing what it applied last. A
//! compacted or cancelled watch, a lost connection or a lost leader end the session: the next
//! one reads everything again, so it reconciles to the current revision.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, SocketAddr, ToSocketAddrs as _},
    sync::Arc,
    time::Duration,
};

use etcd_client::{EventType, PutOptions, WatchOptions};
use tokio::sync::{Notify, mpsc, oneshot, watch};

use super::{
    Endpoints, Schema, Store,
    schema::{self, AllKeys, MemberValue, host_bindings, member_key, status_key, with_members},
};
use crate::rules::{Group, Loc, Peer, Ports, Proto, Rule, RuleSet, TCP};

/// Name of the group the daemon adds to every bound interface so that its own connections to
/// the store are never cut by the policy it enforces (egress TCP to each endpoint; replies
/// come back as tracked flows). A rules file cannot name it: group names starting with `@`
/// are reserved.
pub const FAILSAFE_GROUP: &str = "@fleet-failsafe";

#[derive(Clone, Debug)]
pub struct AgentConfig {
    pub endpoints: Endpoints,
    pub schema: Schema,
    pub host: String,
    /// Seconds the host's member keys outlive it (etcd lease TTL).
    pub lease_ttl: i64,
}

/// What the agent tells the daemon.
#[derive(Debug)]
pub enum Update {
    /// The host's rule set at `revision`, or why the stored policy cannot be used. The daemon
    /// answers on `done` whether applying it attached interfaces (dropping it means no):
    /// connections opened before an attach are not tracked, so the agent opens new ones.
    Policy { revision: i64, rules: Result<RuleSet, String>, done: oneshot::Sender<bool> },
    /// Reachability of the store changed, with the reason when it was lost.
    Connected { up: bool, why: Option<String> },
    /// The store answered (a read, a watch event or a lease renewal): the view is current.
    Synced,
}

/// What the daemon reports, written to `status/<host>`.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HostStatus {
    /// The policy revision the host enforces: the revision of the change it applied last (a
    /// later revision that leaves this host's rule set as it is is not reported, so that one
    /// change does not make every host write its status).
    pub revision: i64,
    /// The local rule set number (`sgctl status`).
    pub rule_set: u64,
    /// Unix seconds of the last apply or error.
    pub at: u64,
    /// Why the last policy seen was not applied, if it was not.
    pub error: Option<String>,
    pub interfaces: Vec<String>,
}

/// The socket addresses of the endpoints (names resolved once).
pub fn endpoint_addrs(urls: &[String]) -> Vec<SocketAddr> {
    let mut out = Vec::new();
    for u in urls {
        let rest = u.split_once("://").map_or(u.as_str(), |(_, r)| r);
        let hostport = rest.split('/').next().unwrap_or(rest);
        match hostport.to_socket_addrs() {
            Ok(addrs) => out.extend(addrs),
            Err(e) => log::warn!("fleet: cannot resolve {u} for the failsafe rule: {e}"),
        }
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// The groups, prefix lists and bindings that decide host traffic: groups bound to its
/// interfaces, plus the groups and prefix lists their rules name (those keep only their
/// members). A change elsewhere in the policy leaves this equal, so it is not re-applied.
pub fn relevant(rs: &RuleSet) -> RuleSet {
    let bound: BTreeSet<&str> =
        rs.interfaces.iter().flat_map(|b| b.groups.iter().map(String::as_str)).collect();
    let mut peers = BTreeSet::new();
    let mut lists = BTreeSet::new();
    for g in rs.groups.iter().filter(|g| bound.contains(g.name.as_str())) {
        for r in g.ingress.iter().chain(&g.egress) {
            match &r.peer {
                Peer::Group(n) => {
                    peers.insert(n.clone());
                }
                Peer::PrefixList(n) => {
                    lists.insert(n.clone());
                }
                Peer::Cidr(_) => {}
            }
        }
    }
    let groups = rs
        .groups
        .iter()
        .filter(|g| bound.contains(g.name.as_str()) || peers.contains(&g.name))
        .map(|g| {
            // Members (already expanded from member_groups) matter only where a rule names
            // the group; rules only where the group is bound. A host joining group web thus
            // changes nothing on the web hosts unless a rule of theirs names web.
            let (members, member_groups) = if peers.contains(&g.name) {
                (g.members.clone(), Vec::new())
            } else {
                (Vec::new(), Vec::new())
            };
            if bound.contains(g.name.as_str()) {
                Group { members, member_groups, ..g.clone() }
            } else {
                Group {
                    ingress: Vec::new(),
                    egress: Vec::new(),
                    description: None,
                    members,
                    member_groups,
                    ..g.clone()
                }
            }
        })
        .collect();
    let prefix_lists = rs.prefix_lists.iter().filter(|l| lists.contains(&l.name)).cloned().collect();
    RuleSet { groups, prefix_lists, ..rs.clone() }
}

/// Adds the failsafe group (egress TCP to each store endpoint) to every bound interface.
pub fn with_failsafe(mut rs: RuleSet, endpoints: &[SocketAddr]) -> RuleSet {
    if rs.interfaces.is_empty() || endpoints.is_empty() {
        return rs;
    }
    let egress = endpoints
        .iter()
        .enumerate()
        .map(|(index, a)| Rule {
            proto: Proto::Num(TCP),
            ports: Ports::Range(a.port(), a.port()),
            peer: Peer::Cidr(ipnet::IpNet::from(a.ip())),
            description: Some("sgctl daemon to its etcd endpoint (failsafe)".into()),
            index,
            loc: Loc::default(),
        })
        .collect();
    rs.groups.push(Group {
        name: FAILSAFE_GROUP.into(),
        description: Some("added by sgctl daemon --etcd".into()),
        aws_id: None,
        aws_name: None,
        aws_vpc: None,
        members: Vec::new(),
        member_groups: Vec::new(),
        ingress: Vec::new(),
        egress,
        default_egress: false,
        loc: Loc::default(),
    });
    for b in &mut rs.interfaces {
        b.groups.push(FAILSAFE_GROUP.into());
    }
    rs
}

/// The host's rule set from everything under the prefix at `revision`.
pub fn host_rules(
    cfg: &AgentConfig,
    failsafe: &[SocketAddr],
    revision: i64,
    all: &AllKeys,
) -> Result<RuleSet, String> {
    let (keys, warnings) = with_members(all);
    for w in warnings {
        log::warn!("fleet: {w}");
    }
    let rs = schema::ruleset(&cfg.schema, revision, &keys).map_err(|e| e.to_string())?;
    let rs = relevant(&rs.for_host(&cfg.host));
    if rs.interfaces.is_empty() {
        return Err(format!("the policy binds no interface of host {}", cfg.host));
    }
    Ok(with_failsafe(rs, failsafe))
}

/// The addresses a group reference to this host matches: every address of the interface but
/// IPv6 link-local ones.
pub fn iface_addresses(iface: &str) -> Vec<IpAddr> {
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else { return Vec::new() };
    let mut out: Vec<IpAddr> = addrs
        .filter(|a| a.interface_name == iface)
        .filter_map(|a| {
            let s = a.address?;
            if let Some(v4) = s.as_sockaddr_in() {
                return Some(IpAddr::V4(v4.ip()));
            }
            let v6 = s.as_sockaddr_in6()?.ip();
            ((v6.segments()[0] & 0xffc0) != 0xfe80).then_some(IpAddr::V6(v6))
        })
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

/// Runs until the daemon drops its end of `updates`.
pub async fn run(
    cfg: AgentConfig,
    updates: mpsc::UnboundedSender<Update>,
    mut status: watch::Receiver<Option<HostStatus>>,
    resync: Arc<Notify>,
) {
    let failsafe = endpoint_addrs(&cfg.endpoints.urls);
    let mut backoff = Duration::from_millis(250);
    let mut lease: Option<i64> = None;
    let mut up = false;
    loop {
        let mut s = Session {
            cfg: &cfg,
            failsafe: &failsafe,
            updates: &updates,
            all: AllKeys::new(),
            lease,
            lease_of_keys: None,
        };
        let r = s.run(&mut status, &resync, &mut up, &mut backoff).await;
        lease = s.lease;
        match r {
            Ok(()) => return,
            // Not an outage: a new session at once.
            Err(why) if why.starts_with(AGAIN) => {
                log::info!("fleet: {}", &why[AGAIN.len()..]);
                continue;
            }
            Err(why) => {
                if up {
                    log::warn!("fleet: lost the store ({why}); enforcing the last applied policy, retrying");
                    up = false;
                    if updates.send(Update::Connected { up: false, why: Some(why) }).is_err() {
                        return;
                    }
                } else {
                    log::debug!("fleet: store unreachable: {why}; retrying in {backoff:?}");
                }
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(10));
    }
}

/// Marks a session end that is no outage (the next session starts at once).
const AGAIN: &str = "again: ";

struct Session<'a> {
    cfg: &'a AgentConfig,
    failsafe: &'a [SocketAddr],
    updates: &'a mpsc::UnboundedSender<Update>,
    /// Everything under the prefix, as of the last event seen.
    all: AllKeys,
    lease: Option<i64>,
    /// The lease this session's member keys were written with.
    lease_of_keys: Option<i64>,
}

fn e(err: impl std::fmt::Display) -> String {
    err.to_string()
}

/// An etcd error as one line.
#[expect(clippy::needless_pass_by_value, reason = "the shape `map_err` calls")]
fn ed(err: etcd_client::Error) -> String {
    super::store::describe(&err)
}

impl Session<'_> {
    fn send(&self, u: Update) -> Result<(), ()> {
        self.updates.send(u).map_err(|_| ())
    }

    async fn run(
        &mut self,
        status: &mut watch::Receiver<Option<HostStatus>>,
        resync: &Notify,
        up: &mut bool,
        backoff: &mut Duration,
    ) -> Result<(), String> {
        let mut store = Store::connect(&self.cfg.endpoints, self.cfg.schema.clone()).await.map_err(e)?;
        // Through the store's failover: the first member that answers; streams stay on it.
        let (mut revision, all) = store.read_all().await.map_err(e)?;
        self.all = all;
        let mut client = store.client();
        let prefix = self.cfg.schema.prefix().to_string();
        if !*up {
            log::info!("fleet: connected to {} (revision {revision})", store.current_endpoint());
            *up = true;
            self.send(Update::Connected { up: true, why: None }).map_err(|()| "daemon gone")?;
        }
        *backoff = Duration::from_millis(250);
        self.send(Update::Synced).map_err(|()| "daemon gone")?;
        // The lease: the one of a previous session if the store still has it.
        let id = match self.lease {
            Some(id) if client.lease_time_to_live(id, None).await.is_ok_and(|r| r.ttl() > 0) => id,
            _ => {
                let id = client.lease_grant(self.cfg.lease_ttl, None).await.map_err(ed)?.id();
                log::info!("fleet: lease {id:x} granted ({} s)", self.cfg.lease_ttl);
                id
            }
        };
        self.lease = Some(id);
        let (mut keeper, mut alive) = client.lease_keep_alive(id).await.map_err(ed)?;
        self.register(&mut client).await?;
        self.policy(revision).await?;
        let mut stream = client
            .watch(prefix.clone(), Some(WatchOptions::new().with_prefix().with_start_revision(revision + 1)))
            .await
            .map_err(ed)?;
        let mut renew =
            tokio::time::interval(Duration::from_secs_f64((self.cfg.lease_ttl as f64 / 3.0).max(0.5)));
        renew.reset();
        loop {
            tokio::select! {
                msg = stream.message() => {
                    let resp = msg.map_err(ed)?.ok_or("the watch ended")?;
                    if resp.compact_revision() > 0 {
                        return Err(format!("watch compacted at revision {}: reading again", resp.compact_revision()));
                    }
                    if resp.canceled() {
                        return Err(format!("watch cancelled: {}", resp.cancel_reason()));
                    }
                    if resp.events().is_empty() {
                        continue;
                    }
                    // Status keys (every host's, this one's too) do not change the policy.
                    let mut policy_changed = false;
                    for ev in resp.events() {
                        let Some(kv) = ev.kv() else { continue };
                        let Some(rel) = kv.key_str().ok().and_then(|k| self.cfg.schema.rel(k)) else { continue };
                        policy_changed |= !rel.starts_with("status/");
                        match ev.event_type() {
                            EventType::Put => { self.all.insert(rel.to_string(), kv.value_str().unwrap_or_default().to_string()); }
                            EventType::Delete => { self.all.remove(rel); }
                        }
                        revision = revision.max(kv.mod_revision());
                    }
                    if let Some(h) = resp.header() {
                        revision = revision.max(h.revision());
                    }
                    self.send(Update::Synced).map_err(|()| "daemon gone")?;
                    if policy_changed {
                        self.register(&mut client).await?;
                        self.policy(revision).await?;
                    }
                }
                _ = renew.tick() => {
                    keeper.keep_alive().await.map_err(ed)?;
                    let r = alive.message().await.map_err(ed)?.ok_or("lease keepalive ended")?;
                    if r.ttl() <= 0 {
                        log::warn!("fleet: lease {id:x} expired in the store: granting a new one and registering again");
                        self.lease = None;
                        return Err("lease expired".into());
                    }
                    self.send(Update::Synced).map_err(|()| "daemon gone")?;
                }
                changed = status.changed() => {
                    if changed.is_err() {
                        return Ok(());
                    }
                    let st = status.borrow_and_update().clone();
                    if let Some(st) = st {
                        let v = serde_json::to_string(&st).map_err(e)?;
                        client.put(self.cfg.schema.key(&status_key(&self.cfg.host)), v, None).await.map_err(ed)?;
                    }
                }
                () = resync.notified() => return Err(format!("{AGAIN}SIGHUP: reading everything again")),
            }
        }
    }

    /// Hands the host's rule set to the daemon and waits until it is applied.
    async fn policy(&self, revision: i64) -> Result<(), String> {
        let rules = host_rules(self.cfg, self.failsafe, revision, &self.all);
        let (done, attached) = oneshot::channel();
        self.send(Update::Policy { revision, rules, done }).map_err(|()| "daemon gone".to_string())?;
        if attached.await.unwrap_or(false) {
            // Connections opened before the attach are not tracked: open new ones (the
            // failsafe rule lets them out).
            return Err(format!("{AGAIN}interfaces attached: connecting again"));
        }
        Ok(())
    }

    /// Makes the store's member keys of this host what its bindings and addresses say.
    async fn register(&mut self, client: &mut etcd_client::Client) -> Result<(), String> {
        let lease = self.lease.ok_or("no lease")?;
        let host = &self.cfg.host;
        let mut want: BTreeMap<String, String> = BTreeMap::new();
        for (iface, groups) in host_bindings(&self.all, host) {
            let v = serde_json::to_string(&MemberValue { groups, addresses: iface_addresses(&iface) })
                .map_err(e)?;
            want.insert(member_key(host, &iface), v);
        }
        let fresh = self.lease_of_keys != Some(lease);
        for (k, v) in &want {
            if fresh || self.all.get(k) != Some(v) {
                client
                    .put(self.cfg.schema.key(k), v.clone(), Some(PutOptions::new().with_lease(lease)))
                    .await
                    .map_err(ed)?;
                log::info!("fleet: registered {k} {v}");
            }
        }
        let mine: Vec<String> = self
            .all
            .keys()
            .filter(|k| {
                k.starts_with("members/")
                    && k.split('/').nth(1) == Some(host.as_str())
                    && !want.contains_key(*k)
            })
            .cloned()
            .collect();
        for k in mine {
            client.delete(self.cfg.schema.key(&k), None).await.map_err(ed)?;
            log::info!("fleet: unregistered {k}");
        }
        self.lease_of_keys = Some(lease);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::{AwsContext, Format};

    const FILE: &str = r#"
[groups.web]
ingress = [ { proto = "tcp", ports = "80", from = "198.51.100.0/24" } ]
members = ["198.51.100.3/32"]

[groups.db]
ingress = [ { proto = "tcp", ports = "5432", from_group = "web" } ]
members = ["198.51.100.1/32"]

[groups.unused]
ingress = [ { proto = "tcp", ports = "22", from = "203.0.113.0/24" } ]

[prefix_lists.office]
entries = ["203.0.113.0/28"]

[hosts.db1.interfaces.eth0]
groups = ["db"]

[hosts.web1.interfaces.eth0]
groups = ["web"]
"#;

    fn host(name: &str, text: &str) -> RuleSet {
        let rs = crate::rules::parse_str("f.toml", text, Format::Toml, &AwsContext::default()).unwrap();
        relevant(&rs.for_host(name))
    }

    fn group<'a>(rs: &'a RuleSet, name: &str) -> Option<&'a Group> {
        rs.groups.iter().find(|g| g.name == name)
    }

    #[test]
    fn a_host_keeps_its_groups_rules_and_the_members_its_rules_name() {
        let db = host("db1", FILE);
        let names: Vec<&str> = db.groups.iter().map(|g| g.name.as_str()).collect();
        assert_eq!(names, ["web", "db"]);
        // web is named by db's rule: its members stay, its rules go.
        let web = group(&db, "web").unwrap();
        assert_eq!(web.members, ["198.51.100.3/32".parse::<ipnet::IpNet>().unwrap()]);
        assert!(web.ingress.is_empty());
        // db is bound but named by no rule: its rules stay, its members go.
        let d = group(&db, "db").unwrap();
        assert!(d.members.is_empty());
        assert_eq!(d.ingress.len(), 1);
        assert!(db.prefix_lists.is_empty());
    }

    #[test]
    fn a_change_of_members_no_rule_of_the_host_names_leaves_its_rule_set_equal() {
        let more = FILE.replace(
            "members = [\"198.51.100.3/32\"]",
            "members = [\"198.51.100.3/32\", \"198.51.100.4/32\"]",
        );
        // web1 is bound to web; no rule of web names web.
        assert_eq!(host("web1", FILE).without_locations(), host("web1", &more).without_locations());
        // db1's rule names web: it sees the new member.
        assert_ne!(host("db1", FILE).without_locations(), host("db1", &more).without_locations());
        // A group nothing of db1 touches.
        let other = FILE.replace("ports = \"22\"", "ports = \"23\"");
        assert_eq!(host("db1", FILE).without_locations(), host("db1", &other).without_locations());
    }
}
