//! When a resource works, as instants: its usual week and the exceptions of single days, both in
//! its own time zone, turned into UTC intervals day by day — so a daylight-saving change moves
//! the instants, never the local hours people agreed on.

use chrono::{DateTime, Datelike, Duration, LocalResult, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;

/// A half-open interval `[start, end)` of instants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Interval {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

impl Interval {
    pub fn new(start: DateTime<Utc>, end: DateTime<Utc>) -> Self {
        Self { start, end }
    }

    pub fn overlaps(&self, other: &Interval) -> bool {
        self.start < other.end && other.start < self.end
    }

    pub fn contains(&self, other: &Interval) -> bool {
        self.start <= other.start && other.end <= self.end
    }
}

/// A local time window within one day, `[starts, ends)`, in minutes after midnight (`ends` may
/// be 1440: the day's end).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Window {
    pub starts: u16,
    pub ends: u16,
}

impl Window {
    /// A window from `HH:MM` texts (`24:00` allowed as the end); `None` when either is not a
    /// time or it does not end after it starts.
    pub fn parse(starts: &str, ends: &str) -> Option<Self> {
        let minutes = |text: &str| -> Option<u16> {
            let (h, m) = text.trim().split_once(':')?;
            let (h, m): (u16, u16) = (h.parse().ok()?, m.parse().ok()?);
            (h <= 24 && m < 60 && h * 60 + m <= 1440).then_some(h * 60 + m)
        };
        let (starts, ends) = (minutes(starts)?, minutes(ends)?);
        (starts < ends && starts < 1440).then_some(Self { starts, ends })
    }

