//! `podns inject` and `podns uninject`: add the podns sidecar to Kubernetes manifests, or
//! remove it.
//!
//! Reads multi-document YAML (files or standard input) and writes every document back, each
//! after a `---` line. Every object that holds a pod ([`objects`]: Pods, CronJobs,
//! PodTemplates, any kind with a `spec.template` PodTemplateSpec, and `List`s of them) gets the
//! podns native sidecar and, in the default `--mode dns-policy`, `dnsPolicy: None` with a
//! `dnsConfig` that points the pod's resolver at 127.0.0.1; in `--mode capture` their DNS
//! settings stay as they are and a `podns capture-init` init container redirects their DNS
//! traffic to podns instead (see [`crate::capture`]). The pod mutation itself is [`pod`], shared
//! with the webhook. Every other document is copied byte for byte. A pod that already has a
//! container named `podns` is copied unchanged too (so injecting twice changes nothing), unless
//! `--update` asks to re-render it; `podns uninject` reverses injection ([`restore`]).
//!
//! Exit status: 0 on success; 2 for bad flags, input that is not YAML, bad `podns.io/`
//! annotations and pods podns cannot serve (hostNetwork, dnsPolicy: Default, a conflict); 1
//! when a file cannot be read or the output cannot be written. Nothing is written to standard output unless every document succeeded, so a
//! failed run cannot half-apply through `podns inject ... | kubectl apply -f -`.

pub mod conflicts;
pub mod json;
pub mod objects;
pub mod pod;
pub mod restore;
pub mod yaml;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

/// Image used when --image is not given: the name the README's build and `kind load` steps
/// give the image of this version (`docker build -f docker/Dockerfile -t podns:0.1.0 .`). Not a
/// registry name: no registry publishes podns, so the default must be something the user built.
pub const DEFAULT_IMAGE: &str = concat!("podns:", env!("CARGO_PKG_VERSION"));

/// How the application's DNS traffic reaches podns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// dnsPolicy: None and a dnsConfig with nameserver 127.0.0.1.
    DnsPolicy,
    /// Keep the pod's DNS settings; an init container (`podns capture-init`) redirects the
    /// pod's port-53 traffic to podns on 127.0.0.1:15053 with kernel NAT rules.
    Capture,
}

/// Arguments of `podns inject`.
#[derive(Debug, Clone, clap::Args)]
pub struct InjectArgs {
    /// Manifests to read, multi-document YAML; none or `-` reads standard input.
    #[arg(value_name = "FILE")]
    pub files: Vec<PathBuf>,

    /// Cluster DNS service IP that podns forwards to, IP or IP:PORT (repeatable). Find it with
    /// `kubectl -n kube-system get service kube-dns -o jsonpath='{.spec.clusterIP}'`. Optional
    /// with --mode capture, where podns reads it from the pod's own resolv.conf.
    #[arg(long = "upstream", value_name = "IP[:PORT]", value_delimiter = ',', value_parser = crate::cli::parse_upstream)]
    pub upstream: Vec<SocketAddr>,

    /// How the pod's DNS reaches podns.
    #[arg(long, value_enum, default_value_t = Mode::DnsPolicy)]
    pub mode: Mode,

    /// podns container image.
    #[arg(long, default_value = DEFAULT_IMAGE)]
    pub image: String,

    /// Cluster domain, for the pod's search list and podns's --cluster-domain.
    #[arg(long, default_value = "cluster.local")]
    pub cluster_domain: String,

    /// Namespace the objects will run in, for the search list of those whose metadata.namespace
    /// is unset (`helm template` output). Without it such objects get `default`, with a warning.
    #[arg(long, short = 'n')]
    pub namespace: Option<String>,

    /// Re-render pods that are already injected with these flags (restoring their original
    /// DNS settings first); without it they are left unchanged.
    #[arg(long)]
    pub update: bool,

    /// With --mode capture: the image of the capture-init container (podns and iptables).
    /// Default: --image with `-capture-init` appended to its tag.
    #[arg(long)]
    pub capture_image: Option<String>,

