//! `/jobs` (filterable by state and by the schedule a run was fired from)
//! and `/jobs/{name}`: a job's runs and attempts, its GPU-hours, the jobs
//! it waits for and those waiting on it, and its spec. Rendered from the
//! replicated job records ([`JobList`], [`JobDetail`]), which every master
//! holds, so a follower's page is as complete as the leader's.

use std::fmt::Write as _;

use mezz_proto::v1::{JobList, JobRecord};

use super::layout::{ago, esc, page, pill, url, utc};
use super::Ctx;
use crate::job_store::{attempt_secs, gpu_hours, is_terminal, JobDetail, STATES};

/// `/jobs` query: every field optional; empty means "any".
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct JobFilter {
    /// A state name (`RUNNING`, ...).
    #[serde(default)]
    pub state: String,
    /// Only runs of this scheduled job.
    #[serde(default)]
    pub parent: String,
    /// Most rows to show.
    #[serde(default)]
    pub limit: Option<u32>,
}

/// How long the current run has taken: from its first attempt's start to
/// the job's end (or `now`); `None` before an attempt started.
pub fn run_secs(job: &JobRecord, now: f64) -> Option<f64> {
    let first = job
        .attempts
        .get(job.run_start as usize)
        .filter(|a| a.started_at > 0.0)?;
    let end = if is_terminal(&job.state) && job.finished_at > 0.0 {
        job.finished_at
    } else {
        now
    };
    Some((end - first.started_at).max(0.0))
}

fn duration(job: &JobRecord, now: f64) -> String {
    run_secs(job, now).map_or_else(|| "—".into(), mezz_proto::age_text)
}

fn hours(job: &JobRecord, now: f64) -> String {
    if job.gpus == 0 {
        return "—".into();
    }
    format!("{:.2}", gpu_hours(job, now))
}

fn job_link(name: &str) -> String {
    format!(
        "<a class=mono href=\"/jobs/{}\">{}</a>",
        url(name),
        esc(name)
    )
}

/// What a job is tied to in a listing: its schedule, or what it waits for.
fn ties(job: &JobRecord) -> String {
    let mut out = String::new();
    if !job.parent.is_empty() {
        let _ = write!(out, "run of {}", job_link(&job.parent));
    }
    if !job.after.is_empty() {
        if !out.is_empty() {
            out.push_str("; ");
        }
        let deps: Vec<String> = job.after.iter().map(|d| job_link(d)).collect();
        let _ = write!(
            out,
            "after {}{}",
            if job.after_any { "any of " } else { "" },
            deps.join(", ")
        );
    }
    if !job.schedule.is_empty() {
        let _ = write!(
            out,
            "<span class=mono>{}</span> {}{}",
            esc(&job.schedule),
            esc(&job.timezone),
            if job.paused { " (paused)" } else { "" }
        );
    }
    out
}

/// Renders the job list; `list` holds the jobs the filter matched that
/// the caller may view, newest first.
pub fn jobs(list: &JobList, ctx: &Ctx, f: &JobFilter) -> String {
    let mut b = String::with_capacity(4096 + list.jobs.len() * 600);
    b.push_str(
        "<h1>Jobs</h1><form class=filter method=get action=\"/jobs\"><select name=state>\
         <option value=\"\">any state</option>",
    );
    for st in STATES {
        let sel = if st.eq_ignore_ascii_case(&f.state) {
            " selected"
        } else {
            ""
        };
        let _ = write!(b, "<option{sel}>{st}</option>");
    }
    let _ = write!(
        b,
        "</select><input name=parent placeholder=\"runs of scheduled job\" value=\"{}\">\
         <button type=submit>Filter</button> <a href=\"/jobs\" style=\"align-self:center\">clear</a></form>",
        esc(&f.parent)
    );
    let shown = list.jobs.len() as u64;
    let _ = write!(
        b,
        "<p class=mute>{} matching job(s){}</p>",
        list.matched,
        if list.matched > shown {
            format!(", showing the newest {shown} (add &amp;limit=N)")
        } else {
            String::new()
        }
    );
    if list.jobs.is_empty() {
        b.push_str(
            "<p class=mute>No jobs. <span class=mono>mezz job submit FILE</span> stores \
             jobs here; the jobs framework runs them.</p>",
        );
        return page(ctx, "Jobs", "Jobs", &b, "");
    }
    b.push_str(
        "<table><tr><th>Job</th><th>State</th><th>Kind</th><th>Role</th><th>Runs</th>\
         <th>Attempts</th><th>Submitted</th><th>Duration</th><th>GPU-hours</th>\
         <th>After / parent</th></tr>",
    );
    for j in &list.jobs {
        let kill = if j.kill_requested {
            " <span class=mute>(kill asked)</span>"
        } else {
            ""
        };
        let _ = write!(
            b,
            "<tr><td>{}</td><td>{}{kill}</td><td>{}</td><td>{}</td><td class=num>{}</td>\
             <td class=num>{}</td><td class=num>{}</td><td class=num>{}</td>\
             <td class=num>{}</td><td>{}</td></tr>",
            job_link(&j.name),
            pill(&j.state),
            esc(&j.kind),
            esc(&j.role),
            j.runs,
            j.attempts.len(),
            ago(ctx.now, j.submitted_at),
            duration(j, ctx.now),
            hours(j, ctx.now),
            ties(j)
        );
    }
    b.push_str("</table>");
    page(ctx, "Jobs", "Jobs", &b, "")
}

