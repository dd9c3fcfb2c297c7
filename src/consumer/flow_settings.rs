//! Flow-control settings given one by one on the builder (`max_in_flight(..)`,
//! `low_rdy_idle_timeout(..)`, ...) and all at once (`flow_control(FlowControl)`), merged so
//! that the order of the calls does not matter.
//!
//! `flow_control()` used to replace the whole [`FlowControl`], silently undoing the
//! `max_in_flight` and backoff settings given before it, while the same calls in the other
//! order kept them. Now a setting given on its own always wins over the bulk one, whatever
//! the order, and the two contradict each other only where both were changed: the
//! [`FlowControl`] has a value other than its default, and the setter another value still.
//! That is a [`Error::Config`] from `validate()`, naming the setting, rather than a silent
//! choice. A field left at its default in the [`FlowControl`] cannot be told apart from one
//! not given, so it never conflicts.

use std::time::Duration;

use crate::{
    error::Error,
    rdy::{BackoffStrategy, FlowControl},
};

/// What the builder was given; [`effective`](Self::effective) merges it.
#[derive(Debug, Clone, Default)]
pub(crate) struct FlowSettings {
    /// From `flow_control()`, the last call's.
    pub(crate) bulk: Option<FlowControl>,
    /// From the setters of the same names.
    pub(crate) max_in_flight: Option<u32>,
    pub(crate) rdy_redistribute_interval: Option<Duration>,
    pub(crate) low_rdy_idle_timeout: Option<Duration>,
    pub(crate) low_rdy_timeout: Option<Duration>,
    pub(crate) backoff_strategy: Option<BackoffStrategy>,
    pub(crate) backoff_multiplier: Option<Duration>,
    pub(crate) max_backoff_duration: Option<Duration>,
}

/// Calls `$m!` with the name of each of the seven fields.
macro_rules! for_each_field {
    ($m:ident) => {
        $m!(max_in_flight);
        $m!(rdy_redistribute_interval);
        $m!(low_rdy_idle_timeout);
        $m!(low_rdy_timeout);
        $m!(backoff_strategy);
        $m!(backoff_multiplier);
        $m!(max_backoff_duration);
    };
}

impl FlowSettings {
    /// The bulk settings (or the defaults), with every setting given on its own on top.
    pub(crate) fn effective(&self) -> FlowControl {
        let mut flow = self.bulk.clone().unwrap_or_default();
        macro_rules! apply {
            ($field:ident) => {
                if let Some(value) = self.$field {
                    flow.$field = value;
                }
            };
        }
        for_each_field!(apply);
        flow
    }

    /// The first setting given both ways with different values, neither of them the default.
    pub(crate) fn conflict(&self) -> Result<(), Error> {
        let Some(bulk) = &self.bulk else {
            return Ok(());
        };
        let defaults = FlowControl::default();
        macro_rules! check {
            ($field:ident) => {
                if let Some(own) = self.$field {
                    if bulk.$field != defaults.$field && bulk.$field != own {
                        return Err(Error::config(
                            stringify!($field),
                            format!(
                                "given as {own:?} by {}() and as {:?} by flow_control(); give it once",
                                stringify!($field),
                                bulk.$field,
                            ),
                        ));
                    }
                }
            };
        }
        for_each_field!(check);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_setting_given_on_its_own_wins_in_either_order() {
        let bulk = FlowControl::new().low_rdy_idle_timeout(700 * MS);
        // flow_control() after the setters, then before them: the same result.
        let after = FlowSettings {
            max_in_flight: Some(32),
            backoff_multiplier: Some(10 * MS),
            bulk: Some(bulk.clone()),
            ..Default::default()
        };
        let flow = after.effective();
        assert_eq!(flow.max_in_flight, 32);
        assert_eq!(flow.backoff_multiplier, 10 * MS);
        assert_eq!(flow.low_rdy_idle_timeout, 700 * MS);
        assert_eq!(
            flow.max_backoff_duration,
            FlowControl::DEFAULT_MAX_BACKOFF_DURATION
        );
        assert!(after.conflict().is_ok());
        assert_eq!(FlowSettings::default().effective(), FlowControl::default());
    }

    #[test]
    fn a_setting_changed_both_ways_differently_is_an_error() {
        let settings = FlowSettings {
            bulk: Some(FlowControl::new().max_in_flight(8).low_rdy_timeout(20 * MS)),
            max_in_flight: Some(32),
            ..Default::default()
        };
        let Err(Error::Config { field, reason }) = settings.conflict() else {
            panic!("no conflict reported");
        };
        assert_eq!(field, "max_in_flight");
        assert_eq!(
            reason,
            "given as 32 by max_in_flight() and as 8 by flow_control(); give it once"
        );
        // The same value both ways is no contradiction.
        let same = FlowSettings {
            max_in_flight: Some(8),
            low_rdy_timeout: Some(20 * MS),
            ..settings
        };
        assert!(same.conflict().is_ok());
        assert_eq!(same.effective().max_in_flight, 8);
    }
}
