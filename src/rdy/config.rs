//! The consumer's flow-control settings.

use std::time::Duration;

use super::backoff::BackoffStrategy;
use crate::error::{Error, Result};

const MS: Duration = Duration::from_millis(1);
const MINUTE: Duration = Duration::from_secs(60);

/// How many messages a consumer has in flight, how the RDY window moves between nsqd
/// connections, and how the consumer slows down when handlers fail.
///
/// Build it with [`FlowControl::new`] and the setters, which are named after the fields:
///
/// ```
/// # use std::time::Duration;
/// # use actix_nsq::{BackoffStrategy, FlowControl};
/// let flow = FlowControl::new()
///     .max_in_flight(32)
///     .backoff_strategy(BackoffStrategy::FullJitter)
///     .max_backoff_duration(Duration::from_secs(30));
/// assert!(flow.validate().is_ok());
/// ```
///
/// The three low-RDY settings deliberately differ from go-nsq's defaults (5 s / 10 s / 30 s).
/// When a consumer has more nsqd connections than `max_in_flight`, only some connections can
/// hold RDY at a time. go-nsq hands those slots out at random every 5 s and takes them back
/// after 10 s idle or 30 s held, so a message on an nsqd without RDY waits 5-30 s (go-nsq#179,
/// nsqjs#242, pynsq#9). Here the slots rotate round-robin, checked every 50 ms, given back
/// after 250 ms idle or 500 ms held: with 20 nsqd and `max_in_flight` 5, a message waits at
/// most about 1.7 s for RDY (the `latency` tests in `src/rdy` simulate it).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
#[must_use = "settings do nothing until passed on"]
pub struct FlowControl {
    /// The most messages in flight at once, over all connections; 0 pauses the consumer.
    ///
    /// The sum of RDY over the connections never exceeds it, nor do the messages being
    /// handled, with one exception inherent to NSQ: RDY changes reach nsqd asynchronously, so
    /// a message nsqd sent just before it read a lowered RDY still arrives (at most one per
    /// connection whose RDY just dropped). The policy then withholds RDY elsewhere until the
    /// total is back within bounds. Messages of a lost connection keep their slots while their
    /// handlers run, so reconnecting never adds to the total.
    pub max_in_flight: u32,
    /// How often RDY is rotated when connections outnumber `max_in_flight`; 1 ms..=5 s and
    /// at most `low_rdy_idle_timeout`.
    pub rdy_redistribute_interval: Duration,
    /// In low-RDY mode, a connection that received nothing for this long gives its RDY to a
    /// waiting one; 10 ms..=5 min. Keep it above the round trip to the farthest nsqd, or a
    /// connection gives RDY back before its first message can arrive.
    pub low_rdy_idle_timeout: Duration,
    /// In low-RDY mode, a connection that held RDY this long gives it to a waiting one even
    /// while busy; 10 ms..=5 min.
    pub low_rdy_timeout: Duration,
    /// How the backoff pause grows with the level.
    pub backoff_strategy: BackoffStrategy,
    /// The unit of the backoff pause; 0..=60 min (go-nsq's range).
    pub backoff_multiplier: Duration,
    /// The longest backoff pause; 0..=60 min (go-nsq's range), 0 disables backoff.
    pub max_backoff_duration: Duration,
}

impl FlowControl {
    /// One message at a time, as go-nsq.
    pub const DEFAULT_MAX_IN_FLIGHT: u32 = 1;
    /// 50 ms (go-nsq: 5 s); see the type's docs.
    pub const DEFAULT_RDY_REDISTRIBUTE_INTERVAL: Duration = Duration::from_millis(50);
    /// 250 ms (go-nsq: 10 s); see the type's docs.
    pub const DEFAULT_LOW_RDY_IDLE_TIMEOUT: Duration = Duration::from_millis(250);
    /// 500 ms (go-nsq: 30 s); see the type's docs.
    pub const DEFAULT_LOW_RDY_TIMEOUT: Duration = Duration::from_millis(500);
    /// Exponential, as go-nsq.
    pub const DEFAULT_BACKOFF_STRATEGY: BackoffStrategy = BackoffStrategy::Exponential;
    /// 1 s, as go-nsq: the first pause is 2 s.
    pub const DEFAULT_BACKOFF_MULTIPLIER: Duration = Duration::from_secs(1);
    /// 2 min, as go-nsq: with the exponential strategy the longest pause is 64 s.
    pub const DEFAULT_MAX_BACKOFF_DURATION: Duration = Duration::from_secs(120);

    /// The defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets [`max_in_flight`](Self::max_in_flight).
    pub fn max_in_flight(mut self, max_in_flight: u32) -> Self {
        self.max_in_flight = max_in_flight;
        self
    }

    /// Sets [`rdy_redistribute_interval`](Self::rdy_redistribute_interval).
    pub fn rdy_redistribute_interval(mut self, interval: Duration) -> Self {
        self.rdy_redistribute_interval = interval;
        self
    }

    /// Sets [`low_rdy_idle_timeout`](Self::low_rdy_idle_timeout).
    pub fn low_rdy_idle_timeout(mut self, timeout: Duration) -> Self {
        self.low_rdy_idle_timeout = timeout;
        self
    }

    /// Sets [`low_rdy_timeout`](Self::low_rdy_timeout).
    pub fn low_rdy_timeout(mut self, timeout: Duration) -> Self {
        self.low_rdy_timeout = timeout;
        self
    }

    /// Sets [`backoff_strategy`](Self::backoff_strategy).
    pub fn backoff_strategy(mut self, strategy: BackoffStrategy) -> Self {
        self.backoff_strategy = strategy;
        self
    }

