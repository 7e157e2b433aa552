//! The frame every page shares (header, navigation, leader banner, the
//! embedded CSS and script) and the small formatting helpers the pages use.
//! Everything that reaches HTML from cluster data goes through [`esc`].

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::Ctx;

/// The stylesheet, embedded in every page (no CDN, no second request).
const STYLE: &str = include_str!("style.css");
/// Live refresh and log follow; served at [`SCRIPT_PATH`].
pub const SCRIPT: &str = include_str!("live.js");
/// Where the page script is served.
pub const SCRIPT_PATH: &str = "/assets/live.js";

/// Escapes text for HTML element content and quoted attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Escapes a path segment or query value for use inside a URL.
pub fn url(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// A link to something a framework or task serves (its web UI, a
/// notebook), or empty when the URL is not a plain http(s) one: such URLs
/// come from clients, and anything else could run script in this origin.
pub fn ext_link(href: &str, text: &str) -> String {
    if href.is_empty() || mezz_proto::ids::validate_web_url("url", href).is_err() {
        return String::new();
    }
    format!(
        "<a class=ext href=\"{}\" rel=\"noopener noreferrer\" target=_blank>{}</a>",
        esc(href),
        esc(text)
    )
}

/// A state or status name as a coloured pill.
pub fn pill(s: &str) -> String {
    let s = esc(s);
    format!("<span class=\"pill s-{s}\">{s}</span>")
}

/// A scalar from a resource map, 0 when absent.
pub fn get(m: &BTreeMap<String, f64>, k: &str) -> f64 {
    m.get(k).copied().unwrap_or(0.0)
}

/// A quantity without needless decimals.
pub fn num(v: f64) -> String {
    if (v - v.round()).abs() < 1e-9 {
        format!("{}", v.round() as i64)
    } else {
        format!("{v:.2}")
    }
}

/// A usage bar for `used` of `total`.
pub fn bar(used: f64, total: f64) -> String {
    let pct = if total > 0.0 {
        (used / total * 100.0).clamp(0.0, 100.0)
    } else {
        0.0
    };
    let hot = if pct >= 90.0 { " hot" } else { "" };
    format!(
        "<div class=\"bar{hot}\" title=\"{pct:.0}%\"><span style=\"width:{pct:.1}%\"></span></div>"
    )
}

/// A small line chart of percentages (0-100), oldest first, as inline
/// SVG: no script, no image request.
pub fn spark(values: &[u32]) -> String {
    const W: f64 = 120.0;
    const H: f64 = 24.0;
    if values.is_empty() {
        return String::new();
    }
    let step = if values.len() > 1 {
        W / (values.len() - 1) as f64
    } else {
        0.0
    };
    let mut points = String::with_capacity(values.len() * 10);
    for (i, v) in values.iter().enumerate() {
        let y = H - (*v).min(100) as f64 / 100.0 * (H - 2.0) - 1.0;
        let _ = write!(points, "{:.1},{:.1} ", i as f64 * step, y);
    }
    format!(
        "<svg class=spark width=\"{W}\" height=\"{H}\" viewBox=\"0 0 {W} {H}\" role=img>\
         <polyline points=\"{}\"/></svg>",
        points.trim_end()
    )
}

/// One GPU's use in a table cell: the chart of its history, the latest
/// utilization and memory, and an `idle` flag when a task holds it and it
/// has done nothing for a while.
pub fn gpu_use(u: Option<&mezz_proto::v1::GpuUsageView>) -> String {
    let Some(u) = u else {
        return "<span class=mute>not sampled</span>".into();
    };
    let span = if u.history_secs >= 120.0 {
        format!("{:.0} min", u.history_secs / 60.0)
    } else {
        format!("{:.0} s", u.history_secs)
    };
    format!(
        "<div class=gpuuse title=\"utilization over the last {span}\">{}<span class=num>{}% · {} MB</span>{}</div>",
        spark(&u.history_pct),
        u.utilization_pct,
        u.memory_used_mb,
        if u.idle {
            " <span class=\"pill s-idle\" title=\"held by a task and not busy\">idle</span>"
        } else {
            ""
        }
    )
}

/// "3s ago", "5m ago", ... from a Unix time; "—" for 0.
pub fn ago(now: f64, t: f64) -> String {
    if t <= 0.0 {
        return "—".into();
    }
    let text = format!("{} ago", mezz_proto::age_text(now - t));
    format!("<span title=\"{}\">{text}</span>", utc(t))
}

/// A Unix time as `YYYY-MM-DD HH:MM:SS UTC` (Howard Hinnant's
/// civil-from-days, to stay free of a date crate).
pub fn utc(t: f64) -> String {
    let secs = t.max(0.0) as i64;
    let (days, rem) = (secs.div_euclid(86400), secs.rem_euclid(86400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Wraps a page body: `live` is the part the script refreshes; `extra`
/// follows it and is left alone (log panes that follow by themselves).
pub fn page(ctx: &Ctx, title: &str, nav: &str, live: &str, extra: &str) -> String {
    let mut b = String::with_capacity(live.len() + extra.len() + STYLE.len() + 2048);
    let _ = write!(
        b,
        "<!doctype html><html lang=en><head><meta charset=utf-8>\
         <meta name=viewport content=\"width=device-width,initial-scale=1\">\
         <title>{} · Mezzanine</title><style>{STYLE}</style></head><body><header>\
         <span class=brand>Mezzanine</span><nav>",
        esc(title)
    );
    for (href, name) in [
        ("/", "Overview"),
        ("/agents", "Agents"),
        ("/frameworks", "Frameworks"),
        ("/roles", "Roles"),
        ("/services", "Services"),
        ("/tasks", "Tasks"),
        ("/jobs", "Jobs"),
    ] {
        let on = if name == nav { " class=on" } else { "" };
        let _ = write!(b, "<a href=\"{href}\"{on}>{name}</a>");
    }
    let who = if ctx.leads {
        "this master leads".to_string()
    } else {
        format!(
            "follower of {}",
            esc(ctx.leader.as_deref().unwrap_or("(unknown)"))
        )
    };
    let _ = write!(
        b,
        "</nav><span class=who>{who} · <span id=stamp>{}</span> · \
         <a href=\"/api/state\" style=\"color:#94a3b8\">/api/state</a> · \
         <a href=\"/metrics\" style=\"color:#94a3b8\">/metrics</a></span></header><main>",
        utc(ctx.now)
    );
    if !ctx.leads {
        let _ = match &ctx.leader {
            Some(l) => write!(
                b,
                "<div class=banner>This master follows; the leader is <b>{0}</b>. \
                 Its view of agents, frameworks and tasks is the registry only: \
                 see <a href=\"//{0}/\">the leader's status page</a>.</div>",
                esc(l)
            ),
            None => write!(
                b,
                "<div class=banner>This master follows and knows no leader yet \
                 (an election may be under way).</div>"
            ),
        };
    }
    let _ = write!(
        b,
        "<div id=live>{live}</div>{extra}</main><script src=\"{SCRIPT_PATH}\"></script></body></html>"
    );
    b
}
