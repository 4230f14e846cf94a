//! Test hook: `SGCTL_FAILPOINT=<site>[#<n>]=<action>` makes a named site fail or stall, to show
//! that a failed or killed apply leaves the old policy whole. Inert unless the variable is set
//! (and only root runs sgctl).
//!
//! - `<action>`: `fail` (the site returns [`Error::Injected`]) or `pause:<ms>` (it sleeps, then
//!   goes on; tests kill sgctl meanwhile). Both say so on stderr.
//! - `#<n>`: only the n-th time (1-based) this process reaches the site; without it, every time.
//!
//! Sites:
//! - `write_generation`: the inactive generation half written (segments yes, prefixes no);
//! - `before_flip`: an apply that saved its new state and has flipped no interface yet;
//! - `flip`: before flipping one interface (`flip#2=fail`: the second interface of the apply
//!   fails, after the first flipped);
//! - `attach_link`: a new attach with its maps and programs pinned, before its links.

use std::sync::atomic::{AtomicU32, Ordering};

use crate::error::{Error, Result};

/// The environment variable.
pub const VAR: &str = "SGCTL_FAILPOINT";

/// Times this process reached the configured site.
static REACHED: AtomicU32 = AtomicU32::new(0);

/// Runs site `site`'s failpoint, if `SGCTL_FAILPOINT` names it.
pub fn hit(site: &str) -> Result<()> {
    let Ok(spec) = std::env::var(VAR) else { return Ok(()) };
    let Some((target, action)) = spec.split_once('=') else { return Ok(()) };
    let (name, nth) = match target.split_once('#') {
        Some((name, n)) => (name, n.parse::<u32>().ok()),
        None => (target, None),
    };
    if name != site {
        return Ok(());
    }
    let count = REACHED.fetch_add(1, Ordering::Relaxed) + 1;
    if nth.is_some_and(|n| n != count) {
        return Ok(());
    }
    match action.split_once(':') {
        Some(("pause", ms)) => {
            let ms = ms.parse().unwrap_or(5000);
            eprintln!("sgctl: failpoint {target}: pausing {ms} ms");
            std::thread::sleep(std::time::Duration::from_millis(ms));
            Ok(())
        }
        _ if action == "fail" => {
            eprintln!("sgctl: failpoint {target}: failing");
            Err(Error::Injected { site: target.to_string() })
        }
        _ => Ok(()),
    }
}
