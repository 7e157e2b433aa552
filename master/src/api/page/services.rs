//! `/services` and the Services section of the overview: each service
//! (linked to where it is reached), its versions with healthy/total
//! replicas and a canary's weight, and every replica's state and health.
//! The data is [`ClusterState::services`], derived from task labels.

use std::fmt::Write as _;

use mezz_proto::v1::{ClusterState, ServiceReplicaView, ServiceVersionView};

use super::layout::{esc, ext_link, page, pill, url};
use super::Ctx;

fn version_name(v: Option<u64>) -> String {
    v.map_or_else(|| "version unknown".into(), |v| format!("v{v}"))
}

fn version(v: &ServiceVersionView) -> String {
    let canary = if v.canary {
        match v.weight {
            Some(w) => format!(" <span class=\"pill s-canary\">canary {w}%</span>"),
            None => " <span class=\"pill s-canary\">canary</span>".into(),
        }
    } else {
        String::new()
    };
    let all = if v.healthy == v.replicas { " ok" } else { "" };
    format!(
        "<div class=ver><b>{}</b>{canary} <span class=\"hc{all}\">{}/{} healthy</span></div>",
        esc(&version_name(v.version)),
        v.healthy,
        v.replicas
    )
}

fn health(r: &ServiceReplicaView) -> String {
    match r.healthy {
        Some(true) => pill("healthy"),
        Some(false) => pill("unhealthy"),
        None => "<span class=\"pill s-unknown\" title=\"no health check result yet\">health unknown</span>".into(),
    }
}

/// The Services section under a heading `h` (`h1` on its own page, `h2`
/// on the overview): a table, or a plain line when there are none.
pub fn section(s: &ClusterState, h: &str) -> String {
    let mut b = String::with_capacity(1024 + s.services.len() * 1024);
    let _ = write!(
        b,
        "<{h} id=services>Services <span class=mute>({})</span></{h}>",
        s.services.len()
    );
    if s.services.is_empty() {
        b.push_str(
            "<p class=mute>No services are running. Tasks labelled \
             <span class=mono>service=NAME</span> (such as those of \
             <span class=mono>mezz serve deploy</span>) are listed here.</p>",
        );
        return b;
    }
    b.push_str(
        "<table class=services><tr><th>Service</th><th>Framework</th><th>Versions</th>\
         <th>Replicas</th></tr>",
    );
    for svc in &s.services {
        let link = ext_link(&svc.url, &svc.name);
        let name = if link.is_empty() {
            esc(&svc.name)
        } else {
            format!("{link}<div class=\"mono mute\">{}</div>", esc(&svc.url))
        };
        let versions: String = svc.versions.iter().map(version).collect();
        let mut replicas = String::new();
        for r in &svc.replicas {
            let state = if r.state == "RUNNING" {
                String::new()
            } else {
                format!(" {}", pill(&r.state))
            };
            let canary = if r.canary { " canary" } else { "" };
            let _ = write!(
                replicas,
                "<div class=rep>{} <a class=mono href=\"/tasks/{}/{}\">{}</a> \
                 <span class=mute>{}{canary}</span>{state} {}</div>",
                health(r),
                url(&svc.framework_id),
                url(&r.task_id),
                esc(&r.task_id),
                esc(&version_name(r.version)),
                ext_link(&r.url, "open")
            );
        }
        let _ = write!(
            b,
            "<tr><td>{name}</td><td><a href=\"/tasks?framework={}\">{}</a>\
             <div class=\"mono mute\">{}</div></td><td>{versions}</td><td>{replicas}</td></tr>",
            url(&svc.framework_id),
            esc(&svc.framework_name),
            esc(&svc.framework_id)
        );
    }
    b.push_str("</table>");
    b
}

/// Renders the service list.
pub fn services(s: &ClusterState, ctx: &Ctx) -> String {
    page(ctx, "Services", "Services", &section(s, "h1"), "")
}
