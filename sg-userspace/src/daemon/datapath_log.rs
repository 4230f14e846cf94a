//! The datapath's aya-log records (`AYA_LOGS`, shared by an instance's two programs) forwarded
//! to the daemon's log, under the datapath's module as target (`sg_ebpf::log`). Today the
//! datapath logs one thing: a warning when the conntrack table refuses new flows (at most one
//! per second per CPU).

use std::collections::HashMap;

use aya_log::EbpfLogger;
use sg_common::maps::PROG_INGRESS;

use crate::{loader, rules::RuleSet};

#[derive(Default)]
pub struct Forwarder {
    /// Per interface: the ingress program id the logger reads for, and the logger.
    loggers: HashMap<String, (u32, EbpfLogger<&'static dyn log::Log>)>,
}

impl Forwarder {
    /// Reads the records of every interface of `rs` (after each apply: new interfaces, new
    /// programs after a re-attach).
    pub fn follow(&mut self, rs: &RuleSet) {
        self.flush();
        let mut next = HashMap::new();
        for b in &rs.interfaces {
            let Ok(Some(a)) = loader::open_attached(&b.iface) else { continue };
            let Ok(id) = loader::pinned_prog_id(&a.dir.join(PROG_INGRESS)) else { continue };
            match self.loggers.remove(&b.iface) {
                Some((old, l)) if old == id => {
                    next.insert(b.iface.clone(), (id, l));
                }
                _ => match EbpfLogger::init_from_id(id) {
                    Ok(l) => {
                        next.insert(b.iface.clone(), (id, l));
                    }
                    Err(e) => log::warn!("{}: not forwarding datapath log records: {e}", b.iface),
                },
            }
        }
        self.loggers = next;
    }

    /// Forwards what the datapath logged since the last call.
    pub fn flush(&mut self) {
        for (_, l) in self.loggers.values_mut() {
            l.flush();
        }
    }
}
