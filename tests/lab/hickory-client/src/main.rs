//! Pod-lab client: resolves one name with hickory-resolver configured from the
//! system (`/etc/resolv.conf`, which `ip netns exec` bind-mounts), exactly as an
//! application using `TokioResolver::builder_tokio()` would, and prints one JSON
//! line: `{"ok":..,"addresses":[..],"error":..,"kind":..,"elapsed_ms":..}`.

use std::time::Instant;

use hickory_resolver::TokioResolver;

fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let Some(name) = std::env::args().nth(1) else {
        eprintln!("usage: lab-hickory-client NAME");
        std::process::exit(2);
    };
    let resolver = match TokioResolver::builder_tokio().and_then(|b| b.build()) {
        Ok(r) => r,
        Err(e) => {
            println!(
                "{{\"ok\":false,\"addresses\":[],\"error\":{},\"kind\":\"config\",\"elapsed_ms\":0}}",
                json_str(&e.to_string())
            );
            std::process::exit(1);
        }
    };
    let start = Instant::now();
    let result = resolver.lookup_ip(name.as_str()).await;
    let elapsed_ms = start.elapsed().as_secs_f64() * 1000.0;
    match result {
        Ok(lookup) => {
            let addrs: Vec<String> = lookup.iter().map(|a| json_str(&a.to_string())).collect();
            println!(
                "{{\"ok\":true,\"addresses\":[{}],\"error\":null,\"kind\":\"ok\",\"elapsed_ms\":{elapsed_ms:.3}}}",
                addrs.join(",")
            );
        }
        Err(e) => {
            let kind = if e.is_nx_domain() {
                "nxdomain"
            } else if e.is_no_records_found() {
                "norecords"
            } else if matches!(e, hickory_resolver::net::NetError::Timeout) {
                "timeout"
            } else {
                "other"
            };
            println!(
                "{{\"ok\":false,\"addresses\":[],\"error\":{},\"kind\":\"{kind}\",\"elapsed_ms\":{elapsed_ms:.3}}}",
                json_str(&e.to_string())
            );
            std::process::exit(1);
        }
    }
}