    /// With --mode capture: capture IPv6 DNS traffic too (podns also listens on [::1]:15053).
    /// For clusters whose pods get an IPv6 cluster DNS address; needs IPv6 in the pods.
    #[arg(long)]
    pub capture_ipv6: bool,
}

/// Validated settings of one run.
#[derive(Debug, Clone)]
pub struct Options {
    pub mode: Mode,
    pub upstream: Vec<SocketAddr>,
    pub image: String,
    pub cluster_domain: String,
    /// `--namespace`; None: guess `default` and warn.
    pub namespace: Option<String>,
    /// Re-inject already injected pods.
    pub update: bool,
    /// More `--flag=value` arguments for the sidecar (from the pod's annotations).
    pub sidecar_args: Vec<String>,
    /// The capture-init image (used with [`Mode::Capture`]).
    pub capture_image: String,
    /// Capture IPv6 DNS too (with [`Mode::Capture`]).
    pub capture_ipv6: bool,
}

/// Why `podns inject` failed, with its exit status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct InjectError {
    pub message: String,
    pub status: u8,
}

impl InjectError {
    /// Bad flags or input the user has to change: exit status 2.
    pub fn input(message: impl Into<String>) -> InjectError {
        InjectError { message: message.into(), status: 2 }
    }

    /// Reading or writing failed: exit status 1.
    pub fn io(message: impl Into<String>) -> InjectError {
        InjectError { message: message.into(), status: 1 }
    }
}

/// The result of injecting one stream.
#[derive(Debug, Default)]
pub struct Injected {
    /// The output stream.
    pub text: String,
    /// Remarks for standard error (documents left unchanged, settings replaced).
    pub notes: Vec<String>,
}

/// Runs `podns inject`.
pub fn run(args: InjectArgs) -> ExitCode {
    match options(&args) {
        Ok(opts) => run_streams(&args.files, "inject", &Action::Inject(&opts)),
        Err(e) => {
            eprintln!("podns inject: {e}");
            ExitCode::from(e.status)
        }
    }
}

/// Arguments of `podns uninject`.
#[derive(Debug, Clone, clap::Args)]
pub struct UninjectArgs {
    /// Manifests to read, multi-document YAML; none or `-` reads standard input.
    #[arg(value_name = "FILE")]
    pub files: Vec<PathBuf>,
}

/// Runs `podns uninject`: removes podns from injected pods and restores their DNS settings.
pub fn run_uninject(args: UninjectArgs) -> ExitCode {
    run_streams(&args.files, "uninject", &Action::Uninject)
}

/// What to do to each pod of a stream.
pub enum Action<'a> {
    Inject(&'a Options),
    Uninject,
}

fn run_streams(files: &[PathBuf], command: &str, action: &Action) -> ExitCode {
    let result = (|| {
        let mut all = Injected::default();
        for (name, text) in read_inputs(files)? {
            let one = transform_stream(&text, &name, action)?;
            all.text.push_str(&one.text);
            all.notes.extend(one.notes);
        }
        Ok::<_, InjectError>(all)
    })();
    match result {
        Ok(out) => {
            for note in &out.notes {
                eprintln!("podns {command}: {note}");
            }
            let mut stdout = std::io::stdout().lock();
            match stdout.write_all(out.text.as_bytes()).and_then(|()| stdout.flush()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("podns {command}: writing the output: {e}");
                    ExitCode::from(1)
                }
            }
        }
        Err(e) => {
            eprintln!("podns {command}: {e}");
            ExitCode::from(e.status)
        }
    }
}

