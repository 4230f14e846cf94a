//! `sgctl flows [--follow] [--json] [--file FILE]`: the daemon's flow log (JSON lines; see
//! `crate::flowlog`). Without `--file` it reads the log of the daemon of this network
//! namespace (`daemon.json`). `--json` prints the records as they are, one per line.

use std::{
    io::{BufRead as _, BufReader, Seek as _, SeekFrom},
    path::PathBuf,
    time::Duration,
};

use anyhow::Context as _;
use clap::Args;

use crate::{flowlog::Record, state};

#[derive(Debug, Args)]
pub struct FlowsArgs {
    /// Keep printing records as they are written (like tail -f; follows a rotation).
    #[arg(long, short)]
    pub follow: bool,
    /// The records as JSON lines.
    #[arg(long)]
    pub json: bool,
    /// Read this file instead of the running daemon's flow log.
    #[arg(long, value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// Only the last N records (before following).
    #[arg(long, value_name = "N")]
    pub last: Option<usize>,
}

fn header() {
    println!(
        "{:<24} {:<6} {:<10} {:<7} {:<6} {:<41} {:<41} {:<14}  rule / counters",
        "time", "event", "iface", "dir", "proto", "source", "destination", "reason"
    );
}

fn print(line: &str, json: bool) {
    if json {
        println!("{line}");
        return;
    }
    let Ok(r) = serde_json::from_str::<Record>(line) else {
        eprintln!("sgctl: skipping a line that is not a flow record: {line}");
        return;
    };
    let tail = match (&r.flow_packets, &r.flow_bytes) {
        (Some(p), Some(b)) => {
            format!(
                "pkts {}/{} bytes {}/{}  {}",
                p[0],
                p[1],
                b[0],
                b[1],
                r.rule.long(&r.direction).unwrap_or_default()
            )
        }
        _ => r.rule.long(&r.direction).unwrap_or_default(),
    };
    println!(
        "{:<24} {:<6} {:<10} {:<7} {:<6} {:<41} {:<41} {:<14}  {tail}",
        r.time,
        r.event,
        r.iface,
        r.direction,
        r.proto,
        std::net::SocketAddr::new(r.src, r.sport),
        std::net::SocketAddr::new(r.dst, r.dport),
        r.reason
    );
}

pub fn run(args: &FlowsArgs) -> anyhow::Result<()> {
    let path = match &args.file {
        Some(p) => p.clone(),
        None => state::daemon_info()?.and_then(|i| i.flow_log).context(
            "no flow log: no daemon with --flow-log runs in this network namespace (or use --file)",
        )?,
    };
    let mut file = std::fs::File::open(&path).with_context(|| format!("opening {}", path.display()))?;
    let mut lines: Vec<String> = BufReader::new(&file).lines().collect::<Result<_, _>>()?;
    if let Some(n) = args.last {
        lines.drain(..lines.len().saturating_sub(n));
    }
    if !args.json {
        header();
    }
    for l in &lines {
        print(l, args.json);
    }
    if !args.follow {
        return Ok(());
    }
    let mut pos = file.seek(SeekFrom::End(0))?;
    let mut partial = String::new();
    loop {
        std::thread::sleep(Duration::from_millis(200));
        let len = std::fs::metadata(&path).map_or(0, |m| m.len());
        // Rotated or truncated: start the new file from its beginning.
        let same = std::fs::File::open(&path).ok().and_then(|f| {
            use std::os::unix::fs::MetadataExt as _;
            Some(f.metadata().ok()?.ino() == file.metadata().ok()?.ino())
        });
        if same == Some(false) || len < pos {
            file = std::fs::File::open(&path).with_context(|| format!("opening {}", path.display()))?;
            pos = 0;
        }
        file.seek(SeekFrom::Start(pos))?;
        let mut reader = BufReader::new(&file);
        loop {
            let mut buf = String::new();
            let n = reader.read_line(&mut buf)?;
            if n == 0 {
                break;
            }
            pos += n as u64;
            partial.push_str(&buf);
            if partial.ends_with('\n') {
                print(partial.trim_end(), args.json);
                partial.clear();
            }
        }
        use std::io::Write as _;
        std::io::stdout().flush()?;
    }
}
