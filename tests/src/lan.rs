//! A LAN of network namespaces: one switch namespace holding a bridge, and hosts, each its own
//! namespace with one interface `eth0` whose veth peer is a port of the bridge. For the fleet:
//! many hosts (each its own daemon), clients, and the etcd cluster's namespace on one subnet.
//!
//! Network rule: every veth end is inside a namespace made here; addresses only from
//! 198.51.100.0/24 and 2001:db8:100::/64 (host n has .n and ::n); no routes beyond the subnet;
//! everything (namespaces, sgctl's pins and state for them) is deleted on drop, also on panic.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    process::{Command, Output},
    sync::atomic::{AtomicU32, Ordering},
};

use crate::netns::{ip, quiet_ipv6, run_in_ns, settle};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// One host of the LAN.
#[derive(Clone, Debug)]
pub struct LanHost {
    pub name: String,
    pub ns: String,
    /// Always `eth0` (interface names are per namespace).
    pub iface: String,
    pub v4: Ipv4Addr,
    pub v6: Ipv6Addr,
}

impl LanHost {
    /// Runs `f` on a thread inside the host's namespace.
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        run_in_ns(&self.ns, f)
    }

    /// `sgctl ARGS` inside the host's namespace.
    pub fn sgctl(&self, args: &[&str]) -> Output {
        let bin = crate::sgctl_path();
        let args: Vec<String> = args.iter().map(|s| (*s).to_string()).collect();
        self.run(move || Command::new(bin).args(&args).output().expect("spawn sgctl"))
    }

    pub fn addr(&self, v6: bool) -> IpAddr {
        if v6 { IpAddr::V6(self.v6) } else { IpAddr::V4(self.v4) }
    }
}

pub struct Lan {
    id: String,
    switch: String,
    pub hosts: Vec<LanHost>,
}

impl Lan {
    /// The switch namespace and its bridge.
    pub fn new() -> Lan {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let id = format!("{}l{n}", std::process::id());
        let lan = Lan { switch: format!("sgt-{id}-sw"), id, hosts: Vec::new() };
        let setup = || -> Result<(), String> {
            ip(&["netns", "add", &lan.switch])?;
            ip(&["-n", &lan.switch, "link", "add", "br0", "type", "bridge"])?;
            ip(&["-n", &lan.switch, "link", "set", "br0", "up"])
        };
        if let Err(e) = setup() {
            drop(lan);
            panic!("lan fixture: {e}");
        }
        lan
    }

    /// Adds host number `n` (1-254: 198.51.100.n, 2001:db8:100::n) named `name`.
    pub fn add_host(&mut self, name: &str, n: u8) -> LanHost {
        assert!((1..255).contains(&n), "host number {n}");
        let h = LanHost {
            name: name.to_string(),
            ns: format!("sgt-{}-{n}", self.id),
            iface: "eth0".into(),
            v4: Ipv4Addr::new(198, 51, 100, n),
            v6: format!("2001:db8:100::{n:x}").parse().unwrap(),
        };
        let port = format!("s{}p{n}", self.id);
        assert!(port.len() < 16, "port name too long: {port}");
        let setup = || -> Result<(), String> {
            ip(&["netns", "add", &h.ns])?;
            quiet_ipv6(&h.ns)?;
            ip(&["-n", &h.ns, "link", "set", "lo", "up"])?;
            ip(&[
                "link",
                "add",
                "eth0",
                "netns",
                &h.ns,
                "type",
                "veth",
                "peer",
                "name",
                &port,
                "netns",
                &self.switch,
            ])?;
            ip(&["-n", &self.switch, "link", "set", &port, "master", "br0"])?;
            ip(&["-n", &self.switch, "link", "set", &port, "up"])?;
            ip(&["-n", &h.ns, "addr", "add", &format!("{}/24", h.v4), "dev", "eth0"])?;
            ip(&["-n", &h.ns, "addr", "add", &format!("{}/64", h.v6), "dev", "eth0", "nodad"])?;
            ip(&["-n", &h.ns, "link", "set", "eth0", "up"])?;
            settle(&[(&h.ns, "eth0")])
        };
        self.hosts.push(h.clone());
        if let Err(e) = setup() {
            panic!("lan fixture: host {name}: {e}");
        }
        h
    }
}

impl Default for Lan {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        for h in &self.hosts {
            if std::path::Path::new(&format!("/run/netns/{}", h.ns)).exists()
                && let Some(cookie) = run_in_ns(&h.ns, || sg_userspace::pins::current_netns_cookie().ok())
            {
                let _ = std::fs::remove_dir_all(sg_userspace::pins::netns_dir_for(cookie));
                let _ = std::fs::remove_dir_all(sg_userspace::state::state_dir_for(cookie));
            }
            let _ = ip(&["netns", "del", &h.ns]);
        }
        let _ = ip(&["netns", "del", &self.switch]);
    }
}
