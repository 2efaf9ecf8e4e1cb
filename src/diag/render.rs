//! Text and JSON renderings of [`Explanation`] and [`Report`]: the same document either way.

use std::fmt::Write as _;

use super::check::{Report, Severity};
use super::explain::{Action, Explanation, LivePath};

/// A latency for text output: `-` when timing is off.
fn ms(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_string(), |m| format!("{m:.1} ms"))
}

/// The explanation as text, for a terminal.
pub fn render_text(e: &Explanation) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "podns explain {} (type {})", e.name, e.qtype);
    let r = &e.resolv;
    let search = if r.search.is_empty() { "(none)".to_string() } else { r.search.join(" ") };
    let _ = writeln!(o, "  search:         {search}");
    let _ = writeln!(o, "  ndots:          {}", r.ndots);
    let _ = writeln!(
        o,
        "  cluster domain: {}   namespace: {}",
        r.cluster_domain,
        r.namespace.as_deref().unwrap_or("(unknown: no <ns>.svc.<cd> search domain)")
    );
    let _ = writeln!(o, "  order:          {}", e.order);
    let _ = writeln!(o);
    let _ = writeln!(o, "What the stub asks (A and AAAA of each candidate, in order, until one has records):");
    for w in &e.walks {
        let _ = writeln!(o, "  {:<6} {}", format!("{}:", w.stub), w.candidates.join(" -> "));
        let _ = writeln!(o, "         stops {}", w.stops);
    }
    for d in &e.differences {
        let _ = writeln!(o, "  note:  {d}");
    }
    let _ = writeln!(o);
    let _ = writeln!(o, "What podns does with each candidate:");
    let mut aaaa_said: Vec<&str> = Vec::new();
    for (i, c) in e.candidates.iter().enumerate() {
        let action = match &c.action {
            Action::NxdomainLocally => "NXDOMAIN locally (not asked upstream)".to_string(),
            Action::Collapsed { to } => format!("collapsed: CNAME to the first of {} with data", to.join(", ")),
            Action::CollapsedIfProbesAllow { to } => {
                format!("collapsed: CNAME to the first of {} with data (if the probes allow)", to.join(", "))
            }
            Action::Forwarded => "forwarded".to_string(),
            Action::NotAsked => "not asked".to_string(),
        };
        let _ = writeln!(o, "  {}. {}  [{}]", i + 1, c.name, c.class);
        let _ = writeln!(o, "     -> {action}");
        for w in &c.why {
            let _ = writeln!(o, "     why: {w}");
        }
        match &c.aaaa {
            Some(a) if aaaa_said.contains(&a.as_str()) => {
                let _ = writeln!(o, "     AAAA: as above");
            }
            Some(a) => {
                let _ = writeln!(o, "     {a}");
                aaaa_said.push(a);
            }
            None => {}
        }
    }
    let _ = writeln!(o);
    let _ = writeln!(o, "Through podns: {}", e.through_podns);
    if let Some(l) = &e.live {
        let _ = writeln!(o);
        let _ = writeln!(o, "Live walk ({} getaddrinfo model, one try per query):", l.stub);
        for p in [&l.direct, &l.podns] {
            render_path(&mut o, p);
        }
        let _ = writeln!(o);
        let up = |v: Option<u64>| v.map_or_else(|| "?".to_string(), |n| n.to_string());
        let _ = writeln!(o, "Totals:  path    sent  upstream  wall        result");
        for p in [&l.direct, &l.podns] {
            let _ = writeln!(
                o,
                "         {:<7} {:>4}  {:>8}  {:<10}  {} {}",
                p.path,
                p.queries,
                up(p.upstream_queries),
                ms(p.wall_ms),
                p.outcome,
                p.addresses.join(" ")
            );
        }
        if l.podns.upstream_queries.is_none() {
            let _ = writeln!(o, "         (podns's upstream count needs its metrics: --metrics ADDR)");
        }
        let upstream_saved = match (l.direct.upstream_queries, l.podns.upstream_queries) {
            (Some(d), Some(p)) => format!(", the upstream {} fewer", d as i64 - p as i64),
            _ => String::new(),
        };
        let _ = writeln!(
            o,
            "         through podns: the client sent {} fewer queries{}; {}",
            l.queries_saved,
            upstream_saved,
            if l.same_result { "same result on both paths" } else { "DIFFERENT results on the two paths" }
        );
    }
    o
}

fn render_path(o: &mut String, p: &LivePath) {
    let via = if p.path == "podns" { "through podns at" } else { "directly to the upstream" };
    let _ = writeln!(o, "  {} {}:", via, p.server);
    for x in &p.exchanges {
        let mut extra = String::new();
        if let Some(c) = &x.cname {
            let _ = write!(extra, " CNAME {c}");
        }
        if !x.addresses.is_empty() {
            let _ = write!(extra, " {}", x.addresses.join(" "));
        }
        let _ = writeln!(
            o,
            "    {:<4}{} {:<48} {:<9} {:>10}{}",
            x.qtype,
            if x.tcp { "/tcp" } else { "" },
            x.name,
            x.status,
            ms(x.ms),
            extra
        );
    }
}

/// The explanation as a JSON document.
pub fn render_json(e: &Explanation) -> String {
    serde_json::to_string_pretty(e).unwrap_or_else(|err| format!("{{\"error\": \"{err}\"}}")) + "\n"
}

/// The check report as text.
pub fn render_check_text(r: &Report) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "podns check");
    for f in &r.findings {
        let sev = match f.severity {
            Severity::Ok => "ok",
            Severity::Info => "info",
            Severity::Warn => "WARN",
            Severity::Block => "BLOCK",
        };
        let _ = writeln!(o, "[{sev:<5}] {}: {}", f.check, f.summary);
        for d in &f.details {
            let _ = writeln!(o, "        {d}");
        }
        if let Some(p) = &f.podns {
            let _ = writeln!(o, "        podns: {p}");
        }
    }
    let _ = writeln!(
        o,
        "{}",
        if r.blocking { "result: BLOCKED (podns cannot work here as configured)" } else { "result: ok to run podns" }
    );
    o
}

/// The check report as JSON.
pub fn render_check_json(r: &Report) -> String {
    serde_json::to_string_pretty(r).unwrap_or_else(|err| format!("{{\"error\": \"{err}\"}}")) + "\n"
}
