//! The consumer-wide backoff state machine: go-nsq's `startStopContinueBackoff`
//! (`consumer.go:802-855`) and its strategies (`config.go:38-79`), without the timer.
//!
//! Backoff is one counter for the whole consumer, not one per connection: when handlers fail,
//! the cause is usually downstream of every nsqd (a database, an API), so every connection
//! slows down together.

use std::time::Duration;

use rand::Rng;

/// How long the consumer pauses after a failed message, as a function of the backoff level.
///
/// Level 1 is the first failure, so with the default 1 s multiplier the first pause is 2 s
/// (go-nsq computes `multiplier × 2^level` and starts at level 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum BackoffStrategy {
    /// `backoff_multiplier × 2^level`: 2 s, 4 s, 8 s ... with the defaults
    /// (go-nsq `ExponentialStrategy`).
    #[default]
    Exponential,
    /// A uniformly random pause in `[0, backoff_multiplier × 2^level)` (go-nsq
    /// `FullJitterStrategy`): consumers that failed together do not all come back at once.
    FullJitter,
}

impl BackoffStrategy {
    /// The pause for `level`, before the `max_backoff_duration` cap.
    pub(crate) fn calculate(
        self,
        multiplier: Duration,
        level: u32,
        rng: &mut impl Rng,
    ) -> Duration {
        let ceiling = exponential(multiplier, level);
        match self {
            BackoffStrategy::Exponential => ceiling,
            BackoffStrategy::FullJitter => {
                // go-nsq's rand.Int63n panics on 0; a zero ceiling simply means no pause.
                let nanos = duration_nanos(ceiling);
                if nanos == 0 {
                    Duration::ZERO
                } else {
                    Duration::from_nanos(rng.random_range(0..nanos))
                }
            }
        }
    }
}

/// `multiplier × 2^level`, saturating instead of overflowing at absurd levels.
fn exponential(multiplier: Duration, level: u32) -> Duration {
    let factor = 1u64.checked_shl(level).unwrap_or(u64::MAX);
    Duration::from_nanos(duration_nanos(multiplier).saturating_mul(factor))
}

fn duration_nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// What a message's outcome says about the handler's health.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BackoffSignal {
    /// A FIN: one level down (go-nsq `resumeFlag`).
    Resume,
    /// A REQ with backoff or a handler failure: one level up (go-nsq `backoffFlag`).
    Backoff,
    /// A REQ without backoff: the level stays, but a running backoff restarts its window
    /// (go-nsq `continueFlag`, `RequeueWithoutBackoff`).
    Continue,
}

/// What the consumer must do after a signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BackoffChange {
    /// Nothing: the signal arrived while the timer ran, or did not move the level.
    Unchanged,
    /// Enter or continue backoff: RDY 0 everywhere, then wait this long before testing the
    /// waters with a single RDY 1.
    Started(Duration),
    /// The level fell back to 0: every connection gets its full share again.
    Ended,
}

/// The backoff level and whether its timer is running.
#[derive(Debug, Clone)]
pub(crate) struct BackoffState {
    strategy: BackoffStrategy,
    multiplier: Duration,
    max: Duration,
    level: u32,
    timer_running: bool,
}

impl BackoffState {
    /// A state at level 0. `max` of zero disables backoff entirely.
    pub(crate) fn new(strategy: BackoffStrategy, multiplier: Duration, max: Duration) -> Self {
        Self {
            strategy,
            multiplier,
            max,
            level: 0,
            timer_running: false,
        }
    }

    /// Feeds one message outcome in.
    ///
    /// Only one outcome counts per backoff window: while the timer runs, every signal is
    /// ignored, so a burst of failures from messages already in flight raises the level by
    /// one, not by the size of the burst (go-nsq `consumer.go:806-811`).
    pub(crate) fn signal(&mut self, signal: BackoffSignal, rng: &mut impl Rng) -> BackoffChange {
        if self.timer_running {
            return BackoffChange::Unchanged;
        }
        let mut updated = false;
        match signal {
            BackoffSignal::Resume => {
                if self.level > 0 {
                    self.level -= 1;
                    updated = true;
                }
            }
            BackoffSignal::Backoff => {
                // The level only rises while its pause still fits under the cap, so with the
                // defaults it stops at 6 (64 s): level 7 would be 128 s > 120 s. A zero cap
                // therefore disables backoff (the explicit check keeps that true even with a
                // zero multiplier, where go-nsq would back off for 0 s forever).
                let next = self.level.saturating_add(1);
                if !self.max.is_zero() && self.calculate(next, rng) <= self.max {
                    self.level = next;
                    updated = true;
                }
            }
            BackoffSignal::Continue => {}
        }
        if self.level == 0 {
            return if updated {
                BackoffChange::Ended
            } else {
                BackoffChange::Unchanged
            };
        }
        let pause = self.calculate(self.level, rng).min(self.max);
        self.timer_running = true;
        BackoffChange::Started(pause)
    }

    /// The backoff timer fired. Returns false (and changes nothing) if no timer was running.
    pub(crate) fn timer_fired(&mut self) -> bool {
        std::mem::replace(&mut self.timer_running, false)
    }

    /// The current level; 0 means not backing off.
    pub(crate) fn level(&self) -> u32 {
        self.level
    }

    /// True while the level is above 0 (go-nsq `inBackoff`).
    pub(crate) fn in_backoff(&self) -> bool {
        self.level > 0
    }

    /// True while the pause runs and every connection must stay at RDY 0 (go-nsq
    /// `inBackoffTimeout`).
    pub(crate) fn timer_running(&self) -> bool {
        self.timer_running
    }

