//! How long a simulated task runs (`--task-time`): a fixed duration, a
//! uniform range or an exponential with a mean, drawn from a seeded
//! generator so a run can be repeated exactly.

use std::time::Duration;

/// A distribution of task run times.
#[derive(Clone, Debug, PartialEq)]
pub enum TaskTime {
    /// Always this long: `5s`.
    Fixed(Duration),
    /// Uniform between two durations: `uniform:1s..10s`.
    Uniform(Duration, Duration),
    /// Exponential with this mean: `exp:5s`.
    Exponential(Duration),
}

/// A `--task-time` value that does not parse.
#[derive(Debug, thiserror::Error)]
#[error("bad task time '{text}': {why}; write a duration (5s), uniform:MIN..MAX (uniform:1s..10s) or exp:MEAN (exp:5s)")]
pub struct TaskTimeError {
    text: String,
    why: String,
}

impl TaskTime {
    /// Parses `5s`, `uniform:1s..10s` or `exp:5s`.
    pub fn parse(text: &str) -> Result<TaskTime, TaskTimeError> {
        let err = |why: String| TaskTimeError {
            text: text.to_string(),
            why,
        };
        let dur = |s: &str| humantime::parse_duration(s.trim()).map_err(|e| err(e.to_string()));
        let t = text.trim();
        if let Some(range) = t.strip_prefix("uniform:") {
            let (lo, hi) = range
                .split_once("..")
                .ok_or_else(|| err("a uniform range needs MIN..MAX".into()))?;
            let (lo, hi) = (dur(lo)?, dur(hi)?);
            if lo > hi {
                return Err(err("MIN is larger than MAX".into()));
            }
            Ok(TaskTime::Uniform(lo, hi))
        } else if let Some(mean) = t.strip_prefix("exp:") {
            Ok(TaskTime::Exponential(dur(mean)?))
        } else {
            Ok(TaskTime::Fixed(dur(t)?))
        }
    }

    /// One run time drawn with `rng`.
    pub fn sample(&self, rng: &mut Rng) -> Duration {
        match *self {
            TaskTime::Fixed(d) => d,
            TaskTime::Uniform(lo, hi) => lo + (hi - lo).mul_f64(rng.next_f64()),
            TaskTime::Exponential(mean) => {
                // Inverse transform; 1 - u is in (0, 1], so ln is finite.
                let u = 1.0 - rng.next_f64();
                mean.mul_f64(-u.ln()).min(mean * 50)
            }
        }
    }

    /// The mean run time.
    pub fn mean(&self) -> Duration {
        match *self {
            TaskTime::Fixed(d) | TaskTime::Exponential(d) => d,
            TaskTime::Uniform(lo, hi) => (lo + hi) / 2,
        }
    }
}

/// A small seeded generator (SplitMix64): enough for run times and
/// jitter, and the same sequence for the same seed on every machine.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator starting from `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_three_forms() {
        assert_eq!(
            TaskTime::parse("5s").unwrap(),
            TaskTime::Fixed(Duration::from_secs(5))
        );
        assert_eq!(
            TaskTime::parse("uniform:1s..10s").unwrap(),
            TaskTime::Uniform(Duration::from_secs(1), Duration::from_secs(10))
        );
        assert_eq!(
            TaskTime::parse("exp:500ms").unwrap(),
            TaskTime::Exponential(Duration::from_millis(500))
        );
        let e = TaskTime::parse("uniform:10s..1s").unwrap_err().to_string();
        assert!(e.contains("MIN is larger"), "{e}");
        assert!(TaskTime::parse("soon").is_err());
    }

    #[test]
    fn samples_stay_in_range_and_repeat_with_the_seed() {
        let d = TaskTime::parse("uniform:1s..2s").unwrap();
        let mut a = Rng::new(7);
        let xs: Vec<Duration> = (0..1000).map(|_| d.sample(&mut a)).collect();
        assert!(xs
            .iter()
            .all(|x| *x >= Duration::from_secs(1) && *x <= Duration::from_secs(2)));
        let mut b = Rng::new(7);
        let ys: Vec<Duration> = (0..1000).map(|_| d.sample(&mut b)).collect();
        assert_eq!(xs, ys);
        let e = TaskTime::parse("exp:1s").unwrap();
        let mut r = Rng::new(1);
        let mean = (0..20_000)
            .map(|_| e.sample(&mut r).as_secs_f64())
            .sum::<f64>()
            / 20_000.0;
        assert!((mean - 1.0).abs() < 0.05, "mean {mean}");
    }
}
