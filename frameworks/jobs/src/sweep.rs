//! Sweeps (`kind: sweep`): hyper-parameter tuning as jobs. A sweep names
//! a trial (an ordinary job spec whose command may use `{param}`), a
//! parameter space, a method (grid, random, or successive halving), how
//! many trials run at once, and the metric the trials report. Each trial
//! is an ordinary job named `SWEEP.tK` (`SWEEP.rRtK` for halving's rung R)
//! whose parent is the sweep: visible, killable and kept one by one.
//!
//! A trial reports its metric with a line on standard output,
//! `metric: NAME=VALUE` (the last such line counts). It also finds its
//! parameters in the environment (`MEZZ_PARAM_<NAME>`), the metric's name
//! in `MEZZ_METRIC`, and, under halving, its budget in `MEZZ_BUDGET` (and
//! `{budget}`).
//!
//! Everything here is pure: the plan is a function of the sweep's spec and
//! the trials the masters keep, so a new jobs daemon goes on with a sweep
//! where the last one stopped. Random parameters come from a generator
//! seeded by the sweep's seed and the trial's number, so a trial's
//! parameters are the same whoever draws them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::spec::{check_name, JobSpec, SpecError};
use mezz_sdk::sizes::Sizes;

/// The most trials one sweep may make.
pub const MAX_TRIALS: usize = 1000;
/// The longest name of a sweep: its trials add `.rNNtNNNN`.
pub const MAX_SWEEP_NAME: usize = 50;

/// How the parameter space is searched.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "method")]
pub enum Method {
    /// Every combination of the listed values.
    Grid,
    /// `trials` draws from the space.
    Random {
        /// How many trials.
        trials: u32,
    },
    /// Successive halving: `trials` draws at `min_budget`; after each rung
    /// the best 1/`eta` go on with `eta` times the budget, up to
    /// `max_budget`. Trials stopped at a rung are the early stopping.
    Halving {
        /// Trials of the first rung.
        trials: u32,
        /// The first rung's budget.
        min_budget: f64,
        /// No rung's budget is above this.
        max_budget: f64,
        /// The cut and growth factor (≥ 2).
        eta: u32,
    },
}

/// Whether a higher metric is better.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Goal {
    /// Higher is better (accuracy).
    Maximize,
    /// Lower is better (loss).
    Minimize,
}

/// One parameter's space.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Param {
    /// These values (grid: each; random: one of them).
    Values(Vec<Value>),
    /// A range, for random draws and halving.
    Range {
        /// The smallest value.
        min: f64,
        /// The largest value.
        max: f64,
        /// `log`: drawn uniformly in the logarithm; `linear` (default).
        #[serde(default)]
        scale: Option<String>,
        /// Whole numbers only.
        #[serde(default)]
        integer: bool,
    },
}

/// A validated sweep.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SweepSpec {
    /// The trial's spec (its name is the sweep's; each trial gets its own).
    pub trial: Box<JobSpec>,
    /// The parameters, by name.
    pub parameters: BTreeMap<String, Param>,
    /// How the space is searched.
    pub method: Method,
    /// At most this many trials run at once.
    pub parallelism: u32,
    /// The metric's name.
    pub metric: String,
    /// Whether higher or lower is better.
    pub goal: Goal,
    /// Stop as soon as a trial reaches this value (running trials are
    /// killed).
    pub target: Option<f64>,
    /// The random draws' seed.
    pub seed: u64,
}

/// The sweep file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SweepFile {
    #[allow(dead_code)]
    kind: String,
    name: Option<String>,
    trial: Option<serde_yaml::Value>,
    #[serde(default)]
    parameters: BTreeMap<String, Param>,
    method: Option<String>,
    trials: Option<u32>,
    parallelism: Option<u32>,
    metric: Option<String>,
    goal: Option<String>,
    target: Option<f64>,
    seed: Option<u64>,
    min_budget: Option<f64>,
    max_budget: Option<f64>,
    eta: Option<u32>,
    after: Option<Vec<String>>,
    after_any: Option<Vec<String>>,
    role: Option<String>,
}

fn bad(what: impl Into<String>) -> SpecError {
    SpecError(what.into())
}

