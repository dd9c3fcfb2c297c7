//! The even split of a budget over connections capped by their nsqd's `max_rdy_count`.

use std::collections::BTreeMap;

use super::LinkId;

/// Splits `budget` as evenly as the connections' `max_rdy_count`s allow. Connections capped
/// below an even share take their cap and the others share what is left (water-filling).
/// The remainder goes one by one to the oldest connections (nsqjs, `readerrdy.js`): go-nsq's
/// plain `mif / n` leaves `mif % n` slots unused for good, e.g. only 2 of 3 with two nsqd.
pub(super) fn even_split(budget: u32, caps: &[(LinkId, u32)]) -> BTreeMap<LinkId, u32> {
    let mut by_cap: Vec<usize> = (0..caps.len()).collect();
    by_cap.sort_unstable_by_key(|&i| (caps[i].1, i));
    let mut shares = BTreeMap::new();
    let mut left = u64::from(budget);
    let mut rest = by_cap.as_slice();
    while let Some((&i, tail)) = rest.split_first() {
        let even = left / rest.len() as u64;
        let (id, cap) = caps[i];
        if u64::from(cap) > even {
            break;
        }
        shares.insert(id, cap);
        left -= u64::from(cap);
        rest = tail;
    }
    if rest.is_empty() {
        return shares;
    }
    let even = left / rest.len() as u64;
    let mut extra = left % rest.len() as u64;
    let mut uncapped = rest.to_vec();
    uncapped.sort_unstable();
    for i in uncapped {
        // Every uncapped connection's cap is above `even`, so `even + 1` still fits.
        let share = even + u64::from(extra > 0);
        extra = extra.saturating_sub(1);
        shares.insert(caps[i].0, u32::try_from(share).unwrap_or(caps[i].1));
    }
    shares
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(budget: u32, caps: &[u32]) -> Vec<u32> {
        let caps: Vec<(LinkId, u32)> = caps
            .iter()
            .enumerate()
            .map(|(i, cap)| (LinkId(i as u64), *cap))
            .collect();
        let shares = even_split(budget, &caps);
        caps.iter().map(|(id, _)| shares[id]).collect()
    }

    #[test]
    fn remainder_goes_to_the_oldest_connections() {
        assert_eq!(split(5, &[2500, 2500]), [3, 2]);
        assert_eq!(
            split(3, &[2500, 2500]),
            [2, 1],
            "go-nsq would use only 2 of 3"
        );
        assert_eq!(split(7, &[2500; 3]), [3, 2, 2]);
        assert_eq!(split(6, &[2500; 3]), [2, 2, 2]);
    }

    #[test]
    fn capped_connections_leave_the_rest_to_the_others() {
        assert_eq!(split(100, &[10, 2500, 30]), [10, 60, 30]);
        assert_eq!(split(10, &[1, 1, 2500]), [1, 1, 8]);
        assert_eq!(
            split(10, &[0, 4, 4]),
            [0, 4, 4],
            "caps can leave budget unused"
        );
        assert_eq!(split(9, &[3, 2500, 2500]), [3, 3, 3]);
    }

    #[test]
    fn shares_never_exceed_budget_or_caps() {
        for budget in 0..40 {
            for caps in [[1, 2, 3], [5, 5, 5], [0, 7, 2500], [2500, 1, 1]] {
                let shares = split(budget, &caps);
                let total: u32 = shares.iter().sum();
                assert_eq!(
                    total,
                    budget.min(caps.iter().sum()),
                    "{budget} over {caps:?}"
                );
                assert!(shares.iter().zip(caps).all(|(s, c)| *s <= c));
                let uncapped: Vec<u32> = shares
                    .iter()
                    .zip(caps)
                    .filter(|(s, c)| *s < c)
                    .map(|(s, _)| *s)
                    .collect();
                let (lo, hi) = (uncapped.iter().min(), uncapped.iter().max());
                assert!(lo.zip(hi).is_none_or(|(lo, hi)| hi - lo <= 1), "{shares:?}");
            }
        }
    }
}
