//! Reconnect backoff for one connection: exponential steps with equal jitter, a cap, and an
//! optional give-up after a number of attempts.
//!
//! go-nsq retries a lost direct nsqd connection every `lookupd_poll_interval` (a fixed 60 s,
//! `consumer.go:774-799`); the client guide suggests growing steps (8 s, 16 s, 32 s ...).
//! Here the first retry comes after about 100 ms, so a blip costs almost nothing, and the steps
//! double up to 30 s, so a dead nsqd costs one dial per 30 s.

use std::time::Duration;

use rand::Rng;

use crate::{
    error::{Error, Result},
    rdy::check_range,
};

/// How a lost connection is re-established: the delay before attempt `n` is drawn from
/// `[step/2, step]` with `step = min(initial_delay × multiplier^(n-1), max_delay)`.
///
/// The jitter is "equal jitter" (half the step fixed, half random): clients that lost the
/// same nsqd spread their retries out, yet none comes back sooner than half a step. Full
/// jitter can draw near-zero delays again and again and hammer an nsqd that is down.
///
/// ```
/// # use std::time::Duration;
/// # use actix_nsq::ReconnectPolicy;
/// let policy = ReconnectPolicy::new()
///     .max_delay(Duration::from_secs(10))
///     .max_attempts(Some(20));
/// assert!(policy.validate().is_ok());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
#[must_use = "settings do nothing until passed on"]
pub struct ReconnectPolicy {
    /// The first step; 1 ms..=`max_delay`.
    pub initial_delay: Duration,
    /// The largest step; at most 1 hour.
    pub max_delay: Duration,
    /// Each step is the previous one times this; 1..=16 (1 keeps the delay constant).
    pub multiplier: u32,
    /// Give up after this many failed attempts; `None` retries forever, `Some(0)` never
    /// retries.
    pub max_attempts: Option<u32>,
    /// A connection that stayed up this long counts as healthy: the next loss starts again
    /// from `initial_delay`. At most 1 hour.
    pub healthy_after: Duration,
}

impl ReconnectPolicy {
    /// 100 ms: a connection dropped by a blip or a quick nsqd restart is back at once.
    pub const DEFAULT_INITIAL_DELAY: Duration = Duration::from_millis(100);
    /// 30 s: half of go-nsq's fixed 60 s, so a recovered nsqd is used again sooner.
    pub const DEFAULT_MAX_DELAY: Duration = Duration::from_secs(30);
    /// Each step doubles.
    pub const DEFAULT_MULTIPLIER: u32 = 2;
    /// Retry forever: an nsqd that comes back is used again.
    pub const DEFAULT_MAX_ATTEMPTS: Option<u32> = None;
    /// 30 s, nsqd's default heartbeat interval: a connection that lived through a heartbeat
    /// got past the handshake and SUB. A connection refused right after SUB (for example
    /// `E_SUB_FAILED` at `--max-channel-consumers`) keeps backing off instead of looping.
    pub const DEFAULT_HEALTHY_AFTER: Duration = Duration::from_secs(30);

    /// The defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets [`initial_delay`](Self::initial_delay).
    pub fn initial_delay(mut self, delay: Duration) -> Self {
        self.initial_delay = delay;
        self
    }

    /// Sets [`max_delay`](Self::max_delay).
    pub fn max_delay(mut self, delay: Duration) -> Self {
        self.max_delay = delay;
        self
    }

    /// Sets [`multiplier`](Self::multiplier).
    pub fn multiplier(mut self, multiplier: u32) -> Self {
        self.multiplier = multiplier;
        self
    }

    /// Sets [`max_attempts`](Self::max_attempts).
    pub fn max_attempts(mut self, max_attempts: Option<u32>) -> Self {
        self.max_attempts = max_attempts;
        self
    }

    /// Sets [`healthy_after`](Self::healthy_after).
    pub fn healthy_after(mut self, healthy_after: Duration) -> Self {
        self.healthy_after = healthy_after;
        self
    }

