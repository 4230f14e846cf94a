//! Network-namespace fixture: two namespaces joined by one veth pair.
//!
//! Network rule: both ends of the veth are inside namespaces created here; addresses only from
//! 192.0.2.0/24 and 2001:db8::/32; no default route; everything is deleted on drop (also when
//! a test panics), including sgctl's pins for these namespaces.

use std::{
    fs::File,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::PathBuf,
    process::{Command, Output},
    sync::atomic::{AtomicU32, Ordering},
};

use nix::sched::{CloneFlags, setns};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Which end of the pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// The protected host (sgctl attaches here in most tests).
    A,
    /// The peer.
    B,
}

pub struct NetnsPair {
    pub ns_a: String,
    pub ns_b: String,
    /// Interface in `ns_a`.
    pub if_a: String,
    /// Interface in `ns_b`.
    pub if_b: String,
    pub v4_a: Ipv4Addr,
    pub v4_b: Ipv4Addr,
    pub v6_a: Ipv6Addr,
    pub v6_b: Ipv6Addr,
}

pub(crate) fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip").args(args).output().map_err(|e| format!("ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()))
    }
}

impl NetnsPair {
    /// Creates the namespaces, the veth pair, addresses (v4 /24 and v6 /64) and brings all up.
    pub fn new() -> Self {
        Self::with_queues(1)
    }

    /// As [`NetnsPair::new`], with `queues` RX and TX queues on each end of the veth (the
    /// traffic benchmark sends from one queue per CPU).
    pub fn with_queues(queues: usize) -> Self {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let id = format!("{}x{n}", std::process::id());
        let pair = NetnsPair {
            ns_a: format!("sgt-{id}-a"),
            ns_b: format!("sgt-{id}-b"),
            if_a: format!("s{id}a"),
            if_b: format!("s{id}b"),
            v4_a: Ipv4Addr::new(192, 0, 2, 1),
            v4_b: Ipv4Addr::new(192, 0, 2, 2),
            v6_a: "2001:db8::1".parse().expect("v6"),
            v6_b: "2001:db8::2".parse().expect("v6"),
        };
        assert!(pair.if_a.len() < 16, "interface name too long: {}", pair.if_a);
        if let Err(e) = pair.setup(queues) {
            drop(pair);
            panic!("netns fixture: {e}");
        }
        pair
    }

    fn setup(&self, queues: usize) -> Result<(), String> {
        ip(&["netns", "add", &self.ns_a])?;
        ip(&["netns", "add", &self.ns_b])?;
        for ns in [&self.ns_a, &self.ns_b] {
            quiet_ipv6(ns)?;
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
        }
        let q = queues.to_string();
        let qs = ["numtxqueues", q.as_str(), "numrxqueues", q.as_str()];
        let mut add = vec!["link", "add", &self.if_a, "netns", &self.ns_a];
        add.extend(qs);
        add.extend(["type", "veth", "peer", "name", &self.if_b, "netns", &self.ns_b]);
        add.extend(qs);
        ip(&add)?;
        for (ns, ifn, v4, v6) in
            [(&self.ns_a, &self.if_a, self.v4_a, self.v6_a), (&self.ns_b, &self.if_b, self.v4_b, self.v6_b)]
        {
            ip(&["-n", ns, "addr", "add", &format!("{v4}/24"), "dev", ifn])?;
            ip(&["-n", ns, "addr", "add", &format!("{v6}/64"), "dev", ifn, "nodad"])?;
            ip(&["-n", ns, "link", "set", ifn, "up"])?;
        }
        settle(&[(&self.ns_a, &self.if_a), (&self.ns_b, &self.if_b)])
    }

    pub fn ns(&self, side: Side) -> &str {
        match side {
            Side::A => &self.ns_a,
            Side::B => &self.ns_b,
        }
    }

    pub fn iface(&self, side: Side) -> &str {
        match side {
            Side::A => &self.if_a,
            Side::B => &self.if_b,
        }
    }

    pub fn addr(&self, side: Side, v6: bool) -> IpAddr {
        match (side, v6) {
            (Side::A, false) => IpAddr::V4(self.v4_a),
            (Side::B, false) => IpAddr::V4(self.v4_b),
            (Side::A, true) => IpAddr::V6(self.v6_a),
            (Side::B, true) => IpAddr::V6(self.v6_b),
        }
    }

