//! Discovery policy, pure: how often a consumer may ask nsqlookupd again, when an nsqd that
//! keeps failing is tried again, and which discovered nsqd get a connection when there are too
//! many. The coordinator actor feeds it events and the current `Instant`, and carries out what
//! it decides.

use std::{
    collections::{HashMap, HashSet},
    time::{Duration, Instant},
};

use rand::{seq::SliceRandom, Rng};

/// Rate-limits the requeries a consumer sends its discoverer (go-nsq `lookupdRecheckChan`
/// queries on every lost connection, with no limit: an nsqd that lookupd lists but that
/// refuses connections made one consumer query 190 times in 20 s). Requests inside the
/// interval are coalesced into one requery at its end.
///
/// A query the user forces ([`Consumer::query_lookupd`](super::Consumer::query_lookupd)) has
/// its own, shorter floor ([`FORCED_MIN_INTERVAL`]); see [`force`](Self::force).
#[derive(Debug)]
pub(crate) struct RequeryLimiter {
    min_interval: Duration,
    jitter: f64,
    last: Option<Instant>,
    pending: bool,
    forced_pending: bool,
}

/// At most one user-forced query per this long. A forced query is deliberate (an operator
/// knows an nsqd was just added), so it does not wait behind the automatic limit (5 s plus
/// jitter); but code that calls it on every event must not turn it into a storm against
/// nsqlookupd: one a second per consumer at most, the rest coalesced.
pub(crate) const FORCED_MIN_INTERVAL: Duration = Duration::from_secs(1);

/// What to do with a requery request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Requery {
    /// Query now.
    Now,
    /// Query after this delay (nothing else is scheduled).
    After(Duration),
    /// A requery is already scheduled; this request joins it.
    Coalesced,
}

impl RequeryLimiter {
    /// At most one requery per `min_interval`, each interval stretched by up to `jitter`
    /// (0..=1) of itself so a fleet that lost the same nsqd does not query in step.
    pub(crate) fn new(min_interval: Duration, jitter: f64) -> Self {
        Self {
            min_interval,
            jitter: jitter.clamp(0.0, 1.0),
            last: None,
            pending: false,
            forced_pending: false,
        }
    }

    /// The user asked for a query. It goes out now unless any query went out less than
    /// [`FORCED_MIN_INTERVAL`] ago; then one forced query is scheduled for the end of that
    /// floor, and further forced requests join it. It counts as the last query, so the
    /// automatic requeries after it keep their full interval. An automatic requery already
    /// scheduled still fires: at most one query more, and it may see an nsqd the forced one
    /// did not.
    pub(crate) fn force(&mut self, now: Instant) -> Requery {
        if self.forced_pending {
            return Requery::Coalesced;
        }
        match self.last {
            Some(last) if now < last + FORCED_MIN_INTERVAL => {
                self.forced_pending = true;
                Requery::After(last + FORCED_MIN_INTERVAL - now)
            }
            _ => {
                self.last = Some(now);
                Requery::Now
            }
        }
    }

    /// The scheduled forced query was sent.
    pub(crate) fn forced_sent(&mut self, now: Instant) {
        self.forced_pending = false;
        self.last = Some(now);
    }

    /// A requery is wanted (a lookupd-found connection was lost or gave up).
    pub(crate) fn request(&mut self, now: Instant, rng: &mut impl Rng) -> Requery {
        if self.pending {
            return Requery::Coalesced;
        }
        let interval = self
            .min_interval
            .mul_f64(1.0 + self.jitter * rng.random::<f64>());
        match self.last {
            Some(last) if now < last + interval => {
                self.pending = true;
                Requery::After(last + interval - now)
            }
            _ => {
                self.last = Some(now);
                Requery::Now
            }
        }
    }

    /// The scheduled requery was sent.
    pub(crate) fn sent(&mut self, now: Instant) {
        self.pending = false;
        self.last = Some(now);
    }

    /// The scheduled requery's timer died (the coordinator restarted): let the next request
    /// schedule one again.
    pub(crate) fn timer_lost(&mut self) {
        self.pending = false;
        self.forced_pending = false;
    }
}

/// nsqd found through lookupd whose connection gave up: each is held back for a while that
/// grows with every give-up, however often lookupd lists it, and forgotten only when lookupd
/// stops listing it (or a connection to it succeeds). Without this, every rediscovery started
/// a fresh connection with a fresh backoff.
#[derive(Debug)]
pub(crate) struct Dormant {
    first_hold: Duration,
    max_hold: Duration,
    held: HashMap<String, Held>,
}

