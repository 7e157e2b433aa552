//! `/tasks` (filterable by state, framework, agent and name) and
//! `/tasks/{framework_id}/{task_id}`: states over time, resources, GPUs,
//! the agent, and stdout/stderr read through the agent's sandbox API.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use mezz_proto::v1::{ClusterState, TaskView};

use super::layout::{ago, esc, ext_link, page, pill, url, utc};
use super::{not_found, Ctx};

/// Rows shown when the query does not say.
pub const DEFAULT_LIMIT: usize = 1000;

/// `/tasks` query: every field optional; empty means "any".
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct TaskFilter {
    /// Exact state name (`RUNNING`, ...).
    #[serde(default)]
    pub state: String,
    /// Framework id or name.
    #[serde(default)]
    pub framework: String,
    /// Agent id or hostname.
    #[serde(default)]
    pub agent: String,
    /// Substring of the task's name or id.
    #[serde(default)]
    pub name: String,
    /// Most rows to show.
    #[serde(default)]
    pub limit: Option<usize>,
}

impl TaskFilter {
    fn matches(&self, t: &TaskView) -> bool {
        (self.state.is_empty() || t.state.eq_ignore_ascii_case(&self.state))
            && (self.framework.is_empty()
                || t.framework_id == self.framework
                || t.framework_name == self.framework)
            && (self.agent.is_empty() || t.agent_id == self.agent || t.hostname == self.agent)
            && (self.name.is_empty() || t.name.contains(&self.name) || t.id.contains(&self.name))
    }
}

/// Renders the task list.
pub fn tasks(s: &ClusterState, ctx: &Ctx, f: &TaskFilter) -> String {
    let limit = f.limit.unwrap_or(DEFAULT_LIMIT).min(100_000);
    let states: BTreeSet<&str> = s.tasks.iter().map(|t| t.state.as_str()).collect();
    let mut b = String::with_capacity(4096 + s.tasks.len().min(limit) * 700);
    b.push_str("<h1>Tasks</h1><form class=filter method=get action=\"/tasks\"><select name=state><option value=\"\">any state</option>");
    for st in &states {
        let sel = if st.eq_ignore_ascii_case(&f.state) {
            " selected"
        } else {
            ""
        };
        let _ = write!(b, "<option{sel}>{}</option>", esc(st));
    }
    let _ = write!(
        b,
        "</select><input name=framework placeholder=\"framework id or name\" value=\"{}\">\
         <input name=agent placeholder=\"agent id or host\" value=\"{}\">\
         <input name=name placeholder=\"name or id contains\" value=\"{}\">\
         <button type=submit>Filter</button> <a href=\"/tasks\" style=\"align-self:center\">clear</a></form>",
        esc(&f.framework),
        esc(&f.agent),
        esc(&f.name)
    );
    let matching: Vec<&TaskView> = s.tasks.iter().filter(|t| f.matches(t)).collect();
    let _ = write!(
        b,
        "<p class=mute>{} matching task(s){}</p><table><tr><th>Task</th><th>Name</th><th>State</th>\
         <th>Framework</th><th>Agent</th><th>Resources</th><th>GPUs</th><th>Updated</th></tr>",
        matching.len(),
        if matching.len() > limit {
            format!(", showing the first {limit} (add &amp;limit=N)")
        } else {
            String::new()
        }
    );
    for t in matching.iter().take(limit) {
        let _ = write!(
            b,
            "<tr><td class=mono><a href=\"/tasks/{}/{}\">{}</a></td><td>{} {}</td><td>{}</td>\
             <td><a href=\"/tasks?framework={}\">{}</a></td><td><a href=\"/agents/{}\">{}</a></td>\
             <td class=mono>{}</td><td class=mono>{}</td><td class=num>{}</td></tr>",
            url(&t.framework_id),
            url(&t.id),
            esc(&t.id),
            esc(&t.name),
            ext_link(t.labels.get("url").map_or("", String::as_str), "open"),
            pill(&t.state),
            url(&t.framework_id),
            esc(&t.framework_name),
            url(&t.agent_id),
            esc(&t.hostname),
            esc(&t.resources),
            esc(&t.gpus.join(", ")),
            ago(ctx.now, t.updated_at)
        );
    }
    b.push_str("</table>");
    page(ctx, "Tasks", "Tasks", &b, "")
}

/// One sandbox file as first shown on a task page; the script follows it
/// from `next_offset`.
#[derive(Debug, Clone)]
pub struct LogPane {
    /// `stdout` or `stderr`.
    pub file: String,
    /// The text read (the file's tail).
    pub text: String,
    /// Bytes before `text` that are not shown.
    pub skipped: u64,
    /// Where following continues.
    pub next_offset: u64,
    /// Why the file could not be read, if it could not.
    pub error: Option<String>,
}

