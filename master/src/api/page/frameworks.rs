//! `/frameworks` (role, capabilities, resources held, tasks, outstanding
//! offers, time since subscribe) and `/roles` (weight, quota, use).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use mezz_proto::v1::ClusterState;

use super::layout::{ago, bar, esc, ext_link, get, num, page, pill, url};
use super::Ctx;

fn resources(m: &BTreeMap<String, f64>) -> String {
    if m.is_empty() {
        return "<span class=mute>—</span>".into();
    }
    m.iter()
        .filter(|(_, v)| **v != 0.0)
        .map(|(k, v)| format!("{}:{}", esc(k), num(*v)))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Renders the framework list.
pub fn frameworks(s: &ClusterState, ctx: &Ctx) -> String {
    let mut b = String::with_capacity(4096 + s.frameworks.len() * 600);
    let _ = write!(
        b,
        "<h1>Frameworks <span class=mute>({})</span></h1><table><tr><th>Name</th><th>Role</th>\
         <th>User</th><th>Status</th><th>Capabilities</th><th>Resources held</th>\
         <th>Active tasks</th><th>Offers outstanding</th><th>Subscribed</th></tr>",
        s.frameworks.len()
    );
    for f in &s.frameworks {
        let _ = write!(
            b,
            "<tr><td>{} {}<div class=\"mono mute\">{}</div></td><td>{}</td><td>{}</td><td>{}</td>\
             <td>{}</td><td class=mono>{}</td><td class=num><a href=\"/tasks?framework={}\">{}</a></td>\
             <td class=num>{}</td><td class=num>{}</td></tr>",
            esc(&f.name),
            ext_link(&f.webui_url, "web UI"),
            esc(&f.id),
            esc(&f.role),
            esc(&f.user),
            pill(&f.status),
            esc(&f.capabilities.join(", ")),
            resources(&f.used),
            url(&f.id),
            f.active_tasks,
            f.offers_outstanding,
            ago(ctx.now, f.registered_at)
        );
    }
    b.push_str("</table>");
    page(ctx, "Frameworks", "Frameworks", &b, "")
}

/// Renders the role list: weight, quota guarantee and limit, use.
pub fn roles(s: &ClusterState, ctx: &Ctx) -> String {
    let mut b = String::with_capacity(4096);
    let _ = write!(
        b,
        "<h1>Roles <span class=mute>({})</span></h1><table><tr><th>Role</th><th>Weight</th>\
         <th>Frameworks</th><th>Used</th><th>Guarantee</th><th>Limit</th><th>Offered</th>\
         <th>Reserved</th><th>CPUs of limit</th></tr>",
        s.roles.len()
    );
    for r in &s.roles {
        let cpu_limit = get(&r.limit, "cpus");
        let _ = write!(
            b,
            "<tr><td>{}</td><td class=num>{}</td><td class=num>{}</td><td class=mono>{}</td>\
             <td class=mono>{}</td><td class=mono>{}</td><td class=mono>{}</td><td class=mono>{}</td><td>{}</td></tr>",
            esc(&r.name),
            num(r.weight),
            r.frameworks,
            resources(&r.used),
            resources(&r.guarantee),
            resources(&r.limit),
            resources(&r.offered),
            resources(&r.reserved),
            if cpu_limit > 0.0 {
                bar(get(&r.used, "cpus"), cpu_limit)
            } else {
                "<span class=mute>no limit</span>".into()
            }
        );
    }
    b.push_str("</table>");
    page(ctx, "Roles", "Roles", &b, "")
}
