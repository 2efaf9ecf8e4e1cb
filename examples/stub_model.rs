//! Runs one stub model (`podns::policy::stubs`) over a scripted upstream, for the pod lab: the
//! lab replays what its stand-in DNS answered and checks the model agrees with the real stub.
//!
//! Reads one JSON object on stdin:
//!
//! ```text
//! {"stub": "glibc",                 // glibc | musl | cares | cares-old | go | hickory
//!  "name": "pypi.org",              // as the application passes it (may end in '.')
//!  "search": ["default.svc.cluster.local", "svc.cluster.local", "cluster.local"],
//!  "ndots": 5, "attempts": 2,       // optional: 1 and 2 by default
//!  "replies": {"pypi.org. A": {"udp": REPLY, "tcp": REPLY}, ...}}
//! ```
//!
//! keyed by `"<lower-case name with trailing dot> <TYPE>"`, where REPLY is `{"timeout": true}` or
//! `{"rcode": "NOERROR"|"NXDOMAIN"|"SERVFAIL"|"REFUSED"|"FORMERR"|"NOTIMP", "tc": false,
//! "answers": [["owner.", "A", "198.19.1.1"], ["a.", "CNAME", "b."]]}` (`tc` and `answers`
//! optional). A query whose key or transport is missing is an error: exit status 2 and a
//! message naming it. Malformed input also exits 2.
//!
//! Writes one JSON line (keys in alphabetical order):
//! `{"ok": bool, "outcome": "found"|"notfound"|"failed", "addresses": [sorted strings],
//! "queries": [["name.", "A", "udp"], ...]}`.
//!
//! Example:
//!
//! ```text
//! echo '{"stub":"musl","name":"pypi.org","search":["corp.example"],"ndots":5,
//!   "replies":{"pypi.org.corp.example. A":{"udp":{"rcode":"NOERROR"}},
//!              "pypi.org.corp.example. AAAA":{"udp":{"rcode":"NOERROR"}}}}' |
//!   cargo run -q --example stub_model
//! {"addresses":[],"ok":false,"outcome":"notfound","queries":[["pypi.org.corp.example.","A","udp"],["pypi.org.corp.example.","AAAA","udp"]]}
//! ```

use std::io::Read;
use std::process::exit;

use podns::policy::stubs::{Conf, Outcome, Query, RData, Record, Reply, Stub, walk};
use serde_json::{Value, json};

/// Types the input may name, with their numbers.
const TYPES: [(&str, u16); 11] = [
    ("A", 1),
    ("NS", 2),
    ("CNAME", 5),
    ("SOA", 6),
    ("PTR", 12),
    ("MX", 15),
    ("TXT", 16),
    ("AAAA", 28),
    ("SRV", 33),
    ("SVCB", 64),
    ("HTTPS", 65),
];

const RCODES: [(&str, u16); 6] =
    [("NOERROR", 0), ("FORMERR", 1), ("SERVFAIL", 2), ("NXDOMAIN", 3), ("NOTIMP", 4), ("REFUSED", 5)];

fn fail(msg: &str) -> ! {
    eprintln!("stub_model: {msg}");
    exit(2)
}

fn type_name(t: u16) -> String {
    TYPES.iter().find(|(_, n)| *n == t).map_or_else(|| format!("TYPE{t}"), |(s, _)| s.to_string())
}

fn type_number(s: &str) -> u16 {
    TYPES.iter().find(|(n, _)| *n == s).map(|(_, t)| *t).unwrap_or_else(|| fail(&format!("unknown type {s:?}")))
}

fn record(v: &Value) -> Record {
    let fields = v.as_array().filter(|a| a.len() == 3).unwrap_or_else(|| fail(&format!("bad answer {v}")));
    let text = |i: usize| fields[i].as_str().unwrap_or_else(|| fail(&format!("bad answer {v}")));
    let rtype = type_number(text(1));
    let data = match text(1) {
        "A" | "AAAA" => RData::Addr(text(2).parse().unwrap_or_else(|_| fail(&format!("bad address in {v}")))),
        _ => RData::Name(text(2).to_ascii_lowercase()),
    };
    Record { owner: text(0).to_ascii_lowercase(), rtype, data }
}

fn reply(v: &Value, key: &str) -> Reply {
    if v.get("timeout").and_then(Value::as_bool) == Some(true) {
        return Reply::Timeout;
    }
    let rcode_name = v.get("rcode").and_then(Value::as_str).unwrap_or_else(|| fail(&format!("{key}: no rcode")));
    let rcode = RCODES
        .iter()
        .find(|(n, _)| *n == rcode_name)
        .map(|(_, c)| *c)
        .unwrap_or_else(|| fail(&format!("{key}: unknown rcode {rcode_name:?}")));
    let tc = v.get("tc").and_then(Value::as_bool).unwrap_or(false);
    let answers = match v.get("answers") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => a.iter().map(record).collect(),
        Some(other) => fail(&format!("{key}: bad answers {other}")),
    };
    Reply::Msg { rcode, tc, answers }
}

fn main() {
    let mut input = String::new();
    std::io::stdin().read_to_string(&mut input).unwrap_or_else(|e| fail(&format!("stdin: {e}")));
    let v: Value = serde_json::from_str(&input).unwrap_or_else(|e| fail(&format!("bad JSON: {e}")));

    let stub_name = v.get("stub").and_then(Value::as_str).unwrap_or_else(|| fail("no \"stub\""));
    let stub = Stub::parse(stub_name).unwrap_or_else(|| fail(&format!("unknown stub {stub_name:?}")));
    let name = v.get("name").and_then(Value::as_str).unwrap_or_else(|| fail("no \"name\""));
    let search = match v.get("search") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => a
            .iter()
            .map(|d| d.as_str().unwrap_or_else(|| fail("bad \"search\"")).trim_end_matches('.').to_ascii_lowercase())
            .collect(),
        Some(_) => fail("bad \"search\""),
    };
    let small = |key: &str, default: u8| match v.get(key) {
        None | Some(Value::Null) => default,
        Some(n) => n.as_u64().and_then(|n| u8::try_from(n).ok()).unwrap_or_else(|| fail(&format!("bad {key:?}"))),
    };
    let conf = Conf { search, ndots: small("ndots", 1), attempts: small("attempts", 2) };
    let replies = v.get("replies").and_then(Value::as_object).unwrap_or_else(|| fail("no \"replies\" object"));

    let mut ask = |q: &Query| {
        let key = format!("{} {}", q.name, type_name(q.qtype));
        let transport = if q.tcp { "tcp" } else { "udp" };
        let entry = replies.get(&key).unwrap_or_else(|| fail(&format!("no reply for query {key:?}")));
        let r = entry.get(transport).unwrap_or_else(|| fail(&format!("no {transport} reply for query {key:?}")));
        reply(r, &key)
    };
    let w = walk(stub, name, &conf, &mut ask);

    let (outcome, addresses): (&str, Vec<String>) = match &w.outcome {
        Outcome::Found(set) => {
            let mut a: Vec<String> = set.iter().map(ToString::to_string).collect();
            a.sort();
            ("found", a)
        }
        Outcome::NotFound => ("notfound", Vec::new()),
        Outcome::Failed => ("failed", Vec::new()),
    };
    let queries: Vec<Value> =
        w.queries.iter().map(|q| json!([q.name, type_name(q.qtype), if q.tcp { "tcp" } else { "udp" }])).collect();
    let out = json!({"ok": outcome == "found", "outcome": outcome, "addresses": addresses, "queries": queries});
    println!("{out}");
}