#[derive(Debug, Clone, Copy)]
struct Held {
    give_ups: u32,
    until: Instant,
}

impl Dormant {
    /// Holds start at `first_hold` and double with each give-up, up to `max_hold`.
    pub(crate) fn new(first_hold: Duration, max_hold: Duration) -> Self {
        Self {
            first_hold,
            max_hold: max_hold.max(first_hold),
            held: HashMap::new(),
        }
    }

    /// The connection to `addr` gave up: hold it back. Returns how long.
    pub(crate) fn gave_up(&mut self, addr: &str, now: Instant, rng: &mut impl Rng) -> Duration {
        let give_ups = self.held.get(addr).map_or(0, |h| h.give_ups) + 1;
        let doubled = self
            .first_hold
            .saturating_mul(1 << (give_ups - 1).min(16))
            .min(self.max_hold);
        // Between half and all of the step, as the reconnect backoff does.
        let hold = doubled / 2 + doubled.mul_f64(0.5 * rng.random::<f64>());
        self.held.insert(
            addr.to_owned(),
            Held {
                give_ups,
                until: now + hold,
            },
        );
        hold
    }

    /// A connection to `addr` is up: it is healthy again.
    pub(crate) fn connected(&mut self, addr: &str) {
        self.held.remove(addr);
    }

    /// Whether lookupd listing `addr` may start a connection to it now.
    pub(crate) fn may_connect(&self, addr: &str, now: Instant) -> bool {
        self.held.get(addr).is_none_or(|h| now >= h.until)
    }

    /// A lookupd answer listed exactly `listed`: forget the held nsqd it no longer lists.
    pub(crate) fn listed(&mut self, listed: &HashSet<&str>) {
        self.held.retain(|addr, _| listed.contains(addr.as_str()));
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.held.len()
    }
}

/// Picks which of the `candidates` (discovered, not yet connected) get a connection when at
/// most `room` more may be opened: all of them if they fit, otherwise a random choice, so
/// a fleet of consumers with the same limit covers every nsqd between them rather than all
/// picking the same first ones. Returns the chosen and the number left out.
pub(crate) fn pick_within_limit<'a>(
    mut candidates: Vec<&'a str>,
    room: usize,
    rng: &mut impl Rng,
) -> (Vec<&'a str>, usize) {
    if candidates.len() <= room {
        return (candidates, 0);
    }
    candidates.shuffle(rng);
    let left_out = candidates.len() - room;
    candidates.truncate(room);
    (candidates, left_out)
}

#[cfg(test)]
mod tests {
    use rand::{rngs::StdRng, SeedableRng};

    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn requeries_are_limited_and_coalesced() {
        let mut rng = StdRng::seed_from_u64(1);
        let mut limiter = RequeryLimiter::new(5 * S, 0.0);
        let t0 = Instant::now();
        assert_eq!(limiter.request(t0, &mut rng), Requery::Now);
        assert_eq!(limiter.request(t0 + S, &mut rng), Requery::After(4 * S));
        // 190 more failures inside the interval: still the one scheduled requery.
        for i in 0..190 {
            let at = t0 + S + Duration::from_millis(i * 10);
            assert_eq!(limiter.request(at, &mut rng), Requery::Coalesced);
        }
        limiter.sent(t0 + 5 * S);
        assert_eq!(limiter.request(t0 + 6 * S, &mut rng), Requery::After(4 * S));
        limiter.timer_lost();
        assert_eq!(limiter.request(t0 + 11 * S, &mut rng), Requery::Now);
    }