    /// Sets [`backoff_multiplier`](Self::backoff_multiplier).
    pub fn backoff_multiplier(mut self, multiplier: Duration) -> Self {
        self.backoff_multiplier = multiplier;
        self
    }

    /// Sets [`max_backoff_duration`](Self::max_backoff_duration).
    pub fn max_backoff_duration(mut self, max: Duration) -> Self {
        self.max_backoff_duration = max;
        self
    }

    /// Checks every setting against its range.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] naming the first setting out of range.
    pub fn validate(&self) -> Result<()> {
        let Self {
            max_in_flight: _,
            rdy_redistribute_interval,
            low_rdy_idle_timeout,
            low_rdy_timeout,
            backoff_strategy: _,
            backoff_multiplier,
            max_backoff_duration,
        } = self;
        let interval = *rdy_redistribute_interval;
        check_range(
            "rdy_redistribute_interval",
            interval,
            MS,
            Duration::from_secs(5),
        )?;
        check_range(
            "low_rdy_idle_timeout",
            *low_rdy_idle_timeout,
            10 * MS,
            5 * MINUTE,
        )?;
        check_range("low_rdy_timeout", *low_rdy_timeout, 10 * MS, 5 * MINUTE)?;
        if interval > *low_rdy_idle_timeout {
            // The idle timeout is enforced at ticks; slower ticks would silently stretch it.
            return Err(Error::config(
                "rdy_redistribute_interval",
                format!(
                    "{interval:?} must not exceed low_rdy_idle_timeout ({low_rdy_idle_timeout:?})"
                ),
            ));
        }
        check_range(
            "backoff_multiplier",
            *backoff_multiplier,
            Duration::ZERO,
            60 * MINUTE,
        )?;
        check_range(
            "max_backoff_duration",
            *max_backoff_duration,
            Duration::ZERO,
            60 * MINUTE,
        )?;
        Ok(())
    }
}

impl Default for FlowControl {
    fn default() -> Self {
        Self {
            max_in_flight: Self::DEFAULT_MAX_IN_FLIGHT,
            rdy_redistribute_interval: Self::DEFAULT_RDY_REDISTRIBUTE_INTERVAL,
            low_rdy_idle_timeout: Self::DEFAULT_LOW_RDY_IDLE_TIMEOUT,
            low_rdy_timeout: Self::DEFAULT_LOW_RDY_TIMEOUT,
            backoff_strategy: Self::DEFAULT_BACKOFF_STRATEGY,
            backoff_multiplier: Self::DEFAULT_BACKOFF_MULTIPLIER,
            max_backoff_duration: Self::DEFAULT_MAX_BACKOFF_DURATION,
        }
    }
}

pub(crate) fn check_range(
    field: &'static str,
    value: Duration,
    min: Duration,
    max: Duration,
) -> Result<()> {
    if value < min || value > max {
        return Err(Error::config(
            field,
            format!("{value:?} is outside {min:?}..={max:?}"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of(result: Result<()>) -> &'static str {
        match result {
            Err(Error::Config { field, .. }) => field,
            other => panic!("expected a config error, got {other:?}"),
        }
    }

    #[test]
    fn defaults_are_valid_and_documented_values() {
        let flow = FlowControl::new();
        assert!(flow.validate().is_ok());
        assert_eq!(flow.max_in_flight, 1);
        assert_eq!(flow.backoff_multiplier, Duration::from_secs(1));
        assert_eq!(flow.max_backoff_duration, Duration::from_secs(120));
        assert_eq!(flow.backoff_strategy, BackoffStrategy::Exponential);
    }

    #[test]
    fn zero_max_in_flight_and_zero_backoff_are_allowed() {
        let flow = FlowControl::new()
            .max_in_flight(0)
            .backoff_multiplier(Duration::ZERO)
            .max_backoff_duration(Duration::ZERO);
        assert!(flow.validate().is_ok());
    }

    #[test]
    fn each_out_of_range_setting_is_named() {
        let hour = 60 * MINUTE + MS;
        let cases = [
            (
                FlowControl::new().rdy_redistribute_interval(Duration::ZERO),
                "rdy_redistribute_interval",
            ),
            (
                FlowControl::new().rdy_redistribute_interval(Duration::from_secs(6)),
                "rdy_redistribute_interval",
            ),
            (
                FlowControl::new().low_rdy_idle_timeout(MS),
                "low_rdy_idle_timeout",
            ),
            (
                FlowControl::new().low_rdy_idle_timeout(6 * MINUTE),
                "low_rdy_idle_timeout",
            ),
            (FlowControl::new().low_rdy_timeout(MS), "low_rdy_timeout"),
            (
                FlowControl::new().backoff_multiplier(hour),
                "backoff_multiplier",
            ),
            (
                FlowControl::new().max_backoff_duration(hour),
                "max_backoff_duration",
            ),
            (
                FlowControl::new()
                    .rdy_redistribute_interval(Duration::from_secs(1))
                    .low_rdy_idle_timeout(Duration::from_millis(500)),
                "rdy_redistribute_interval",
            ),
        ];
        for (flow, field) in cases {
            assert_eq!(field_of(flow.validate()), field, "{flow:?}");
        }
    }

    #[test]
    fn error_message_shows_the_range() {
        let err = FlowControl::new()
            .low_rdy_timeout(MS)
            .validate()
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid configuration `low_rdy_timeout`: 1ms is outside 10ms..=300s"
        );
    }
}
