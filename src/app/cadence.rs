//! The one grid of wall-clock time every background loop of every replica ticks on.
//!
//! On this 2-core VM an idle Redis that wakes up to answer costs ~100 µs of CPU however small
//! the call (a `return 1` script: 1.7 µs inside the call back to back; ~22 µs inside it and
//! ~100-110 µs of the process beyond the idle server's own when it arrives alone every 50-250 ms;
//! `benches/redis-wake.py`, benches/README.md §23): caches, branch predictors and the vCPU itself
//! are cold. So what a replica's background loops cost Redis is
//! mostly how often they wake it, not what they ask. The loops (the waiting room's ticker, the
//! slot feed, the sweeper, the health watcher, the gauges) therefore tick at the multiples of
//! their period since the UNIX epoch instead of "a period after the last one": the loops of one
//! replica, and those of every replica on synchronised clocks, reach Redis in the same instant,
//! and Redis answers them all in one wake-up instead of one each. Periods that divide one
//! another (250 ms, 1 s) meet on every longer one.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How long from `now` (time since the epoch) to the next multiple of `period`; a point closer
/// than a quarter period is skipped for the one after it, so a loop woken a little before its
/// point (timer rounding, a clock step) does not run twice in a row.
pub fn until_next(now: Duration, period: Duration) -> Duration {
    let p = period.as_nanos().max(1);
    let into = now.as_nanos() % p;
    let mut wait = p - into;
    if wait < p / 4 {
        wait += p;
    }
    Duration::from_nanos(u64::try_from(wait).unwrap_or(u64::MAX))
}

/// Sleeps until the next multiple of `period` of the wall clock (`until_next`). A loop that
/// runs longer than its period skips the points it missed.
pub async fn next_point(period: Duration) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    tokio::time::sleep(until_next(now, period)).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn points_are_the_multiples_of_the_period() {
        assert_eq!(until_next(ms(1_000), ms(250)), ms(250));
        assert_eq!(until_next(ms(1_010), ms(250)), ms(240));
        assert_eq!(until_next(ms(1_100), ms(250)), ms(150));
        // Loops of another period meet on the longer one.
        assert_eq!(ms(1_100) + until_next(ms(1_100), ms(1_000)), ms(2_000));
        assert_eq!(ms(1_900) + until_next(ms(1_900), ms(250)), ms(2_000));
    }

    #[test]
    fn a_point_closer_than_a_quarter_period_is_skipped() {
        // Woken 10 ms before its point: the loop just ran, so it waits for the one after.
        assert_eq!(until_next(ms(1_240), ms(250)), ms(260));
        assert_eq!(until_next(ms(1_187), ms(250)), ms(63));
        assert_eq!(until_next(ms(1_188), ms(250)), ms(312));
    }

    #[test]
    fn a_zero_period_does_not_divide_by_zero() {
        assert!(until_next(ms(5), Duration::ZERO) <= ms(1));
    }
}