    /// Checks every setting against its range.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] naming the first setting out of range.
    pub fn validate(&self) -> Result<()> {
        let Self {
            initial_delay,
            max_delay,
            multiplier,
            max_attempts: _,
            healthy_after,
        } = self;
        let hour = Duration::from_secs(3600);
        check_range("max_delay", *max_delay, Duration::ZERO, hour)?;
        if initial_delay.is_zero() {
            // A zero step would reconnect in a hot loop.
            return Err(Error::config("initial_delay", "must be at least 1ms"));
        }
        if initial_delay > max_delay {
            return Err(Error::config(
                "initial_delay",
                format!("{initial_delay:?} must not exceed max_delay ({max_delay:?})"),
            ));
        }
        if !(1..=16).contains(multiplier) {
            return Err(Error::config(
                "multiplier",
                format!("{multiplier} is outside 1..=16"),
            ));
        }
        check_range("healthy_after", *healthy_after, Duration::ZERO, hour)?;
        Ok(())
    }
}

impl Default for ReconnectPolicy {
    fn default() -> Self {
        Self {
            initial_delay: Self::DEFAULT_INITIAL_DELAY,
            max_delay: Self::DEFAULT_MAX_DELAY,
            multiplier: Self::DEFAULT_MULTIPLIER,
            max_attempts: Self::DEFAULT_MAX_ATTEMPTS,
            healthy_after: Self::DEFAULT_HEALTHY_AFTER,
        }
    }
}

/// The reconnect state of one connection.
#[derive(Debug, Clone)]
pub(crate) struct ReconnectBackoff {
    policy: ReconnectPolicy,
    attempts: u32,
    step: Duration,
}

impl ReconnectBackoff {
    /// A fresh state. `policy` should have passed [`ReconnectPolicy::validate`].
    pub(crate) fn new(policy: ReconnectPolicy) -> Self {
        let step = policy.initial_delay;
        Self {
            policy,
            attempts: 0,
            step,
        }
    }

    /// How long to wait before the next attempt, counting it; `None` once `max_attempts`
    /// are used up (give up: [`Error::GaveUp`] with [`attempts`](Self::attempts)).
    pub(crate) fn next_delay(&mut self, rng: &mut impl Rng) -> Option<Duration> {
        if self
            .policy
            .max_attempts
            .is_some_and(|max| self.attempts >= max)
        {
            return None;
        }
        self.attempts = self.attempts.saturating_add(1);
        let step = self.step;
        self.step = step
            .saturating_mul(self.policy.multiplier)
            .min(self.policy.max_delay);
        let half = step / 2;
        let spread = u64::try_from((step - half).as_nanos()).unwrap_or(u64::MAX);
        Some(half + Duration::from_nanos(rng.random_range(0..=spread)))
    }

    /// Starts over from `initial_delay` with no attempts counted.
    pub(crate) fn reset(&mut self) {
        self.attempts = 0;
        self.step = self.policy.initial_delay;
    }

    /// A connection made after these attempts was lost after `lasted`: if it stayed up for
    /// `healthy_after`, the next reconnect starts over, otherwise the steps keep growing.
    pub(crate) fn connection_ended(&mut self, lasted: Duration) {
        if lasted >= self.policy.healthy_after {
            self.reset();
        }
    }

    /// Attempts counted since the last reset.
    pub(crate) fn attempts(&self) -> u32 {
        self.attempts
    }
}

#[cfg(test)]
mod tests {
    use rand::{rngs::StdRng, SeedableRng};

    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn steps(policy: ReconnectPolicy, n: usize, seed: u64) -> Vec<Option<Duration>> {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut backoff = ReconnectBackoff::new(policy);
        (0..n).map(|_| backoff.next_delay(&mut rng)).collect()
    }

    #[test]
    fn delays_double_within_equal_jitter_bounds_up_to_the_cap() {
        for seed in 0..20 {
            let delays = steps(ReconnectPolicy::new(), 14, seed);
            let mut step = 100 * MS;
            for delay in delays {
                let delay = delay.unwrap();
                assert!(
                    delay >= step / 2 && delay <= step,
                    "{delay:?} outside [{:?}, {step:?}]",
                    step / 2
                );
                step = (step * 2).min(Duration::from_secs(30));
            }
            assert_eq!(
                step,
                Duration::from_secs(30),
                "the cap is reached within 14 attempts"
            );
        }
    }

