//! Schedules: parsing the operator's spelling (`every 2h`, `daily 02:00`, `weekly mon 02:00`),
//! printing it back, and deciding whether a run is due. Times of day are UTC.

use gatehouse_core::Schedule;
use gatehouse_core::time::Timestamp;

const MINUTE_MS: u64 = 60_000;
const DAY_MS: u64 = 24 * 60 * MINUTE_MS;
const WEEK_MS: u64 = 7 * DAY_MS;
/// 1970-01-01 was a Thursday: day 0 of the epoch is weekday 3 when Monday is 0.
const EPOCH_WEEKDAY: u64 = 3;
const WEEKDAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

/// Parses `every DURATION` (`every 30s`, `every 12h`, `every 7days`), `daily HH:MM` or
/// `weekly DAY HH:MM` (`weekly sun 03:30`).
pub fn parse(text: &str) -> Result<Schedule, String> {
    let words: Vec<&str> = text.split_whitespace().collect();
    let bad = || {
        format!(
            "invalid schedule `{text}`: expected `every DURATION`, `daily HH:MM` or `weekly DAY HH:MM`"
        )
    };
    match words.as_slice() {
        ["every", duration] => {
            let d = humantime::parse_duration(duration)
                .map_err(|e| format!("invalid schedule `{text}`: {e}"))?;
            if d.as_secs() == 0 {
                return Err(format!(
                    "invalid schedule `{text}`: the interval must be at least one second"
                ));
            }
            Ok(Schedule::Interval {
                seconds: d.as_secs(),
            })
        }
        ["daily", at] => Ok(Schedule::Daily {
            minute: time_of_day(at).ok_or_else(bad)?,
        }),
        ["weekly", day, at] => {
            let lower = day.to_ascii_lowercase();
            let weekday = WEEKDAYS
                .iter()
                .position(|d| lower.starts_with(d))
                .ok_or_else(bad)?;
            Ok(Schedule::Weekly {
                weekday: u8::try_from(weekday).map_err(|_| bad())?,
                minute: time_of_day(at).ok_or_else(bad)?,
            })
        }
        _ => Err(bad()),
    }
}

fn time_of_day(text: &str) -> Option<u16> {
    let (h, m) = text.split_once(':')?;
    let h: u16 = h.parse().ok()?;
    let m: u16 = m.parse().ok()?;
    (h < 24 && m < 60).then_some(h * 60 + m)
}

/// The operator's spelling of a schedule (what [`parse`] reads).
pub fn describe(schedule: &Schedule) -> String {
    let hm = |minute: u16| format!("{:02}:{:02}", minute / 60, minute % 60);
    match schedule {
        Schedule::Interval { seconds } => format!(
            "every {}",
            humantime::format_duration(std::time::Duration::from_secs(*seconds))
        ),
        Schedule::Daily { minute } => format!("daily {} UTC", hm(*minute)),
        Schedule::Weekly { weekday, minute } => format!(
            "weekly {} {} UTC",
            WEEKDAYS.get(usize::from(*weekday)).copied().unwrap_or("?"),
            hm(*minute)
        ),
    }
}

/// The latest moment at or before `now` at which `schedule` fires (for interval schedules, the
/// moment `last + interval`).
fn latest_slot(schedule: &Schedule, last: Timestamp, now: Timestamp) -> u64 {
    match *schedule {
        Schedule::Interval { seconds } => last.0.saturating_add(seconds.saturating_mul(1000)),
        Schedule::Daily { minute } => {
            let offset = u64::from(minute) * MINUTE_MS;
            let slot = (now.0.saturating_sub(offset) / DAY_MS) * DAY_MS + offset;
            if slot > now.0 {
                slot.saturating_sub(DAY_MS)
            } else {
                slot
            }
        }
        Schedule::Weekly { weekday, minute } => {
            // Monday 00:00 UTC of the epoch's first week is 3 days before the epoch.
            let week_start = EPOCH_WEEKDAY * DAY_MS;
            let offset = u64::from(weekday) * DAY_MS + u64::from(minute) * MINUTE_MS;
            let shifted = now.0 + week_start;
            let slot = (shifted.saturating_sub(offset) / WEEK_MS) * WEEK_MS + offset;
            let slot = if slot > shifted {
                slot.saturating_sub(WEEK_MS)
            } else {
                slot
            };
            slot.saturating_sub(week_start)
        }
    }
}

