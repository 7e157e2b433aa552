//! Latency samples and their percentiles, as the reports print them.

use serde::Serialize;

/// p50 and p99 of a set of samples, in milliseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Percentiles {
    /// The median.
    pub p50: f64,
    /// The 99th percentile.
    pub p99: f64,
    /// How many samples they come from.
    pub samples: usize,
}

/// Nearest-rank percentiles of `samples` (milliseconds); all zero when
/// there are none.
pub fn percentiles(samples: &mut [f64]) -> Percentiles {
    if samples.is_empty() {
        return Percentiles::default();
    }
    samples.sort_by(f64::total_cmp);
    let rank = |p: f64| {
        let n = samples.len();
        let i = ((p * n as f64).ceil() as usize).clamp(1, n) - 1;
        samples[i]
    };
    Percentiles {
        p50: rank(0.50),
        p99: rank(0.99),
        samples: samples.len(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank() {
        let mut xs: Vec<f64> = (1..=100).rev().map(f64::from).collect();
        let p = percentiles(&mut xs);
        assert_eq!((p.p50, p.p99, p.samples), (50.0, 99.0, 100));
        assert_eq!(percentiles(&mut []), Percentiles::default());
        assert_eq!(percentiles(&mut [3.0]).p99, 3.0);
    }
}
