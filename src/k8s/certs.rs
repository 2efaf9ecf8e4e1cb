//! Self-managed certificates for `podns webhook --self-signed-secret`: for clusters without
//! cert-manager. At start (and every [`CHECK_EVERY`]) the webhook makes sure that
//! - the Secret holds a CA and a serving certificate for the Service's DNS names, creating them
//!   when missing. The first replica to create the Secret wins; the others get 409 Conflict
//!   and read what it stored, so every replica serves a certificate of the same CA;
//! - the serving certificate has more than [`RENEW_BEFORE`] left, else it is re-issued from the
//!   same CA (the Secret is updated with its resourceVersion, so two replicas cannot both
//!   renew); the CA, and so the caBundle, stays;
//! - every webhook of its MutatingWebhookConfiguration has that CA as `caBundle`, patched with a
//!   JSON patch that first tests each webhook's name, so a concurrent edit fails the patch
//!   instead of being overwritten.
//!
//! This is what Linkerd's and Istio's injectors do without cert-manager (istiod patches its
//! webhook configurations' caBundle; Linkerd's proxy-injector reads its Secret), reduced to one
//! Secret. RBAC: get/create/update on that Secret and get/patch on that one webhook
//! configuration (k8s/install/self-managed).

use std::time::Duration;

use base64::Engine as _;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use serde_json::{Value, json};
use time::OffsetDateTime;

use super::apiserver::ApiClient;

/// Lifetime of the CA.
pub const CA_LIFETIME: time::Duration = time::Duration::days(3650);
/// Lifetime of a serving certificate.
pub const CERT_LIFETIME: time::Duration = time::Duration::days(365);
/// A serving certificate with less left than this is re-issued.
pub const RENEW_BEFORE: time::Duration = time::Duration::days(30);
/// How often a running webhook checks its certificate and caBundle.
pub const CHECK_EVERY: Duration = Duration::from_secs(12 * 3600);
/// Annotation on the Secret: the serving certificate's expiry, Unix seconds (so expiry can be
/// read without an X.509 parser).
pub const NOT_AFTER: &str = "podns.io/not-after";

const CA_NAME: &str = "podns webhook CA";

/// A CA and a serving certificate, PEM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bundle {
    pub ca_crt: String,
    pub ca_key: String,
    pub tls_crt: String,
    pub tls_key: String,
    /// Expiry of `tls_crt`, Unix seconds.
    pub not_after: i64,
}

fn ca_params(now: OffsetDateTime) -> CertificateParams {
    let mut p = CertificateParams::default();
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.distinguished_name.push(DnType::CommonName, CA_NAME);
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    p.not_before = now - time::Duration::hours(1);
    p.not_after = now + CA_LIFETIME;
    p
}

/// A new CA and a serving certificate for `dns_names`.
pub fn new_bundle(dns_names: &[String], now: OffsetDateTime) -> Result<Bundle, String> {
    let ca_key = KeyPair::generate().map_err(|e| e.to_string())?;
    let ca_crt = ca_params(now).self_signed(&ca_key).map_err(|e| e.to_string())?.pem();
    let mut bundle =
        Bundle { ca_crt, ca_key: ca_key.serialize_pem(), tls_crt: String::new(), tls_key: String::new(), not_after: 0 };
    reissue(&mut bundle, dns_names, now)?;
    Ok(bundle)
}

