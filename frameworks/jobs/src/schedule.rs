//! Schedules: a cron expression read in an explicit time zone, and which
//! fire times are due between the last fire the masters recorded and now.
//! Pure: the time comes in, so a schedule can be walked over simulated
//! minutes in a test.
//!
//! The masters keep each scheduled job's last fire time and only ever move
//! it forward (`FireSchedule`), so the fires [`due`] returns, told to them
//! in order, make each run once: a fire repeated after a failover is
//! answered without a second run, and a fire not yet told is found again
//! by the next framework to look.

use std::str::FromStr;

use chrono::{DateTime, TimeZone, Utc};
use chrono_tz::Tz;
use croner::Cron;

use crate::spec::Missed;

/// A fire found this long after its time or less is on time; a later one
/// was missed (no jobs framework ran then), and the schedule's `missed`
/// policy decides whether it runs.
pub const ON_TIME: f64 = 60.0;

/// The most missed fires `run_all` runs; older ones are skipped.
pub const MAX_CATCH_UP: usize = 100;

/// Fires older than this before now are skipped without being walked
/// (a schedule of every second after a week away).
pub const LOOK_BACK: f64 = 7.0 * 24.0 * 3600.0;

/// A parsed schedule.
#[derive(Clone, Debug)]
pub struct Schedule {
    cron: Cron,
    tz: Tz,
}

/// One fire time the masters should be told of, in order.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Fire {
    /// The cron time, in seconds since the Unix epoch.
    pub at: f64,
    /// Whether it makes a run (false: it only moves the last fire time
    /// past missed fires that are skipped).
    pub run: bool,
}

impl Schedule {
    /// Parses `cron` (5 fields, minute first; or 6, seconds first) in the
    /// IANA zone `timezone`. The error says which of the two is wrong.
    pub fn parse(cron: &str, timezone: &str) -> Result<Schedule, String> {
        let tz = Tz::from_str(timezone).map_err(|_| {
            format!("time zone '{timezone}' is not an IANA zone name; write e.g. UTC, Europe/Paris, America/New_York")
        })?;
        let parsed = Cron::new(cron)
            .with_seconds_optional()
            .parse()
            .map_err(|e| {
                format!("'{cron}' is not a cron expression ({e}); write e.g. '0 3 * * *' (03:00 every day)")
            })?;
        let s = Schedule { cron: parsed, tz };
        // A pattern that never matches (31 February) is refused too.
        if s.next_after(Utc::now().timestamp() as f64).is_none() {
            return Err(format!("'{cron}' never fires"));
        }
        Ok(s)
    }

    /// The first fire time strictly after `t` (seconds since the epoch).
    pub fn next_after(&self, t: f64) -> Option<f64> {
        let secs = t.floor() as i64;
        let from: DateTime<Tz> = self.tz.timestamp_opt(secs, 0).single()?;
        let next = self.cron.find_next_occurrence(&from, false).ok()?;
        Some(next.timestamp() as f64)
    }
}

