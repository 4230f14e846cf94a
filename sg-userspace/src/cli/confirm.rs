//! `sgctl confirm`: keeps the rule set an `apply --confirm SECS` enforces (else it rolls back
//! by itself at its deadline).

use clap::Args;

use crate::confirm;

#[derive(Debug, Args)]
pub struct ConfirmArgs {
    /// The rollback watcher `apply --confirm` starts: roll rule set SEQ back after --after
    /// seconds unless confirmed.
    #[arg(long, value_name = "SEQ", hide = true)]
    pub rollback_due: Option<u64>,
    /// Seconds the watcher waits.
    #[arg(long, value_name = "SECS", hide = true, default_value_t = 0)]
    pub after: u64,
    /// Roll the pending rule set back now instead of keeping it.
    #[arg(long)]
    pub rollback: bool,
}

pub fn run(args: &ConfirmArgs) -> anyhow::Result<()> {
    if let Some(seq) = args.rollback_due {
        if let Some(r) = confirm::watch(seq, args.after)? {
            println!("rule set #{seq} was not confirmed: rolled back ({})", describe(&r));
        }
        return Ok(());
    }
    if args.rollback {
        let Some(p) = confirm::pending()? else {
            println!("nothing awaits confirmation");
            return Ok(());
        };
        if let Some(r) = confirm::rollback(p.seq)? {
            println!("rule set #{} rolled back ({})", p.seq, describe(&r));
        }
        return Ok(());
    }
    match confirm::confirm()? {
        Some(p) => {
            println!("confirmed rule set #{}", p.seq);
            for d in &p.to_detach {
                println!("detached {d} (no longer in the rules file)");
            }
        }
        None => println!("nothing awaits confirmation"),
    }
    Ok(())
}

fn describe(r: &confirm::Rollback) -> String {
    format!(
        "flipped back: {}; detached: {}; {} connections adopted again",
        if r.flipped_back.is_empty() { "-".to_string() } else { r.flipped_back.join(", ") },
        if r.detached.is_empty() { "-".to_string() } else { r.detached.join(", ") },
        r.readopted
    )
}
