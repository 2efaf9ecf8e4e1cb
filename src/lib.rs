//! podns: a transparent DNS proxy that runs beside every application in a Kubernetes pod.
//!
//! The crate is a small sans-IO core ([`wire`], [`policy`]) with thin I/O around it
//! ([`upstream`], [`server`]). `main.rs` only wires these together.

pub mod cache;
pub mod cli;
pub mod config;
pub mod diag;
pub mod error;
/// `podns inject` lives in [`k8s::inject`]; this path is kept for the tests and tools that use it.
pub use k8s::inject;
pub mod k8s;
pub mod labels;
pub mod metrics;
pub mod net;
pub mod pipeline;
pub mod policy;
pub mod resolv_conf;
pub mod server;
pub mod upstream;
pub mod wire;
