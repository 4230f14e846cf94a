//! Policy decision for a parsed IP packet. For now: the interface's posture per direction.

use sg_common::{Direction, IfaceConfig, PacketSummary, Posture, Reason};

#[inline(always)]
pub fn decide(cfg: &IfaceConfig, dir: Direction, _pkt: &PacketSummary) -> Result<Reason, Reason> {
    let posture = match dir {
        Direction::Ingress => cfg.ingress_posture,
        Direction::Egress => cfg.egress_posture,
    };
    match Posture::from_u8(posture) {
        Some(Posture::Allow) => Ok(Reason::PostureAllow),
        Some(Posture::Deny) => Ok(Reason::PostureDeny),
        None => Err(Reason::NoConfig),
    }
}