/// The fires due after `last` (exclusive) up to `now` (inclusive), as
/// they should be told to the masters, oldest first. On-time fires all
/// run; missed ones follow `missed`: `run_once` runs the latest of them,
/// `run_all` each (the latest [`MAX_CATCH_UP`]), `skip` none. Skipped
/// fires are folded into one fire without a run at the latest of them.
pub fn due(schedule: &Schedule, last: f64, now: f64, missed: Missed) -> Vec<Fire> {
    let mut times = Vec::new();
    let mut t = last.max(now - LOOK_BACK);
    while let Some(next) = schedule.next_after(t) {
        if next > now {
            break;
        }
        times.push(next);
        t = next;
    }
    let split = times.partition_point(|&at| now - at > ON_TIME);
    let (late, on_time) = times.split_at(split);
    let run_late: &[f64] = match missed {
        Missed::Skip => &[],
        Missed::RunOnce => &late[late.len().saturating_sub(1)..],
        Missed::RunAll => &late[late.len().saturating_sub(MAX_CATCH_UP)..],
    };
    let skipped = &late[..late.len() - run_late.len()];
    let mut fires = Vec::new();
    if let Some(&at) = skipped.last() {
        fires.push(Fire { at, run: false });
    }
    fires.extend(
        run_late
            .iter()
            .chain(on_time)
            .map(|&at| Fire { at, run: true }),
    );
    fires
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-12-07 00:00:00 UTC.
    const DAY: f64 = 1_796_601_600.0;

    #[test]
    fn a_daily_schedule_fires_at_its_hour_in_its_zone() {
        let s = Schedule::parse("0 3 * * *", "UTC").unwrap();
        assert_eq!(s.next_after(DAY), Some(DAY + 3.0 * 3600.0));
        let paris = Schedule::parse("0 3 * * *", "Europe/Paris").unwrap();
        // 03:00 in Paris in December is 02:00 UTC.
        assert_eq!(paris.next_after(DAY), Some(DAY + 2.0 * 3600.0));
    }

    #[test]
    fn bad_expressions_and_zones_are_named() {
        let e = Schedule::parse("0 3 * *", "UTC").unwrap_err();
        assert!(e.contains("'0 3 * *' is not a cron expression"), "{e}");
        let e = Schedule::parse("0 3 * * *", "Mars/Olympus").unwrap_err();
        assert!(e.starts_with("time zone 'Mars/Olympus'"), "{e}");
        let e = Schedule::parse("0 0 31 2 *", "UTC").unwrap_err();
        assert!(e.contains("never fires"), "{e}");
    }

    #[test]
    fn simulated_minutes_fire_once_each_and_in_order() {
        // Every minute, walked over ten simulated minutes in 7-second
        // steps, telling each fire as the masters would record it.
        let s = Schedule::parse("* * * * *", "UTC").unwrap();
        let mut last = DAY;
        let mut fired = Vec::new();
        let mut now = DAY;
        while now <= DAY + 606.0 {
            for f in due(&s, last, now, Missed::RunOnce) {
                assert!(f.at > last, "fires only move forward");
                assert!(f.run);
                last = f.at;
                fired.push(f.at);
            }
            now += 7.0;
        }
        let want: Vec<f64> = (1..=10).map(|m| DAY + 60.0 * m as f64).collect();
        assert_eq!(fired, want);
    }

    #[test]
    fn missed_fires_follow_the_policy() {
        let s = Schedule::parse("* * * * *", "UTC").unwrap();
        // Away for ten minutes: fires at +1..+10 min; +10 min is on time.
        let now = DAY + 600.0 + 5.0;
        let all = due(&s, DAY, now, Missed::RunAll);
        assert_eq!(all.len(), 10);
        assert!(all.iter().all(|f| f.run));
        let once = due(&s, DAY, now, Missed::RunOnce);
        assert_eq!(
            once,
            vec![
                Fire {
                    at: DAY + 480.0,
                    run: false
                },
                Fire {
                    at: DAY + 540.0,
                    run: true
                },
                Fire {
                    at: DAY + 600.0,
                    run: true
                },
            ]
        );
        let skip = due(&s, DAY, now, Missed::Skip);
        assert_eq!(
            skip,
            vec![
                Fire {
                    at: DAY + 540.0,
                    run: false
                },
                Fire {
                    at: DAY + 600.0,
                    run: true
                },
            ]
        );
        assert!(due(&s, DAY + 600.0, now, Missed::RunAll).is_empty());
    }

    #[test]
    fn catch_up_is_bounded() {
        let s = Schedule::parse("*/1 * * * * *", "UTC").unwrap();
        let fires = due(&s, DAY, DAY + 3600.0, Missed::RunAll);
        let runs = fires.iter().filter(|f| f.run).count();
        // 61 on-time seconds (the last minute, both ends) plus the latest
        // 100 missed.
        assert_eq!(runs, 61 + MAX_CATCH_UP);
        assert!(!fires[0].run);
        assert!(fires.windows(2).all(|w| w[0].at < w[1].at));
    }
}
