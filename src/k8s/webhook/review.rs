//! One AdmissionReview in, one AdmissionReview out: which pods to inject, and the JSON patch
//! of the shared pod mutation ([`crate::inject::pod::inject`]).

use base64::Engine as _;
use serde_json::{Value, json};

use crate::inject::json::{diff, from_json, to_json};
use crate::inject::yaml::Node;
use crate::inject::{Mode, Options, conflicts, pod};
use crate::k8s::annotations;

/// Answers one AdmissionReview; `Err` (HTTP 400) when it is not one.
pub fn review(review: &Value, opts: &Options, namespace_enabled: bool) -> Result<Value, String> {
    if review.get("apiVersion").and_then(Value::as_str) != Some("admission.k8s.io/v1")
        || review.get("kind").and_then(Value::as_str) != Some("AdmissionReview")
    {
        return Err("not an admission.k8s.io/v1 AdmissionReview".into());
    }
    let request = review.get("request").filter(|r| r.is_object()).ok_or("the AdmissionReview has no request")?;
    let uid = request.get("uid").and_then(Value::as_str).ok_or("the request has no uid")?;
    let response = admit(request, opts, namespace_enabled);
    let mut response = response;
    response.insert("uid".into(), json!(uid));
    Ok(json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response}))
}

type Fields = serde_json::Map<String, Value>;

/// Longest warning sent: "Warning messages over 256 characters may be truncated by the API
/// server" (Kubernetes docs, Dynamic Admission Control, "Response"). The webhook shortens them
/// itself, at a character boundary, and logs the full text.
pub const MAX_WARNING: usize = 256;

fn allowed(warnings: Vec<String>) -> Fields {
    let mut r = Fields::new();
    r.insert("allowed".into(), json!(true));
    if !warnings.is_empty() {
        let short: Vec<String> = warnings
            .into_iter()
            .map(|w| {
                if w.chars().count() <= MAX_WARNING {
                    return w;
                }
                tracing::warn!("{w}");
                let mut s: String = w.chars().take(MAX_WARNING - 1).collect();
                s.push('…');
                s
            })
            .collect();
        r.insert("warnings".into(), json!(short));
    }
    r
}

/// The response fields (without uid) for one request.
fn admit(request: &Value, opts: &Options, namespace_enabled: bool) -> Fields {
    let field = |path: &[&str]| path.iter().try_fold(request, |v, k| v.get(k)).and_then(Value::as_str);
    let is_pod_create = field(&["kind", "group"]) == Some("")
        && field(&["kind", "kind"]) == Some("Pod")
        && field(&["operation"]) == Some("CREATE")
        && request.get("subResource").is_none_or(Value::is_null);
    let Some(object) = request.get("object").filter(|o| o.is_object()).filter(|_| is_pod_create) else {
        // Not ours to change (the configuration only sends Pod CREATE; be lenient with the rest).
        return allowed(Vec::new());
    };
    // The namespace comes from the request: a pod made by a controller or `kubectl apply`
    // without metadata.namespace has none in the object.
    let namespace = field(&["namespace"])
        .or_else(|| object.pointer("/metadata/namespace").and_then(Value::as_str))
        .unwrap_or("default")
        .to_owned();
    let name = object
        .pointer("/metadata/name")
        .or_else(|| object.pointer("/metadata/generateName"))
        .and_then(Value::as_str)
        .unwrap_or("(unnamed)");
    let what = format!("Pod {namespace}/{name}");
    let mut metadata = from_json(object.get("metadata").unwrap_or(&json!({})));
    let overrides = match annotations::read(&metadata, &what) {
        Ok(o) => o,
        Err(e) => return denied(&e.message),
    };
    if !namespace_enabled && overrides.inject != Some(true) {
        return allowed(Vec::new());
    }
    let Some(spec_json) = object.get("spec") else { return allowed(Vec::new()) };
    let mut spec = from_json(spec_json);
    let mut notes = Vec::new();
    match pod::inject(&mut spec, &mut metadata, &namespace, opts, &what, &mut notes) {
        Ok(pod::Outcome::Injected | pod::Outcome::Updated) => {}
        Ok(pod::Outcome::AlreadyInjected) => {
            // Reinvocation (reinvocationPolicy: IfNeeded): a later webhook changed the pod
            // after podns was added. Nothing to patch; say if what it added conflicts.
            let capture = matches!(spec.get("initContainers"), Some(Node::Seq(items))
                if items.iter().any(|c| c.get_str("name") == Some(pod::CAPTURE_INIT_NAME)));
            let mode = if capture { Mode::Capture } else { Mode::DnsPolicy };
            if let Err(e) = conflicts::check(&spec, &metadata, mode, &what, &mut notes) {
                tracing::warn!("{what}: {}", e.message);
                notes.push(format!("podns is in this pod, but: {}", e.message));
            }
            return allowed(notes);
        }
        Ok(pod::Outcome::Disabled) => return allowed(notes),
        Err(e) => {
            tracing::warn!("{what}: not injected: {}", e.message);
            notes.push(format!("podns not injected: {}", e.message));
            return allowed(notes);
        }
    }
    let mut after = object.clone();
    after["metadata"] = to_json(&metadata);
    after["spec"] = to_json(&spec);
    let patch = diff(object, &after);
    let dry_run = request.get("dryRun").and_then(Value::as_bool).unwrap_or(false);
    tracing::info!(pod = %what, ops = patch.len(), dry_run, "injected");
    let mut r = allowed(notes);
    r.insert("patchType".into(), json!("JSONPatch"));
    r.insert("patch".into(), json!(base64::engine::general_purpose::STANDARD.encode(Value::Array(patch).to_string())));
    r
}

fn denied(message: &str) -> Fields {
    let mut r = Fields::new();
    r.insert("allowed".into(), json!(false));
    r.insert("status".into(), json!({"code": 400, "reason": "BadRequest", "message": message}));
    r
}