/// Checks the flags.
pub fn options(args: &InjectArgs) -> Result<Options, InjectError> {
    if args.mode == Mode::DnsPolicy && (args.capture_image.is_some() || args.capture_ipv6) {
        return Err(InjectError::input("--capture-image and --capture-ipv6 only apply with --mode capture"));
    }
    if args.mode == Mode::DnsPolicy && args.upstream.is_empty() {
        return Err(InjectError::input(
            "--upstream is required with --mode dns-policy: give the cluster DNS service IP \
             (kubectl -n kube-system get service kube-dns -o jsonpath='{.spec.clusterIP}')",
        ));
    }
    let cluster_domain = args.cluster_domain.trim_end_matches('.').to_owned();
    if !is_dns_name(&cluster_domain) {
        return Err(InjectError::input(format!("--cluster-domain `{}` is not a DNS name", args.cluster_domain)));
    }
    if let Some(ns) = &args.namespace
        && !is_dns_label(ns)
    {
        return Err(InjectError::input(format!("--namespace `{ns}` is not a Kubernetes namespace name")));
    }
    if !is_image_ref(&args.image) {
        return Err(InjectError::input(format!("--image `{}` is not an image reference", args.image)));
    }
    let capture_image = match &args.capture_image {
        Some(image) if is_image_ref(image) => image.clone(),
        Some(image) => {
            return Err(InjectError::input(format!("--capture-image `{image}` is not an image reference")));
        }
        None if args.mode == Mode::Capture => capture_image_for(&args.image)?,
        None => String::new(),
    };
    Ok(Options {
        mode: args.mode,
        upstream: args.upstream.clone(),
        image: args.image.clone(),
        cluster_domain,
        namespace: args.namespace.clone(),
        update: args.update,
        sidecar_args: Vec::new(),
        capture_image,
        capture_ipv6: args.capture_ipv6,
    })
}

fn is_image_ref(s: &str) -> bool {
    !s.trim().is_empty() && !s.chars().any(char::is_whitespace)
}

/// The default capture-init image for a podns image: the same repository, its tag with
/// `-capture-init` appended (`ghcr.io/podns/podns:0.1.0` -> `ghcr.io/podns/podns:0.1.0-capture-init`;
/// no tag: `:capture-init`). A digest names one image only, so it cannot be extended.
pub fn capture_image_for(image: &str) -> Result<String, InjectError> {
    if image.contains('@') {
        return Err(InjectError::input(format!(
            "--image `{image}` is pinned by digest, so the capture-init image cannot be derived from it; \
             pass --capture-image"
        )));
    }
    let last = image.rsplit('/').next().unwrap_or(image);
    Ok(if last.contains(':') { format!("{image}-capture-init") } else { format!("{image}:capture-init") })
}

/// An RFC 1123 label: what Kubernetes accepts as a namespace name.
pub fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn is_dns_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_dns_label)
}

/// The texts to read, with names for messages: the files, or standard input.
fn read_inputs(files: &[PathBuf]) -> Result<Vec<(String, String)>, InjectError> {
    let read_stdin = || {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|e| InjectError::io(format!("reading standard input: {e}")))?;
        Ok(("standard input".to_owned(), text))
    };
    if files.is_empty() {
        return Ok(vec![read_stdin()?]);
    }
    files
        .iter()
        .map(|path| {
            if path.as_os_str() == "-" {
                read_stdin()
            } else {
                std::fs::read_to_string(path)
                    .map(|text| (path.display().to_string(), text))
                    .map_err(|e| InjectError::io(format!("reading {}: {e}", path.display())))
            }
        })
        .collect()
}

/// One document of a stream, as text.
struct Piece<'a> {
    /// The `---` line that opened it, when there was one.
    marker: Option<&'a str>,
    /// The lines after the marker.
    body: &'a str,
    /// 1-based line of the body's first line in the stream.
    first_line: usize,
}

