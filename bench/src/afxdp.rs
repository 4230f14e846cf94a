//! An AF_XDP transmitter: the traffic section's generator where the kernel refuses live-frames
//! test runs (and a second opinion where it allows them).
//!
//! One thread per CPU, each pinned to its CPU with its own UMEM and XDP socket bound to its
//! own queue of the sender's veth (the fixture gives the veth one queue per CPU), in copy mode
//! (veth has no zero-copy). Each UMEM holds the frames of all `traffic::FLOWS`
//! source ports once; a thread keeps its TX ring full with descriptors of those frames and
//! reaps completions, until its time is up. The kernel builds an skb per descriptor and hands
//! it to the veth directly (no qdisc), like trafgen's `PACKET_QDISC_BYPASS`, without trafgen's
//! per-packet system-call and ring-frame bookkeeping: about 1.35x trafgen's rate per CPU here.
//!
//! Binds happen one after another (two sockets binding queues of the same device at the same
//! instant made one bind fail with EBUSY on the 6.18 kernel here), and a bind that meets EBUSY
//! is retried briefly (the kernel lets go of a closed socket's queue asynchronously).

use std::{
    ffi::CString,
    num::NonZeroU32,
    ptr::NonNull,
    sync::{Arc, Barrier, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use xdpilone::{BufIdx, IfInfo, Socket, SocketConfig, Umem, UmemConfig, xdp::XdpDesc};

use sg_tests::netns::spawn_in_ns;

/// `sockaddr_xdp.sxdp_flags`: copy mode (veth has no zero-copy).
const XDP_COPY: u16 = 1 << 1;
/// UMEM frame size (one page, the kernel's default).
const FRAME: usize = 4096;
/// Descriptors in the TX and completion rings.
const RING: u32 = 2048;
/// How long a bind retries while the queue is still held by a socket that was just closed.
const BIND_RETRY: Duration = Duration::from_secs(2);
/// Descriptors put on the TX ring per kick.
const BATCH: u32 = 256;

/// Page-aligned anonymous memory for a UMEM, unmapped on drop.
struct Area {
    ptr: NonNull<u8>,
    len: usize,
}

impl Area {
    fn new(len: usize) -> Result<Self> {
        // SAFETY: an anonymous private mapping; no file, no address hint.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            bail!("mmap {len} bytes: {}", std::io::Error::last_os_error());
        }
        Ok(Area { ptr: NonNull::new(p.cast()).context("mmap returned null")?, len })
    }

    fn as_slice_ptr(&self) -> NonNull<[u8]> {
        NonNull::slice_from_raw_parts(self.ptr, self.len)
    }
}

impl Drop for Area {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`; the UMEM that used it is dropped before (field
        // order in `Sender`).
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

/// One CPU's socket, ready to send. Field order: the socket and UMEM go before the memory.
struct Sender {
    tx: xdpilone::RingTx,
    cq: xdpilone::DeviceQueue,
    descs: Vec<XdpDesc>,
    _umem: Umem,
    _area: Area,
}

// SAFETY: a `Sender` is built on one thread and then moved to, and used only by, the thread
// that sends; the rings and the memory they point into are owned by it alone.
unsafe impl Send for Sender {}

impl Sender {
    /// Binds queue `queue` of `ifname` (in the calling thread's namespace) with `frames` in
    /// its UMEM.
    fn bind(ifname: &str, queue: u32, frames: &[Vec<u8>]) -> Result<Self> {
        let area = Area::new(frames.len().max(1) * FRAME)?;
        let config = UmemConfig {
            fill_size: RING,
            complete_size: RING,
            frame_size: FRAME as u32,
            headroom: 0,
            flags: 0,
        };
        // SAFETY: the area is page aligned (mmap), `frames.len() * FRAME` bytes, and outlives
        // the UMEM (`Sender` drops `_umem` before `_area`).
        let umem = unsafe { Umem::new(config, area.as_slice_ptr()) }
            .map_err(|e| anyhow::anyhow!("AF_XDP UMEM: {e:?}"))?;
        let mut info = IfInfo::invalid();
        info.from_name(&CString::new(ifname)?).map_err(|e| anyhow::anyhow!("AF_XDP {ifname}: {e:?}"))?;
        info.set_queue(queue);
        let sock = Socket::with_shared(&info, &umem).map_err(|e| anyhow::anyhow!("AF_XDP socket: {e:?}"))?;
        let cq = umem.fq_cq(&sock).map_err(|e| anyhow::anyhow!("AF_XDP fill/completion rings: {e:?}"))?;
        let rxtx = umem
            .rx_tx(
                &sock,
                &SocketConfig { rx_size: None, tx_size: NonZeroU32::new(RING), bind_flags: XDP_COPY },
            )
            .map_err(|e| anyhow::anyhow!("AF_XDP TX ring: {e:?}"))?;
        // The kernel releases a closed socket's hold on its queue asynchronously: a bind right
        // after the previous run's sockets closed can meet EBUSY for a few milliseconds.
        let deadline = Instant::now() + BIND_RETRY;
        loop {
            match umem.bind(&rxtx) {
                Ok(()) => break,
                Err(e) if e.get_raw() == libc::EBUSY && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) => bail!("AF_XDP bind {ifname} queue {queue}: {e:?}"),
            }
        }
        let tx = rxtx.map_tx().map_err(|e| anyhow::anyhow!("AF_XDP map TX ring: {e:?}"))?;
        let mut descs = Vec::with_capacity(frames.len());
        for (i, f) in frames.iter().enumerate() {
            let mut chunk = umem.frame(BufIdx(i as u32)).context("UMEM frame")?;
            // SAFETY: the chunk lies in our mapping, nothing else writes it (not bound to RX).
            let dst = unsafe { chunk.addr.as_mut() };
            dst.get_mut(..f.len()).context("frame larger than a UMEM frame")?.copy_from_slice(f);
            descs.push(chunk.as_xdp_with_len(f.len() as u32));
        }
        Ok(Sender { tx, cq, descs, _umem: umem, _area: area })
    }

    /// Sends until `dur` has passed; returns the descriptors the kernel completed.
    fn run(&mut self, dur: Duration) -> u64 {
        let n = self.descs.len();
        let (mut next, mut inflight, mut done) = (0usize, 0u32, 0u64);
        let start = Instant::now();
        while start.elapsed() < dur {
            let room = (RING / 2).saturating_sub(inflight).min(BATCH);
            if room > 0 {
                let mut w = self.tx.transmit(room);
                let put = w.insert((0..room as usize).map(|k| self.descs[(next + k) % n]));
                w.commit();
                next = (next + put as usize) % n;
                inflight += put;
            }
            // Copy mode sends only in sendto(): kick every round.
            self.tx.wake();
            let mut r = self.cq.complete(RING);
            let mut c = 0;
            while r.read().is_some() {
                c += 1;
            }
            r.release();
            inflight -= c;
            done += u64::from(c);
        }
        done
    }
}

/// Sends `frames` (round robin) out of `ifname` in namespace `ns` from `cpus` threads, one
/// per CPU and queue, for `dur`. Returns the packets the kernel completed (the caller counts
/// what the interface really sent from its own statistics).
pub fn send(ns: &str, ifname: &str, cpus: usize, frames: &[Vec<u8>], dur: Duration) -> Result<u64> {
    let frames = Arc::new(frames.to_vec());
    // Binds one at a time (see the module docs), then all start together.
    let bind_lock = Arc::new(Mutex::new(()));
    let start = Arc::new(Barrier::new(cpus));
    let mut handles = Vec::new();
    for cpu in 0..cpus {
        let (ifname, frames, bind_lock, start) =
            (ifname.to_string(), frames.clone(), bind_lock.clone(), start.clone());
        handles.push(spawn_in_ns(ns, move || -> Result<u64> {
            let mut set = nix::sched::CpuSet::new();
            let pinned = set
                .set(cpu)
                .and_then(|()| nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set));
            let sender = {
                let _g = bind_lock.lock().map_err(|_| anyhow::anyhow!("bind lock poisoned"))?;
                Sender::bind(&ifname, cpu as u32, &frames)
            };
            // Every thread reaches the barrier, also one that failed, or the others would wait.
            start.wait();
            pinned.with_context(|| format!("pin to CPU {cpu}"))?;
            Ok(sender?.run(dur))
        }));
    }
    let mut total = 0;
    for h in handles {
        total += h.join().map_err(|_| anyhow::anyhow!("AF_XDP sender thread panicked"))??;
    }
    Ok(total)
}
