//! The JSON-lines record of the flow log, one object per line (`sgctl flows` reads them back).

use std::{
    net::IpAddr,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use serde::{Deserialize, Serialize};

use crate::{maps::ct_now_ns, names::RuleRef};

/// One JSON-lines record.
#[derive(Debug, Serialize, Deserialize, Clone, PartialEq)]
pub struct Record {
    /// RFC 3339, UTC.
    pub time: String,
    /// accept, reject or end.
    pub event: String,
    pub iface: String,
    /// accept/reject: the packet's direction; end: the flow's origin (who opened it).
    pub direction: String,
    pub proto: String,
    /// accept/reject: the packet's source and destination; end: initiator and responder.
    pub src: IpAddr,
    pub dst: IpAddr,
    pub sport: u16,
    pub dport: u16,
    /// Verdict reason (accept/reject); end: the flow's last state, or `revoked`.
    pub reason: String,
    /// The rule that allowed the flow (`group`, `index`, `rule`: as `sgctl stats` names it).
    #[serde(flatten)]
    pub rule: RuleRef,
    /// accept/reject: the packet's length.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub bytes: Option<u64>,
    /// end: `[initiator -> responder, back]`.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub flow_packets: Option<[u64; 2]>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub flow_bytes: Option<[u64; 2]>,
    /// end: when the flow started (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub start: Option<String>,
    /// ICMP type and code.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub icmp: Option<[u8; 2]>,
}

/// RFC 3339 with milliseconds, UTC.
pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

/// Wall-clock time of a CLOCK_MONOTONIC_COARSE timestamp (the datapath's clock).
pub fn wall(ts_ns: u64) -> SystemTime {
    let ago = ct_now_ns().saturating_sub(ts_ns);
    SystemTime::now().checked_sub(Duration::from_nanos(ago)).unwrap_or(UNIX_EPOCH)
}