    /// Runs `f` on a thread that has entered `side`'s network namespace.
    pub fn run<T: Send + 'static>(&self, side: Side, f: impl FnOnce() -> T + Send + 'static) -> T {
        run_in_ns(self.ns(side), f)
    }

    /// Starts `f` on a thread inside `side`'s network namespace.
    pub fn run_spawn<T: Send + 'static>(
        &self,
        side: Side,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> std::thread::JoinHandle<T> {
        spawn_in_ns(self.ns(side), f)
    }

    /// Sends `n` datagrams from B to A's `port` (IPv4); returns how many A received.
    pub fn udp_delivered(&self, port: u16, n: u32) -> u32 {
        let addr = std::net::SocketAddr::new(self.addr(Side::A, false), port);
        let rx = self.run(Side::A, move || {
            let s = std::net::UdpSocket::bind(addr).expect("bind");
            s.set_read_timeout(Some(std::time::Duration::from_millis(300))).expect("timeout");
            s
        });
        self.run(Side::B, move || {
            let s = std::net::UdpSocket::bind("0.0.0.0:0").expect("bind");
            for _ in 0..n {
                s.send_to(b"probe", addr).expect("send");
            }
        });
        let mut got = 0;
        let mut buf = [0u8; 16];
        while rx.recv(&mut buf).is_ok() {
            got += 1;
        }
        got
    }

    /// Runs `sgctl ARGS` inside `side`'s namespace.
    pub fn sgctl(&self, side: Side, args: &[&str]) -> Output {
        let bin = crate::sgctl_path();
        let args: Vec<String> = args.iter().map(|s| (*s).to_string()).collect();
        self.run(side, move || Command::new(bin).args(&args).output().expect("spawn sgctl"))
    }

    /// `sgctl ARGS` that must succeed; returns stdout.
    pub fn sgctl_ok(&self, side: Side, args: &[&str]) -> String {
        let out = self.sgctl(side, args);
        assert!(
            out.status.success(),
            "sgctl {} failed: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `sgctl status --json` in A, parsed.
    pub fn status_json(&self) -> serde_json::Value {
        serde_json::from_str(&self.sgctl_ok(Side::A, &["status", "--json"])).expect("status --json is JSON")
    }

    /// Any other command inside `side`'s namespace.
    pub fn cmd(&self, side: Side, program: &str, args: &[&str]) -> Output {
        let program = program.to_string();
        let args: Vec<String> = args.iter().map(|s| (*s).to_string()).collect();
        self.run(side, move || Command::new(program).args(&args).output().expect("spawn"))
    }

    /// Cookie of `side`'s namespace (sgctl keys its pins and state by it).
    pub fn cookie(&self, side: Side) -> Option<u64> {
        let path = format!("/run/netns/{}", self.ns(side));
        if !std::path::Path::new(&path).exists() {
            return None;
        }
        self.run(side, || sg_userspace::pins::current_netns_cookie().ok())
    }

    /// sgctl's pin directory for `side`'s namespace.
    pub fn pin_dir(&self, side: Side) -> Option<PathBuf> {
        self.cookie(side).map(sg_userspace::pins::netns_dir_for)
    }
}

impl Default for NetnsPair {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for NetnsPair {
    fn drop(&mut self) {
        for side in [Side::A, Side::B] {
            if let Some(cookie) = self.cookie(side) {
                let _ = std::fs::remove_dir_all(sg_userspace::pins::netns_dir_for(cookie));
                let _ = std::fs::remove_dir_all(sg_userspace::state::state_dir_for(cookie));
            }
        }
        // Deleting a namespace deletes its end of the veth, which deletes the pair.
        let _ = ip(&["netns", "del", &self.ns_a]);
        let _ = ip(&["netns", "del", &self.ns_b]);
    }
}

/// Runs `f` on a new thread inside the named namespace (`/run/netns/NAME`).
/// Only that thread changes namespace; /sys stays as it is (unlike `ip netns exec`).
/// IPv6 settings of a fresh namespace, before any link exists: no duplicate address
/// detection (fresh addresses are usable at once), and MLD reports sent at once (1 jiffy
/// instead of a random delay up to 1 s, twice): the reports a link sends when it comes up
/// are over before a test attaches, instead of being counted as drops in the middle of it.
pub(crate) fn quiet_ipv6(ns: &str) -> Result<(), String> {
    for key in ["all", "default"] {
        for (name, value) in [
            ("accept_dad", "0"),
            ("mldv1_unsolicited_report_interval", "0"),
            ("mldv2_unsolicited_report_interval", "0"),
        ] {
            let path = format!("/proc/sys/net/ipv6/conf/{key}/{name}");
            run_in_ns(ns, move || std::fs::write(&path, value).map_err(|e| format!("{path}: {e}")))?;
        }
    }
    Ok(())
}

/// Packets received and sent on `ifname` in `ns` (`/proc/thread-self/net/dev`, read from a
/// thread inside the namespace).
fn link_packets(ns: &str, ifname: &str) -> Result<u64, String> {
    let name = format!("{ifname}:");
    run_in_ns(ns, move || {
        let text = std::fs::read_to_string("/proc/thread-self/net/dev").map_err(|e| e.to_string())?;
        let line = text.lines().find(|l| l.trim_start().starts_with(&name)).ok_or("no such link")?;
        let f: Vec<u64> = line
            .split_once(':')
            .map_or("", |(_, r)| r)
            .split_whitespace()
            .filter_map(|v| v.parse().ok())
            .collect();
        // rx: bytes packets errs drop fifo frame compressed multicast; then tx: bytes packets.
        Ok(f.get(1).copied().unwrap_or(0) + f.get(9).copied().unwrap_or(0))
    })
}

/// Waits until IPv6 is up on every link and quiet. The kernel's linkwatch runs addrconf on a
/// new veth up to a second after `link set up`; the link-local address then appears, and at
/// once a router solicitation and four multicast listener reports (hop limit 1, so not implicit
/// NDP: an sgctl with no rule for them counts `no_rule` drops) go out. A test that reads
/// counters must start after that burst: wait for every link-local address (bounded 5 s), then
/// for the links' packet counts to stay still for 200 ms (bounded 3 s).
pub(crate) fn settle(links: &[(&str, &str)]) -> Result<(), String> {
    use std::time::{Duration, Instant};
    let start = Instant::now();
    for (ns, ifname) in links {
        loop {
            let out = Command::new("ip")
                .args(["-n", ns, "-6", "-o", "addr", "show", "dev", ifname, "scope", "link"])
                .output()
                .map_err(|e| format!("ip: {e}"))?;
            if String::from_utf8_lossy(&out.stdout).contains("fe80") {
                break;
            }
            if start.elapsed() > Duration::from_secs(5) {
                return Err(format!("{ns}/{ifname}: no IPv6 link-local address after 5 s"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let count = || links.iter().map(|(ns, ifn)| link_packets(ns, ifn)).sum::<Result<u64, String>>();
    let (mut last, mut still_since, quiet_from) = (count()?, Instant::now(), Instant::now());
    while still_since.elapsed() < Duration::from_millis(200) && quiet_from.elapsed() < Duration::from_secs(3)
    {
        std::thread::sleep(Duration::from_millis(20));
        let now = count()?;
        if now != last {
            (last, still_since) = (now, Instant::now());
        }
    }
    Ok(())
}

pub fn run_in_ns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    match spawn_in_ns(ns, f).join() {
        Ok(v) => v,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// Starts `f` on a new thread inside the named namespace; join the handle for its result.
pub fn spawn_in_ns<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::thread::JoinHandle<T> {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
        setns(&file, CloneFlags::CLONE_NEWNET).unwrap_or_else(|e| panic!("setns {path}: {e}"));
        f()
    })
}

/// Three namespaces in a line, A — R — B, R routing between two subnets (no default routes):
/// A 192.0.2.1 / 2001:db8:1::1, R 192.0.2.254 and 198.51.100.254 / 2001:db8:1::fe and
/// 2001:db8:2::fe, B 198.51.100.2 / 2001:db8:2::2. For path-MTU tests: `set_middle_mtu`
/// lowers the MTU of R's interface towards B only, so R has to send frag-needed /
/// packet-too-big to A (an endpoint with a small MTU would only advertise a small MSS).
pub struct Routed {
    pub ns_a: String,
    pub ns_r: String,
    pub ns_b: String,
    /// A's interface (towards R).
    pub if_a: String,
    /// R's interface towards B.
    pub if_rb: String,
    names: Vec<String>,
}

impl Routed {
    pub fn new() -> Self {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let id = format!("{}r{n}", std::process::id());
        let r = Routed {
            ns_a: format!("sgt-{id}-a"),
            ns_r: format!("sgt-{id}-r"),
            ns_b: format!("sgt-{id}-b"),
            if_a: format!("s{id}a"),
            if_rb: format!("s{id}q"),
            names: Vec::new(),
        };
        let mut r = r;
        r.names = vec![r.ns_a.clone(), r.ns_r.clone(), r.ns_b.clone()];
        if let Err(e) = r.setup(&id) {
            drop(r);
            panic!("routed netns fixture: {e}");
        }
        r
    }

    fn setup(&self, id: &str) -> Result<(), String> {
        for ns in &self.names {
            ip(&["netns", "add", ns])?;
            quiet_ipv6(ns)?;
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
        }
        let if_ra = format!("s{id}p");
        let if_b = format!("s{id}b");
        ip(&[
            "link", "add", &self.if_a, "netns", &self.ns_a, "type", "veth", "peer", "name", &if_ra, "netns",
            &self.ns_r,
        ])?;
        ip(&[
            "link",
            "add",
            &self.if_rb,
            "netns",
            &self.ns_r,
            "type",
            "veth",
            "peer",
            "name",
            &if_b,
            "netns",
            &self.ns_b,
        ])?;
        let addrs = [
            (&self.ns_a, &self.if_a, "192.0.2.1/24", "2001:db8:1::1/64"),
            (&self.ns_r, &if_ra, "192.0.2.254/24", "2001:db8:1::fe/64"),
            (&self.ns_r, &self.if_rb, "198.51.100.254/24", "2001:db8:2::fe/64"),
            (&self.ns_b, &if_b, "198.51.100.2/24", "2001:db8:2::2/64"),
        ];
        for (ns, ifn, v4, v6) in addrs {
            ip(&["-n", ns, "addr", "add", v4, "dev", ifn])?;
            ip(&["-n", ns, "addr", "add", v6, "dev", ifn, "nodad"])?;
            ip(&["-n", ns, "link", "set", ifn, "up"])?;
        }
        for key in ["net/ipv4/ip_forward", "net/ipv6/conf/all/forwarding"] {
            let path = format!("/proc/sys/{key}");
            run_in_ns(&self.ns_r, move || std::fs::write(&path, "1").map_err(|e| e.to_string()))?;
        }
        ip(&["-n", &self.ns_a, "route", "add", "198.51.100.0/24", "via", "192.0.2.254"])?;
        ip(&["-n", &self.ns_a, "-6", "route", "add", "2001:db8:2::/64", "via", "2001:db8:1::fe"])?;
        ip(&["-n", &self.ns_b, "route", "add", "192.0.2.0/24", "via", "198.51.100.254"])?;
        ip(&["-n", &self.ns_b, "-6", "route", "add", "2001:db8:1::/64", "via", "2001:db8:2::fe"])?;
        settle(&[
            (&self.ns_a, &self.if_a),
            (&self.ns_r, &if_ra),
            (&self.ns_r, &self.if_rb),
            (&self.ns_b, &if_b),
        ])
    }

    /// Lowers the MTU of R's interface towards B.
    pub fn set_middle_mtu(&self, mtu: u32) {
        ip(&["-n", &self.ns_r, "link", "set", &self.if_rb, "mtu", &mtu.to_string()]).expect("set mtu");
    }

    /// Runs `sgctl ARGS` inside A.
    pub fn sgctl_a(&self, args: &[&str]) -> String {
        let bin = crate::sgctl_path();
        let args_v: Vec<String> = args.iter().map(|s| (*s).to_string()).collect();
        let out =
            run_in_ns(&self.ns_a, move || Command::new(bin).args(&args_v).output().expect("spawn sgctl"));
        assert!(out.status.success(), "sgctl {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Default for Routed {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Routed {
    fn drop(&mut self) {
        for ns in &self.names {
            let path = format!("/run/netns/{ns}");
            if std::path::Path::new(&path).exists()
                && let Ok(Some(cookie)) = std::panic::catch_unwind(|| {
                    run_in_ns(ns, || sg_userspace::pins::current_netns_cookie().ok())
                })
            {
                let _ = std::fs::remove_dir_all(sg_userspace::pins::netns_dir_for(cookie));
                let _ = std::fs::remove_dir_all(sg_userspace::state::state_dir_for(cookie));
            }
            let _ = ip(&["netns", "del", ns]);
        }
    }
}
