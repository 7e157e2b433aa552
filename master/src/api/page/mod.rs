//! The status page: server-rendered HTML built from a [`ClusterState`]
//! (overview, agents, frameworks, roles, services, tasks and one page per
//! task) or from the replicated job records (jobs and one page per job).
//! The
//! render functions are pure — state in, HTML out — so they are tested and
//! benchmarked without a server; `routes` is the thin HTTP shell around
//! them. A small embedded script refreshes `<div id=live>` and follows
//! logs; without JavaScript every page is complete, only not live.

mod agents;
mod frameworks;
mod jobs;
pub mod layout;
mod overview;
mod services;
mod tasks;

use std::collections::HashSet;

use mezz_proto::v1::{ClusterState, TaskView};

pub use agents::{agent, agents};
pub use frameworks::{frameworks, roles};
pub use jobs::{job, jobs, run_secs, JobFilter};
pub use overview::overview;
pub use services::services;
pub use tasks::{task, tasks, LogPane, TaskFilter};

/// What a page needs besides the cluster state.
#[derive(Debug, Clone)]
pub struct Ctx {
    /// This master leads.
    pub leads: bool,
    /// The leader's address when known (for a follower's banner).
    pub leader: Option<String>,
    /// Wall-clock time of the render, seconds since the Unix epoch.
    pub now: f64,
}

/// Task states after which a task holds nothing.
pub fn terminal(state: &str) -> bool {
    matches!(
        state,
        "FINISHED" | "FAILED" | "KILLED" | "LOST" | "ERROR" | "DROPPED" | "GONE"
    )
}

/// States shown as failures on the overview.
pub fn failed(state: &str) -> bool {
    matches!(state, "FAILED" | "LOST" | "ERROR" | "DROPPED" | "GONE")
}

/// Active tasks of the state (they come first; completed ones may repeat
/// an id, so a seen-set keeps the newest).
pub fn active_tasks(s: &ClusterState) -> impl Iterator<Item = &TaskView> {
    s.tasks.iter().filter(|t| !terminal(&t.state))
}

/// The ids of the GPUs held by active tasks, with the holder.
pub fn gpu_holders(s: &ClusterState, agent_id: &str) -> Vec<(String, String, String)> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for t in active_tasks(s).filter(|t| t.agent_id == agent_id) {
        for g in &t.gpus {
            if seen.insert(g.clone()) {
                out.push((g.clone(), t.framework_id.clone(), t.id.clone()));
            }
        }
    }
    out
}

