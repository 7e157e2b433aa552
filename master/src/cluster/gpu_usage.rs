//! GPU use as agents report it with their heartbeats: per GPU, the latest
//! sample and the last hour (one sample kept every [`KEEP_EVERY`]), and
//! whether a GPU that a task holds has been idle for the configured
//! window. Soft state of the leader, like `last_seen`: a new leader learns
//! it again from the next heartbeats. Time comes in as a parameter.

use std::collections::VecDeque;

use mezz_proto::v1::{GpuUsage, GpuUsageView};

use super::Millis;

/// How much history is kept per GPU.
pub const HISTORY: Millis = 3_600_000;

/// Samples closer together than this are not all kept (the latest always
/// is): at most 720 per GPU for the hour, whatever the heartbeat interval.
pub const KEEP_EVERY: Millis = 5_000;

/// Points in a view's `history_pct` at most (the chart's width).
pub const CHART_POINTS: usize = 60;

/// A GPU at or under this utilization counts as doing nothing.
pub const IDLE_PCT: u32 = 5;

/// How long a held GPU must do nothing to be flagged, unless configured
/// (`--gpu-idle-after`).
pub const DEFAULT_IDLE_AFTER: Millis = 300_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Sample {
    at: Millis,
    utilization_pct: u32,
    memory_used_mb: u64,
}

/// One GPU's samples.
#[derive(Debug, Clone, Default)]
pub(crate) struct GpuHistory {
    latest: Option<Sample>,
    kept: VecDeque<Sample>,
}

impl GpuHistory {
    /// Takes a sample reported at `now`.
    pub fn record(&mut self, u: &GpuUsage, now: Millis) {
        let s = Sample {
            at: now,
            utilization_pct: u.utilization_pct.min(100),
            memory_used_mb: u.memory_used_mb,
        };
        self.latest = Some(s);
        if self
            .kept
            .back()
            .is_none_or(|last| now >= last.at + KEEP_EVERY)
        {
            self.kept.push_back(s);
        }
        while self.kept.front().is_some_and(|f| f.at + HISTORY < now) {
            self.kept.pop_front();
        }
    }

    /// True when the samples cover at least `window` up to `now` and none
    /// in it (nor the latest) was over [`IDLE_PCT`].
    pub fn idle_for(&self, window: Millis, now: Millis) -> bool {
        let Some(latest) = self.latest else {
            return false;
        };
        let Some(since) = now.checked_sub(window) else {
            return false;
        };
        let covered = self.kept.front().is_some_and(|f| f.at <= since);
        covered
            && latest.utilization_pct <= IDLE_PCT
            && self
                .kept
                .iter()
                .filter(|s| s.at >= since)
                .all(|s| s.utilization_pct <= IDLE_PCT)
    }

    /// The view of this GPU. `wall` turns the state machine's clock into
    /// seconds since the Unix epoch.
    pub fn view(
        &self,
        gpu: &str,
        task_id: Option<&str>,
        idle_after: Millis,
        now: Millis,
        wall: impl Fn(Millis) -> f64,
    ) -> Option<GpuUsageView> {
        let latest = self.latest?;
        let idle = task_id.is_some() && self.idle_for(idle_after, now);
        Some(GpuUsageView {
            gpu: gpu.to_string(),
            utilization_pct: latest.utilization_pct,
            memory_used_mb: latest.memory_used_mb,
            sampled_at: wall(latest.at),
            task_id: task_id.unwrap_or_default().to_string(),
            idle,
            history_pct: self.chart(),
            history_secs: self
                .kept
                .front()
                .map_or(0.0, |f| latest.at.saturating_sub(f.at) as f64 / 1000.0),
        })
    }

    /// The kept samples' utilization in at most [`CHART_POINTS`] points,
    /// oldest first: consecutive samples averaged.
    fn chart(&self) -> Vec<u32> {
        let n = self.kept.len();
        if n == 0 {
            return Vec::new();
        }
        let per = n.div_ceil(CHART_POINTS);
        let all: Vec<u32> = self.kept.iter().map(|s| s.utilization_pct).collect();
        all.chunks(per)
            .map(|c| (c.iter().sum::<u32>() as f64 / c.len() as f64).round() as u32)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u(pct: u32) -> GpuUsage {
        GpuUsage {
            gpu: "g".into(),
            utilization_pct: pct,
            memory_used_mb: 10,
        }
    }

    #[test]
    fn an_hour_is_kept_at_one_sample_per_interval() {
        let mut h = GpuHistory::default();
        // A heartbeat every second for two hours.
        for t in 0..7_200u64 {
            h.record(&u((t % 100) as u32), t * 1000);
        }
        assert!(h.kept.len() <= (HISTORY / KEEP_EVERY) as usize + 1);
        assert!(h.kept.len() >= (HISTORY / KEEP_EVERY) as usize);
        assert_eq!(h.latest.map(|s| s.at), Some(7_199_000));
        assert!(h.kept.front().is_some_and(|f| f.at >= 7_199_000 - HISTORY));
        let v = h.view("g", None, 1_000, 7_199_000, |m| m as f64 / 1000.0);
        let v = v.expect("a view");
        assert!(v.history_pct.len() <= CHART_POINTS && v.history_pct.len() >= 50);
        assert!(
            (3_590.0..=3_600.0).contains(&v.history_secs),
            "{}",
            v.history_secs
        );
        assert_eq!(v.utilization_pct, 99);
    }

    #[test]
    fn idle_needs_the_whole_window_quiet_and_a_task_holding_it() {
        let mut h = GpuHistory::default();
        assert!(!h.idle_for(10_000, 0), "no samples, no verdict");
        for t in 0..3 {
            h.record(&u(0), t * KEEP_EVERY);
        }
        // 10 s of samples, all quiet: idle over a 10 s window, not 20 s.
        assert!(h.idle_for(10_000, 10_000));
        assert!(!h.idle_for(20_000, 10_000), "not watched that long yet");
        let free = h.view("g", None, 10_000, 10_000, |_| 0.0).expect("view");
        assert!(!free.idle, "a free GPU is not flagged");
        let held = h
            .view("g", Some("t"), 10_000, 10_000, |_| 0.0)
            .expect("view");
        assert!(held.idle && held.task_id == "t");
        // One busy sample in the window clears it.
        h.record(&u(60), 15_000);
        assert!(!h.idle_for(10_000, 15_000));
        h.record(&u(0), 20_000);
        assert!(
            !h.idle_for(10_000, 20_000),
            "the busy sample is still in the window"
        );
        h.record(&u(0), 30_000);
        assert!(h.idle_for(10_000, 30_000));
    }
}
