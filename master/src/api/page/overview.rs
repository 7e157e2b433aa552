//! `/`: leader and masters, cluster totals with usage bars, counts of
//! agents, frameworks and tasks by state, services and their health, and
//! recent failures.

use mezz_proto::resources::{CPUS, DISK, GPUS, MEM};
use std::collections::BTreeMap;
use std::fmt::Write as _;

use mezz_proto::v1::ClusterState;

use super::layout::{ago, bar, esc, get, num, page, pill, url};
use super::{failed, terminal, Ctx};

/// Renders the overview.
pub fn overview(s: &ClusterState, ctx: &Ctx) -> String {
    let mut b = String::with_capacity(16 * 1024);
    let _ =
        write!(
        b,
        "<h1>Cluster overview</h1><p class=mute>Mezzanine {} · leader <b>{}</b> · up since {}</p>",
        esc(&s.version),
        esc(if s.leader.is_empty() { "(none)" } else { &s.leader }),
        ago(ctx.now, s.started_at)
    );
    b.push_str("<div class=cards>");
    for (res, label, unit) in [
        (CPUS, "CPUs", ""),
        (MEM, "Memory", " MB"),
        (DISK, "Disk", " MB"),
        (GPUS, "GPUs", ""),
    ] {
        let total: f64 = s.agents.iter().map(|a| get(&a.total, res)).sum();
        let used: f64 = s.agents.iter().map(|a| get(&a.used, res)).sum();
        let _ = write!(
            b,
            "<div class=card><div class=k>{label}</div><div class=v>{} <span class=mute \
             style=\"font-size:14px\">/ {}{unit} used</span></div>{}</div>",
            num(used),
            num(total),
            bar(used, total)
        );
    }
    let connected = s.agents.iter().filter(|a| a.status == "connected").count();
    let fw_connected = s
        .frameworks
        .iter()
        .filter(|f| f.status == "connected")
        .count();
    let mut by_state: BTreeMap<&str, usize> = BTreeMap::new();
    for t in &s.tasks {
        *by_state.entry(t.state.as_str()).or_default() += 1;
    }
    let active: usize = by_state
        .iter()
        .filter(|(k, _)| !terminal(k))
        .map(|(_, v)| v)
        .sum();
    let _ = write!(
        b,
        "<div class=card><div class=k>Agents</div><div class=v><a href=\"/agents\">{}</a></div>\
         <div class=mute>{connected} connected · {} disconnected</div></div>\
         <div class=card><div class=k>Frameworks</div><div class=v><a href=\"/frameworks\">{}</a></div>\
         <div class=mute>{fw_connected} connected</div></div>\
         <div class=card><div class=k>Tasks</div><div class=v><a href=\"/tasks\">{active}</a> \
         <span class=mute style=\"font-size:14px\">active</span></div><div class=counts>",
        s.agents.len(),
        s.agents.len() - connected,
        s.frameworks.len()
    );
    for (state, n) in &by_state {
        let _ = write!(
            b,
            "<span><a href=\"/tasks?state={}\">{}</a> {n}</span>",
            url(state),
            pill(state)
        );
    }
    b.push_str("</div></div></div>");

    b.push_str(&super::services::section(s, "h2"));

    b.push_str(
        "<h2>Masters</h2><table><tr><th>Id</th><th>Address</th><th>Role</th><th>Term</th>\
         <th>Applied / matched index</th></tr>",
    );
    for m in &s.masters {
        let _ = write!(
            b,
            "<tr><td class=num>{}</td><td class=mono><a href=\"//{1}/\">{1}</a></td><td>{2}</td>\
             <td class=num>{3}</td><td class=num>{4}</td></tr>",
            m.id,
            esc(&m.address),
            pill(&m.role),
            m.term,
            m.applied_index
        );
    }
    b.push_str("</table>");

    let mut failures: Vec<_> = s.tasks.iter().filter(|t| failed(&t.state)).collect();
    failures.sort_by(|a, b| b.updated_at.total_cmp(&a.updated_at));
    b.push_str("<h2>Recent task failures</h2>");
    if failures.is_empty() {
        b.push_str("<p class=mute>None.</p>");
    } else {
        b.push_str(
            "<table><tr><th>Task</th><th>Framework</th><th>State</th><th>Reason</th>\
             <th>Message</th><th>When</th></tr>",
        );
        for t in failures.iter().take(10) {
            let _ = write!(
                b,
                "<tr><td class=mono><a href=\"/tasks/{}/{}\">{}</a></td><td>{}</td><td>{}</td>\
                 <td>{}</td><td>{}</td><td class=num>{}</td></tr>",
                url(&t.framework_id),
                url(&t.id),
                esc(&t.id),
                esc(&t.framework_name),
                pill(&t.state),
                esc(&t.reason),
                esc(&t.message),
                ago(ctx.now, t.updated_at)
            );
        }
        b.push_str("</table>");
    }
    page(ctx, "Overview", "Overview", &b, "")
}