/// Renders one task's page (`panes` are its log files), or a 404 page.
pub fn task(
    s: &ClusterState,
    ctx: &Ctx,
    framework_id: &str,
    task_id: &str,
    panes: &[LogPane],
) -> (bool, String) {
    let Some(t) = s
        .tasks
        .iter()
        .find(|t| t.framework_id == framework_id && t.id == task_id)
    else {
        return (
            false,
            not_found(
                ctx,
                &format!("no task '{task_id}' of framework '{framework_id}'"),
            ),
        );
    };
    let mut b = String::with_capacity(8 * 1024);
    let exit = match (t.exit_code, t.signal) {
        (Some(c), _) => c.to_string(),
        (None, Some(sig)) => format!("signal {sig}"),
        _ => "—".into(),
    };
    let mut labels = String::new();
    if let Some(link) = t.labels.get("url").map(|u| ext_link(u, u)) {
        if !link.is_empty() {
            let _ = write!(labels, "<dt>Serves</dt><dd class=mono>{link}</dd>");
        }
    }
    if !t.labels.is_empty() {
        let list: Vec<String> = t
            .labels
            .iter()
            .map(|(k, v)| format!("{}={}", esc(k), esc(v)))
            .collect();
        let _ = write!(
            labels,
            "<dt>Labels</dt><dd class=mono>{}</dd>",
            list.join(" ")
        );
    }
    let _ = write!(
        b,
        "<h1>Task <span class=mono>{}</span> {}</h1><div class=grid2><dl class=kv>\
         <dt>Name</dt><dd>{}</dd><dt>Framework</dt><dd><a href=\"/tasks?framework={}\">{}</a> \
         <span class=\"mono mute\">{}</span></dd><dt>Agent</dt><dd><a href=\"/agents/{}\">{}</a> \
         <span class=\"mono mute\">{}</span></dd><dt>State</dt><dd>{}</dd><dt>Reason</dt><dd>{}</dd>\
         <dt>Message</dt><dd>{}</dd><dt>Exit</dt><dd>{exit}</dd><dt>Command</dt><dd class=mono>{}</dd>\
         <dt>Resources</dt><dd class=mono>{}</dd><dt>GPUs</dt><dd class=\"mono gpus\">{}</dd>\
         <dt>Launched</dt><dd>{}</dd>{labels}</dl>",
        esc(&t.id),
        pill(&t.state),
        esc(&t.name),
        url(&t.framework_id),
        esc(&t.framework_name),
        esc(&t.framework_id),
        url(&t.agent_id),
        esc(&t.hostname),
        esc(&t.agent_address),
        pill(&t.state),
        esc(&t.reason),
        esc(&t.message),
        esc(&t.command),
        esc(&t.resources),
        if t.gpus.is_empty() {
            "none".into()
        } else {
            esc(&t.gpus.join(", "))
        },
        ago(ctx.now, t.launched_at)
    );
    b.push_str("<table><tr><th>State</th><th>At</th><th>Reason</th><th>Message</th></tr>");
    for h in &t.history {
        let _ = write!(
            b,
            "<tr><td>{}</td><td class=num>{}</td><td>{}</td><td>{}</td></tr>",
            pill(&h.state),
            utc(h.timestamp),
            esc(&h.reason),
            esc(&h.message)
        );
    }
    b.push_str("</table></div>");
    if !t.gpu_usage.is_empty() {
        b.push_str("<h2>GPU use</h2><table><tr><th>GPU</th><th>Utilization (last hour)</th></tr>");
        for u in &t.gpu_usage {
            let _ = write!(
                b,
                "<tr class=gpu><td class=mono>{}</td><td>{}</td></tr>",
                esc(&u.gpu),
                super::layout::gpu_use(Some(u))
            );
        }
        b.push_str("</table>");
    }

    let mut logs = String::new();
    for p in panes {
        let _ = write!(
            logs,
            "<h2>{} <span class=mute id=\"log-{}-state\" style=\"font-weight:400\"></span></h2>",
            esc(&p.file),
            esc(&p.file)
        );
        match &p.error {
            Some(e) => {
                let _ = write!(
                    logs,
                    "<p class=mute>Cannot read {}: {}</p>",
                    esc(&p.file),
                    esc(e)
                );
            }
            None => {
                if p.skipped > 0 {
                    let _ = write!(
                        logs,
                        "<p class=mute>{} earlier bytes not shown (<a href=\"/api/tasks/{}/{}/files/{}?offset=0\">read from the start</a>).</p>",
                        p.skipped,
                        url(&t.framework_id),
                        url(&t.id),
                        url(&p.file)
                    );
                }
                let _ = write!(
                    logs,
                    "<pre class=log id=\"log-{}\" data-src=\"/api/tasks/{}/{}/files/{}\" data-offset=\"{}\">{}</pre>",
                    esc(&p.file),
                    url(&t.framework_id),
                    url(&t.id),
                    url(&p.file),
                    p.next_offset,
                    esc(&p.text)
                );
            }
        }
    }
    (true, page(ctx, &t.id, "Tasks", &b, &logs))
}