    fn calculate(&self, level: u32, rng: &mut impl Rng) -> Duration {
        self.strategy.calculate(self.multiplier, level, rng)
    }
}

#[cfg(test)]
mod tests {
    use rand::{rngs::StdRng, SeedableRng};

    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    fn defaults() -> BackoffState {
        BackoffState::new(
            BackoffStrategy::Exponential,
            SECOND,
            Duration::from_secs(120),
        )
    }

    fn fail(state: &mut BackoffState, rng: &mut StdRng) -> BackoffChange {
        let change = state.signal(BackoffSignal::Backoff, rng);
        state.timer_fired();
        change
    }

    #[test]
    fn first_backoff_is_two_seconds() {
        let mut rng = StdRng::seed_from_u64(1);
        let mut state = defaults();
        assert_eq!(
            state.signal(BackoffSignal::Backoff, &mut rng),
            BackoffChange::Started(2 * SECOND)
        );
        assert_eq!(state.level(), 1);
        assert!(state.in_backoff() && state.timer_running());
    }

    #[test]
    fn level_stops_at_six_with_defaults() {
        let mut rng = StdRng::seed_from_u64(1);
        let mut state = defaults();
        let pauses: Vec<_> = (0..10).map(|_| fail(&mut state, &mut rng)).collect();
        let secs = |s: u64| BackoffChange::Started(Duration::from_secs(s));
        assert_eq!(
            pauses[..6],
            [secs(2), secs(4), secs(8), secs(16), secs(32), secs(64)]
        );
        // Level 7 would be 128 s > 120 s: the level stays at 6 and the window restarts at 64 s.
        assert!(pauses[6..].iter().all(|p| *p == secs(64)));
        assert_eq!(state.level(), 6);
    }

    #[test]
    fn zero_max_disables_backoff() {
        let mut rng = StdRng::seed_from_u64(1);
        for multiplier in [SECOND, Duration::ZERO] {
            let mut state =
                BackoffState::new(BackoffStrategy::Exponential, multiplier, Duration::ZERO);
            assert_eq!(
                state.signal(BackoffSignal::Backoff, &mut rng),
                BackoffChange::Unchanged
            );
            assert_eq!(state.level(), 0);
            assert!(!state.timer_running());
        }
    }

    #[test]
    fn signals_are_ignored_while_the_timer_runs() {
        let mut rng = StdRng::seed_from_u64(1);
        let mut state = defaults();
        state.signal(BackoffSignal::Backoff, &mut rng);
        for signal in [
            BackoffSignal::Backoff,
            BackoffSignal::Resume,
            BackoffSignal::Continue,
        ] {
            assert_eq!(state.signal(signal, &mut rng), BackoffChange::Unchanged);
        }
        assert_eq!(state.level(), 1);
        assert!(state.timer_fired());
        assert!(!state.timer_fired(), "a second firing is spurious");
    }

    #[test]
    fn resume_steps_down_one_level_per_window_then_ends() {
        let mut rng = StdRng::seed_from_u64(1);
        let mut state = defaults();
        fail(&mut state, &mut rng);
        fail(&mut state, &mut rng);
        assert_eq!(
            state.signal(BackoffSignal::Resume, &mut rng),
            BackoffChange::Started(2 * SECOND)
        );
        assert_eq!(state.level(), 1);
        state.timer_fired();
        assert_eq!(
            state.signal(BackoffSignal::Resume, &mut rng),
            BackoffChange::Ended
        );
        assert_eq!(state.level(), 0);
        assert_eq!(
            state.signal(BackoffSignal::Resume, &mut rng),
            BackoffChange::Unchanged
        );
    }

    #[test]
    fn continue_restarts_the_window_only_in_backoff() {
        let mut rng = StdRng::seed_from_u64(1);
        let mut state = defaults();
        assert_eq!(
            state.signal(BackoffSignal::Continue, &mut rng),
            BackoffChange::Unchanged
        );
        fail(&mut state, &mut rng);
        assert_eq!(
            state.signal(BackoffSignal::Continue, &mut rng),
            BackoffChange::Started(2 * SECOND)
        );
        assert_eq!(state.level(), 1);
    }

    #[test]
    fn full_jitter_stays_below_the_exponential_ceiling() {
        let mut rng = StdRng::seed_from_u64(7);
        for level in 1..8 {
            let ceiling = exponential(SECOND, level);
            let pauses: Vec<_> = (0..200)
                .map(|_| BackoffStrategy::FullJitter.calculate(SECOND, level, &mut rng))
                .collect();
            assert!(pauses.iter().all(|p| *p < ceiling));
            // Uniform: with 200 draws some land in the lower and some in the upper half.
            assert!(
                pauses.iter().any(|p| *p < ceiling / 2) && pauses.iter().any(|p| *p >= ceiling / 2)
            );
        }
        assert_eq!(
            BackoffStrategy::FullJitter.calculate(Duration::ZERO, 3, &mut rng),
            Duration::ZERO
        );
    }

    #[test]
    fn huge_levels_saturate() {
        let mut rng = StdRng::seed_from_u64(1);
        let max = Duration::from_nanos(u64::MAX);
        assert_eq!(exponential(SECOND, 200), max);
        assert_eq!(
            BackoffStrategy::Exponential.calculate(SECOND, u32::MAX, &mut rng),
            max
        );
        // A zero multiplier never exceeds the cap: the level rises without overflowing.
        let mut state = BackoffState::new(BackoffStrategy::Exponential, Duration::ZERO, SECOND);
        for _ in 0..5 {
            assert_eq!(
                fail(&mut state, &mut rng),
                BackoffChange::Started(Duration::ZERO)
            );
        }
        assert_eq!(state.level(), 5);
    }
}
