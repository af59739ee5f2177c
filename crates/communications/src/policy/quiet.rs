//! Quiet hours: a daily local window (it may wrap midnight, 21:00–08:00) in which messages that
//! must respect it wait for its end. Computed in the recipient's zone, so it follows daylight
//! saving: the window's end is a local time, whatever its UTC offset that day.

use chrono::{DateTime, Duration, NaiveDate, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;

/// A daily window of local time, `[start, end)`; `start > end` wraps midnight; equal: empty.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuietHours {
    pub start: NaiveTime,
    pub end: NaiveTime,
}

impl QuietHours {
    fn contains(self, time: NaiveTime) -> bool {
        if self.start <= self.end {
            self.start <= time && time < self.end
        } else {
            time >= self.start || time < self.end
        }
    }

    /// `at` when it is outside the window, else the window's end in `tz` (the next allowed minute).
    pub fn next_allowed(self, at: DateTime<Utc>, tz: Tz) -> DateTime<Utc> {
        let local = at.with_timezone(&tz);
        let time = local.time();
        if !self.contains(time) {
            return at;
        }
        // The window ends today, unless it wraps and we are in its evening part.
        let date = if self.start > self.end && time >= self.start {
            local.date_naive() + Duration::days(1)
        } else {
            local.date_naive()
        };
        first_instant_at_or_after(tz, date, self.end).max(at)
    }
}

/// The first instant at or after local `date time` in `tz`: the time itself, the earlier of two
/// (a clock set back), or the end of the gap (a clock set forward skips it).
fn first_instant_at_or_after(tz: Tz, date: NaiveDate, time: NaiveTime) -> DateTime<Utc> {
    let mut local = date.and_time(time);
    // Gaps are at most a few hours; step a minute at a time out of one.
    for _ in 0..(24 * 60) {
        if let Some(instant) = tz.from_local_datetime(&local).earliest() {
            return instant.with_timezone(&Utc);
        }
        local += Duration::minutes(1);
    }
    Utc.from_utc_datetime(&date.and_time(time))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(start: &str, end: &str) -> QuietHours {
        QuietHours {
            start: NaiveTime::parse_from_str(start, "%H:%M").expect("a time"),
            end: NaiveTime::parse_from_str(end, "%H:%M").expect("a time"),
        }
    }

    fn utc(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text).expect("a time").with_timezone(&Utc)
    }

    #[test]
    fn outside_the_window_goes_now() {
        let at = utc("2026-06-10T10:00:00Z"); // 12:00 in Berlin
        assert_eq!(window("21:00", "08:00").next_allowed(at, chrono_tz::Europe::Berlin), at);
    }

    #[test]
    fn evening_waits_for_the_next_morning_and_early_morning_for_this_one() {
        let q = window("21:00", "08:00");
        let berlin = chrono_tz::Europe::Berlin;
        // 22:30 summer time → 08:00 next day (06:00Z).
        assert_eq!(q.next_allowed(utc("2026-06-10T20:30:00Z"), berlin), utc("2026-06-11T06:00:00Z"));
        // 05:00 local → 08:00 the same day.
        assert_eq!(q.next_allowed(utc("2026-06-11T03:00:00Z"), berlin), utc("2026-06-11T06:00:00Z"));
        // The window's start is in it, its end is not.
        assert_eq!(q.next_allowed(utc("2026-06-10T19:00:00Z"), berlin), utc("2026-06-11T06:00:00Z"));
        assert_eq!(q.next_allowed(utc("2026-06-11T06:00:00Z"), berlin), utc("2026-06-11T06:00:00Z"));
    }

    #[test]
    fn across_daylight_saving_changes_the_morning_is_local() {
        let q = window("21:00", "08:00");
        let berlin = chrono_tz::Europe::Berlin;
        // Saturday 28 March 2026, 22:00 CET (21:00Z); clocks go forward that night: 08:00 CEST = 06:00Z.
        assert_eq!(q.next_allowed(utc("2026-03-28T21:00:00Z"), berlin), utc("2026-03-29T06:00:00Z"));
        // Saturday 24 October 2026, 23:00 CEST (21:00Z); clocks go back: 08:00 CET = 07:00Z.
        assert_eq!(q.next_allowed(utc("2026-10-24T21:00:00Z"), berlin), utc("2026-10-25T07:00:00Z"));
        // New York, 1 November 2026 (back to EST): 21:30 EDT on the 31st → 08:00 EST = 13:00Z.
        let new_york = chrono_tz::America::New_York;
        assert_eq!(q.next_allowed(utc("2026-11-01T01:30:00Z"), new_york), utc("2026-11-01T13:00:00Z"));
    }

    #[test]
    fn an_end_inside_the_spring_gap_is_the_end_of_the_gap() {
        // 02:30 does not exist in Berlin on 29 March 2026: the first minute after it is 03:00 CEST.
        let q = window("21:00", "02:30");
        assert_eq!(q.next_allowed(utc("2026-03-28T22:00:00Z"), chrono_tz::Europe::Berlin), utc("2026-03-29T01:00:00Z"));
    }

    #[test]
    fn a_daytime_window_and_an_empty_one() {
        let lunch = window("12:00", "13:00");
        let at = utc("2026-06-10T12:15:00Z");
        assert_eq!(lunch.next_allowed(at, chrono_tz::UTC), utc("2026-06-10T13:00:00Z"));
        assert_eq!(window("08:00", "08:00").next_allowed(at, chrono_tz::UTC), at);
    }
}
