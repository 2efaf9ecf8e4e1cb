//! The end-to-end suite, one test crate: podns as a process (or, for a few, its library API)
//! against scripted upstreams on loopback. One binary instead of one per file, so
//! `tests/e2e/support` is compiled once.

mod support;

mod aaaa;
mod architecture;
mod bad_input;
mod cache;
mod capture;
mod collapse;
mod demo;
mod diag;
mod docs;
mod forwarding;
mod inject;
mod lifecycle;
mod metrics_http;
mod query_log;
mod regress;
mod tcp;
mod webhook;
mod webhook_certs;
