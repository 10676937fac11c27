//! Which seconds hold the windows a statscache request asks for.
//!
//! statscache stamped a window's row with the window's end (`Schedule.next`: windows of `n`
//! seconds aligned on UTC midnight, so on multiples of `n` since the epoch for every `n` that
//! divides a day), and kept the rows whose stamp lies in `[start, stop]`. A message at `t` is in
//! the window `[⌊t/n⌋·n, ⌊t/n⌋·n + n)`, stamped `⌊t/n⌋·n + n`; so the rows asked for are those of
//! the windows starting in `[⌈start/n⌉·n − n, ⌊stop/n⌋·n − n]`, whose messages lie in the seconds
//! `[⌈start/n⌉·n − n, ⌊stop/n⌋·n)`. Whole windows always: a row is counted whole or not at all.

/// The last second a `DateTime` holds, plus one.
const TIME_END: u64 = 1 << 32;

/// The seconds `[first, end)` holding the windows of `seconds` whose end is in `[start, stop]`
/// (`start` `None`: from the epoch); `None` when no window's end is.
pub fn seconds_of_windows(seconds: u32, start: Option<f64>, stop: f64) -> Option<(u64, u64)> {
    let length = u64::from(seconds);
    let first_end = match start {
        Some(start) => ((start / f64::from(seconds)).ceil().max(1.0) as u64).saturating_mul(length),
        None => length,
    };
    let last_end = ((stop.max(0.0) / f64::from(seconds)).floor() as u64)
        .saturating_mul(length)
        .min(TIME_END / length * length);
    if last_end < first_end {
        return None;
    }
    Some((first_end - length, last_end))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_whose_end_is_in_the_range() {
        // A minute's rows stamped 120 and 180 lie in [60, 180).
        assert_eq!(seconds_of_windows(60, Some(61.0), 199.5), Some((60, 180)));
        assert_eq!(seconds_of_windows(60, Some(120.0), 180.0), Some((60, 180)));
        // From the epoch; stop inside the first window: nothing ends in range.
        assert_eq!(seconds_of_windows(60, None, 119.0), Some((0, 60)));
        assert_eq!(seconds_of_windows(60, None, 59.0), None);
        assert_eq!(seconds_of_windows(1, Some(0.0), 3.0), Some((0, 3)));
        // Days: the day stamped with midnight is the one before.
        assert_eq!(
            seconds_of_windows(86_400, Some(86_400.0), 3.0 * 86_400.0),
            Some((0, 3 * 86_400))
        );
        assert_eq!(seconds_of_windows(60, Some(500.0), 100.0), None);
        // Far in the future: clamped to what a DateTime holds.
        assert_eq!(
            seconds_of_windows(60, None, 1e12).map(|(_, end)| end),
            Some(TIME_END / 60 * 60)
        );
    }
}
