//! Wall-clock seconds as sgctl records and says them (state files, deadlines, status). No
//! dependency on the rest of the crate: errors and every module may use it.

use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch (0 if the clock is before it).
pub fn now_unix() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// "in 25 s" (or "now") for a deadline in unix seconds.
pub fn when(deadline: u64) -> String {
    match deadline.checked_sub(now_unix()) {
        Some(s) if s > 0 => format!("in {s} s"),
        _ => "now".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_in_words() {
        assert_eq!(when(0), "now");
        assert_eq!(when(now_unix() + 100), "in 100 s");
    }
}
