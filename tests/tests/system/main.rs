//! The whole system: `sgctl` attached to veth pairs in network namespaces of their own, real
//! traffic, the daemon, etcd clusters for the fleet, nftables and AWS inputs end to end. Needs
//! root, BPF, iproute2, nftables and etcd (`cargo xtask setup`).

mod audit_live;
mod aws_real;
mod coexist;
mod daemon;
mod daemon_flows;
mod demo;
mod fleet;
mod fleet_daemon;
mod learn;
mod lifecycle_enable;
mod lifecycle_upgrade;
mod netns_acl;
mod netns_apply;
mod netns_attach;
mod netns_attacks;
mod netns_conntrack;
mod netns_monitor;
mod netns_nft;
mod netns_rules;
mod netns_seen;
mod netns_top;
mod operator_safety;
mod package;
mod replay;