/// Issues a new serving certificate (and key) from the bundle's CA. The issuer is rebuilt from
/// the CA's name and key, which is all a signature needs (the authority key identifier is
/// derived from the key), so no certificate parser is needed.
pub fn reissue(bundle: &mut Bundle, dns_names: &[String], now: OffsetDateTime) -> Result<(), String> {
    let ca_key = KeyPair::from_pem(&bundle.ca_key).map_err(|e| format!("ca.key: {e}"))?;
    let issuer = Issuer::new(ca_params(now), ca_key);
    let mut p = CertificateParams::new(dns_names.to_vec()).map_err(|e| e.to_string())?;
    p.distinguished_name.push(DnType::CommonName, dns_names.first().cloned().unwrap_or_default());
    p.not_before = now - time::Duration::hours(1);
    p.not_after = now + CERT_LIFETIME;
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let key = KeyPair::generate().map_err(|e| e.to_string())?;
    bundle.tls_crt = p.signed_by(&key, &issuer).map_err(|e| e.to_string())?.pem();
    bundle.tls_key = key.serialize_pem();
    bundle.not_after = p.not_after.unix_timestamp();
    Ok(())
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// The Secret holding `b` (type kubernetes.io/tls, plus the CA and its key).
pub fn secret_body(namespace: &str, name: &str, b: &Bundle, resource_version: Option<&str>) -> Value {
    let mut metadata = json!({
        "name": name, "namespace": namespace,
        "labels": {"app.kubernetes.io/name": "podns-webhook"},
        "annotations": {NOT_AFTER: b.not_after.to_string()},
    });
    if let Some(rv) = resource_version {
        metadata["resourceVersion"] = json!(rv);
    }
    json!({
        "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls", "metadata": metadata,
        "data": {"tls.crt": b64(&b.tls_crt), "tls.key": b64(&b.tls_key), "ca.crt": b64(&b.ca_crt), "ca.key": b64(&b.ca_key)},
    })
}

fn bundle_from_secret(secret: &Value) -> Result<Bundle, String> {
    let field = |k: &str| -> Result<String, String> {
        let v = secret.pointer(&format!("/data/{}", k.replace('/', "~1"))).and_then(Value::as_str).unwrap_or("");
        let bytes = base64::engine::general_purpose::STANDARD.decode(v).map_err(|e| format!("data.{k}: {e}"))?;
        String::from_utf8(bytes)
            .map_err(|e| format!("data.{k}: {e}"))
            .and_then(|s| if s.is_empty() { Err(format!("data.{k} is missing")) } else { Ok(s) })
    };
    let not_after = secret
        .pointer(&format!("/metadata/annotations/{}", NOT_AFTER.replace('/', "~1")))
        .and_then(Value::as_str)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Ok(Bundle {
        ca_crt: field("ca.crt")?,
        ca_key: field("ca.key")?,
        tls_crt: field("tls.crt")?,
        tls_key: field("tls.key")?,
        not_after,
    })
}

/// The webhook's certificate management against one API server.
pub struct SelfManaged {
    pub client: ApiClient,
    pub namespace: String,
    pub secret: String,
    pub webhook_config: String,
    /// The serving certificate's DNS names: `<service>.<namespace>.svc` and longer forms.
    pub dns_names: Vec<String>,
}

impl SelfManaged {
    fn secret_path(&self) -> String {
        format!("/api/v1/namespaces/{}/secrets/{}", self.namespace, self.secret)
    }

    /// Makes sure the Secret holds a valid bundle; returns it.
    pub async fn ensure_secret(&self, now: OffsetDateTime) -> Result<Bundle, String> {
        // Each conflict means another replica wrote first: read again. Three rounds suffice
        // for two replicas; more means something else keeps writing.
        for _ in 0..3 {
            let got = self.client.request("GET", &self.secret_path(), None).await?;
            match got.status {
                404 => {
                    let bundle = new_bundle(&self.dns_names, now)?;
                    let body = secret_body(&self.namespace, &self.secret, &bundle, None);
                    let path = format!("/api/v1/namespaces/{}/secrets", self.namespace);
                    let created = self.client.request("POST", &path, Some(("application/json", &body))).await?;
                    match created.status {
                        200 | 201 => {
                            tracing::info!(secret = %self.secret, "created the CA and serving certificate");
                            return Ok(bundle);
                        }
                        409 => continue,
                        _ => return Err(format!("creating Secret {}: {}", self.secret, created.message())),
                    }
                }
                200 => {
                    let mut bundle =
                        bundle_from_secret(&got.body).map_err(|e| format!("Secret {}: {e}", self.secret))?;
                    if bundle.not_after - now.unix_timestamp() > RENEW_BEFORE.whole_seconds() {
                        return Ok(bundle);
                    }
                    reissue(&mut bundle, &self.dns_names, now)?;
                    let rv = got.body.pointer("/metadata/resourceVersion").and_then(Value::as_str);
                    let body = secret_body(&self.namespace, &self.secret, &bundle, rv);
                    let put =
                        self.client.request("PUT", &self.secret_path(), Some(("application/json", &body))).await?;
                    match put.status {
                        200 | 201 => {
                            tracing::info!(secret = %self.secret, "renewed the serving certificate");
                            return Ok(bundle);
                        }
                        409 => continue,
                        _ => return Err(format!("updating Secret {}: {}", self.secret, put.message())),
                    }
                }
                _ => return Err(format!("reading Secret {}: {}", self.secret, got.message())),
            }
        }
        Err(format!("Secret {} keeps changing under us (409 Conflict three times)", self.secret))
    }

    /// Sets `caBundle` of every webhook of the configuration to `ca_pem`; returns how many
    /// changed.
    pub async fn ensure_ca_bundle(&self, ca_pem: &str) -> Result<usize, String> {
        let path =
            format!("/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/{}", self.webhook_config);
        let got = self.client.request("GET", &path, None).await?;
        if got.status != 200 {
            return Err(format!("reading MutatingWebhookConfiguration {}: {}", self.webhook_config, got.message()));
        }
        let want = b64(ca_pem);
        let mut ops = Vec::new();
        let webhooks = got.body.get("webhooks").and_then(Value::as_array).cloned().unwrap_or_default();
        for (i, wh) in webhooks.iter().enumerate() {
            if wh.pointer("/clientConfig/caBundle").and_then(Value::as_str) == Some(want.as_str()) {
                continue;
            }
            ops.push(json!({"op": "test", "path": format!("/webhooks/{i}/name"), "value": wh.get("name")}));
            ops.push(json!({"op": "add", "path": format!("/webhooks/{i}/clientConfig/caBundle"), "value": want}));
        }
        if ops.is_empty() {
            return Ok(0);
        }
        let changed = ops.len() / 2;
        let patched =
            self.client.request("PATCH", &path, Some(("application/json-patch+json", &Value::Array(ops)))).await?;
        if patched.status != 200 {
            return Err(format!("patching the caBundle of {}: {}", self.webhook_config, patched.message()));
        }
        tracing::info!(config = %self.webhook_config, webhooks = changed, "caBundle set");
        Ok(changed)
    }

    /// Both steps; returns the bundle to serve.
    pub async fn ensure(&self, now: OffsetDateTime) -> Result<Bundle, String> {
        let bundle = self.ensure_secret(now).await?;
        self.ensure_ca_bundle(&bundle.ca_crt).await?;
        Ok(bundle)
    }
}

/// The DNS names of a Service's certificate, as the API server addresses a webhook Service
/// (`<service>.<namespace>.svc`) and the longer forms.
pub fn service_dns_names(service: &str, namespace: &str, cluster_domain: &str) -> Vec<String> {
    vec![
        format!("{service}.{namespace}.svc"),
        format!("{service}.{namespace}.svc.{cluster_domain}"),
        format!("{service}.{namespace}"),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_round_trips_and_reissue_keeps_the_ca() {
        let now = OffsetDateTime::now_utc();
        let names = service_dns_names("podns-webhook", "podns-system", "cluster.local");
        let b = new_bundle(&names, now).unwrap();
        assert_eq!(b.not_after, (now + CERT_LIFETIME).unix_timestamp());
        let back = bundle_from_secret(&secret_body("podns-system", "s", &b, Some("7"))).unwrap();
        assert_eq!(back, b);
        let mut renewed = b.clone();
        reissue(&mut renewed, &names, now + time::Duration::days(340)).unwrap();
        assert_eq!(renewed.ca_crt, b.ca_crt);
        assert_ne!(renewed.tls_crt, b.tls_crt);
        assert!(renewed.not_after > b.not_after);
    }

    #[test]
    fn a_secret_without_keys_is_an_error() {
        let e = bundle_from_secret(&json!({"data": {"tls.crt": b64("x")}})).unwrap_err();
        assert!(e.contains("data."), "{e}");
    }
}