/// Whether a run is due at `now` when the last one (or the account's creation) was at `last`.
pub fn is_due(schedule: &Schedule, last: Timestamp, now: Timestamp) -> bool {
    match schedule {
        Schedule::Interval { .. } => now.0 >= latest_slot(schedule, last, now),
        _ => {
            let slot = latest_slot(schedule, last, now);
            slot <= now.0 && last.0 < slot
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-03-02 (a Monday) at 00:00 UTC.
    const MONDAY: u64 = 1_772_409_600_000;

    #[test]
    fn parse_and_describe_round_trip() {
        for (text, expected, described) in [
            ("every 2s", Schedule::Interval { seconds: 2 }, "every 2s"),
            (
                "every 12h",
                Schedule::Interval { seconds: 43_200 },
                "every 12h",
            ),
            (
                "daily 02:30",
                Schedule::Daily { minute: 150 },
                "daily 02:30 UTC",
            ),
            (
                "weekly sun 23:05",
                Schedule::Weekly {
                    weekday: 6,
                    minute: 1385,
                },
                "weekly sun 23:05 UTC",
            ),
        ] {
            let parsed = parse(text).unwrap();
            assert_eq!(parsed, expected, "{text}");
            assert_eq!(describe(&parsed), described);
        }
    }

    #[test]
    fn bad_schedules_are_refused() {
        for (text, expected) in [
            (
                "hourly",
                "invalid schedule `hourly`: expected `every DURATION`, `daily HH:MM` or `weekly DAY HH:MM`",
            ),
            (
                "daily 25:00",
                "invalid schedule `daily 25:00`: expected `every DURATION`, `daily HH:MM` or `weekly DAY HH:MM`",
            ),
            (
                "every 0s",
                "invalid schedule `every 0s`: the interval must be at least one second",
            ),
        ] {
            assert_eq!(parse(text).unwrap_err(), expected);
        }
    }

    #[test]
    fn interval_is_due_after_the_interval() {
        let s = Schedule::Interval { seconds: 10 };
        assert!(!is_due(&s, Timestamp(1_000), Timestamp(10_999)));
        assert!(is_due(&s, Timestamp(1_000), Timestamp(11_000)));
    }

    #[test]
    fn daily_is_due_once_per_day_after_its_time() {
        let s = Schedule::Daily { minute: 120 }; // 02:00
        let at = |h: u64, m: u64| Timestamp(MONDAY + h * 3_600_000 + m * 60_000);
        // Last run Sunday 03:00; at Monday 01:59 not due, at 02:00 due.
        let sunday = Timestamp(MONDAY - 21 * 3_600_000);
        assert!(!is_due(&s, sunday, at(1, 59)));
        assert!(is_due(&s, sunday, at(2, 0)));
        // Ran at 02:00:30: not due again the same day.
        assert!(!is_due(&s, Timestamp(at(2, 0).0 + 30_000), at(23, 0)));
        assert!(is_due(&s, Timestamp(at(2, 0).0 + 30_000), at(26, 0)));
    }

    #[test]
    fn weekly_is_due_on_its_day() {
        let s = Schedule::Weekly {
            weekday: 2, // Wednesday
            minute: 60,
        };
        let day = |d: u64, h: u64| Timestamp(MONDAY + d * DAY_MS + h * 3_600_000);
        let last = day(0, 12); // Monday noon
        assert!(!is_due(&s, last, day(1, 12))); // Tuesday
        assert!(!is_due(&s, last, day(2, 0))); // Wednesday 00:00
        assert!(is_due(&s, last, day(2, 1))); // Wednesday 01:00
        assert!(!is_due(&s, day(2, 2), day(6, 0))); // ran Wednesday: not again that week
        assert!(is_due(&s, day(2, 2), day(9, 2))); // next Wednesday
    }
}