/// Parses a `kind: sweep` file into its job spec (kind sweep, with the
/// trial's resources for display and quota checks).
pub fn parse(text: &str, sizes: &Sizes) -> Result<JobSpec, SpecError> {
    let f: SweepFile = serde_yaml::from_str(text)
        .map_err(|e| bad(format!("the sweep file does not parse: {e}")))?;
    let name = f
        .name
        .ok_or_else(|| bad("`name` is missing: give the sweep a name"))?;
    check_name(&name).map_err(|e| bad(format!("`name`: {e}")))?;
    if name.len() > MAX_SWEEP_NAME {
        return Err(bad(format!(
            "`name`: a sweep's name may be at most {MAX_SWEEP_NAME} characters (its trials are named NAME.tK)"
        )));
    }
    let mut trial_value = f.trial.ok_or_else(|| {
        bad("`trial` is missing: give the job each trial runs (kind command or python)")
    })?;
    let map = trial_value
        .as_mapping_mut()
        .ok_or_else(|| bad("`trial` must be a job spec (a mapping)"))?;
    for field in ["name", "schedule", "after", "after_any"] {
        if map.contains_key(field) {
            return Err(bad(format!(
                "`trial.{field}`: a trial takes its {field} from the sweep; remove it"
            )));
        }
    }
    map.insert("name".into(), name.clone().into());
    if let Some(role) = &f.role {
        map.insert("role".into(), role.clone().into());
    }
    let trial_text = serde_yaml::to_string(&trial_value).map_err(|e| bad(e.to_string()))?;
    let trial = JobSpec::parse(&trial_text, sizes).map_err(|e| bad(format!("`trial`: {e}")))?;
    if trial.kind == crate::spec::Kind::Sweep {
        return Err(bad("`trial.kind`: a trial cannot be a sweep"));
    }
    if f.parameters.is_empty() {
        return Err(bad(
            "`parameters` is missing: name at least one parameter and its values or range",
        ));
    }
    for (p, space) in &f.parameters {
        let ok = !p.is_empty()
            && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !p.starts_with(|c: char| c.is_ascii_digit());
        if !ok {
            return Err(bad(format!(
                "`parameters`: '{p}' is not a parameter name (letters, digits, '_')"
            )));
        }
        match space {
            Param::Values(v) if v.is_empty() => {
                return Err(bad(format!(
                    "`parameters.{p}`: the list of values is empty"
                )))
            }
            Param::Values(v) => {
                if let Some(x) = v
                    .iter()
                    .find(|x| x.is_object() || x.is_array() || x.is_null())
                {
                    return Err(bad(format!(
                        "`parameters.{p}`: {x} is not a number, string or boolean"
                    )));
                }
            }
            Param::Range {
                min, max, scale, ..
            } => {
                if !(min.is_finite() && max.is_finite() && min <= max) {
                    return Err(bad(format!(
                        "`parameters.{p}`: min {min} and max {max} make no range"
                    )));
                }
                match scale.as_deref() {
                    None | Some("linear") => {}
                    Some("log") if *min > 0.0 => {}
                    Some("log") => {
                        return Err(bad(format!("`parameters.{p}`: a log range needs min > 0")))
                    }
                    Some(other) => {
                        return Err(bad(format!(
                            "`parameters.{p}.scale`: '{other}' is not linear or log"
                        )))
                    }
                }
            }
        }
    }
    let method_name = f.method.as_deref().unwrap_or("grid");
    let method = match method_name {
        "grid" => {
            if let Some((p, _)) = f
                .parameters
                .iter()
                .find(|(_, s)| matches!(s, Param::Range { .. }))
            {
                return Err(bad(format!(
                    "`parameters.{p}`: a grid needs a list of values; a range goes with method random or halving"
                )));
            }
            if f.trials.is_some() {
                return Err(bad("`trials`: a grid runs every combination; remove it"));
            }
            Method::Grid
        }
        "random" => Method::Random {
            trials: f
                .trials
                .ok_or_else(|| bad("`trials` is missing: how many random trials"))?,
        },
        "halving" => {
            let min_budget = f.min_budget.unwrap_or(1.0);
            let max_budget = f.max_budget.ok_or_else(|| {
                bad("`max_budget` is missing: the last rung's budget (epochs, steps, …)")
            })?;
            let eta = f.eta.unwrap_or(3);
            if !(min_budget > 0.0 && max_budget >= min_budget) {
                return Err(bad(
                    "`min_budget`/`max_budget`: need 0 < min_budget <= max_budget",
                ));
            }
            if eta < 2 {
                return Err(bad("`eta`: must be 2 or more"));
            }
            Method::Halving {
                trials: f.trials.ok_or_else(|| {
                    bad("`trials` is missing: how many trials the first rung runs")
                })?,
                min_budget,
                max_budget,
                eta,
            }
        }
        other => {
            return Err(bad(format!(
                "`method`: '{other}' is not grid, random or halving"
            )));
        }
    };
    for (field, v) in [("after", &f.after), ("after_any", &f.after_any)] {
        if v.is_some() {
            return Err(bad(format!(
                "`{field}`: a sweep cannot wait for other jobs yet"
            )));
        }
    }
    let metric = f.metric.ok_or_else(|| {
        bad("`metric` is missing: the name trials report as `metric: NAME=VALUE`")
    })?;
    if metric.is_empty()
        || !metric
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-./".contains(c))
    {
        return Err(bad(format!("`metric`: '{metric}' is not a metric name")));
    }
    let goal = match f.goal.as_deref() {
        None | Some("maximize") | Some("max") => Goal::Maximize,
        Some("minimize") | Some("min") => Goal::Minimize,
        Some(other) => {
            return Err(bad(format!(
                "`goal`: '{other}' is not maximize or minimize"
            )))
        }
    };
    let parallelism = f.parallelism.unwrap_or(4);
    if parallelism == 0 {
        return Err(bad("`parallelism`: must be 1 or more"));
    }
    let spec = SweepSpec {
        trial: Box::new(trial.clone()),
        parameters: f.parameters,
        method,
        parallelism,
        metric,
        goal,
        target: f.target,
        seed: f.seed.unwrap_or(1),
    };
    let total = spec.total_trials();
    if total == 0 || total > MAX_TRIALS {
        return Err(bad(format!(
            "the sweep makes {total} trials; it may make 1 to {MAX_TRIALS}"
        )));
    }
    let mut job = trial;
    job.kind = crate::spec::Kind::Sweep;
    job.name = name;
    job.retries = 0;
    job.deadline = None;
    job.sweep = Some(spec);
    Ok(job)
}