    #[test]
    fn forced_queries_skip_the_automatic_limit_but_not_their_floor() {
        let mut rng = StdRng::seed_from_u64(5);
        let mut limiter = RequeryLimiter::new(5 * S, 0.0);
        let t0 = Instant::now();
        // The first one, and one after the floor even with an automatic requery scheduled.
        assert_eq!(limiter.force(t0), Requery::Now);
        assert_eq!(
            limiter.request(t0 + S / 2, &mut rng),
            Requery::After(S * 9 / 2)
        );
        assert_eq!(limiter.force(t0 + 2 * S), Requery::Now);
        // A loop forcing queries: one scheduled at the end of the floor, the rest coalesced.
        let ms = Duration::from_millis(1);
        assert_eq!(
            limiter.force(t0 + 2 * S + 10 * ms),
            Requery::After(990 * ms)
        );
        for i in 0..500 {
            assert_eq!(limiter.force(t0 + 2 * S + i * ms), Requery::Coalesced);
        }
        limiter.forced_sent(t0 + 3 * S);
        limiter.sent(t0 + 5 * S); // the automatic one
        assert_eq!(limiter.force(t0 + 6 * S), Requery::Now);
        // A restart kills the scheduled one: the next forced request may schedule again.
        assert_eq!(limiter.force(t0 + 6 * S + ms), Requery::After(S - ms));
        limiter.timer_lost();
        assert_eq!(
            limiter.force(t0 + 6 * S + 2 * ms),
            Requery::After(S - 2 * ms)
        );

        // A forced query counts as the last query: the automatic limit runs from it.
        let mut limiter = RequeryLimiter::new(5 * S, 0.0);
        assert_eq!(limiter.force(t0), Requery::Now);
        assert_eq!(limiter.request(t0 + S, &mut rng), Requery::After(4 * S));
    }

    #[test]
    fn requery_intervals_are_jittered_within_bounds() {
        let mut rng = StdRng::seed_from_u64(2);
        let t0 = Instant::now();
        let mut seen = HashSet::new();
        for _ in 0..50 {
            let mut limiter = RequeryLimiter::new(10 * S, 0.3);
            assert_eq!(limiter.request(t0, &mut rng), Requery::Now);
            let Requery::After(delay) = limiter.request(t0, &mut rng) else {
                panic!("not scheduled");
            };
            assert!((10 * S..=13 * S).contains(&delay), "{delay:?}");
            seen.insert(delay);
        }
        assert!(seen.len() > 40, "jitter spreads the fleet");
    }

    #[test]
    fn a_failing_nsqd_keeps_its_hold_across_rediscovery() {
        let mut rng = StdRng::seed_from_u64(3);
        let mut dormant = Dormant::new(S, 60 * S);
        let t0 = Instant::now();
        let first = dormant.gave_up("a:1", t0, &mut rng);
        assert!((S / 2..=S).contains(&first));
        assert!(!dormant.may_connect("a:1", t0));
        assert!(dormant.may_connect("b:1", t0), "others are not held");
        // Listed again and again: the hold stands.
        dormant.listed(&HashSet::from(["a:1"]));
        assert!(!dormant.may_connect("a:1", t0 + first / 2));
        assert!(dormant.may_connect("a:1", t0 + first));
        // It fails again: the hold doubles (within jitter), up to the cap.
        let second = dormant.gave_up("a:1", t0 + first, &mut rng);
        assert!((S..=2 * S).contains(&second), "{second:?}");
        let mut hold = second;
        for _ in 0..20 {
            hold = dormant.gave_up("a:1", t0, &mut rng);
        }
        assert!((30 * S..=60 * S).contains(&hold), "{hold:?}");
        // A success forgets it; so does lookupd no longer listing it.
        dormant.connected("a:1");
        assert!(dormant.may_connect("a:1", t0));
        dormant.gave_up("a:1", t0, &mut rng);
        dormant.gave_up("b:1", t0, &mut rng);
        dormant.listed(&HashSet::from(["b:1"]));
        assert_eq!(dormant.len(), 1);
        assert!(dormant.may_connect("a:1", t0));
        assert!(!dormant.may_connect("b:1", t0));
    }

    #[test]
    fn the_connection_limit_picks_a_random_subset() {
        let mut rng = StdRng::seed_from_u64(4);
        let all: Vec<String> = (0..2000).map(|i| format!("nsqd{i}:4150")).collect();
        let candidates: Vec<&str> = all.iter().map(String::as_str).collect();
        let (few, left_out) = pick_within_limit(candidates[..3].to_vec(), 100, &mut rng);
        assert_eq!((few.len(), left_out), (3, 0));
        let (chosen, left_out) = pick_within_limit(candidates.clone(), 100, &mut rng);
        assert_eq!((chosen.len(), left_out), (100, 1900));
        assert_eq!(chosen.iter().collect::<HashSet<_>>().len(), 100);
        let (other, _) = pick_within_limit(candidates.clone(), 100, &mut rng);
        assert_ne!(chosen, other, "not always the same first ones");
        let (none, left_out) = pick_within_limit(candidates, 0, &mut rng);
        assert_eq!((none.len(), left_out), (0, 2000));
    }
}
