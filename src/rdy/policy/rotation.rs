//! Which RDY each link should have: the even split while links fit in the capacity, the
//! low-RDY rotation when they outnumber it.

use std::{collections::BTreeMap, time::Instant};

use super::{even_split, Conn, LinkId, RdyPolicy};

impl RdyPolicy {
    /// The RDY each connection should have with `capacity` slots.
    pub(super) fn targets(&self, capacity: u32, now: Instant) -> BTreeMap<LinkId, u32> {
        if capacity == 0 {
            return BTreeMap::new();
        }
        let live = self.conns.values().filter(|c| !c.lost).count();
        if live <= usize::try_from(capacity).unwrap_or(usize::MAX) {
            let caps: Vec<(LinkId, u32)> = self
                .conns
                .iter()
                .filter(|(_, c)| !c.lost)
                .map(|(id, c)| (*id, c.max_rdy))
                .collect();
            return even_split(capacity, &caps);
        }
        self.rotation_targets(capacity, now)
    }

    /// Low-RDY mode (more connections than slots): at most one RDY per connection, rotating.
    /// A holder gives its slot back when idle for `low_rdy_idle_timeout` or after holding it
    /// `low_rdy_timeout`, but only if a waiting connection can use it; free slots go to the
    /// connections that waited longest (go-nsq picks at random: an nsqd could wait forever).
    fn rotation_targets(&self, capacity: u32, now: Instant) -> BTreeMap<LinkId, u32> {
        let slots = usize::try_from(capacity).unwrap_or(usize::MAX);
        let mut waiting: Vec<(u64, LinkId)> = self
            .conns
            .iter()
            .filter(|(_, c)| c.can_take_slot())
            .map(|(id, c)| (c.ticket, *id))
            .collect();
        waiting.sort_unstable();
        let holders: Vec<(&LinkId, &Conn)> = self.conns.iter().filter(|(_, c)| c.rdy > 0).collect();

        let free_now = slots.saturating_sub(holders.len());
        let wanted = waiting.len().saturating_sub(free_now);
        let mut expired: Vec<(Instant, u64, LinkId)> = holders
            .iter()
            .filter(|(_, c)| self.should_give_up_slot(c, now))
            .map(|(id, c)| (c.granted_at, c.ticket, **id))
            .collect();
        expired.sort_unstable();
        expired.truncate(wanted);

        // Holders beyond the slots (max_in_flight lowered, or a new connection ended normal
        // mode) keep the most recent grants; the longest holders give way.
        let mut keep: Vec<(Instant, u64, LinkId)> = holders
            .iter()
            .filter(|(id, _)| !expired.iter().any(|(_, _, e)| e == *id))
            .map(|(id, c)| (c.granted_at, c.ticket, **id))
            .collect();
        keep.sort_unstable_by(|a, b| b.cmp(a));
        keep.truncate(slots);

        let free = slots - keep.len();
        let kept = keep.iter().map(|(_, _, id)| *id);
        let granted = waiting.iter().take(free).map(|(_, id)| *id);
        kept.chain(granted).map(|id| (id, 1)).collect()
    }

    fn should_give_up_slot(&self, c: &Conn, now: Instant) -> bool {
        let idle = now.saturating_duration_since(c.last_activity);
        let held = now.saturating_duration_since(c.granted_at);
        (c.window_open() && idle >= self.idle_timeout) || held >= self.held_timeout
    }
}
