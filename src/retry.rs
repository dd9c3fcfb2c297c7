//! STUB (replaced by the rdy branch).
#![allow(missing_docs, dead_code, unreachable_pub, clippy::todo)]
use std::time::Duration;
#[derive(Debug, Clone)]
pub struct ReconnectPolicy {}
impl Default for ReconnectPolicy {
    fn default() -> Self {
        Self {}
    }
}
impl ReconnectPolicy {
    pub fn validate(&self) -> Result<(), crate::Error> {
        Ok(())
    }
    pub fn healthy_after(&self) -> Duration {
        Duration::from_secs(30)
    }
}
#[derive(Debug, Clone)]
pub(crate) struct ReconnectBackoff {}
impl ReconnectBackoff {
    pub(crate) fn new(_p: &ReconnectPolicy) -> Self {
        Self {}
    }
    pub(crate) fn next_delay<R: rand::Rng + ?Sized>(&mut self, _rng: &mut R) -> Option<Duration> {
        todo!()
    }
    pub(crate) fn reset(&mut self) {}
    pub(crate) fn attempts(&self) -> u32 {
        0
    }
}