/// Splits a stream at its document markers: lines that start with `---` or `...` followed by
/// white space or the line end. YAML forbids such lines inside a document, even in block
/// scalars, so this split is exact.
fn split_documents(text: &str) -> Vec<Piece<'_>> {
    let mut pieces = Vec::new();
    let mut marker = None;
    let mut start = 0;
    let mut first_line = 1;
    let mut offset = 0;
    let mut line_no = 0;
    for line in text.split_inclusive('\n') {
        line_no += 1;
        let bare = line.trim_end_matches(['\n', '\r']);
        let is_marker =
            |m: &str| bare.strip_prefix(m).is_some_and(|rest| rest.is_empty() || rest.starts_with([' ', '\t']));
        if is_marker("---") || is_marker("...") {
            pieces.push(Piece { marker, body: &text[start..offset], first_line });
            marker = is_marker("---").then_some(bare);
            start = offset + line.len();
            first_line = line_no + 1;
        }
        offset += line.len();
    }
    pieces.push(Piece { marker, body: &text[start..], first_line });
    pieces
}

/// Injects every workload of one stream; `name` names it in messages.
pub fn inject_stream(text: &str, name: &str, opts: &Options) -> Result<Injected, InjectError> {
    transform_stream(text, name, &Action::Inject(opts))
}

/// Applies `action` to every workload of one stream.
pub fn transform_stream(text: &str, name: &str, action: &Action) -> Result<Injected, InjectError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut out = Injected::default();
    let mut index = 0;
    for piece in split_documents(text) {
        // A marker line may carry content (`--- {a: 1}`); comments after it are content too.
        let marker_content =
            piece.marker.map(|m| m[3..].trim()).filter(|rest| !rest.is_empty() && !rest.starts_with('#'));
        if piece.body.trim().is_empty() && marker_content.is_none() {
            continue;
        }
        index += 1;
        let parse_text = match marker_content {
            Some(_) => format!("{}\n{}", piece.marker.unwrap_or_default(), piece.body),
            None => piece.body.to_owned(),
        };
        let line_shift = if marker_content.is_some() { piece.first_line - 1 } else { piece.first_line };
        let mut docs = yaml::parse(&parse_text).map_err(|e| {
            InjectError::input(format!("{name}: line {}: not valid YAML: {}", e.line + line_shift - 1, e.message))
        })?;
        let where_ = format!("document {index} of {name}");
        let changed = match docs.as_mut_slice() {
            [] => false,
            [doc] => objects::transform(doc, &where_, action, &mut out.notes)?,
            _ => {
                return Err(InjectError::input(format!("{name}: line {}: more than one document", piece.first_line)));
            }
        };
        if changed {
            // Content that shared the marker line is part of the re-emitted document.
            out.text.push_str("---\n");
            out.text.push_str(&yaml::emit(&docs[0]));
        } else {
            out.text.push_str(piece.marker.unwrap_or("---"));
            out.text.push('\n');
            out.text.push_str(piece.body);
            if !piece.body.is_empty() && !piece.body.ends_with('\n') {
                out.text.push('\n');
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_at_markers_only() {
        let text = "a: 1\n---\nb: |\n  x\n  --- not a marker\n--- # c\nc: 3\n...\n---x: 4\n";
        let pieces = split_documents(text);
        let bodies: Vec<&str> = pieces.iter().map(|p| p.body).collect();
        assert_eq!(bodies, ["a: 1\n", "b: |\n  x\n  --- not a marker\n", "c: 3\n", "---x: 4\n"]);
        assert_eq!(pieces[2].marker, Some("--- # c"));
        assert_eq!(pieces[2].first_line, 7);
    }

    #[test]
    fn capture_image_is_derived_from_the_tag() {
        assert_eq!(capture_image_for("ghcr.io/podns/podns:0.1.0").unwrap(), "ghcr.io/podns/podns:0.1.0-capture-init");
        assert_eq!(capture_image_for("registry:5000/podns").unwrap(), "registry:5000/podns:capture-init");
        assert!(capture_image_for("r.example/podns@sha256:00").unwrap_err().message.contains("--capture-image"));
    }

    #[test]
    fn names_are_checked() {
        assert!(is_dns_label("kube-system"));
        assert!(!is_dns_label("Kube"));
        assert!(!is_dns_label("-a"));
        assert!(is_dns_name("cluster.local"));
        assert!(!is_dns_name("cluster..local"));
    }
}