/// One trial, as the planner sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct TrialView {
    /// Its job's name.
    pub name: String,
    /// Whether its job has ended.
    pub ended: bool,
    /// The metric it reported, if it ended and reported one.
    pub metric: Option<f64>,
}

/// A trial to submit.
#[derive(Clone, Debug, PartialEq)]
pub struct NewTrial {
    /// Its job's name.
    pub name: String,
    /// Its parameters.
    pub params: BTreeMap<String, Value>,
    /// Its spec, parameters filled in.
    pub spec: JobSpec,
}

/// What the sweep does next.
#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    /// Submit these trials.
    Submit(Vec<NewTrial>),
    /// Wait for running trials.
    Wait,
    /// The sweep is over: the best trial (name and metric), if any
    /// reported the metric, and the trials still running to kill (a
    /// target was reached).
    Done {
        /// The best trial.
        best: Option<(String, f64)>,
        /// Trials to kill.
        kill: Vec<String>,
    },
}

/// splitmix64: a small, good generator for seeded draws.
fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = x;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl SweepSpec {
    /// How many trials the sweep makes at most.
    pub fn total_trials(&self) -> usize {
        match &self.method {
            Method::Grid => self
                .parameters
                .values()
                .map(|p| match p {
                    Param::Values(v) => v.len(),
                    Param::Range { .. } => 1,
                })
                .try_fold(1usize, |a, n| a.checked_mul(n))
                .unwrap_or(usize::MAX),
            Method::Random { trials } => *trials as usize,
            Method::Halving {
                trials,
                min_budget,
                max_budget,
                eta,
            } => {
                let mut n = *trials as usize;
                let mut b = *min_budget;
                let mut total = 0;
                while n > 0 && b <= *max_budget * (1.0 + 1e-9) {
                    total += n;
                    n /= *eta as usize;
                    b *= *eta as f64;
                }
                total
            }
        }
    }

    /// The parameters of configuration `k` (1-based).
    pub fn params(&self, k: usize) -> BTreeMap<String, Value> {
        match &self.method {
            Method::Grid => {
                let mut rest = k - 1;
                let mut out = BTreeMap::new();
                // The last parameter varies fastest.
                let lists: Vec<(&String, &Vec<Value>)> = self
                    .parameters
                    .iter()
                    .filter_map(|(n, p)| match p {
                        Param::Values(v) => Some((n, v)),
                        Param::Range { .. } => None,
                    })
                    .collect();
                for (n, v) in lists.iter().rev() {
                    out.insert((*n).clone(), v[rest % v.len()].clone());
                    rest /= v.len();
                }
                out
            }
            _ => {
                let mut out = BTreeMap::new();
                for (i, (n, p)) in self.parameters.iter().enumerate() {
                    let r = splitmix(self.seed ^ splitmix(k as u64) ^ splitmix(1000 + i as u64));
                    let u = (r >> 11) as f64 / (1u64 << 53) as f64;
                    let v = match p {
                        Param::Values(v) => v[(r % v.len() as u64) as usize].clone(),
                        Param::Range {
                            min,
                            max,
                            scale,
                            integer,
                        } => {
                            let x = if scale.as_deref() == Some("log") {
                                (min.ln() + u * (max.ln() - min.ln())).exp()
                            } else {
                                min + u * (max - min)
                            };
                            if *integer {
                                Value::from(x.round().clamp(*min, *max) as i64)
                            } else {
                                // Six significant digits read well in a command.
                                let s = format!("{x:.6e}");
                                Value::from(s.parse::<f64>().unwrap_or(x))
                            }
                        }
                    };
                    out.insert(n.clone(), v);
                }
                out
            }
        }
    }

    /// Trial `k` of rung `rung`'s name under sweep `sweep`.
    pub fn trial_name(&self, sweep: &str, rung: u32, k: usize) -> String {
        match self.method {
            Method::Halving { .. } => format!("{sweep}.r{rung}t{k}"),
            _ => format!("{sweep}.t{k}"),
        }
    }

    /// The spec of a trial with `params` (and `budget` under halving).
    pub fn trial_spec(
        &self,
        name: &str,
        params: &BTreeMap<String, Value>,
        budget: Option<f64>,
    ) -> JobSpec {
        let text = |v: &Value| match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        let fill = |s: &str| {
            let mut out = s.to_string();
            for (n, v) in params {
                out = out.replace(&format!("{{{n}}}"), &text(v));
            }
            if let Some(b) = budget {
                out = out.replace("{budget}", &Value::from(b).to_string());
            }
            out
        };
        let mut spec = (*self.trial).clone();
        spec.name = name.to_string();
        spec.command = spec.command.as_deref().map(fill);
        spec.entrypoint = spec.entrypoint.as_deref().map(fill);
        spec.args = spec.args.iter().map(|a| fill(a)).collect();
        spec.jvm_args = spec.jvm_args.iter().map(|a| fill(a)).collect();
        for v in spec.env.values_mut() {
            *v = fill(v);
        }
        for (n, v) in params {
            spec.env
                .insert(format!("MEZZ_PARAM_{}", n.to_ascii_uppercase()), text(v));
        }
        if let Some(b) = budget {
            spec.env
                .insert("MEZZ_BUDGET".into(), Value::from(b).to_string());
        }
        spec.env.insert("MEZZ_METRIC".into(), self.metric.clone());
        spec
    }

    fn better(&self, a: f64, b: f64) -> bool {
        match self.goal {
            Goal::Maximize => a > b,
            Goal::Minimize => a < b,
        }
    }

    fn reached(&self, m: f64) -> bool {
        match (self.target, self.goal) {
            (Some(t), Goal::Maximize) => m >= t,
            (Some(t), Goal::Minimize) => m <= t,
            (None, _) => false,
        }
    }

    fn best<'a>(&self, trials: impl Iterator<Item = &'a TrialView>) -> Option<(String, f64)> {
        let mut best: Option<(String, f64)> = None;
        for t in trials {
            if let Some(m) = t.metric {
                if best.as_ref().is_none_or(|(_, b)| self.better(m, *b)) {
                    best = Some((t.name.clone(), m));
                }
            }
        }
        best
    }

    /// What to do, given the trials the masters keep for sweep `sweep`.
    pub fn plan(&self, sweep: &str, trials: &[TrialView]) -> Step {
        let by_name: BTreeMap<&str, &TrialView> =
            trials.iter().map(|t| (t.name.as_str(), t)).collect();
        let running: Vec<String> = trials
            .iter()
            .filter(|t| !t.ended)
            .map(|t| t.name.clone())
            .collect();
        if let Some((name, m)) = self.best(trials.iter()).filter(|(_, m)| self.reached(*m)) {
            return Step::Done {
                best: Some((name, m)),
                kill: running,
            };
        }
        let room = (self.parallelism as usize).saturating_sub(running.len());
        let (configs, rung, budget, last_rung): (Vec<usize>, u32, Option<f64>, bool) =
            match &self.method {
                Method::Grid | Method::Random { .. } => {
                    ((1..=self.total_trials()).collect(), 0, None, true)
                }
                Method::Halving {
                    trials: n0,
                    min_budget,
                    max_budget,
                    eta,
                } => {
                    // Walk the rungs: the first not complete is the current one.
                    let mut configs: Vec<usize> = (1..=*n0 as usize).collect();
                    let mut rung = 0u32;
                    let mut budget = *min_budget;
                    loop {
                        let names: Vec<String> = configs
                            .iter()
                            .map(|k| self.trial_name(sweep, rung, *k))
                            .collect();
                        let complete = names
                            .iter()
                            .all(|n| by_name.get(n.as_str()).is_some_and(|t| t.ended));
                        let next_budget = budget * *eta as f64;
                        let keep = configs.len() / *eta as usize;
                        let last = keep == 0 || next_budget > *max_budget * (1.0 + 1e-9);
                        if !complete || last {
                            break (configs, rung, Some(budget), last);
                        }
                        // Promote the best `keep` of this rung (no metric: last).
                        let mut ranked: Vec<(usize, Option<f64>)> = configs
                            .iter()
                            .map(|k| {
                                (
                                    *k,
                                    by_name
                                        .get(self.trial_name(sweep, rung, *k).as_str())
                                        .and_then(|t| t.metric),
                                )
                            })
                            .collect();
                        ranked.sort_by(|a, b| match (a.1, b.1) {
                            (Some(x), Some(y)) => {
                                if self.better(x, y) {
                                    std::cmp::Ordering::Less
                                } else if self.better(y, x) {
                                    std::cmp::Ordering::Greater
                                } else {
                                    a.0.cmp(&b.0)
                                }
                            }
                            (Some(_), None) => std::cmp::Ordering::Less,
                            (None, Some(_)) => std::cmp::Ordering::Greater,
                            (None, None) => a.0.cmp(&b.0),
                        });
                        configs = ranked.into_iter().take(keep).map(|(k, _)| k).collect();
                        configs.sort();
                        rung += 1;
                        budget = next_budget;
                    }
                }
            };
        let missing: Vec<usize> = configs
            .iter()
            .copied()
            .filter(|k| !by_name.contains_key(self.trial_name(sweep, rung, *k).as_str()))
            .collect();
        if missing.is_empty() {
            let this_rung: Vec<String> = configs
                .iter()
                .map(|k| self.trial_name(sweep, rung, *k))
                .collect();
            let all_ended = this_rung
                .iter()
                .all(|n| by_name.get(n.as_str()).is_some_and(|t| t.ended));
            if all_ended && last_rung {
                let best = match self.method {
                    // The best of the last rung: it had the most budget.
                    Method::Halving { .. } => self.best(
                        this_rung
                            .iter()
                            .filter_map(|n| by_name.get(n.as_str()).copied()),
                    ),
                    _ => self.best(trials.iter()),
                };
                return Step::Done {
                    best,
                    kill: Vec::new(),
                };
            }
            return Step::Wait;
        }
        if room == 0 {
            return Step::Wait;
        }
        Step::Submit(
            missing
                .into_iter()
                .take(room)
                .map(|k| {
                    let params = self.params(k);
                    let name = self.trial_name(sweep, rung, k);
                    let spec = self.trial_spec(
                        &name,
                        &params,
                        budget.filter(|_| matches!(self.method, Method::Halving { .. })),
                    );
                    NewTrial { name, params, spec }
                })
                .collect(),
        )
    }
}