/// A 404 body in the page frame.
pub fn not_found(ctx: &Ctx, what: &str) -> String {
    layout::page(
        ctx,
        "Not found",
        "",
        &format!(
            "<h1>Not found</h1><p>{} — it may have finished long ago (the master keeps \
             the last 1000 completed tasks) or the id is wrong.</p>",
            layout::esc(what)
        ),
        "",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use mezz_proto::v1::{AgentView, FrameworkView, TaskView};

    fn ctx(leads: bool) -> Ctx {
        Ctx {
            leads,
            leader: Some("127.0.0.1:5050".into()),
            now: 1_700_000_000.0,
        }
    }

    fn state() -> ClusterState {
        ClusterState {
            agents: vec![AgentView {
                id: "a1".into(),
                hostname: "<host>".into(),
                status: "connected".into(),
                gpus: vec!["fake-gpu-0".into(), "fake-gpu-1".into()],
                attributes: [("gpu_model".to_string(), "Fake \"GPU\"".to_string())].into(),
                ..Default::default()
            }],
            tasks: vec![
                TaskView {
                    id: "t1".into(),
                    name: "<script>alert(1)</script>".into(),
                    framework_id: "f1".into(),
                    agent_id: "a1".into(),
                    state: "RUNNING".into(),
                    gpus: vec!["fake-gpu-1".into()],
                    ..Default::default()
                },
                TaskView {
                    id: "t2".into(),
                    name: "done".into(),
                    framework_id: "f1".into(),
                    agent_id: "a1".into(),
                    state: "FAILED".into(),
                    gpus: vec!["fake-gpu-0".into()],
                    ..Default::default()
                },
            ],
            ..Default::default()
        }
    }

    #[test]
    fn cluster_text_is_escaped() {
        let s = state();
        let html = tasks(&s, &ctx(true), &TaskFilter::default());
        assert!(!html.contains("<script>alert"), "{html}");
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        let (_, html) = agent(&s, &ctx(true), "a1");
        assert!(html.contains("&lt;host&gt;") && html.contains("Fake &quot;GPU&quot;"));
    }

    #[test]
    fn only_http_links_are_rendered() {
        let mut s = state();
        s.tasks[0].labels = [("url".to_string(), "http://h:8888/lab?x=\"1\"".to_string())].into();
        s.tasks[1].labels = [("url".to_string(), "javascript:alert(1)".to_string())].into();
        s.frameworks = vec![FrameworkView {
            id: "f1".into(),
            name: "spark".into(),
            webui_url: "http://h:4040/".into(),
            ..Default::default()
        }];
        let html = tasks(&s, &ctx(true), &TaskFilter::default());
        assert!(
            html.contains("href=\"http://h:8888/lab?x=&quot;1&quot;\""),
            "{html}"
        );
        assert!(!html.contains("javascript:"), "{html}");
        let (_, html) = task(&s, &ctx(true), "f1", "t1", &[]);
        assert!(html.contains("<dt>Serves</dt>"), "{html}");
        let (_, html) = task(&s, &ctx(true), "f1", "t2", &[]);
        assert!(!html.contains("href=\"javascript"), "{html}");
        assert!(!html.contains("<dt>Serves</dt>"), "{html}");
        let html = frameworks(&s, &ctx(true));
        assert!(html.contains("href=\"http://h:4040/\""), "{html}");
    }

    #[test]
    fn a_gpu_is_held_by_active_tasks_only() {
        let s = state();
        assert_eq!(
            gpu_holders(&s, "a1"),
            vec![("fake-gpu-1".into(), "f1".into(), "t1".into())]
        );
        let (found, html) = agent(&s, &ctx(true), "a1");
        assert!(found);
        assert!(html.contains("href=\"/tasks/f1/t1\""), "{html}");
        assert!(!agent(&s, &ctx(true), "nope").0);
    }

    #[test]
    fn the_filter_narrows_tasks() {
        let s = state();
        let f = TaskFilter {
            state: "failed".into(),
            ..Default::default()
        };
        let html = tasks(&s, &ctx(true), &f);
        assert!(html.contains("/tasks/f1/t2") && !html.contains("/tasks/f1/t1\""));
        let f = TaskFilter {
            agent: "a1".into(),
            name: "done".into(),
            ..Default::default()
        };
        assert!(tasks(&s, &ctx(true), &f).contains("1 matching task"));
    }

    #[test]
    fn a_follower_says_who_leads() {
        let html = overview(&state(), &ctx(false));
        assert!(html.contains("This master follows; the leader is <b>127.0.0.1:5050</b>"));
        assert!(!overview(&state(), &ctx(true)).contains("This master follows"));
    }

    fn replica(id: &str, healthy: Option<bool>, labels: &[(&str, &str)]) -> TaskView {
        TaskView {
            id: id.into(),
            name: "serve/iris".into(),
            framework_id: "f1".into(),
            framework_name: "mezz-serve".into(),
            agent_id: "a1".into(),
            state: "RUNNING".into(),
            healthy,
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn services_show_versions_health_and_canary_weight() {
        let html = overview(&state(), &ctx(true));
        assert!(html.contains("No services are running."), "{html}");
        let stable = [
            ("service", "iris<b>"),
            ("version", "1"),
            ("url", "http://127.0.0.1:31001/"),
            ("service_url", "http://127.0.0.1:40000/"),
        ];
        let mut canary = stable.to_vec();
        canary[1] = ("version", "2");
        canary.extend([("canary", "true"), ("weight", "20")]);
        let mut s = state();
        s.tasks = vec![
            replica("r1", Some(true), &stable),
            replica("r2", Some(false), &stable),
            replica("c1", None, &canary),
            replica(
                "odd",
                Some(true),
                &[("service", "iris<b>"), ("version", "two")],
            ),
        ];
        s.services = crate::cluster::services::services(&s.tasks);
        for html in [overview(&s, &ctx(true)), services(&s, &ctx(true))] {
            assert!(!html.contains("No services are running."), "{html}");
            assert!(!html.contains("iris<b>"), "{html}");
            assert!(
                html.contains("href=\"http://127.0.0.1:40000/\" rel=\"noopener noreferrer\" target=_blank>iris&lt;b&gt;</a>"),
                "{html}"
            );
            assert!(
                html.contains("<b>v1</b> <span class=\"hc\">1/2 healthy</span>"),
                "{html}"
            );
            assert!(
                html.contains("<b>v2</b> <span class=\"pill s-canary\">canary 20%</span> <span class=\"hc\">0/1 healthy</span>"),
                "{html}"
            );
            assert!(
                html.contains("<b>version unknown</b> <span class=\"hc ok\">1/1 healthy</span>"),
                "{html}"
            );
            for (id, health) in [
                ("r1", "s-healthy\">healthy"),
                ("r2", "s-unhealthy\">unhealthy"),
                (
                    "c1",
                    "s-unknown\" title=\"no health check result yet\">health unknown",
                ),
            ] {
                let row = html
                    .split("<div class=rep>")
                    .find(|r| r.contains(&format!("href=\"/tasks/f1/{id}\"")))
                    .unwrap_or_else(|| panic!("no replica row for {id}: {html}"));
                assert!(row.contains(health), "{id}: {row}");
            }
            assert!(html.contains("href=\"http://127.0.0.1:31001/\""), "{html}");
        }
        // A proxy URL that is not plain http(s) is shown as text, unlinked.
        s.tasks = vec![replica(
            "r1",
            Some(true),
            &[("service", "x"), ("service_url", "javascript:alert(1)")],
        )];
        s.services = crate::cluster::services::services(&s.tasks);
        let html = services(&s, &ctx(true));
        assert!(!html.contains("javascript:"), "{html}");
        assert!(html.contains("<td>x</td>"), "{html}");
    }

    #[test]
    fn dates_are_utc() {
        assert_eq!(layout::utc(0.0), "1970-01-01 00:00:00 UTC");
        assert_eq!(layout::utc(1_700_000_000.0), "2023-11-14 22:13:20 UTC");
        assert_eq!(layout::url("a b/c"), "a%20b%2Fc");
    }

    #[test]
    fn gpu_use_is_charted_and_idle_flagged() {
        assert_eq!(
            layout::spark(&[0, 100]),
            "<svg class=spark width=\"120\" height=\"24\" viewBox=\"0 0 120 24\" role=img>\
             <polyline points=\"0.0,23.0 120.0,1.0\"/></svg>"
        );
        assert_eq!(layout::spark(&[]), "");
        assert!(layout::gpu_use(None).contains("not sampled"));
        let u = mezz_proto::v1::GpuUsageView {
            gpu: "g0".into(),
            utilization_pct: 3,
            memory_used_mb: 12,
            task_id: "t".into(),
            idle: true,
            history_pct: vec![1, 2, 3],
            history_secs: 600.0,
            ..Default::default()
        };
        let cell = layout::gpu_use(Some(&u));
        assert!(
            cell.contains("3% · 12 MB") && cell.contains(">idle</span>"),
            "{cell}"
        );
        assert!(cell.contains("over the last 10 min"), "{cell}");
    }
}
