//! Monotonic time as a count of nanoseconds, for the clocks read on every
//! request (request timing, an idle connection's age). `std::time::Instant`
//! reads the same clock, but its arithmetic goes through a checked
//! seconds-and-nanoseconds subtraction that costs tens of instructions each
//! time; here a difference is one integer subtraction.

use std::time::Duration;

/// A reading of `CLOCK_MONOTONIC`, in nanoseconds since an unspecified start
/// (boot): comparable only with other readings in this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Tick(u64);

impl Tick {
    #[inline]
    pub fn now() -> Tick {
        let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: `ts` is a valid timespec to write to; CLOCK_MONOTONIC
        // always exists on Linux, so the call cannot fail.
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
        Tick(ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64)
    }

    /// The reading taken when this thread's event loop last woke up (once
    /// per turn, after epoll returns), or a fresh one off a worker. What
    /// times requests: the moment the loop learnt of the event, as
    /// PgBouncer's cached time, without a clock read per message.
    #[inline]
    pub fn cached() -> Tick {
        crate::rt::turn_started().unwrap_or_else(Tick::now)
    }

    /// This reading plus `d` (saturating).
    pub fn after(self, d: Duration) -> Tick {
        Tick(self.0.saturating_add(nanos(d)))
    }

    /// Nanoseconds from `earlier` to this reading; 0 if `earlier` is later.
    #[inline]
    pub fn nanos_since(self, earlier: Tick) -> u64 {
        self.0.saturating_sub(earlier.0)
    }

    /// Whole microseconds from `earlier` to this reading; 0 if `earlier` is later.
    #[inline]
    pub fn micros_since(self, earlier: Tick) -> u64 {
        self.nanos_since(earlier) / 1000
    }

    /// The time from `earlier` to this reading; zero if `earlier` is later.
    #[inline]
    pub fn since(self, earlier: Tick) -> Duration {
        Duration::from_nanos(self.nanos_since(earlier))
    }

    /// The time since this reading.
    pub fn elapsed(self) -> Duration {
        Tick::now().since(self)
    }
}

/// Whether at least `limit` passed from `earlier` to `now`, with `limit` in
/// nanoseconds (see [`nanos`]).
#[inline]
pub fn reached(now: Tick, earlier: Tick, limit: u64) -> bool {
    now.nanos_since(earlier) >= limit
}

/// A duration in nanoseconds, saturating, for [`reached`].
pub fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readings_advance_with_std_instant() {
        let t0 = Tick::now();
        let i0 = std::time::Instant::now();
        std::thread::sleep(Duration::from_millis(20));
        let i1 = std::time::Instant::now();
        let t1 = Tick::now();
        assert!(t1 > t0);
        // The same clock: the outer pair spans the inner one.
        assert!(t1.since(t0) >= i1 - i0);
        assert!(t1.since(t0) < i1 - i0 + Duration::from_millis(50));
        assert!(t1.micros_since(t0) >= 20_000);
    }

    #[test]
    fn differences_saturate_at_zero() {
        let t = Tick::now();
        let later = Tick(t.0 + 5_000);
        assert_eq!(t.nanos_since(later), 0);
        assert_eq!(later.micros_since(t), 5);
        assert!(reached(later, t, 5_000));
        assert!(!reached(later, t, 5_001));
        assert_eq!(nanos(Duration::MAX), u64::MAX);
    }
}