/// A small table of related jobs (what a job waits for, what waits on it,
/// its runs).
fn related(b: &mut String, title: &str, empty: &str, rows: &[(String, Option<&JobRecord>)]) {
    let _ = write!(b, "<h2>{title}</h2>");
    if rows.is_empty() {
        let _ = write!(b, "<p class=mute>{empty}</p>");
        return;
    }
    b.push_str("<table><tr><th>Job</th><th>State</th><th>Submitted</th><th>Ended</th></tr>");
    for (name, job) in rows {
        match job {
            Some(j) => {
                let _ = write!(
                    b,
                    "<tr><td>{}</td><td>{}</td><td class=num>{}</td><td class=num>{}</td></tr>",
                    job_link(name),
                    pill(&j.state),
                    utc(j.submitted_at),
                    if j.finished_at > 0.0 {
                        utc(j.finished_at)
                    } else {
                        "—".into()
                    }
                );
            }
            None => {
                let _ = write!(
                    b,
                    "<tr><td class=mono>{}</td><td colspan=3 class=mute>no longer kept by the \
                     masters (or not yours to view)</td></tr>",
                    esc(name)
                );
            }
        }
    }
    b.push_str("</table>");
}

/// Renders one job's page, or a 404 page when `d` is `None`.
pub fn job(d: Option<&JobDetail>, ctx: &Ctx, name: &str) -> (bool, String) {
    let Some(d) = d else {
        let body = format!(
            "<h1>Not found</h1><p>No job '{}' — it may have ended long ago (the masters keep \
             the newest ended jobs, see <span class=mono>--jobs-kept</span>) or the name is \
             wrong. <a href=\"/jobs\">All jobs</a>.</p>",
            esc(name)
        );
        return (false, page(ctx, "Not found", "Jobs", &body, ""));
    };
    let j = &d.job;
    let mut b = String::with_capacity(8192 + j.attempts.len() * 300 + j.spec_json.len());
    let _ = write!(
        b,
        "<h1>Job <span class=mono>{}</span> {}</h1>",
        esc(&j.name),
        pill(&j.state)
    );
    let _ = write!(
        b,
        "<dl class=kv><dt>Kind</dt><dd>{}</dd><dt>Role</dt><dd>{}</dd>\
         <dt>Submitted by</dt><dd>{}</dd><dt>Submitted</dt><dd>{}</dd>\
         <dt>Ended</dt><dd>{}</dd><dt>Reason</dt><dd>{}</dd>\
         <dt>Runs</dt><dd>{}</dd><dt>Resources</dt><dd class=mono>cpus {} · mem {} MB · gpus {}</dd>\
         <dt>Duration</dt><dd>{}</dd><dt>GPU-hours</dt><dd>{}</dd><dt>Version</dt><dd>{}</dd>",
        esc(&j.kind),
        esc(&j.role),
        if j.principal.is_empty() {
            "<span class=mute>(unauthenticated)</span>".into()
        } else {
            esc(&j.principal)
        },
        ago(ctx.now, j.submitted_at),
        ago(ctx.now, j.finished_at),
        if j.reason.is_empty() {
            "—".into()
        } else {
            esc(&j.reason)
        },
        j.runs,
        super::layout::num(j.cpus),
        super::layout::num(j.mem),
        j.gpus,
        duration(j, ctx.now),
        hours(j, ctx.now),
        j.version
    );
    if j.kill_requested {
        b.push_str("<dt>Kill</dt><dd>asked; the jobs framework is ending the attempt</dd>");
    }
    if !j.note.is_empty() {
        let lines: Vec<String> = j.note.lines().map(esc).collect();
        let _ = write!(
            b,
            "<dt>News of the latest attempt</dt><dd>{}</dd>",
            lines.join("<br>")
        );
    }
    if j.not_before > ctx.now {
        let _ = write!(
            b,
            "<dt>Next attempt</dt><dd>not before {}</dd>",
            utc(j.not_before)
        );
    }
    if !j.schedule.is_empty() {
        let _ = write!(
            b,
            "<dt>Schedule</dt><dd><span class=mono>{}</span> ({}){}</dd>\
             <dt>Concurrency</dt><dd>{}</dd><dt>Missed fires</dt><dd>{}</dd>\
             <dt>Last fire</dt><dd>{}</dd>",
            esc(&j.schedule),
            esc(&j.timezone),
            if j.paused { " — paused" } else { "" },
            esc(&j.concurrency),
            esc(&j.missed),
            if j.last_fired_at > 0.0 {
                utc(j.last_fired_at)
            } else {
                "none yet".into()
            }
        );
    }
    if !j.parent.is_empty() {
        let _ = write!(b, "<dt>Fired from</dt><dd>{}</dd>", job_link(&j.parent));
    }
    b.push_str("</dl>");

    let _ = write!(
        b,
        "<h2>Attempts <span class=mute>({})</span></h2>",
        j.attempts.len()
    );
    if j.attempts.is_empty() {
        b.push_str("<p class=mute>No attempt has started.</p>");
    } else {
        b.push_str(
            "<table><tr><th>#</th><th>Run</th><th>Task</th><th>Agent</th><th>Started</th>\
             <th>Ended</th><th>Ran</th><th>CPU</th><th>Peak memory</th><th>GPU use</th><th>Exit</th>\
             <th>Task state</th><th>Reason</th></tr>",
        );
        for (i, a) in j.attempts.iter().enumerate().rev() {
            let run = if i >= j.run_start as usize {
                "current".to_string()
            } else {
                "earlier".to_string()
            };
            let _ = write!(
                b,
                "<tr><td class=num>{}</td><td class=mute>{run}</td><td class=mono>{}</td>\
                 <td><a class=mono href=\"/agents/{}\">{}</a></td><td class=num>{}</td>\
                 <td class=num>{}</td><td class=num>{}</td><td class=num>{}</td>\
                 <td class=num>{}</td><td class=num>{}</td><td class=num>{}</td><td>{}</td><td>{}</td></tr>",
                a.number,
                esc(&a.task_id),
                url(&a.agent_id),
                esc(&a.agent_id),
                if a.started_at > 0.0 {
                    utc(a.started_at)
                } else {
                    "—".into()
                },
                if a.ended_at > 0.0 {
                    utc(a.ended_at)
                } else {
                    "—".into()
                },
                mezz_proto::age_text(attempt_secs(j, a, ctx.now)),
                a.cpu_seconds
                    .map(|c| format!("{c:.2} s"))
                    .unwrap_or_else(|| "—".into()),
                a.peak_memory_bytes
                    .map(|m| format!("{:.1} MB", m as f64 / 1e6))
                    .unwrap_or_else(|| "—".into()),
                mezz_proto::gpu_use_text(a.gpu_utilization_pct, a.gpu_peak_memory_mb)
                    .unwrap_or_else(|| "—".into()),
                if a.has_exit_code {
                    a.exit_code.to_string()
                } else {
                    "—".into()
                },
                if a.task_state.is_empty() {
                    "—".into()
                } else {
                    pill(&a.task_state)
                },
                esc(&a.reason)
            );
        }
        b.push_str("</table>");
    }

    let waits: Vec<(String, Option<&JobRecord>)> = d
        .waits_for
        .iter()
        .map(|(n, j)| (n.clone(), j.as_ref()))
        .collect();
    let title = if j.after_any {
        "Waits for any of"
    } else {
        "Waits for"
    };
    related(&mut b, title, "Nothing: it may start at once.", &waits);
    let waiting: Vec<(String, Option<&JobRecord>)> = d
        .waited_on_by
        .iter()
        .map(|w| (w.name.clone(), Some(w)))
        .collect();
    related(&mut b, "Waited on by", "No job waits for it.", &waiting);
    if !j.schedule.is_empty() {
        let runs: Vec<(String, Option<&JobRecord>)> =
            d.runs.iter().map(|r| (r.name.clone(), Some(r))).collect();
        let title = format!(
            "Runs <span class=mute>({}{})</span> <a href=\"/jobs?parent={}\">all</a>",
            d.runs_kept,
            if d.runs_kept > d.runs.len() {
                format!(", newest {} shown", d.runs.len())
            } else {
                String::new()
            },
            url(&j.name)
        );
        related(&mut b, &title, "It has not fired yet.", &runs);
    }
    let spec = serde_json::from_str::<serde_json::Value>(&j.spec_json)
        .and_then(|v| serde_json::to_string_pretty(&v))
        .unwrap_or_else(|_| j.spec_json.clone());
    let _ = write!(b, "<h2>Spec</h2><pre class=log>{}</pre>", esc(&spec));
    (true, page(ctx, &format!("Job {}", j.name), "Jobs", &b, ""))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> Ctx {
        Ctx {
            leads: true,
            leader: None,
            now: 10_000.0,
        }
    }

    fn rec(name: &str, state: &str) -> JobRecord {
        JobRecord {
            name: name.into(),
            state: state.into(),
            kind: "command".into(),
            role: "eng".into(),
            gpus: 2,
            spec_json: "{\"command\":\"<b>\"}".into(),
            ..Default::default()
        }
    }

    #[test]
    fn gpu_hours_count_every_attempt_and_a_running_one_to_now() {
        use mezz_proto::v1::JobAttempt;
        let mut j = rec("a", "RUNNING");
        j.attempts = vec![
            JobAttempt {
                started_at: 1000.0,
                ended_at: 2800.0,
                ..Default::default()
            },
            JobAttempt {
                started_at: 8200.0,
                ..Default::default()
            },
        ];
        j.run_start = 1;
        // (1800 s + 1800 s) × 2 GPUs = 2 GPU-hours.
        assert!((gpu_hours(&j, 10_000.0) - 2.0).abs() < 1e-9);
        // A gang of 8 GPUs in all, each task on 2: 8 GPU-hours.
        j.attempt_gpus = 8;
        assert!((gpu_hours(&j, 10_000.0) - 8.0).abs() < 1e-9);
        assert_eq!(run_secs(&j, 10_000.0), Some(1800.0));
        j.state = "SUCCEEDED".into();
        j.finished_at = 9100.0;
        assert_eq!(run_secs(&j, 10_000.0), Some(900.0));
    }

    #[test]
    fn pages_link_dependencies_both_ways_and_escape() {
        let mut train = rec("train", "WAITING");
        train.after = vec!["prep".into(), "gone".into()];
        let list = JobList {
            jobs: vec![train.clone(), rec("prep", "RUNNING")],
            matched: 2,
        };
        let html = jobs(&list, &ctx(), &JobFilter::default());
        assert!(html.contains("href=\"/jobs/train\""), "{html}");
        assert!(
            html.contains("after <a class=mono href=\"/jobs/prep\">prep</a>"),
            "{html}"
        );
        assert!(html.contains("2 matching job(s)"), "{html}");
        let d = JobDetail {
            job: rec("prep", "RUNNING"),
            waits_for: vec![],
            waited_on_by: vec![train.clone()],
            runs: vec![],
            runs_kept: 0,
        };
        let (found, html) = job(Some(&d), &ctx(), "prep");
        assert!(found);
        assert!(
            html.contains("Waited on by") && html.contains("href=\"/jobs/train\""),
            "{html}"
        );
        assert!(
            html.contains("&lt;b&gt;") && !html.contains("\"<b>\""),
            "{html}"
        );
        let d = JobDetail {
            job: train,
            waits_for: vec![
                ("prep".into(), Some(rec("prep", "RUNNING"))),
                ("gone".into(), None),
            ],
            waited_on_by: vec![],
            runs: vec![],
            runs_kept: 0,
        };
        let (_, html) = job(Some(&d), &ctx(), "train");
        assert!(html.contains("no longer kept"), "{html}");
        let (found, html) = job(None, &ctx(), "<x>");
        assert!(!found && html.contains("&lt;x&gt;"), "{html}");
    }
}
