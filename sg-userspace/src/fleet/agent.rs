//! The daemon's fleet side (`sgctl daemon --etcd URLS --host NAME`): it reads the policy and
//! the group members at one revision, watches from that revision, and hands the host's rule
//! set to the daemon after every change; it registers the addresses of the host's bound
//! interfaces as members of their groups under a lease it keeps alive; it writes the status
//! the daemon reports into `status/<host>`.
//!
//! When the store is unreachable it says so (`Update::Connected(false)`) and retries with
//! jittered backoff (0.25 s doubling to 10 s); the daemon keeps enforcing what it applied last. A
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
    schema::{self, AllKeys, Key, MemberValue, host_bindings, member_key, status_key, with_members},
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
    pub addresses: Addresses,
}

/// Where the addresses a host registers for its bound interfaces come from.
#[derive(Clone, Debug, Default)]
pub enum Addresses {
    /// The interfaces' own (the daemon): see [`iface_addresses`].
    #[default]
    Interfaces,
    /// Given per interface name: for many simulated hosts in one process (the fleet
    /// benchmark), whose interfaces do not exist.
    Given(BTreeMap<String, Vec<IpAddr>>),
}

impl Addresses {
    fn of(&self, iface: &str) -> Vec<IpAddr> {
        match self {
            Addresses::Interfaces => iface_addresses(iface),
            Addresses::Given(m) => m.get(iface).cloned().unwrap_or_default(),
        }
    }
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

/// The groups bound to the host's interfaces, and the groups and prefix lists their rules name.
fn references(rs: &RuleSet) -> (BTreeSet<&str>, BTreeSet<&str>, BTreeSet<&str>) {
    let bound: BTreeSet<&str> =
        rs.interfaces.iter().flat_map(|b| b.groups.iter().map(String::as_str)).collect();
    let mut peers = BTreeSet::new();
    let mut lists = BTreeSet::new();
    for g in rs.groups.iter().filter(|g| bound.contains(g.name.as_str())) {
        for r in g.ingress.iter().chain(&g.egress) {
            match &r.peer {
                Peer::Group(n) => {
                    peers.insert(n.as_str());
                }
                Peer::PrefixList(n) => {
                    lists.insert(n.as_str());
                }
                Peer::Cidr(_) => {}
            }
        }
    }
    (bound, peers, lists)
}

/// The groups, prefix lists and bindings that decide host traffic: groups bound to its
/// interfaces, plus the groups and prefix lists their rules name. Members (already expanded
/// from `member_groups`) are kept only where a rule names the group, rules only where the
/// group is bound: a host joining group web changes nothing on the web hosts unless a rule
/// of theirs names web. A change elsewhere in the policy leaves this equal, so it is not
/// re-applied.
pub fn relevant(rs: &RuleSet) -> RuleSet {
    let (bound, peers, lists) = references(rs);
    let groups = rs
        .groups
        .iter()
        .filter(|g| bound.contains(g.name.as_str()) || peers.contains(g.name.as_str()))
        .map(|g| {
            let members = if peers.contains(g.name.as_str()) { g.members.clone() } else { Vec::new() };
            let g = Group { members, member_groups: Vec::new(), ..g.clone() };
            if bound.contains(g.name.as_str()) {
                g
            } else {
                Group { ingress: Vec::new(), egress: Vec::new(), description: None, ..g }
            }
        })
        .collect();
    let prefix_lists = rs.prefix_lists.iter().filter(|l| lists.contains(l.name.as_str())).cloned().collect();
    RuleSet { groups, prefix_lists, ..rs.clone() }
}

/// The groups whose members can change the host's rule set: those its bound groups' rules
/// name and, transitively, the groups whose members are members of those (`member_groups`).
pub fn named_groups(rs: &RuleSet) -> BTreeSet<String> {
    let (_, peers, _) = references(rs);
    let mut named: BTreeSet<String> = peers.iter().map(|s| (*s).to_string()).collect();
    let mut todo: Vec<String> = named.iter().cloned().collect();
    while let Some(n) = todo.pop() {
        let Some(g) = rs.groups.iter().find(|g| g.name == n) else { continue };
        for m in &g.member_groups {
            if named.insert(m.clone()) {
                todo.push(m.clone());
            }
        }
    }
    named
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

/// The host's rule set from everything under the prefix at `revision`, and its
/// [`named_groups`].
///
/// With `whole`, the whole policy is validated, as `fleet put` does, so that a stored policy
/// with an error anywhere is rejected whole. Without, only the part that can decide this host
/// (every key but other hosts' bindings) is read: for a change of members only, when the
/// policy is the one validated last (members cannot make a valid policy invalid). With many
/// hosts this is what keeps a membership change from costing every host a parse of every
/// host's bindings.
pub fn host_rules(
    cfg: &AgentConfig,
    failsafe: &[SocketAddr],
    revision: i64,
    all: &AllKeys,
    whole: bool,
) -> Result<(RuleSet, BTreeSet<String>), String> {
    let (mut keys, warnings) = with_members(all);
    for w in warnings {
        log::warn!("fleet: {w}");
    }
    if !whole {
        keys.retain(|k, _| match Key::parse(k) {
            Key::Binding { host, .. } | Key::HostAddresses { host } | Key::HostOther { host } => {
                host == cfg.host
            }
            _ => true,
        });
    }
    let rs = match schema::ruleset(&cfg.schema, revision, &keys) {
        Ok(rs) => rs,
        // Not expected (the whole was valid): say it with the lines of `fleet get`.
        Err(_) if !whole => return host_rules(cfg, failsafe, revision, all, true),
        Err(e) => return Err(e.to_string()),
    }
    .for_host(&cfg.host);
    let named = named_groups(&rs);
    let rs = relevant(&rs);
    if rs.interfaces.is_empty() {
        return Err(format!("the policy binds no interface of host {}", cfg.host));
    }
    Ok((with_failsafe(rs, failsafe), named))
}

/// The `groups` list of a member or binding value (none if it has none).
fn groups_of(value: Option<&str>) -> Vec<String> {
    let Some(v) = value.and_then(|v| serde_json::from_str::<serde_json::Value>(v).ok()) else {
        return Vec::new();
    };
    v.get("groups")
        .and_then(|g| g.as_array())
        .map(|a| a.iter().filter_map(|g| g.as_str().map(str::to_string)).collect())
        .unwrap_or_default()
}

/// Whether a change of key `rel` (from `old` to `new`) can change host `host`'s rule set or
/// its registrations, given the groups whose members it depends on (`None`: unknown, so
/// every change can). Status keys never do; another host's member or binding key only when
/// its groups, before or after, are among `named`.
pub fn concerns(
    host: &str,
    named: Option<&BTreeSet<String>>,
    rel: &str,
    old: Option<&str>,
    new: Option<&str>,
) -> bool {
    let key = Key::parse(rel);
    if matches!(key, Key::Status { .. } | Key::Traffic { .. }) {
        return false;
    }
    let Some(named) = named else { return true };
    let (Key::Member { host: of, .. } | Key::Binding { host: of, .. } | Key::HostOther { host: of }) = key
    else {
        return true;
    };
    of == host || groups_of(old).iter().chain(&groups_of(new)).any(|g| named.contains(g))
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
/// `summaries`: with `--learn`, the observations' bounded summaries to publish at
/// `traffic/<host>` (the latest again after each reconnection).
pub async fn run(
    cfg: AgentConfig,
    updates: mpsc::UnboundedSender<Update>,
    mut status: watch::Receiver<Option<HostStatus>>,
    mut summaries: Option<watch::Receiver<Option<String>>>,
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
            named: None,
            validated: false,
        };
        if let Some(rx) = &mut summaries {
            rx.mark_changed();
        }
        let r = s.run(&mut status, &mut summaries, &resync, &mut up, &mut backoff).await;
        lease = s.lease;
        match r {
            Ok(()) => return,
            Err(SessionEnd::Again(why)) => {
                log::info!("fleet: {why}");
                continue;
            }
            Err(SessionEnd::Lost(why)) => {
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
        // Jittered (x0.5 to x1.5), so that a fleet that lost the store does not come back
        // to it in lockstep, every host reading everything at the same instant.
        tokio::time::sleep(backoff.mul_f64(rand::random_range(0.5..1.5))).await;
        backoff = (backoff * 2).min(Duration::from_secs(10));
    }
}

/// The next observations summary to publish; pends forever when there is none to come
/// (no `--learn`, or the flow logger is gone).
async fn next_summary(rx: &mut Option<watch::Receiver<Option<String>>>) -> String {
    loop {
        let Some(r) = rx.as_mut() else { return std::future::pending().await };
        if r.changed().await.is_err() {
            *rx = None;
            continue;
        }
        if let Some(s) = r.borrow_and_update().clone() {
            return s;
        }
    }
}

/// Why a session with the store ended.
#[derive(Debug, thiserror::Error)]
enum SessionEnd {
    /// Not an outage (SIGHUP, interfaces attached): the next session starts at once.
    #[error("{0}")]
    Again(&'static str),
    /// The store failed or went away: retried with backoff, the last policy keeps enforcing.
    #[error("{0}")]
    Lost(String),
}

impl From<String> for SessionEnd {
    fn from(why: String) -> Self {
        SessionEnd::Lost(why)
    }
}

impl From<&str> for SessionEnd {
    fn from(why: &str) -> Self {
        SessionEnd::Lost(why.to_string())
    }
}

struct Session<'a> {
    cfg: &'a AgentConfig,
    failsafe: &'a [SocketAddr],
    updates: &'a mpsc::UnboundedSender<Update>,
    /// Everything under the prefix, as of the last event seen.
    all: AllKeys,
    lease: Option<i64>,
    /// The lease this session's member keys were written with.
    lease_of_keys: Option<i64>,
    /// The groups whose members the host's rule set depends on (`None`: not known yet, or
    /// the stored policy does not validate).
    named: Option<BTreeSet<String>>,
    /// The policy keys in `all` are the ones last validated whole (no policy key changed
    /// since).
    validated: bool,
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
        summaries: &mut Option<watch::Receiver<Option<String>>>,
        resync: &Notify,
        up: &mut bool,
        backoff: &mut Duration,
    ) -> Result<(), SessionEnd> {
        let mut store = Store::connect(&self.cfg.endpoints, self.cfg.schema.clone()).await.map_err(e)?;
        // Through the store's failover: the first member that answers; streams stay on it.
        let (mut revision, all) = store.read_view().await.map_err(e)?;
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
            .watch(
                prefix.clone(),
                Some(
                    WatchOptions::new()
                        .with_range(self.cfg.schema.view_end())
                        .with_start_revision(revision + 1),
                ),
            )
            .await
            .map_err(ed)?;
        let mut renew =
            tokio::time::interval(Duration::from_secs_f64((self.cfg.lease_ttl as f64 / 3.0).max(0.5)));
        renew.reset();
        loop {
            tokio::select! {
                msg = stream.message() => {
                    let mut resp = msg.map_err(ed)?.ok_or("the watch ended")?;
                    // This response and those already waiting (a burst, such as many hosts
                    // joining, is handled once); then whether any change concerns this host.
                    let mut concerned = false;
                    loop {
                        revision = revision.max(self.take(&resp, &mut concerned)?);
                        match tokio::time::timeout(Duration::ZERO, stream.message()).await {
                            Ok(msg) => resp = msg.map_err(ed)?.ok_or("the watch ended")?,
                            Err(_) => break,
                        }
                    }
                    self.send(Update::Synced).map_err(|()| "daemon gone")?;
                    if concerned {
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
                summary = next_summary(summaries) => {
                    let key = self.cfg.schema.key(&schema::traffic_key(&self.cfg.host));
                    client.put(key, summary, None).await.map_err(ed)?;
                }
                () = resync.notified() => return Err(SessionEnd::Again("SIGHUP: reading everything again")),
            }
        }
    }

    /// Takes the events of one watch response into the view; the revision it brings.
    /// `concerned` is set when an event can change this host's rule set or registrations.
    fn take(&mut self, resp: &etcd_client::WatchResponse, concerned: &mut bool) -> Result<i64, String> {
        if resp.compact_revision() > 0 {
            return Err(format!("watch compacted at revision {}: reading again", resp.compact_revision()));
        }
        if resp.canceled() {
            return Err(format!("watch cancelled: {}", resp.cancel_reason()));
        }
        let mut revision = resp.header().map_or(0, etcd_client::ResponseHeader::revision);
        for ev in resp.events() {
            let Some(kv) = ev.kv() else { continue };
            let Some(rel) = kv.key_str().ok().and_then(|k| self.cfg.schema.rel(k)) else { continue };
            let new = match ev.event_type() {
                EventType::Put => Some(kv.value_str().unwrap_or_default()),
                EventType::Delete => None,
            };
            *concerned |= concerns(
                &self.cfg.host,
                self.named.as_ref(),
                rel,
                self.all.get(rel).map(String::as_str),
                new,
            );
            if schema::is_policy(rel) {
                self.validated = false;
            }
            match new {
                Some(v) => self.all.insert(rel.to_string(), v.to_string()),
                None => self.all.remove(rel),
            };
            revision = revision.max(kv.mod_revision());
        }
        Ok(revision)
    }

    /// Hands the host's rule set to the daemon and waits until it is applied.
    async fn policy(&mut self, revision: i64) -> Result<(), SessionEnd> {
        let rules = match host_rules(self.cfg, self.failsafe, revision, &self.all, !self.validated) {
            Ok((rs, named)) => {
                self.named = Some(named);
                self.validated = true;
                Ok(rs)
            }
            Err(e) => {
                self.named = None;
                self.validated = false;
                Err(e)
            }
        };
        let (done, attached) = oneshot::channel();
        self.send(Update::Policy { revision, rules, done }).map_err(|()| "daemon gone".to_string())?;
        if attached.await.unwrap_or(false) {
            // Connections opened before the attach are not tracked: open new ones (the
            // failsafe rule lets them out).
            return Err(SessionEnd::Again("interfaces attached: connecting again"));
        }
        Ok(())
    }

    /// Makes the store's member keys of this host what its bindings and addresses say.
    async fn register(&mut self, client: &mut etcd_client::Client) -> Result<(), String> {
        let lease = self.lease.ok_or("no lease")?;
        let host = &self.cfg.host;
        let mut want: BTreeMap<String, String> = BTreeMap::new();
        for (iface, groups) in host_bindings(&self.all, host) {
            let v = serde_json::to_string(&MemberValue { groups, addresses: self.cfg.addresses.of(&iface) })
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
                matches!(Key::parse(k), Key::Member { host: h, .. } if h == host.as_str())
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
    fn the_host_part_alone_gives_the_same_rule_set_and_only_the_whole_sees_other_hosts_errors() {
        let rs = crate::rules::parse_str("f.toml", FILE, Format::Toml, &AwsContext::default()).unwrap();
        let mut all: AllKeys = schema::policy_of_file("f.toml", FILE, &rs).unwrap().into_iter().collect();
        all.insert(member_key("web1", "eth0"), r#"{"groups":["web"],"addresses":["198.51.100.7"]}"#.into());
        let cfg = AgentConfig {
            endpoints: Endpoints { urls: Vec::new(), timeout: Duration::from_secs(1), tls: None },
            schema: Schema::new(crate::fleet::DEFAULT_PREFIX).unwrap(),
            host: "db1".into(),
            lease_ttl: 10,
            addresses: Addresses::Interfaces,
        };
        let (whole, named) = host_rules(&cfg, &[], 5, &all, true).unwrap();
        let (part, named2) = host_rules(&cfg, &[], 5, &all, false).unwrap();
        assert_eq!(whole.without_locations(), part.without_locations());
        assert_eq!(named, named2);
        let web = group(&part, "web").unwrap();
        assert!(web.members.contains(&"198.51.100.7/32".parse().unwrap()), "{:?}", web.members);
        // Another host's binding names a group that does not exist: the whole is rejected.
        all.insert("hosts/web9/interfaces/eth0".into(), r#"{"groups":["nosuch"]}"#.into());
        let err = host_rules(&cfg, &[], 6, &all, true).unwrap_err();
        assert!(err.contains("nosuch"), "{err}");
        assert!(host_rules(&cfg, &[], 6, &all, false).is_ok());
    }

    #[test]
    fn only_changes_of_named_groups_concern_a_host() {
        let text = FILE
            .replace(
                "[groups.unused]",
                "[groups.front]\nmember_groups = [\"edge\"]\n[groups.edge]\n[groups.unused]",
            )
            .replace("from_group = \"web\"", "from_group = \"front\"");
        let rs = crate::rules::parse_str("f.toml", &text, Format::Toml, &AwsContext::default()).unwrap();
        let named = named_groups(&rs.for_host("db1"));
        // db's rule names front, whose members include edge's.
        assert_eq!(named.iter().map(String::as_str).collect::<Vec<_>>(), ["edge", "front"]);
        let n = Some(&named);
        let web = Some(r#"{"groups":["web"],"addresses":[]}"#);
        let edge = Some(r#"{"groups":["edge"],"addresses":[]}"#);
        assert!(!concerns("db1", n, "members/web9/eth0", None, web), "web is not named");
        assert!(concerns("db1", n, "members/e1/eth0", None, edge), "edge is, through front");
        assert!(concerns("db1", n, "members/e1/eth0", edge, None), "a member leaving");
        assert!(concerns("db1", n, "hosts/e1/interfaces/eth0", web, edge), "a host moved into edge");
        assert!(!concerns("db1", n, "hosts/w2/interfaces/eth0", None, web));
        assert!(concerns("db1", n, "hosts/db1/interfaces/eth1", None, web), "its own binding");
        assert!(concerns("db1", n, "members/db1/eth0", web, None), "its own registration");
        assert!(concerns("db1", n, "groups/unused", None, Some("{}")), "policy keys always");
        assert!(!concerns("db1", n, "status/db1", None, Some("{}")));
        assert!(concerns("db1", None, "members/web9/eth0", None, web), "unknown: everything");
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