    #[test]
    fn jitter_spreads_clients() {
        let firsts: Vec<_> = (0..20)
            .map(|seed| steps(ReconnectPolicy::new(), 1, seed)[0])
            .collect();
        let distinct: std::collections::BTreeSet<_> = firsts.iter().collect();
        assert!(
            distinct.len() > 15,
            "20 clients drew only {} distinct first delays",
            distinct.len()
        );
    }

    #[test]
    fn same_seed_same_delays() {
        assert_eq!(
            steps(ReconnectPolicy::new(), 10, 3),
            steps(ReconnectPolicy::new(), 10, 3)
        );
    }

    #[test]
    fn gives_up_after_max_attempts() {
        let delays = steps(ReconnectPolicy::new().max_attempts(Some(3)), 5, 1);
        assert!(delays[..3].iter().all(Option::is_some));
        assert_eq!(delays[3..], [None, None]);
        assert_eq!(
            steps(ReconnectPolicy::new().max_attempts(Some(0)), 1, 1),
            [None]
        );

        let mut rng = StdRng::seed_from_u64(1);
        let mut backoff = ReconnectBackoff::new(ReconnectPolicy::new().max_attempts(Some(2)));
        backoff.next_delay(&mut rng);
        backoff.next_delay(&mut rng);
        assert_eq!(backoff.next_delay(&mut rng), None);
        assert_eq!(backoff.attempts(), 2, "the refused attempt is not counted");
    }

    #[test]
    fn multiplier_one_keeps_the_step() {
        let policy = ReconnectPolicy::new()
            .initial_delay(Duration::from_secs(15))
            .multiplier(1);
        for delay in steps(policy, 10, 9) {
            let delay = delay.unwrap();
            assert!(delay >= Duration::from_millis(7500) && delay <= Duration::from_secs(15));
        }
    }

    #[test]
    fn reset_and_healthy_connections_start_over() {
        let mut rng = StdRng::seed_from_u64(5);
        let mut backoff = ReconnectBackoff::new(ReconnectPolicy::new());
        for _ in 0..6 {
            backoff.next_delay(&mut rng);
        }
        backoff.connection_ended(Duration::from_secs(29));
        assert_eq!(
            backoff.attempts(),
            6,
            "a short-lived connection does not reset"
        );
        assert!(backoff.next_delay(&mut rng).unwrap() >= Duration::from_millis(3200));

        backoff.connection_ended(Duration::from_secs(30));
        assert_eq!(backoff.attempts(), 0);
        assert!(backoff.next_delay(&mut rng).unwrap() <= 100 * MS);

        backoff.reset();
        assert_eq!(backoff.attempts(), 0);
        assert!(backoff.next_delay(&mut rng).unwrap() <= 100 * MS);
    }

    #[test]
    fn huge_settings_saturate_instead_of_overflowing() {
        let hour = Duration::from_secs(3600);
        let policy = ReconnectPolicy::new()
            .initial_delay(hour)
            .max_delay(hour)
            .multiplier(16);
        assert!(policy.validate().is_ok());
        for delay in steps(policy, 50, 2) {
            assert!(delay.unwrap() <= hour);
        }
    }

    #[test]
    fn validation_names_the_field() {
        let field = |p: ReconnectPolicy| match p.validate() {
            Err(Error::Config { field, .. }) => field,
            other => panic!("expected a config error, got {other:?}"),
        };
        assert!(ReconnectPolicy::new().validate().is_ok());
        assert_eq!(
            field(ReconnectPolicy::new().initial_delay(Duration::ZERO)),
            "initial_delay"
        );
        assert_eq!(
            field(ReconnectPolicy::new().initial_delay(Duration::from_secs(31))),
            "initial_delay"
        );
        assert_eq!(
            field(ReconnectPolicy::new().max_delay(Duration::from_secs(3601))),
            "max_delay"
        );
        assert_eq!(field(ReconnectPolicy::new().multiplier(0)), "multiplier");
        assert_eq!(field(ReconnectPolicy::new().multiplier(17)), "multiplier");
        assert_eq!(
            field(ReconnectPolicy::new().healthy_after(Duration::from_secs(3601))),
            "healthy_after"
        );
    }
}