    pub fn format(minutes: u16) -> String {
        format!("{:02}:{:02}", minutes / 60, minutes % 60)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExceptionKind {
    /// Not working: the whole day, or within the window.
    Closed,
    /// Working within the window as well.
    Open,
}

/// One local day that differs from the usual week.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exception {
    pub day: NaiveDate,
    pub kind: ExceptionKind,
    /// `None` only for a day closed altogether.
    pub window: Option<Window>,
}

/// A resource's working time: its zone, its week (index 0 = Monday) and its exceptions.
#[derive(Debug, Clone)]
pub struct Schedule {
    pub tz: Tz,
    pub week: [Vec<Window>; 7],
    pub exceptions: Vec<Exception>,
}

impl Schedule {
    /// The working intervals overlapping `[from, to)`, clipped to it, in order, merged.
    pub fn working(&self, from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<Interval> {
        if from >= to {
            return Vec::new();
        }
        // Local days that can touch the range (a day's hours may start the evening before in UTC).
        let first = from.with_timezone(&self.tz).date_naive() - Duration::days(1);
        let last = to.with_timezone(&self.tz).date_naive() + Duration::days(1);
        let mut intervals = Vec::new();
        let mut day = first;
        while day <= last {
            let midnight = day.and_time(NaiveTime::MIN);
            for window in self.windows_of(day) {
                let start = instant(self.tz, midnight + Duration::minutes(i64::from(window.starts)));
                let end = instant(self.tz, midnight + Duration::minutes(i64::from(window.ends)));
                let clipped = Interval::new(start.max(from), end.min(to));
                if clipped.start < clipped.end {
                    intervals.push(clipped);
                }
            }
            day += Duration::days(1);
        }
        merge(intervals)
    }

    /// The local windows of one day: the week's, with that day's exceptions applied.
    fn windows_of(&self, day: NaiveDate) -> Vec<Window> {
        let mut windows = self.week[day.weekday().num_days_from_monday() as usize].clone();
        for exception in self.exceptions.iter().filter(|e| e.day == day) {
            match (exception.kind, exception.window) {
                (ExceptionKind::Closed, None) => windows.clear(),
                (ExceptionKind::Closed, Some(closed)) => {
                    windows = windows.into_iter().flat_map(|w| subtract_window(w, closed)).collect();
                }
                (ExceptionKind::Open, Some(open)) => windows.push(open),
                (ExceptionKind::Open, None) => {}
            }
        }
        windows.sort();
        windows
    }
}

fn subtract_window(window: Window, closed: Window) -> Vec<Window> {
    if closed.ends <= window.starts || closed.starts >= window.ends {
        return vec![window];
    }
    let mut left = Vec::new();
    if closed.starts > window.starts {
        left.push(Window { starts: window.starts, ends: closed.starts });
    }
    if closed.ends < window.ends {
        left.push(Window { starts: closed.ends, ends: window.ends });
    }
    left
}

/// The instant a local wall-clock time names. A time that happens twice (the autumn change) is
/// its first occurrence; a time that never happens (the spring gap) is the moment the gap ends —
/// a shift that starts at 02:30 on that night starts at 03:00.
pub fn instant(tz: Tz, local: NaiveDateTime) -> DateTime<Utc> {
    match tz.from_local_datetime(&local) {
        LocalResult::Single(at) => at.with_timezone(&Utc),
        LocalResult::Ambiguous(first, _) => first.with_timezone(&Utc),
        LocalResult::None => {
            // Gaps are at most a few hours: walk forward to the first wall-clock time that exists.
            let mut probe = local;
            for _ in 0..(24 * 60) {
                probe += Duration::minutes(1);
                if let Some(at) = tz.from_local_datetime(&probe).earliest() {
                    return at.with_timezone(&Utc);
                }
            }
            Utc.from_utc_datetime(&local)
        }
    }
}

/// Sorts and joins overlapping or touching intervals.
pub fn merge(mut intervals: Vec<Interval>) -> Vec<Interval> {
    intervals.sort();
    let mut merged: Vec<Interval> = Vec::with_capacity(intervals.len());
    for interval in intervals {
        match merged.last_mut() {
            Some(last) if interval.start <= last.end => last.end = last.end.max(interval.end),
            _ => merged.push(interval),
        }
    }
    merged
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn t(h: u16, m: u16) -> u16 {
        h * 60 + m
    }

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn berlin_weekdays_8_to_17() -> Schedule {
        let day = vec![Window { starts: t(8, 0), ends: t(12, 0) }, Window { starts: t(13, 0), ends: t(17, 0) }];
        Schedule {
            tz: chrono_tz::Europe::Berlin,
            week: [day.clone(), day.clone(), day.clone(), day.clone(), day, Vec::new(), Vec::new()],
            exceptions: Vec::new(),
        }
    }

    #[test]
    fn local_hours_stay_local_across_both_daylight_saving_changes() {
        let schedule = berlin_weekdays_8_to_17();
        // Friday 27 March 2026 is CET (+01:00); Monday 30 March is CEST (+02:00).
        let friday = schedule.working(utc("2026-03-27T00:00:00Z"), utc("2026-03-28T00:00:00Z"));
        assert_eq!(friday[0], Interval::new(utc("2026-03-27T07:00:00Z"), utc("2026-03-27T11:00:00Z")));
        let monday = schedule.working(utc("2026-03-30T00:00:00Z"), utc("2026-03-31T00:00:00Z"));
        assert_eq!(monday[0], Interval::new(utc("2026-03-30T06:00:00Z"), utc("2026-03-30T10:00:00Z")));
        // Autumn: Friday 23 October CEST, Monday 26 October CET.
        let friday = schedule.working(utc("2026-10-23T00:00:00Z"), utc("2026-10-24T00:00:00Z"));
        assert_eq!(friday[1], Interval::new(utc("2026-10-23T11:00:00Z"), utc("2026-10-23T15:00:00Z")));
        let monday = schedule.working(utc("2026-10-26T00:00:00Z"), utc("2026-10-27T00:00:00Z"));
        assert_eq!(monday[1], Interval::new(utc("2026-10-26T12:00:00Z"), utc("2026-10-26T16:00:00Z")));
        // The weekend between has no hours.
        assert!(schedule.working(utc("2026-03-28T00:00:00Z"), utc("2026-03-29T22:00:00Z")).is_empty());
    }

    #[test]
    fn a_night_shift_through_the_changes_has_the_real_length() {
        let mut schedule = berlin_weekdays_8_to_17();
        let night = vec![Window { starts: t(1, 0), ends: t(5, 0) }];
        schedule.week = std::array::from_fn(|_| night.clone());
        // 29 March 2026: 02:00 → 03:00, so 01:00–05:00 local is three hours.
        let spring = schedule.working(utc("2026-03-29T00:00:00Z"), utc("2026-03-29T12:00:00Z"));
        assert_eq!(spring, vec![Interval::new(utc("2026-03-29T00:00:00Z"), utc("2026-03-29T03:00:00Z"))]);
        // 25 October 2026: 03:00 → 02:00, so the same shift is five hours.
        let autumn = schedule.working(utc("2026-10-24T22:00:00Z"), utc("2026-10-25T12:00:00Z"));
        assert_eq!(autumn, vec![Interval::new(utc("2026-10-24T23:00:00Z"), utc("2026-10-25T04:00:00Z"))]);
    }

    #[test]
    fn a_shift_starting_in_the_spring_gap_starts_when_the_gap_ends() {
        let mut schedule = berlin_weekdays_8_to_17();
        schedule.week = std::array::from_fn(|_| vec![Window { starts: t(2, 30), ends: t(6, 0) }]);
        let spring = schedule.working(utc("2026-03-29T00:00:00Z"), utc("2026-03-29T12:00:00Z"));
        assert_eq!(spring, vec![Interval::new(utc("2026-03-29T01:00:00Z"), utc("2026-03-29T04:00:00Z"))]);
    }

    #[test]
    fn exceptions_close_days_close_hours_and_add_hours() {
        let mut schedule = berlin_weekdays_8_to_17();
        let day = |d: u32| NaiveDate::from_ymd_opt(2026, 12, d).unwrap();
        schedule.exceptions = vec![
            Exception { day: day(24), kind: ExceptionKind::Closed, window: None },
            Exception {
                day: day(23),
                kind: ExceptionKind::Closed,
                window: Some(Window { starts: t(9, 0), ends: t(14, 0) }),
            },
            Exception {
                day: day(19),
                kind: ExceptionKind::Open,
                window: Some(Window { starts: t(10, 0), ends: t(14, 0) }),
            },
        ];
        assert!(schedule.working(utc("2026-12-24T00:00:00Z"), utc("2026-12-25T00:00:00Z")).is_empty());
        let wednesday = schedule.working(utc("2026-12-23T00:00:00Z"), utc("2026-12-24T00:00:00Z"));
        assert_eq!(
            wednesday,
            vec![
                Interval::new(utc("2026-12-23T07:00:00Z"), utc("2026-12-23T08:00:00Z")),
                Interval::new(utc("2026-12-23T13:00:00Z"), utc("2026-12-23T16:00:00Z")),
            ]
        );
        let saturday = schedule.working(utc("2026-12-19T00:00:00Z"), utc("2026-12-20T00:00:00Z"));
        assert_eq!(saturday, vec![Interval::new(utc("2026-12-19T09:00:00Z"), utc("2026-12-19T13:00:00Z"))]);
    }

    #[test]
    fn windows_parse_from_wall_clock_text() {
        assert_eq!(Window::parse("08:00", "12:30"), Some(Window { starts: 480, ends: 750 }));
        assert_eq!(Window::parse("20:00", "24:00"), Some(Window { starts: 1200, ends: 1440 }));
        for (a, b) in
            [("12:00", "08:00"), ("08:00", "08:00"), ("24:00", "24:00"), ("8", "9"), ("07:60", "09:00"), ("x", "09:00")]
        {
            assert_eq!(Window::parse(a, b), None, "{a}-{b}");
        }
    }

    #[test]
    fn a_window_to_midnight_ends_at_the_next_days_start() {
        let mut schedule = berlin_weekdays_8_to_17();
        schedule.week = std::array::from_fn(|_| vec![Window { starts: t(20, 0), ends: t(24, 0) }]);
        let evening = schedule.working(utc("2026-06-01T00:00:00Z"), utc("2026-06-02T00:00:00Z"));
        assert_eq!(evening, vec![Interval::new(utc("2026-06-01T18:00:00Z"), utc("2026-06-01T22:00:00Z"))]);
    }
}
