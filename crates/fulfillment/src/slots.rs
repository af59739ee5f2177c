//! Free slots: working time minus what is taken. One function decides both what availability
//! shows and whether a requested slot may be held, so a slot shown free is bookable and a slot
//! refused was not shown.

use chrono::{DateTime, Duration, Utc};

use crate::schedule::Interval;

/// What a service needs of a resource's time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Needs {
    pub duration: Duration,
    pub buffer_before: Duration,
    pub buffer_after: Duration,
}

impl Needs {
    /// The time an appointment at `start` takes: itself with the buffers around it.
    pub fn blocks(&self, start: DateTime<Utc>) -> Interval {
        Interval::new(start - self.buffer_before, start + self.duration + self.buffer_after)
    }

    pub fn appointment(&self, start: DateTime<Utc>) -> Interval {
        Interval::new(start, start + self.duration)
    }
}

/// Whether an appointment at `start` fits: inside one working interval, not in the past, and
/// its blocked time (with buffers) clear of every `taken` interval (other appointments' blocked
/// time, live holds, busy times from calendars).
pub fn fits(working: &[Interval], taken: &[Interval], needs: Needs, start: DateTime<Utc>, now: DateTime<Utc>) -> bool {
    let appointment = needs.appointment(start);
    let blocks = needs.blocks(start);
    start >= now && working.iter().any(|w| w.contains(&appointment)) && !taken.iter().any(|t| t.overlaps(&blocks))
}

/// Every start on the `step` grid of each working interval (counted from the interval's start)
/// where an appointment fits, in order.
pub fn free(
    working: &[Interval],
    taken: &[Interval],
    needs: Needs,
    step: Duration,
    now: DateTime<Utc>,
) -> Vec<Interval> {
    let mut taken = taken.to_vec();
    taken.sort();
    let mut slots = Vec::new();
    for interval in working {
        let mut start = interval.start;
        // Skip the grid points already past.
        if start < now && step > Duration::zero() {
            let behind = (now - start).num_seconds();
            let steps = behind.div_euclid(step.num_seconds()) + i64::from(behind.rem_euclid(step.num_seconds()) > 0);
            start += step * i32::try_from(steps).unwrap_or(i32::MAX);
        }
        while start + needs.duration <= interval.end {
            let blocks = needs.blocks(start);
            // `taken` is sorted by start: only those starting before this block ends can overlap.
            let clash = taken.iter().take_while(|t| t.start < blocks.end).find(|t| t.overlaps(&blocks));
            match clash {
                None => {
                    slots.push(needs.appointment(start));
                    start += step;
                }
                // Jump past the clash on the grid instead of probing every step inside it.
                Some(clash) => {
                    let resume = clash.end + needs.buffer_before;
                    let behind = (resume - start).num_seconds().max(1);
                    let steps =
                        behind.div_euclid(step.num_seconds()) + i64::from(behind.rem_euclid(step.num_seconds()) > 0);
                    start += step * i32::try_from(steps.max(1)).unwrap_or(i32::MAX);
                }
            }
        }
    }
    slots
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use proptest::prelude::*;

    use super::*;

    fn at(minutes: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_790_000_000 + minutes * 60, 0).unwrap()
    }

    fn needs(duration: i64, before: i64, after: i64) -> Needs {
        Needs {
            duration: Duration::minutes(duration),
            buffer_before: Duration::minutes(before),
            buffer_after: Duration::minutes(after),
        }
    }

    #[test]
    fn appointments_and_their_buffers_take_slots_away() {
        let working = [Interval::new(at(0), at(240))];
        let taken = [Interval::new(at(60), at(120))];
        let slots = free(&working, &taken, needs(60, 0, 15), Duration::minutes(30), at(-1000));
        let starts: Vec<i64> = slots.iter().map(|s| (s.start - at(0)).num_minutes()).collect();
        // 0–60 plus 15 after would touch 60: no. 120 onwards: 120, 150 (ends 210 + 15 ≤ …), 180.
        assert_eq!(starts, [120, 150, 180]);
        assert!(fits(&working, &taken, needs(60, 0, 15), at(120), at(-1000)));
        assert!(!fits(&working, &taken, needs(60, 0, 15), at(0), at(-1000)));
        assert!(!fits(&working, &taken, needs(60, 0, 0), at(200), at(-1000)), "past the working end");
        assert!(!fits(&working, &taken, needs(60, 0, 0), at(150), at(151)), "in the past");
    }

    proptest! {
        /// Whatever is taken, every slot shown fits (so it can be held), and every grid start
        /// that fits is shown (so nothing bookable is hidden).
        #[test]
        fn shown_means_bookable_and_bookable_means_shown(
            taken in proptest::collection::vec((0i64..600, 5i64..120), 0..12),
            duration in 15i64..120, before in 0i64..30, after in 0i64..30, step in prop::sample::select(vec![5i64, 15, 30, 60]),
            now in -100i64..300,
        ) {
            let working = [Interval::new(at(0), at(300)), Interval::new(at(360), at(600))];
            let taken: Vec<Interval> = taken.iter().map(|&(s, d)| Interval::new(at(s), at(s + d))).collect();
            let needs = needs(duration, before, after);
            let slots = free(&working, &taken, needs, Duration::minutes(step), at(now));
            for slot in &slots {
                prop_assert!(fits(&working, &taken, needs, slot.start, at(now)), "{slot:?} shown but does not fit");
            }
            for w in &working {
                let mut start = w.start;
                while start < w.end {
                    if fits(&working, &taken, needs, start, at(now)) {
                        prop_assert!(slots.iter().any(|s| s.start == start), "{start} fits but is not shown");
                    }
                    start += Duration::minutes(step);
                }
            }
        }
    }
}
