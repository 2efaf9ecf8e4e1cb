//! podns: a transparent DNS proxy that runs beside every application in a Kubernetes pod.
//!
//! The crate is a small sans-IO core ([`wire`], [`policy`]) with thin I/O around it
//! ([`upstream`], [`server`]). `main.rs` only wires these together.

pub mod cache;
pub mod capture;
pub mod config;
pub mod error;
pub mod inject;
pub mod metrics;
pub mod net;
pub mod policy;
pub mod resolver;
pub mod server;
pub mod upstream;
pub mod wire;