/// The metric `name` in a trial's output: the value of the last line
/// `metric: NAME=VALUE` (several `NAME=VALUE` may share a line, separated
/// by spaces or commas).
pub fn metric_in(output: &str, name: &str) -> Option<f64> {
    let mut found = None;
    for line in output.lines() {
        let Some(rest) = line.trim().strip_prefix("metric:") else {
            continue;
        };
        for pair in rest.split([' ', ',', '\t']).filter(|p| !p.is_empty()) {
            if let Some((k, v)) = pair.split_once('=') {
                if k.trim() == name {
                    if let Ok(x) = v.trim().parse::<f64>() {
                        if x.is_finite() {
                            found = Some(x);
                        }
                    }
                }
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sweep(extra: &str) -> JobSpec {
        let text = format!(
            "kind: sweep\nname: tune\nmetric: acc\ntrial:\n  kind: command\n  cpus: 0.5\n  mem: 64\n  command: ./train --c {{c}} --k {{k}}\n{extra}"
        );
        parse(&text, &Sizes::builtin()).unwrap_or_else(|e| panic!("{e}"))
    }

    fn ended(name: &str, metric: Option<f64>) -> TrialView {
        TrialView {
            name: name.into(),
            ended: true,
            metric,
        }
    }

    #[test]
    fn a_grid_makes_every_combination_parallelism_at_a_time_and_picks_the_best() {
        let s = sweep("parameters:\n  c: [1, 10]\n  k: [a, b, c]\nparallelism: 4\n");
        let sw = s.sweep.clone().unwrap();
        assert_eq!(sw.total_trials(), 6);
        let Step::Submit(first) = sw.plan("tune", &[]) else {
            panic!()
        };
        assert_eq!(first.len(), 4);
        assert_eq!(first[0].name, "tune.t1");
        assert_eq!(
            first[0].spec.command.as_deref(),
            Some("./train --c 1 --k a")
        );
        assert_eq!(
            first[1].spec.command.as_deref(),
            Some("./train --c 1 --k b")
        );
        assert_eq!(
            first[3].spec.command.as_deref(),
            Some("./train --c 10 --k a")
        );
        assert_eq!(first[3].spec.env["MEZZ_PARAM_C"], "10");
        assert_eq!(first[3].spec.env["MEZZ_METRIC"], "acc");
        let mut trials: Vec<TrialView> = first
            .iter()
            .map(|t| TrialView {
                name: t.name.clone(),
                ended: false,
                metric: None,
            })
            .collect();
        assert_eq!(sw.plan("tune", &trials), Step::Wait, "four run: no room");
        trials[0] = ended("tune.t1", Some(0.5));
        let Step::Submit(more) = sw.plan("tune", &trials) else {
            panic!()
        };
        assert_eq!(
            more.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(),
            ["tune.t5"]
        );
        let all: Vec<TrialView> = (1..=6)
            .map(|k| ended(&format!("tune.t{k}"), Some(k as f64 / 10.0)))
            .collect();
        assert_eq!(
            sw.plan("tune", &all),
            Step::Done {
                best: Some(("tune.t6".into(), 0.6)),
                kill: vec![]
            }
        );
    }

    #[test]
    fn random_draws_are_the_same_whoever_draws_them_and_stay_in_range() {
        let s = sweep("method: random\ntrials: 20\nparameters:\n  c: {min: 0.001, max: 100, scale: log}\n  k: {min: 1, max: 5, integer: true}\n");
        let sw = s.sweep.unwrap();
        let again = sw.clone();
        for k in 1..=20 {
            let p = sw.params(k);
            assert_eq!(p, again.params(k));
            let c = p["c"].as_f64().unwrap();
            assert!((0.001..=100.0).contains(&c), "{c}");
            let kk = p["k"].as_i64().unwrap();
            assert!((1..=5).contains(&kk));
        }
        assert_ne!(sw.params(1), sw.params(2));
    }

    #[test]
    fn halving_promotes_the_best_third_with_three_times_the_budget() {
        let s = sweep("method: halving\ntrials: 9\nmin_budget: 1\nmax_budget: 9\neta: 3\nparallelism: 9\nparameters:\n  c: {min: 1, max: 2}\n  k: [x]\n");
        let sw = s.sweep.unwrap();
        assert_eq!(sw.total_trials(), 9 + 3 + 1);
        let Step::Submit(r0) = sw.plan("tune", &[]) else {
            panic!()
        };
        assert_eq!(r0.len(), 9);
        assert_eq!(r0[0].name, "tune.r0t1");
        assert_eq!(r0[0].spec.env["MEZZ_BUDGET"], "1.0");
        // Rung 0 ends: trials 2, 5 and 7 are the best.
        let score = |k: usize| {
            if [2, 5, 7].contains(&k) {
                0.9 + k as f64 / 100.0
            } else {
                0.1
            }
        };
        let mut trials: Vec<TrialView> = (1..=9)
            .map(|k| ended(&format!("tune.r0t{k}"), Some(score(k))))
            .collect();
        let Step::Submit(r1) = sw.plan("tune", &trials) else {
            panic!()
        };
        assert_eq!(
            r1.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(),
            ["tune.r1t2", "tune.r1t5", "tune.r1t7"]
        );
        assert_eq!(r1[0].spec.env["MEZZ_BUDGET"], "3.0");
        assert_eq!(
            r1[1].params,
            sw.params(5),
            "a promoted trial keeps its parameters"
        );
        trials.extend([
            ended("tune.r1t2", Some(0.3)),
            ended("tune.r1t5", Some(0.95)),
            ended("tune.r1t7", Some(0.5)),
        ]);
        let Step::Submit(r2) = sw.plan("tune", &trials) else {
            panic!()
        };
        assert_eq!(r2[0].name, "tune.r2t5");
        assert_eq!(r2[0].spec.env["MEZZ_BUDGET"], "9.0");
        trials.push(ended("tune.r2t5", Some(0.97)));
        assert_eq!(
            sw.plan("tune", &trials),
            Step::Done {
                best: Some(("tune.r2t5".into(), 0.97)),
                kill: vec![]
            }
        );
    }

    #[test]
    fn a_target_stops_the_sweep_and_kills_what_runs() {
        let s = sweep("parameters:\n  c: [1, 2, 3]\n  k: [a]\ntarget: 0.9\ngoal: maximize\n");
        let sw = s.sweep.unwrap();
        let trials = [
            ended("tune.t1", Some(0.95)),
            TrialView {
                name: "tune.t2".into(),
                ended: false,
                metric: None,
            },
        ];
        assert_eq!(
            sw.plan("tune", &trials),
            Step::Done {
                best: Some(("tune.t1".into(), 0.95)),
                kill: vec!["tune.t2".into()]
            }
        );
    }

    #[test]
    fn bad_sweeps_are_named() {
        let e = |extra: &str| {
            let text = format!("kind: sweep\nname: tune\nmetric: acc\ntrial:\n  kind: command\n  command: x\n{extra}");
            parse(&text, &Sizes::builtin()).unwrap_err().0
        };
        assert!(e("").contains("`parameters` is missing"));
        assert!(e("parameters:\n  c: {min: 1, max: 2}\n").contains("a grid needs a list"));
        assert!(e("method: random\nparameters:\n  c: [1]\n").contains("`trials` is missing"));
        assert!(e("method: anneal\nparameters:\n  c: [1]\n").contains("'anneal'"));
        assert!(e("parameters:\n  c: []\n").contains("empty"));
        assert!(e("parameters:\n  c: {min: 0, max: 1, scale: log}\n").contains("min > 0"));
        assert!(
            e("parameters:\n  c: [1]\nretries: 2\n").contains("retries"),
            "unknown sweep field"
        );
        assert!(
            e("method: random\ntrials: 5000\nparameters:\n  c: [1]\n").contains("at most")
                || e("method: random\ntrials: 5000\nparameters:\n  c: [1]\n").contains("1 to 1000")
        );
    }

    #[test]
    fn metrics_are_read_from_the_last_line_that_names_them() {
        let out =
            "epoch 1\nmetric: acc=0.5 loss=2\nnoise metric: acc=9\nmetric: loss=1, acc=0.75\n";
        assert_eq!(metric_in(out, "acc"), Some(0.75));
        assert_eq!(metric_in(out, "loss"), Some(1.0));
        assert_eq!(metric_in(out, "f1"), None);
        assert_eq!(metric_in("metric: acc=nan\n", "acc"), None);
    }
}
