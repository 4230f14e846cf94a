//! Another program on sgctl's TCX hook, for the tests that show sgctl is a good neighbour:
//! two instructions (`r0 = verdict; exit`) loaded with bpf(2) by hand, attached with a TCX
//! link after the programs already there (the kernel's default order), detached when dropped.
//! Attributes at the offsets of `include/uapi/linux/bpf.h`.

use std::{
    io,
    os::fd::{FromRawFd as _, OwnedFd},
};

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_PROG_TYPE_SCHED_CLS: u32 = 3;
const BPF_TCX_INGRESS: u32 = 46;
const BPF_TCX_EGRESS: u32 = 47;

/// TC verdicts (`TC_ACT_*`; `-1` is TCX_NEXT).
pub const TC_ACT_OK: i32 = 0;
pub const TC_ACT_SHOT: i32 = 2;

fn bpf(cmd: libc::c_long, attr: &mut [u8; 128]) -> io::Result<OwnedFd> {
    // SAFETY: bpf(2) with a zero-filled 128-byte attr whose pointers are live for the call.
    let rc = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), attr.len()) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new fd the kernel returned, owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(rc as i32) })
}

fn put(attr: &mut [u8; 128], off: usize, v: &[u8]) {
    attr[off..off + v.len()].copy_from_slice(v);
}

/// A TCX program returning `verdict` for every packet, attached last.
pub struct ConstantProgram {
    _link: OwnedFd,
    _prog: OwnedFd,
}

impl ConstantProgram {
    /// On the egress (or ingress) TCX hook of interface `ifindex` of the calling thread's
    /// network namespace.
    pub fn attach(ifindex: u32, egress: bool, verdict: i32) -> io::Result<ConstantProgram> {
        let mut insns = [0u8; 16];
        insns[0] = 0xb7; // BPF_ALU64 | BPF_MOV | BPF_K, dst r0
        insns[4..8].copy_from_slice(&verdict.to_ne_bytes());
        insns[8] = 0x95; // BPF_JMP | BPF_EXIT
        let license = b"GPL\0";
        let mut attr = [0u8; 128];
        put(&mut attr, 0, &BPF_PROG_TYPE_SCHED_CLS.to_ne_bytes());
        put(&mut attr, 4, &2u32.to_ne_bytes());
        put(&mut attr, 8, &(insns.as_ptr() as u64).to_ne_bytes());
        put(&mut attr, 16, &(license.as_ptr() as u64).to_ne_bytes());
        put(&mut attr, 48, b"sg_test_const\0");
        let prog = bpf(BPF_PROG_LOAD, &mut attr)?;
        let mut attr = [0u8; 128];
        put(&mut attr, 0, &(std::os::fd::AsRawFd::as_raw_fd(&prog) as u32).to_ne_bytes());
        put(&mut attr, 4, &ifindex.to_ne_bytes());
        put(&mut attr, 8, &(if egress { BPF_TCX_EGRESS } else { BPF_TCX_INGRESS }).to_ne_bytes());
        // flags 0, no relative program: appended after every program on the hook.
        let link = bpf(BPF_LINK_CREATE, &mut attr)?;
        Ok(ConstantProgram { _link: link, _prog: prog })
    }
}
