//! Retry timing, written once for every service that talks to something that can fail.

use std::time::Duration;

/// How long to wait before retry `attempt` (0-based): doubling from `min`, capped at `max`.
pub fn backoff(attempt: u32, min: Duration, max: Duration) -> Duration {
    let factor = 1u32.checked_shl(attempt.min(16)).unwrap_or(u32::MAX);
    min.saturating_mul(factor).min(max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        let min = Duration::from_millis(100);
        let max = Duration::from_secs(2);
        assert_eq!(backoff(0, min, max), min);
        assert_eq!(backoff(3, min, max), Duration::from_millis(800));
        assert_eq!(backoff(40, min, max), max);
    }
}
