//! Everything that talks Kubernetes: the pod mutation and its two front ends (`podns inject`
//! over YAML manifests, `podns webhook` over AdmissionReviews), the per-pod annotations, and the
//! small API-server client the webhook uses to manage its own certificate.
//!
//! One implementation, two front ends: [`inject::pod`] changes one pod spec on the structured
//! document model of [`inject::yaml`]. The CLI parses YAML into that model; the webhook converts
//! the JSON pod of the AdmissionReview into it ([`inject::json`]), runs the same mutation, and
//! answers with the JSON patch between before and after.

pub mod annotations;
pub mod apiserver;
pub mod capture;
pub mod certs;
pub mod inject;
pub mod webhook;
