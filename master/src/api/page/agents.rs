//! `/agents` and `/agents/{id}`: resources used and free, GPUs (model,
//! memory, holder, use over the last hour, idle flags), last heartbeat,
//! and links to each agent's tasks.

use std::fmt::Write as _;

use mezz_proto::v1::{AgentView, ClusterState};

use super::layout::{ago, bar, esc, get, gpu_use, num, page, pill, url};
use super::{active_tasks, gpu_holders, not_found, Ctx};

fn use_cell(a: &AgentView, res: &str, flag: &str) -> String {
    let (used, total) = (get(&a.used, res), get(&a.total, res));
    format!(
        "<td class=num>{} / {}{flag}{}</td>",
        num(used),
        num(total),
        bar(used, total)
    )
}

/// Renders the agent list.
pub fn agents(s: &ClusterState, ctx: &Ctx) -> String {
    let mut per_agent = std::collections::HashMap::<&str, usize>::new();
    for t in active_tasks(s) {
        *per_agent.entry(t.agent_id.as_str()).or_default() += 1;
    }
    let mut b = String::with_capacity(512 + s.agents.len() * 900);
    let _ = write!(
        b,
        "<h1>Agents <span class=mute>({})</span></h1><table><tr><th>Host</th><th>Status</th>\
         <th>CPUs</th><th>Memory MB</th><th>Disk MB</th><th>GPUs</th><th>Last heartbeat</th>\
         <th>Tasks</th></tr>",
        s.agents.len()
    );
    for a in &s.agents {
        let _ = write!(
            b,
            "<tr><td><a href=\"/agents/{}\">{}</a><div class=\"mono mute\">{}</div></td><td>{}</td>",
            url(&a.id),
            esc(&a.hostname),
            esc(&a.id),
            pill(&a.status)
        );
        let idle = a.gpu_usage.iter().filter(|g| g.idle).count();
        for res in mezz_proto::resources::SHARE_NAMES {
            let flag = if res == mezz_proto::resources::GPUS && idle > 0 {
                format!(
                    " <span class=\"pill s-idle\" title=\"GPUs held by a task and not busy\">{idle} idle</span>"
                )
            } else {
                String::new()
            };
            b.push_str(&use_cell(a, res, &flag));
        }
        let _ = write!(
            b,
            "<td class=num>{}</td><td class=num><a href=\"/tasks?agent={}\">{}</a></td></tr>",
            ago(ctx.now, a.last_seen),
            url(&a.id),
            per_agent.get(a.id.as_str()).copied().unwrap_or(0)
        );
    }
    b.push_str("</table>");
    page(ctx, "Agents", "Agents", &b, "")
}

/// Renders one agent's page, or a 404 page when the id is unknown.
pub fn agent(s: &ClusterState, ctx: &Ctx, id: &str) -> (bool, String) {
    let Some(a) = s.agents.iter().find(|a| a.id == id) else {
        return (false, not_found(ctx, &format!("no agent '{id}'")));
    };
    let mut b = String::with_capacity(8 * 1024);
    let _ = write!(
        b,
        "<h1>Agent {}</h1><div class=grid2><dl class=kv><dt>Id</dt><dd class=mono>{}</dd>\
         <dt>Address</dt><dd class=mono>{}</dd><dt>Status</dt><dd>{}</dd>\
         <dt>Last heartbeat</dt><dd>{}</dd><dt>Registered</dt><dd>{}</dd>",
        esc(&a.hostname),
        esc(&a.id),
        esc(&a.address),
        pill(&a.status),
        ago(ctx.now, a.last_seen),
        ago(ctx.now, a.registered_at)
    );
    for (k, v) in &a.attributes {
        let _ = write!(b, "<dt>{}</dt><dd>{}</dd>", esc(k), esc(v));
    }
    b.push_str(
        "</dl><table><tr><th>Resource</th><th>Total</th><th>Used</th><th>Offered</th>\
         <th>Free</th><th style=\"width:30%\">Use</th></tr>",
    );
    for (name, total) in &a.total {
        let used = get(&a.used, name);
        let offered = get(&a.offered, name);
        let _ = write!(
            b,
            "<tr><td>{}</td><td class=num>{}</td><td class=num>{}</td><td class=num>{}</td>\
             <td class=num>{}</td><td>{}</td></tr>",
            esc(name),
            num(*total),
            num(used),
            num(offered),
            num((total - used - offered).max(0.0)),
            bar(used, *total)
        );
    }
    b.push_str("</table></div>");

    let holders = gpu_holders(s, &a.id);
    let model = a.attributes.get("gpu_model").map(String::as_str);
    let memory = a.attributes.get("gpu_memory_mb").map(String::as_str);
    let _ = write!(b, "<h2>GPUs ({})</h2>", a.gpus.len());
    if a.gpus.is_empty() {
        b.push_str("<p class=mute>This agent offers no GPUs.</p>");
    } else {
        b.push_str(
            "<table><tr><th>GPU</th><th>Model</th><th>Memory</th><th>Utilization</th>\
             <th>Held by</th></tr>",
        );
        for g in &a.gpus {
            let holder = holders.iter().find(|(id, _, _)| id == g);
            let held = match holder {
                Some((_, f, t)) => format!(
                    "<a class=mono href=\"/tasks/{}/{}\">{}</a>",
                    url(f),
                    url(t),
                    esc(t)
                ),
                None => "<span class=mute>free</span>".into(),
            };
            let util = gpu_use(a.gpu_usage.iter().find(|u| &u.gpu == g));
            let _ = write!(
                b,
                "<tr class=gpu><td class=mono>{}</td><td>{}</td><td class=num>{}</td><td>{util}</td><td>{held}</td></tr>",
                esc(g),
                esc(model.unwrap_or("—")),
                memory.map(|m| format!("{} MB", esc(m))).unwrap_or("—".into()),
            );
        }
        b.push_str("</table>");
    }

    let _ = write!(
        b,
        "<h2>Active tasks</h2><p><a href=\"/tasks?agent={}\">All tasks on this agent</a></p>\
         <table><tr><th>Task</th><th>Framework</th><th>State</th><th>Resources</th><th>GPUs</th></tr>",
        url(&a.id)
    );
    for t in active_tasks(s).filter(|t| t.agent_id == a.id) {
        let _ = write!(
            b,
            "<tr><td class=mono><a href=\"/tasks/{}/{}\">{}</a></td><td>{}</td><td>{}</td>\
             <td class=mono>{}</td><td class=mono>{}</td></tr>",
            url(&t.framework_id),
            url(&t.id),
            esc(&t.id),
            esc(&t.framework_name),
            pill(&t.state),
            esc(&t.resources),
            esc(&t.gpus.join(", "))
        );
    }
    b.push_str("</table>");
    (true, page(ctx, &a.hostname, "Agents", &b, ""))
}
