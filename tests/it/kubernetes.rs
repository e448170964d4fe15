//! The Kubernetes manifests (`deploy/kubernetes`) and the Grafana dashboard
//! (`docs/grafana/ftpgate.json`), checked offline: no cluster runs here and
//! no image is built, so nothing here proves they work when applied.
//!
//! - Every manifest file that a kustomization lists as a resource, and all
//!   that `kubectl kustomize` builds from the base and each overlay,
//!   validates strictly (unknown fields are errors) against the Kubernetes
//!   API schemas of kubernetes-validate for the oldest and the newest
//!   version we claim ([`K8S_VERSIONS`]); the PodMonitor against a strict
//!   subset of its custom resource (`tests/data/kubernetes/`).
//! - Every ftpgate configuration inside a built ConfigMap passes `ftpgate
//!   check`, and agrees with the objects around it: Service ports and the
//!   passive range, probes on the admin port, grace period and drain,
//!   non-root and read-only, one pod per Service, NetworkPolicy ports,
//!   PROXY protocol on both ends or on neither ([`check_set`]).
//!   `kubernetes_checks_catch_mistakes` shows each kind of check can fail.
//! - Every PromQL query of the dashboard parses (promql-parser) and names
//!   only metrics and labels that a running ftpgate serves on `/metrics`,
//!   after real sessions through vsftpd made its labelled series appear.
//! - The README's recipe for HAProxy that keeps HTTP and passes FTP runs:
//!   the example files with loopback addresses, a real HAProxy, the ftpgate
//!   binary, vsftpd, a web server, curl.
//!
//! The tools come from `scripts/install-test-tools.sh` (a venv under
//! `/opt/ftpgate-tools`, or `$FTPGATE_TOOLS_DIR`); without them these tests
//! print a SKIP line, and fail under `FTPGATE_REQUIRE_PEERS=1`.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::clients::{self, Mode, Target};
use crate::gateway;
use crate::peers::{self, FtpServer, ServerKind};

/// The Kubernetes versions every manifest must validate against: 1.30 is
/// the first with the preStop `sleep` action on by default (the image has no
/// shell for `exec: sleep`), 1.37 the newest schemas of kubernetes-validate.
const K8S_VERSIONS: [&str; 2] = ["1.30.0", "1.37.0"];

/// The kustomizations that `kubectl kustomize` must build.
const BUILDS: [&str; 3] = ["base", "overlays/aws-nlb", "overlays/scale-out"];

/// Labels Prometheus adds to every scraped series (static configs: job and
/// instance; the Prometheus Operator's PodMonitor: also these).
const TARGET_LABELS: [&str; 6] = [
    "job",
    "instance",
    "namespace",
    "pod",
    "container",
    "endpoint",
];

/// Metrics the dashboard must show (issue 16): each named by at least one
/// query, histograms by their base name.
const DASHBOARD_MUST_SHOW: [&str; 13] = [
    "ftpgate_sessions_active",
    "ftpgate_sessions_total",
    "ftpgate_logins_total",
    "ftpgate_transfers_total",
    "ftpgate_transfer_bytes_total",
    "ftpgate_data_connections_refused_total",
    "ftpgate_passive_routes_in_use",
    "ftpgate_passive_pool_exhausted_total",
    "ftpgate_backend_up",
    "ftpgate_health_checks_total",
    "ftpgate_health_check_duration_seconds",
    "ftpgate_health_check_failures_total",
    "ftpgate_reply_latency_seconds",
];

const RUN_TIMEOUT: Duration = Duration::from_secs(60);

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn k8s_dir() -> PathBuf {
    root().join("deploy/kubernetes")
}

// === tools ===

/// The venv of `scripts/install-test-tools.sh`.
fn tools_bin() -> PathBuf {
    std::env::var_os("FTPGATE_TOOLS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/opt/ftpgate-tools"))
        .join("venv/bin")
}

/// The venv's python, if it imports everything the drivers below use.
fn find_python() -> Result<PathBuf, String> {
    let py = tools_bin().join("python");
    if !py.exists() {
        return Err(format!("{} does not exist", py.display()));
    }
    let mut cmd = Command::new(&py);
    cmd.args([
        "-c",
        "import kubernetes_validate, promql_parser, yaml, jsonschema",
    ]);
    let out = clients::run(cmd, None, RUN_TIMEOUT);
    if !out.ok {
        return Err(format!(
            "{} cannot import its tools: {}",
            py.display(),
            out.stderr
        ));
    }
    Ok(py)
}

/// kubectl with `kustomize`: the venv's (pinned), else one on PATH.
fn find_kubectl() -> Result<PathBuf, String> {
    let mut tried = Vec::new();
    for k in [tools_bin().join("kubectl"), PathBuf::from("kubectl")] {
        let mut cmd = Command::new(&k);
        cmd.args(["kustomize", "--help"]);
        let out = clients::run(cmd, None, RUN_TIMEOUT);
        if out.ok {
            return Ok(k);
        }
        tried.push(k.display().to_string());
    }
    Err(format!(
        "no kubectl with kustomize (tried {})",
        tried.join(", ")
    ))
}

/// A tool, or None after a SKIP line; a panic under `FTPGATE_REQUIRE_PEERS=1`.
fn tool_or_skip(
    cache: &'static OnceLock<Result<PathBuf, String>>,
    find: fn() -> Result<PathBuf, String>,
    test: &str,
) -> Option<PathBuf> {
    match cache.get_or_init(find) {
        Ok(p) => Some(p.clone()),
        Err(why) => {
            assert!(
                !peers::peers_required(),
                "FTPGATE_REQUIRE_PEERS=1 but {why}: run scripts/install-test-tools.sh as root"
            );
            println!("SKIP {test}: {why}; run scripts/install-test-tools.sh as root");
            None
        }
    }
}

fn python_or_skip(test: &str) -> Option<PathBuf> {
    static PY: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    tool_or_skip(&PY, find_python, test)
}

fn kubectl_or_skip(test: &str) -> Option<PathBuf> {
    static KUBECTL: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    tool_or_skip(&KUBECTL, find_kubectl, test)
}

// === YAML documents: parsed and validated by the venv's python ===

/// Reads YAML documents on stdin. Prints each as `doc\tJSON`, then (unless
/// the mode is `parse`) one `ok` or `error` line per document and version:
/// kubernetes-validate in strict mode for built-in kinds, the subset schema
/// for PodMonitor, an error for any other kind.
const VALIDATE_PY: &str = r#"
import json, sys, yaml
import jsonschema, kubernetes_validate
mode, schema_path, versions = sys.argv[1], sys.argv[2], sys.argv[3:]
podmonitor = jsonschema.Draft202012Validator(json.load(open(schema_path)))
def one_line(s):
    return str(s).replace("\t", " ").replace("\n", " ")
docs = [d for d in yaml.safe_load_all(sys.stdin.read()) if d is not None]
for d in docs:
    print("doc\t" + json.dumps(d, sort_keys=True))
if mode == "parse":
    sys.exit(0)
for d in docs:
    if not isinstance(d, dict):
        print("error\t?\t-\tnot a mapping")
        continue
    name = "%s/%s" % (d.get("kind"), (d.get("metadata") or {}).get("name"))
    if d.get("apiVersion") == "monitoring.coreos.com/v1" and d.get("kind") == "PodMonitor":
        errors = list(podmonitor.iter_errors(d))
        for e in errors:
            path = ".".join(str(p) for p in e.path)
            print("error\t%s\tPodMonitor subset\t%s: %s" % (name, path, one_line(e.message)))
        if not errors:
            print("ok\t%s\tPodMonitor subset" % name)
        continue
    for v in versions:
        try:
            got = kubernetes_validate.validate(d, v, strict=True)
            print("ok\t%s\t%s" % (name, got))
        except kubernetes_validate.ValidationError as e:
            path = ".".join(str(p) for p in e.path)
            print("error\t%s\t%s\t%s: %s" % (name, v, path, one_line(e.message)))
        except kubernetes_validate.SchemaNotFoundError as e:
            print("error\t%s\t%s\tno schema: %s" % (name, v, one_line(e.message)))
"#;

/// What [`VALIDATE_PY`] said about one YAML text.
struct Parsed {
    docs: Vec<Value>,
    /// `kind/name version` of each document that validated.
    ok: Vec<String>,
    /// One line per validation error.
    errors: Vec<String>,
}

fn run_yaml_driver(py: &Path, mode: &str, text: &str, what: &str) -> Parsed {
    let schema = root().join("tests/data/kubernetes/podmonitor-v1.schema.json");
    let mut cmd = Command::new(py);
    cmd.args(["-c", VALIDATE_PY, mode, schema.to_str().unwrap()])
        .args(K8S_VERSIONS);
    let out = clients::run(cmd, Some(text.as_bytes()), RUN_TIMEOUT);
    assert!(out.ok, "{what}: the YAML driver failed: {out:?}");
    let mut parsed = Parsed {
        docs: Vec::new(),
        ok: Vec::new(),
        errors: Vec::new(),
    };
    for line in out.stdout_str().lines() {
        let (tag, rest) = line.split_once('\t').unwrap_or((line, ""));
        match tag {
            "doc" => parsed
                .docs
                .push(serde_json::from_str(rest).unwrap_or_else(|e| panic!("{what}: {e}: {rest}"))),
            "ok" => parsed.ok.push(rest.replace('\t', " ")),
            "error" => parsed
                .errors
                .push(format!("{what}: {}", rest.replace('\t', " "))),
            _ => panic!("{what}: unexpected driver output {line:?}"),
        }
    }
    parsed
}

/// Parses and validates `text` (documents from `what`).
fn validate_yaml(py: &Path, text: &str, what: &str) -> Parsed {
    run_yaml_driver(py, "validate", text, what)
}

/// Parses YAML without validating it (kustomization files).
fn parse_yaml(py: &Path, text: &str, what: &str) -> Vec<Value> {
    run_yaml_driver(py, "parse", text, what).docs
}

/// `kubectl kustomize deploy/kubernetes/<dir>`.
fn kustomize(kubectl: &Path, dir: &str) -> String {
    let mut cmd = Command::new(kubectl);
    cmd.arg("kustomize").arg(k8s_dir().join(dir));
    let out = clients::run(cmd, None, RUN_TIMEOUT);
    out.assert_ok(&format!("kubectl kustomize deploy/kubernetes/{dir}"));
    out.stdout_str()
}

/// Every build, parsed and validated; problems collected, not panicked on.
fn build_all(py: &Path, kubectl: &Path) -> Vec<(&'static str, Parsed)> {
    BUILDS
        .iter()
        .map(|dir| {
            let text = kustomize(kubectl, dir);
            (*dir, validate_yaml(py, &text, &format!("build of {dir}")))
        })
        .collect()
}

// === small readers ===

fn kind(d: &Value) -> &str {
    d["kind"].as_str().unwrap_or("")
}

fn name(d: &Value) -> &str {
    d["metadata"]["name"].as_str().unwrap_or("")
}

fn id(d: &Value) -> String {
    format!("{}/{}", kind(d), name(d))
}

fn str_map(v: &Value) -> BTreeMap<String, String> {
    v.as_object()
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

/// `selector` (a plain map) is contained in `labels`.
fn selects(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// `30s`, `500ms`, `5m`, `1h`, or a bare number of seconds, as ftpgate writes them.
fn duration(s: &str) -> Option<Duration> {
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: u64 = n.parse().ok()?;
    Some(match unit {
        "ms" => Duration::from_millis(n),
        "" | "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n * 60),
        "h" => Duration::from_secs(n * 3600),
        _ => return None,
    })
}

// === ftpgate's configuration, as `ftpgate check` prints it ===

/// What the manifests must agree with, from `ftpgate check`'s output.
#[derive(Debug, Clone)]
struct Gate {
    listen: Vec<SocketAddr>,
    proxy_listen: Vec<SocketAddr>,
    proxy_from: Vec<String>,
    passive: (u16, u16),
    admin: Option<SocketAddr>,
    drain: Duration,
    public_address: String,
}

impl Gate {
    /// Ports a balancer may send control connections to.
    fn control_ports(&self) -> Vec<u16> {
        self.listen
            .iter()
            .chain(&self.proxy_listen)
            .map(|a| a.port())
            .collect()
    }

    fn passive_ports(&self) -> std::ops::RangeInclusive<u16> {
        self.passive.0..=self.passive.1
    }
}

/// Runs `ftpgate check` on `text`; the effective configuration, or why not.
fn ftpgate_check(text: &str, what: &str) -> Result<Gate, String> {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ftpgate.toml");
    fs::write(&file, text).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ftpgate"));
    cmd.env_remove("RUST_LOG")
        .args(["check", "--config", file.to_str().unwrap()]);
    let out = clients::run(cmd, None, RUN_TIMEOUT);
    if !out.ok {
        return Err(format!(
            "{what}: ftpgate check failed: {}",
            out.stderr.trim()
        ));
    }
    let t: toml::Table = out
        .stdout_str()
        .parse()
        .map_err(|e| format!("{what}: check printed no TOML: {e}"))?;
    let strings = |k: &str| -> Vec<String> {
        t.get(k)
            .and_then(|v| v.as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    };
    let addrs = |k: &str| -> Result<Vec<SocketAddr>, String> {
        strings(k)
            .iter()
            .map(|a| a.parse().map_err(|e| format!("{what}: {k} {a}: {e}")))
            .collect()
    };
    let string = |k: &str| t.get(k).and_then(|v| v.as_str()).map(String::from);
    let passive = string("passive_ports")
        .and_then(|p| {
            let (a, b) = p.split_once('-')?;
            Some((a.parse().ok()?, b.parse().ok()?))
        })
        .ok_or(format!("{what}: no passive_ports in check's output"))?;
    Ok(Gate {
        listen: addrs("listen")?,
        proxy_listen: addrs("proxy_protocol_listen")?,
        proxy_from: strings("proxy_protocol_from"),
        passive,
        admin: string("admin_listen")
            .map(|a| a.parse().map_err(|e| format!("{what}: admin_listen: {e}")))
            .transpose()?,
        drain: string("shutdown_drain_timeout")
            .and_then(|d| duration(&d))
            .ok_or(format!("{what}: no shutdown_drain_timeout"))?,
        public_address: string("public_address").unwrap_or_default(),
    })
}

// === the checks of one built set of objects ===

/// One pod as the manifests make it (a Deployment's replicas look alike;
/// a StatefulSet's differ by name).
struct Pod<'a> {
    /// Deployment/NAME or StatefulSet/NAME.
    owner: String,
    /// The pod's name where it is known (StatefulSet), else the owner's.
    name: String,
    labels: BTreeMap<String, String>,
    spec: &'a Value,
    /// How many pods the owner runs.
    replicas: u64,
    /// `(ConfigMap, key)` of the file the pod reads, resolved.
    config: Option<(String, String)>,
}

impl Pod<'_> {
    fn container(&self) -> &Value {
        &self.spec["containers"][0]
    }

    /// The number of a container port given by name or number.
    fn port(&self, p: &Value) -> Option<u16> {
        if let Some(n) = p.as_u64() {
            return u16::try_from(n).ok();
        }
        let wanted = p.as_str()?;
        self.container()["ports"]
            .as_array()?
            .iter()
            .find(|cp| cp["name"].as_str() == Some(wanted))
            .and_then(|cp| cp["containerPort"].as_u64())
            .and_then(|n| u16::try_from(n).ok())
    }
}

/// The pods of every Deployment and StatefulSet in `docs`.
fn pods<'a>(docs: &'a [Value], problems: &mut Vec<String>) -> Vec<Pod<'a>> {
    let mut out = Vec::new();
    for d in docs {
        let stateful = match kind(d) {
            "Deployment" => false,
            "StatefulSet" => true,
            _ => continue,
        };
        let replicas = d["spec"]["replicas"].as_u64().unwrap_or(1);
        let labels = str_map(&d["spec"]["template"]["metadata"]["labels"]);
        let spec = &d["spec"]["template"]["spec"];
        let names: Vec<Option<String>> = if stateful {
            (0..replicas)
                .map(|i| Some(format!("{}-{i}", name(d))))
                .collect()
        } else {
            vec![None]
        };
        for (i, pod_name) in names.into_iter().enumerate() {
            let mut labels = labels.clone();
            if let Some(n) = &pod_name {
                labels.insert("statefulset.kubernetes.io/pod-name".into(), n.clone());
                labels.insert("apps.kubernetes.io/pod-index".into(), i.to_string());
            }
            let mut pod = Pod {
                owner: id(d),
                name: pod_name.unwrap_or_else(|| name(d).to_string()),
                labels,
                spec,
                replicas,
                config: None,
            };
            pod.config = config_of(&pod, stateful, problems);
            out.push(pod);
        }
    }
    out
}

/// The ConfigMap and key that `--config` names inside the pod.
fn config_of(pod: &Pod, stateful: bool, problems: &mut Vec<String>) -> Option<(String, String)> {
    let who = format!("{} ({})", pod.owner, pod.name);
    let c = pod.container();
    let args: Vec<String> = c["args"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    let Some(path) = args
        .iter()
        .position(|a| a == "--config")
        .and_then(|i| args.get(i + 1))
    else {
        problems.push(format!("{who}: args {args:?} name no --config file"));
        return None;
    };
    let path = if path.contains("$(POD_NAME)") {
        if !stateful {
            problems.push(format!(
                "{who}: --config {path} depends on the pod name, which a Deployment makes up"
            ));
            return None;
        }
        let from_name = c["env"].as_array().is_some_and(|env| {
            env.iter().any(|e| {
                e["name"] == "POD_NAME"
                    && e["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
            })
        });
        if !from_name {
            problems.push(format!(
                "{who}: --config uses $(POD_NAME) but no env POD_NAME from metadata.name"
            ));
        }
        path.replace("$(POD_NAME)", &pod.name)
    } else {
        path.clone()
    };
    let (dir, file) = path.rsplit_once('/').unwrap_or(("", &path));
    let Some(mount) = c["volumeMounts"]
        .as_array()
        .and_then(|m| m.iter().find(|m| m["mountPath"].as_str() == Some(dir)))
    else {
        problems.push(format!(
            "{who}: nothing is mounted at {dir} (for --config {path})"
        ));
        return None;
    };
    let volume = pod.spec["volumes"].as_array().and_then(|vs| {
        vs.iter()
            .find(|v| v["name"] == mount["name"])
            .and_then(|v| v["configMap"]["name"].as_str())
    });
    match volume {
        Some(cm) => Some((cm.to_string(), file.to_string())),
        None => {
            problems.push(format!("{who}: the volume at {dir} is not a ConfigMap"));
            None
        }
    }
}

/// `ftpgate check` on every `*.toml` key of every ConfigMap.
fn configs(docs: &[Value], problems: &mut Vec<String>) -> Configs {
    let mut out = BTreeMap::new();
    for d in docs.iter().filter(|d| kind(d) == "ConfigMap") {
        for (key, text) in str_map(&d["data"]) {
            if !key.ends_with(".toml") {
                continue;
            }
            match ftpgate_check(&text, &format!("ConfigMap {} key {key}", name(d))) {
                Ok(g) => {
                    out.insert((name(d).to_string(), key), g);
                }
                Err(e) => problems.push(e),
            }
        }
    }
    out
}

/// Each checked configuration by (ConfigMap, key).
type Configs = BTreeMap<(String, String), Gate>;

/// The configuration `pod` runs with, if it passed `ftpgate check`.
fn gate_of<'g>(configs: &'g Configs, pod: &Pod) -> Option<&'g Gate> {
    pod.config.as_ref().and_then(|k| configs.get(k))
}

/// The checks of one built set of objects; every problem found, as text.
fn check_set(docs: &[Value]) -> Vec<String> {
    let mut problems = Vec::new();
    let configs = configs(docs, &mut problems);
    let pods = pods(docs, &mut problems);
    if pods.is_empty() {
        problems.push("no Deployment or StatefulSet".into());
    }
    for pod in &pods {
        let who = format!("{} ({})", pod.owner, pod.name);
        match &pod.config {
            Some(k) if !configs.contains_key(k) => problems.push(format!(
                "{who}: reads key {} of ConfigMap {}, which does not exist or fails ftpgate check",
                k.1, k.0
            )),
            _ => {}
        }
        check_pod(pod, gate_of(&configs, pod), &mut problems);
    }
    for d in docs {
        match kind(d) {
            "Service" => check_service(d, &pods, &configs, &mut problems),
            "NetworkPolicy" => check_network_policy(d, &pods, &configs, &mut problems),
            "PodMonitor" => check_pod_monitor(d, &pods, &configs, &mut problems),
            "PodDisruptionBudget" => check_pdb(d, &pods, &mut problems),
            _ => {}
        }
    }
    // Pods of one StatefulSet: their own address and their own range.
    let stateful: Vec<(&Pod, &Gate)> = pods
        .iter()
        .filter(|p| p.owner.starts_with("StatefulSet/"))
        .filter_map(|p| Some((p, gate_of(&configs, p)?)))
        .collect();
    for (i, (a, ga)) in stateful.iter().enumerate() {
        for (b, gb) in &stateful[i + 1..] {
            if ga.public_address == gb.public_address {
                problems.push(format!(
                    "{} and {} both advertise {}: each pod needs its own address",
                    a.name, b.name, ga.public_address
                ));
            }
            if ga.passive.0 <= gb.passive.1 && gb.passive.0 <= ga.passive.1 {
                problems.push(format!(
                    "{} and {} have overlapping passive ranges {:?} and {:?}",
                    a.name, b.name, ga.passive, gb.passive
                ));
            }
        }
    }
    problems
}

fn check_pod(pod: &Pod, gate: Option<&Gate>, problems: &mut Vec<String>) {
    let who = format!("{} ({})", pod.owner, pod.name);
    let spec = pod.spec;
    let c = pod.container();
    let psc = &spec["securityContext"];
    let csc = &c["securityContext"];
    if psc["runAsNonRoot"] != true && csc["runAsNonRoot"] != true {
        problems.push(format!("{who}: runAsNonRoot is not true"));
    }
    let uid = csc["runAsUser"].as_u64().or(psc["runAsUser"].as_u64());
    if uid.is_none_or(|u| u == 0) {
        problems.push(format!(
            "{who}: runAsUser {uid:?}: want the image's non-root uid"
        ));
    }
    if csc["readOnlyRootFilesystem"] != true {
        problems.push(format!("{who}: readOnlyRootFilesystem is not true"));
    }
    if csc["allowPrivilegeEscalation"] != false {
        problems.push(format!("{who}: allowPrivilegeEscalation is not false"));
    }
    if !csc["capabilities"]["drop"]
        .as_array()
        .is_some_and(|d| d.iter().any(|c| c == "ALL"))
    {
        problems.push(format!("{who}: capabilities are not all dropped"));
    }
    if pod.owner.starts_with("Deployment/") && pod.replicas != 1 {
        problems.push(format!(
            "{who}: {} replicas behind one Service: a data connection would reach pods that never saw its session (use overlays/scale-out)",
            pod.replicas
        ));
    }
    let Some(gate) = gate else { return };
    // Probes on the admin listener.
    let admin = gate.admin.map(|a| a.port());
    if admin.is_none() {
        problems.push(format!(
            "{who}: its configuration has no admin_listen for the probes"
        ));
    }
    if let Some(a) = gate.admin {
        if a.ip().is_loopback() {
            problems.push(format!(
                "{who}: admin_listen {a} is loopback: the kubelet and Prometheus cannot reach it"
            ));
        }
    }
    for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
        let get = &c[probe]["httpGet"];
        if get["path"].as_str() != Some(path) {
            problems.push(format!(
                "{who}: {probe} asks {}, want GET {path}",
                get["path"]
            ));
        }
        if admin.is_some() && pod.port(&get["port"]) != admin {
            problems.push(format!(
                "{who}: {probe} port {} is not the admin port {admin:?}",
                get["port"]
            ));
        }
    }
    // preStop sleep, then the drain, inside the grace period.
    let sleep = &c["lifecycle"]["preStop"]["sleep"]["seconds"];
    if !c["lifecycle"]["preStop"]["exec"].is_null() {
        problems.push(format!(
            "{who}: preStop exec: the image has no shell or sleep binary"
        ));
    }
    let Some(sleep) = sleep.as_u64() else {
        problems.push(format!("{who}: no preStop sleep"));
        return;
    };
    let grace = spec["terminationGracePeriodSeconds"].as_u64().unwrap_or(30);
    let need = sleep + gate.drain.as_secs() + 5;
    if grace < need {
        problems.push(format!(
            "{who}: terminationGracePeriodSeconds {grace} < preStop sleep {sleep} s + shutdown_drain_timeout {:?} + 5 s: the drain would be cut short",
            gate.drain
        ));
    }
}

fn check_service(svc: &Value, pods: &[Pod], configs: &Configs, problems: &mut Vec<String>) {
    let who = id(svc);
    let spec = &svc["spec"];
    let selector = str_map(&spec["selector"]);
    let chosen: Vec<&Pod> = pods
        .iter()
        .filter(|p| selects(&selector, &p.labels))
        .collect();
    if spec["clusterIP"] == "None" {
        return; // headless: names, not traffic
    }
    if spec["type"] != "LoadBalancer" {
        problems.push(format!("{who}: type {}, want LoadBalancer", spec["type"]));
    }
    let pod = match chosen.as_slice() {
        [] => {
            problems.push(format!(
                "{who}: selector {selector:?} matches no ftpgate pod"
            ));
            return;
        }
        [one] if one.replicas == 1 || one.owner.starts_with("StatefulSet/") => *one,
        _ => {
            problems.push(format!(
                "{who}: selects several ftpgate pods ({}): passive connections would land on pods that never saw the session",
                chosen.iter().map(|p| p.name.as_str()).collect::<Vec<_>>().join(", ")
            ));
            return;
        }
    };
    let Some(gate) = gate_of(configs, pod) else {
        return;
    };
    let annotations = str_map(&svc["metadata"]["annotations"]);
    let aws =
        |k: &str| annotations.get(&format!("service.beta.kubernetes.io/aws-load-balancer-{k}"));
    let proxied = !gate.proxy_listen.is_empty();
    if !proxied && spec["externalTrafficPolicy"] != "Local" {
        problems.push(format!(
            "{who}: externalTrafficPolicy {}: want Local, so ftpgate sees client addresses (or PROXY protocol)",
            spec["externalTrafficPolicy"]
        ));
    }
    let ports = spec["ports"].as_array().cloned().unwrap_or_default();
    if ports.len() > 50 {
        problems.push(format!(
            "{who}: {} ports: an AWS NLB takes 50 listeners by default",
            ports.len()
        ));
    }
    let mut passive_seen: BTreeMap<u16, usize> = BTreeMap::new();
    let mut control = 0;
    for p in &ports {
        let port = p["port"]
            .as_u64()
            .and_then(|n| u16::try_from(n).ok())
            .unwrap_or(0);
        let target = if p["targetPort"].is_null() {
            Some(port)
        } else {
            pod.port(&p["targetPort"])
        };
        let Some(target) = target else {
            problems.push(format!(
                "{who}: port {port} targets {}, which is no container port of {}",
                p["targetPort"], pod.owner
            ));
            continue;
        };
        if gate.passive_ports().contains(&target) {
            *passive_seen.entry(target).or_default() += 1;
            if port != target {
                problems.push(format!(
                    "{who}: passive port {port} -> {target}: must keep its number (the reply names the port clients dial)"
                ));
            }
        } else if gate.control_ports().contains(&target) {
            control += 1;
            if proxied && !gate.proxy_listen.iter().any(|a| a.port() == target) {
                problems.push(format!(
                    "{who}: port {port} -> {target}, the plain listener, but the balancer sends PROXY headers"
                ));
            }
            if port != 21 {
                problems.push(format!("{who}: control port is {port}, clients expect 21"));
            }
        } else if Some(target) == gate.admin.map(|a| a.port()) {
            problems.push(format!(
                "{who}: exposes the admin port {target} (no authentication) on the balancer"
            ));
        } else {
            problems.push(format!("{who}: port {port} -> {target} is no ftpgate port"));
        }
    }
    if control != 1 {
        problems.push(format!("{who}: {control} control ports, want 1"));
    }
    for p in gate.passive_ports() {
        match passive_seen.get(&p) {
            None => problems.push(format!(
                "{who}: passive port {p} of {} is not listed",
                pod.name
            )),
            Some(1) => {}
            Some(n) => problems.push(format!("{who}: passive port {p} listed {n} times")),
        }
    }
    // PROXY protocol: both ends or neither (AWS Load Balancer Controller).
    let sends_proxy = aws("proxy-protocol").is_some_and(|v| v == "*");
    if proxied && aws("type").is_some() {
        if !sends_proxy {
            problems.push(format!(
                "{who}: {} expects PROXY headers, the NLB does not send them (aws-load-balancer-proxy-protocol: \"*\")",
                pod.name
            ));
        }
        if !aws("target-group-attributes")
            .is_some_and(|a| a.contains("preserve_client_ip.enabled=false"))
        {
            problems.push(format!(
                "{who}: client IP preservation is not off: connections would come from clients, outside proxy_protocol_from {:?}",
                gate.proxy_from
            ));
        }
    }
    if sends_proxy && !proxied {
        problems.push(format!(
            "{who}: the NLB sends PROXY headers but {} has no proxy_protocol_listen",
            pod.name
        ));
    }
}

/// Whether a NetworkPolicy port entry admits `port`.
fn np_admits(entry: &Value, port: u16) -> bool {
    let Some(first) = entry["port"].as_u64() else {
        return entry["port"].is_null(); // every port
    };
    let last = entry["endPort"].as_u64().unwrap_or(first);
    (first..=last).contains(&u64::from(port))
}

fn check_network_policy(np: &Value, pods: &[Pod], configs: &Configs, problems: &mut Vec<String>) {
    let who = id(np);
    let selector = str_map(&np["spec"]["podSelector"]["matchLabels"]);
    let rules = np["spec"]["ingress"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    // (from anyone, port) for each rule's ports.
    let admitted = |port: u16| -> Vec<bool> {
        rules
            .iter()
            .filter(|r| {
                r["ports"]
                    .as_array()
                    .is_none_or(|ps| ps.iter().any(|e| np_admits(e, port)))
            })
            .map(|r| r["from"].as_array().is_none_or(|f| f.is_empty()))
            .collect()
    };
    for pod in pods.iter().filter(|p| selects(&selector, &p.labels)) {
        let Some(gate) = gate_of(configs, pod) else {
            continue;
        };
        let wanted = gate.control_ports().into_iter().filter(|p| {
            gate.listen
                .iter()
                .chain(&gate.proxy_listen)
                .any(|a| a.port() == *p && !a.ip().is_loopback())
        });
        for port in wanted.chain(gate.passive_ports()) {
            if admitted(port).is_empty() {
                problems.push(format!("{who}: does not admit port {port} of {}", pod.name));
            }
        }
        if let Some(a) = gate.admin {
            let rules = admitted(a.port());
            if rules.is_empty() {
                problems.push(format!(
                    "{who}: nobody may scrape the admin port {}",
                    a.port()
                ));
            } else if rules.iter().any(|anyone| *anyone) {
                problems.push(format!(
                    "{who}: admits everyone to the admin port {} (no authentication)",
                    a.port()
                ));
            }
        }
    }
}

fn check_pod_monitor(pm: &Value, pods: &[Pod], configs: &Configs, problems: &mut Vec<String>) {
    let who = id(pm);
    let selector = str_map(&pm["spec"]["selector"]["matchLabels"]);
    let chosen: Vec<&Pod> = pods
        .iter()
        .filter(|p| selects(&selector, &p.labels))
        .collect();
    if chosen.is_empty() {
        problems.push(format!("{who}: selects no ftpgate pod"));
    }
    let endpoints = pm["spec"]["podMetricsEndpoints"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for pod in chosen {
        let Some(admin) = gate_of(configs, pod).and_then(|g| g.admin) else {
            continue;
        };
        let scrapes = endpoints.iter().any(|e| {
            pod.port(&e["port"]) == Some(admin.port())
                && e["path"].as_str().unwrap_or("/metrics") == "/metrics"
        });
        if !scrapes {
            problems.push(format!(
                "{who}: no endpoint scrapes /metrics on {}'s admin port {}",
                pod.name,
                admin.port()
            ));
        }
    }
}

fn check_pdb(pdb: &Value, pods: &[Pod], problems: &mut Vec<String>) {
    let who = id(pdb);
    let selector = str_map(&pdb["spec"]["selector"]["matchLabels"]);
    let chosen: Vec<&Pod> = pods
        .iter()
        .filter(|p| selects(&selector, &p.labels))
        .collect();
    let Some(first) = chosen.first() else {
        problems.push(format!("{who}: selects no ftpgate pod"));
        return;
    };
    if let Some(min) = pdb["spec"]["minAvailable"].as_u64() {
        if min >= first.replicas {
            problems.push(format!(
                "{who}: minAvailable {min} with {} replicas: no node could ever be drained",
                first.replicas
            ));
        }
    }
}

// === tests: manifests ===

/// Every YAML file under deploy/kubernetes is a kustomization, a resource
/// of one (validated here as it is) or a patch (validated in the builds).
#[test]
fn kubernetes_manifest_files_validate() {
    let test = "kubernetes_manifest_files_validate";
    let Some(py) = python_or_skip(test) else {
        return;
    };
    let mut files = Vec::new();
    let mut stack = vec![k8s_dir()];
    while let Some(dir) = stack.pop() {
        for e in fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "yaml" || x == "yml") {
                files.push(p);
            }
        }
    }
    files.sort();
    let mut resources = BTreeSet::new();
    let mut patches = BTreeSet::new();
    let mut kustomizations = 0;
    for k in files.iter().filter(|f| f.ends_with("kustomization.yaml")) {
        kustomizations += 1;
        let dir = k.parent().unwrap();
        let doc = &parse_yaml(
            &py,
            &fs::read_to_string(k).unwrap(),
            &k.display().to_string(),
        )[0];
        for r in doc["resources"].as_array().into_iter().flatten() {
            let p = dir.join(r.as_str().unwrap());
            if p.is_file() {
                resources.insert(p.canonicalize().unwrap());
            }
        }
        for p in doc["patches"].as_array().into_iter().flatten() {
            if let Some(path) = p["path"].as_str() {
                patches.insert(dir.join(path).canonicalize().unwrap());
            }
        }
    }
    assert_eq!(kustomizations, BUILDS.len(), "kustomization.yaml files");
    let mut problems = Vec::new();
    let mut validated = Vec::new();
    for f in files.iter().filter(|f| !f.ends_with("kustomization.yaml")) {
        let rel = f.strip_prefix(root()).unwrap().display().to_string();
        let canon = f.canonicalize().unwrap();
        if patches.contains(&canon) {
            continue;
        }
        if !resources.contains(&canon) {
            problems.push(format!(
                "{rel}: listed by no kustomization (resources or patches)"
            ));
            continue;
        }
        let parsed = validate_yaml(&py, &fs::read_to_string(f).unwrap(), &rel);
        if parsed.docs.is_empty() {
            problems.push(format!("{rel}: no YAML document"));
        }
        problems.extend(parsed.errors);
        validated.extend(parsed.ok.into_iter().map(|o| format!("{rel}: {o}")));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    // 6 base files (ConfigMap, Deployment, Service, PDB, NetworkPolicy,
    // PodMonitor) and scale-out's 3 (ConfigMap, StatefulSet, 4 Services):
    // 12 documents, each against every version except the PodMonitor.
    let want = 11 * K8S_VERSIONS.len() + 1;
    assert_eq!(
        validated.len(),
        want,
        "validations (a manifest went missing?):\n{}",
        validated.join("\n")
    );
}

/// The base and both overlays build with kustomize, and what they build
/// validates and holds together.
#[test]
fn kubernetes_kustomize_builds_validate_and_agree() {
    let test = "kubernetes_kustomize_builds_validate_and_agree";
    let (Some(py), Some(kubectl)) = (python_or_skip(test), kubectl_or_skip(test)) else {
        return;
    };
    let mut problems = Vec::new();
    for (dir, parsed) in build_all(&py, &kubectl) {
        problems.extend(parsed.errors.iter().cloned());
        let ids: BTreeSet<String> = parsed.docs.iter().map(id).collect();
        let want: &[&str] = match dir {
            "base" | "overlays/aws-nlb" => &[
                "ConfigMap/ftpgate",
                "Deployment/ftpgate",
                "Service/ftpgate",
                "PodDisruptionBudget/ftpgate",
                "NetworkPolicy/ftpgate",
                "PodMonitor/ftpgate",
            ],
            _ => &[
                "ConfigMap/ftpgate-pods",
                "StatefulSet/ftpgate",
                "Service/ftpgate-0",
                "Service/ftpgate-1",
                "Service/ftpgate-2",
                "Service/ftpgate-pods",
                "PodDisruptionBudget/ftpgate",
                "NetworkPolicy/ftpgate",
                "PodMonitor/ftpgate",
            ],
        };
        let want: BTreeSet<String> = want.iter().map(|s| s.to_string()).collect();
        if ids != want {
            problems.push(format!("build of {dir}: objects {ids:?}, want {want:?}"));
        }
        let validations = parsed.ok.len();
        let expect = (want.len() - 1) * K8S_VERSIONS.len() + 1;
        if validations != expect {
            problems.push(format!(
                "build of {dir}: {validations} validations, want {expect}: {:?}",
                parsed.ok
            ));
        }
        problems.extend(
            check_set(&parsed.docs)
                .into_iter()
                .map(|p| format!("{dir}: {p}")),
        );
        // The image the kustomization points at, in every workload.
        for d in parsed
            .docs
            .iter()
            .filter(|d| matches!(kind(d), "Deployment" | "StatefulSet"))
        {
            let image = d["spec"]["template"]["spec"]["containers"][0]["image"]
                .as_str()
                .unwrap_or("");
            if !image.ends_with("/ftpgate:0.1.0") {
                problems.push(format!("{dir}: {} runs image {image:?}", id(d)));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// Broken copies of the built objects: each check reports its mistake.
#[test]
fn kubernetes_checks_catch_mistakes() {
    let test = "kubernetes_checks_catch_mistakes";
    let (Some(py), Some(kubectl)) = (python_or_skip(test), kubectl_or_skip(test)) else {
        return;
    };
    let builds: BTreeMap<&str, Vec<Value>> = build_all(&py, &kubectl)
        .into_iter()
        .map(|(d, p)| (d, p.docs))
        .collect();
    type Mutation = fn(&mut Vec<Value>);
    fn at<'a>(docs: &'a mut [Value], want: &str) -> &'a mut Value {
        docs.iter_mut()
            .find(|d| id(d) == want)
            .unwrap_or_else(|| panic!("no {want}"))
    }
    fn container(d: &mut Value) -> &mut Value {
        &mut d["spec"]["template"]["spec"]["containers"][0]
    }
    let cases: Vec<(&str, &str, Mutation)> = vec![
        ("base", "terminationGracePeriodSeconds 20", |d| {
            at(d, "Deployment/ftpgate")["spec"]["template"]["spec"]
                ["terminationGracePeriodSeconds"] = json!(20);
        }),
        ("base", "no preStop sleep", |d| {
            container(at(d, "Deployment/ftpgate"))["lifecycle"] =
                json!({"preStop": {"exec": {"command": ["sleep", "10"]}}});
        }),
        ("base", "readinessProbe asks \"/healthz\"", |d| {
            container(at(d, "Deployment/ftpgate"))["readinessProbe"]["httpGet"]["path"] =
                json!("/healthz");
        }),
        ("base", "runAsNonRoot is not true", |d| {
            at(d, "Deployment/ftpgate")["spec"]["template"]["spec"]["securityContext"]
                ["runAsNonRoot"] = json!(false);
        }),
        ("base", "readOnlyRootFilesystem is not true", |d| {
            container(at(d, "Deployment/ftpgate"))["securityContext"]["readOnlyRootFilesystem"] =
                json!(false);
        }),
        ("base", "2 replicas behind one Service", |d| {
            at(d, "Deployment/ftpgate")["spec"]["replicas"] = json!(2);
        }),
        ("base", "passive port 50007 of ftpgate is not listed", |d| {
            let ports = at(d, "Service/ftpgate")["spec"]["ports"]
                .as_array_mut()
                .unwrap();
            ports.retain(|p| p["port"] != 50007);
        }),
        (
            "base",
            "passive port 60003 -> 50003: must keep its number",
            |d| {
                let ports = at(d, "Service/ftpgate")["spec"]["ports"]
                    .as_array_mut()
                    .unwrap();
                for p in ports.iter_mut().filter(|p| p["port"] == 50003) {
                    p["port"] = json!(60003);
                }
            },
        ),
        ("base", "externalTrafficPolicy \"Cluster\"", |d| {
            at(d, "Service/ftpgate")["spec"]["externalTrafficPolicy"] = json!("Cluster");
        }),
        ("base", "exposes the admin port 9121", |d| {
            let ports = at(d, "Service/ftpgate")["spec"]["ports"]
                .as_array_mut()
                .unwrap();
            ports.push(json!({"name": "admin", "port": 9121, "targetPort": "admin"}));
        }),
        (
            "base",
            "ConfigMap ftpgate key ftpgate.toml: ftpgate check failed",
            |d| {
                at(d, "ConfigMap/ftpgate")["data"]["ftpgate.toml"] = json!("listen = [\"0.0.0.0:2121\"]\nbackends = [\"10.0.1.11:21\"]\npassive_ports = \"50000-50019\"\nno_such_key = 1\n");
            },
        ),
        ("base", "does not admit port 50019", |d| {
            at(d, "NetworkPolicy/ftpgate")["spec"]["ingress"][0]["ports"][1]["endPort"] =
                json!(50018);
        }),
        ("base", "admits everyone to the admin port 9121", |d| {
            let rules = at(d, "NetworkPolicy/ftpgate")["spec"]["ingress"]
                .as_array_mut()
                .unwrap();
            rules[0]["ports"]
                .as_array_mut()
                .unwrap()
                .push(json!({"protocol": "TCP", "port": 9121}));
        }),
        ("base", "no endpoint scrapes /metrics", |d| {
            at(d, "PodMonitor/ftpgate")["spec"]["podMetricsEndpoints"][0]["port"] = json!("ftp");
        }),
        ("base", "minAvailable 1 with 1 replicas", |d| {
            let spec = &mut at(d, "PodDisruptionBudget/ftpgate")["spec"];
            spec.as_object_mut().unwrap().remove("maxUnavailable");
            spec["minAvailable"] = json!(1);
        }),
        ("overlays/aws-nlb", "the NLB does not send them", |d| {
            at(d, "Service/ftpgate")["metadata"]["annotations"]
                .as_object_mut()
                .unwrap()
                .remove("service.beta.kubernetes.io/aws-load-balancer-proxy-protocol");
        }),
        (
            "overlays/aws-nlb",
            "client IP preservation is not off",
            |d| {
                at(d, "Service/ftpgate")["metadata"]["annotations"]
                    ["service.beta.kubernetes.io/aws-load-balancer-target-group-attributes"] =
                    json!("preserve_client_ip.enabled=true");
            },
        ),
        (
            "overlays/aws-nlb",
            "the plain listener, but the balancer sends PROXY headers",
            |d| {
                let toml = at(d, "ConfigMap/ftpgate")["data"]["ftpgate.toml"]
                    .as_str()
                    .unwrap()
                    .replace(
                        "proxy_protocol_listen = [\"0.0.0.0:2121\"]",
                        "proxy_protocol_listen = [\"0.0.0.0:2123\"]\nlisten = [\"0.0.0.0:2121\"]",
                    );
                at(d, "ConfigMap/ftpgate")["data"]["ftpgate.toml"] = json!(toml);
            },
        ),
        ("overlays/scale-out", "selects several ftpgate pods", |d| {
            at(d, "Service/ftpgate-1")["spec"]["selector"]
                .as_object_mut()
                .unwrap()
                .remove("statefulset.kubernetes.io/pod-name");
        }),
        (
            "overlays/scale-out",
            "passive port 50020 of ftpgate-1 is not listed",
            |d| {
                at(d, "Service/ftpgate-2")["spec"]["selector"]
                    ["statefulset.kubernetes.io/pod-name"] = json!("ftpgate-1");
            },
        ),
        ("overlays/scale-out", "both advertise 203.0.113.11", |d| {
            let data = &mut at(d, "ConfigMap/ftpgate-pods")["data"];
            let t = data["ftpgate-1.toml"]
                .as_str()
                .unwrap()
                .replace("203.0.113.12", "203.0.113.11");
            data["ftpgate-1.toml"] = json!(t);
        }),
        (
            "overlays/scale-out",
            "reads key ftpgate-3.toml of ConfigMap ftpgate-pods",
            |d| {
                at(d, "StatefulSet/ftpgate")["spec"]["replicas"] = json!(4);
            },
        ),
        ("overlays/scale-out", "but no env POD_NAME", |d| {
            container(at(d, "StatefulSet/ftpgate"))["env"] = json!([]);
        }),
    ];
    for (dir, docs) in &builds {
        let problems = check_set(docs);
        assert!(
            problems.is_empty(),
            "{dir} must pass unchanged: {problems:#?}"
        );
    }
    let mut missed = Vec::new();
    for (dir, want, mutate) in cases {
        let clean = &builds[dir];
        let mut docs = clean.clone();
        mutate(&mut docs);
        let problems = check_set(&docs);
        if !problems.iter().any(|p| p.contains(want)) {
            missed.push(format!(
                "{dir}: want a problem containing {want:?}, got {problems:#?}"
            ));
        }
    }
    assert!(missed.is_empty(), "{}", missed.join("\n"));
}

// === the Grafana dashboard ===

/// Reads one PromQL expression per line. Prints `sel\tI\tMETRIC\tLABELS`
/// for each vector selector (LABELS: its matchers' names), `grp\tI\tLABEL`
/// for each label of `by`, `without`, `on`, `ignoring` and `group_*`, and
/// `err\tI\tMESSAGE` for an expression that does not parse.
const PROMQL_PY: &str = r#"
import sys
import promql_parser as p
def out(*f):
    print("\t".join(str(x).replace("\t", " ").replace("\n", " ") for x in f))
for i, line in enumerate(sys.stdin.read().split("\n")[:-1]):
    try:
        expr = p.parse(line)
    except Exception as e:
        out("err", i, e)
        continue
    def visit(n):
        if isinstance(n, p.VectorSelector):
            ms = n.matchers.matchers + [m for ors in n.matchers.or_matchers for m in ors]
            name = n.name or next((m.value for m in ms if m.name == "__name__"), "")
            out("sel", i, name, ",".join(m.name for m in ms if m.name != "__name__"))
        elif isinstance(n, p.MatrixSelector):
            visit(n.vector_selector)
        elif isinstance(n, p.AggregateExpr):
            if n.modifier is not None:
                for l in n.modifier.labels:
                    out("grp", i, l)
            visit(n.expr)
            if n.param is not None:
                visit(n.param)
        elif isinstance(n, p.Call):
            for a in n.args:
                visit(a)
        elif isinstance(n, p.BinaryExpr):
            m = n.modifier
            if m is not None:
                if m.matching is not None:
                    for l in m.matching.labels:
                        out("grp", i, l)
                for l in m.group_labels or []:
                    out("grp", i, l)
            visit(n.lhs)
            visit(n.rhs)
        elif isinstance(n, (p.ParenExpr, p.UnaryExpr, p.SubqueryExpr)):
            visit(n.expr)
        elif isinstance(n, (p.NumberLiteral, p.StringLiteral)):
            pass
        else:
            out("err", i, "unhandled node " + type(n).__name__)
    visit(expr)
"#;

/// One query of the dashboard, where it is and what it names.
#[derive(Debug, Default)]
struct Query {
    place: String,
    expr: String,
    /// (metric, matcher label names).
    selectors: Vec<(String, Vec<String>)>,
    /// Labels it groups or matches by.
    grouping: Vec<String>,
}

/// Grafana's interval variables, which PromQL cannot parse, as durations.
fn substitute_grafana_intervals(expr: &str) -> String {
    ["$__rate_interval", "$__interval", "$__range"]
        .iter()
        .fold(expr.to_string(), |e, v| e.replace(v, "5m"))
}

/// Every query of the dashboard (panel targets and query variables), with
/// structural problems of the dashboard itself.
fn dashboard_queries(dash: &Value) -> (Vec<Query>, Vec<String>) {
    let mut problems = Vec::new();
    let mut queries = Vec::new();
    if dash["uid"] != "ftpgate" || dash["title"] != "ftpgate" {
        problems.push("uid and title must be \"ftpgate\"".into());
    }
    let vars = dash["templating"]["list"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let has_ds = vars.iter().any(|v| {
        v["name"] == "datasource" && v["type"] == "datasource" && v["query"] == "prometheus"
    });
    if !has_ds {
        problems.push("no `datasource` variable of type prometheus".into());
    }
    for v in vars.iter().filter(|v| v["type"] == "query") {
        let q = v["query"]["query"]
            .as_str()
            .or(v["query"].as_str())
            .unwrap_or("");
        let place = format!("variable {}", v["name"]);
        // label_values(SELECTOR, LABEL)
        let inner = q
            .strip_prefix("label_values(")
            .and_then(|r| r.strip_suffix(')'))
            .and_then(|r| r.rsplit_once(','));
        match inner {
            Some((sel, label)) => queries.push(Query {
                place,
                expr: sel.trim().to_string(),
                grouping: vec![label.trim().to_string()],
                ..Default::default()
            }),
            None => problems.push(format!(
                "{place}: {q:?} is not label_values(SELECTOR, LABEL)"
            )),
        }
    }
    let mut ids = BTreeSet::new();
    let panels = dash["panels"].as_array().cloned().unwrap_or_default();
    if panels.is_empty() {
        problems.push("no panels".into());
    }
    for p in panels.iter().flat_map(|p| {
        std::iter::once(p.clone()).chain(p["panels"].as_array().cloned().unwrap_or_default())
    }) {
        let title = p["title"].as_str().unwrap_or("").to_string();
        if !ids.insert(p["id"].as_u64().unwrap_or(0)) {
            problems.push(format!("panel {title:?}: id {} used twice", p["id"]));
        }
        let g = &p["gridPos"];
        let (x, w) = (g["x"].as_u64().unwrap_or(99), g["w"].as_u64().unwrap_or(99));
        if x + w > 24 || g["h"].as_u64().is_none() || g["y"].as_u64().is_none() {
            problems.push(format!(
                "panel {title:?}: gridPos {g} outside the 24-column grid"
            ));
        }
        if p["type"] == "row" {
            continue;
        }
        if p["datasource"]["uid"] != "${datasource}" {
            problems.push(format!(
                "panel {title:?}: datasource {}, want ${{datasource}}",
                p["datasource"]
            ));
        }
        let targets = p["targets"].as_array().cloned().unwrap_or_default();
        if targets.is_empty() {
            problems.push(format!("panel {title:?}: no queries"));
        }
        let mut refs = BTreeSet::new();
        for t in targets {
            let r = t["refId"].as_str().unwrap_or("").to_string();
            if !refs.insert(r.clone()) {
                problems.push(format!("panel {title:?}: refId {r:?} used twice"));
            }
            let expr = t["expr"].as_str().unwrap_or("").to_string();
            if !expr.contains("job=~\"$job\"") || !expr.contains("instance=~\"$instance\"") {
                problems.push(format!(
                    "panel {title:?} {r}: not filtered by $job and $instance: {expr}"
                ));
            }
            queries.push(Query {
                place: format!("panel {title:?} query {r}"),
                expr,
                ..Default::default()
            });
        }
    }
    (queries, problems)
}

/// Parses every query with promql-parser; fills in what each names.
fn parse_queries(py: &Path, queries: &mut [Query]) -> Vec<String> {
    let mut input = String::new();
    for q in queries.iter() {
        assert!(
            !q.expr.contains('\n'),
            "{}: a query on several lines",
            q.place
        );
        input.push_str(&substitute_grafana_intervals(&q.expr));
        input.push('\n');
    }
    let mut cmd = Command::new(py);
    cmd.args(["-c", PROMQL_PY]);
    let out = clients::run(cmd, Some(input.as_bytes()), RUN_TIMEOUT);
    assert!(out.ok, "the PromQL driver failed: {out:?}");
    let mut problems = Vec::new();
    for line in out.stdout_str().lines() {
        let f: Vec<&str> = line.split('\t').collect();
        let i: usize = f.get(1).and_then(|i| i.parse().ok()).unwrap_or(usize::MAX);
        let Some(q) = queries.get_mut(i) else {
            panic!("PromQL driver: unexpected line {line:?}");
        };
        match (f[0], f.len()) {
            ("sel", 4) => q.selectors.push((
                f[2].to_string(),
                f[3].split(',')
                    .filter(|l| !l.is_empty())
                    .map(String::from)
                    .collect(),
            )),
            ("grp", 3) => q.grouping.push(f[2].to_string()),
            ("err", 3) => {
                problems.push(format!("{}: does not parse: {}: {}", q.place, f[2], q.expr))
            }
            _ => panic!("PromQL driver: unexpected line {line:?}"),
        }
    }
    for q in queries.iter().filter(|q| q.selectors.is_empty()) {
        if !problems.iter().any(|p| p.starts_with(&q.place)) {
            problems.push(format!("{}: names no metric: {}", q.place, q.expr));
        }
    }
    problems
}

/// Series names in a Prometheus text exposition, with their label names,
/// and the type of each family (`# TYPE`).
fn exposition(text: &str) -> (BTreeMap<String, BTreeSet<String>>, BTreeMap<String, String>) {
    let mut series: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut types = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            if let Some((name, ty)) = rest.split_once(' ') {
                types.insert(name.to_string(), ty.to_string());
            }
            continue;
        }
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let (head, _) = line.rsplit_once(' ').unwrap_or((line, ""));
        let (name, labels) = match head.split_once('{') {
            Some((n, l)) => (n, l.trim_end_matches('}')),
            None => (head, ""),
        };
        let entry = series.entry(name.to_string()).or_default();
        for pair in labels.split(',').filter(|p| !p.is_empty()) {
            if let Some((k, _)) = pair.split_once('=') {
                entry.insert(k.to_string());
            }
        }
    }
    (series, types)
}

/// What the queries name that `/metrics` does not have.
fn missing_in_metrics(
    queries: &[Query],
    series: &BTreeMap<String, BTreeSet<String>>,
    types: &BTreeMap<String, String>,
) -> Vec<String> {
    let mut problems = Vec::new();
    for q in queries {
        let mut known: BTreeSet<String> = TARGET_LABELS.iter().map(|s| s.to_string()).collect();
        for (metric, matchers) in &q.selectors {
            let Some(labels) = series.get(metric) else {
                let hint = if types.get(metric).is_some_and(|t| t == "histogram") {
                    " (a histogram: use _bucket, _sum or _count)"
                } else {
                    ""
                };
                problems.push(format!("{}: {metric} is not on /metrics{hint}", q.place));
                continue;
            };
            known.extend(labels.iter().cloned());
            for m in matchers {
                if !labels.contains(m) && !TARGET_LABELS.contains(&m.as_str()) {
                    problems.push(format!(
                        "{}: {metric} has no label {m:?} (it has {labels:?})",
                        q.place
                    ));
                }
            }
        }
        for g in &q.grouping {
            if !known.contains(g) {
                problems.push(format!(
                    "{}: groups by {g:?}, which none of its metrics has",
                    q.place
                ));
            }
        }
    }
    problems
}

/// The base name of a series: histograms by their family name.
fn family(series: &str, types: &BTreeMap<String, String>) -> String {
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = series.strip_suffix(suffix) {
            if types.get(base).is_some_and(|t| t == "histogram") {
                return base.to_string();
            }
        }
    }
    series.to_string()
}

/// One HTTP/1.0 GET; the status code and the body.
fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .unwrap_or_else(|e| panic!("connect to the admin listener {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, body.to_owned())
}

/// A control connection's first line (the greeting, or a refusal).
fn first_line(stream: &TcpStream) -> String {
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut line = String::new();
    let _ = BufReader::new(stream).read_line(&mut line);
    line
}

/// Every query of docs/grafana/ftpgate.json parses and names metrics and
/// labels that a running ftpgate serves, once sessions through a real vsftpd
/// (downloads, an upload, a listing, a refused login, a stray data
/// connection, a reload, a session over its limit, a dead backend) made its
/// labelled series appear.
#[test]
fn grafana_dashboard_queries_name_real_metrics() {
    let test = "grafana_dashboard_queries_name_real_metrics";
    let text = fs::read_to_string(root().join("docs/grafana/ftpgate.json")).unwrap();
    let dash: Value = serde_json::from_str(&text).expect("docs/grafana/ftpgate.json is JSON");
    let (mut queries, mut problems) = dashboard_queries(&dash);
    assert!(queries.len() >= 15, "only {} queries found", queries.len());
    let Some(py) = python_or_skip(test) else {
        return;
    };
    problems.extend(parse_queries(&py, &mut queries));
    assert!(problems.is_empty(), "{}", problems.join("\n"));

    if !peers::available_or_skip(ServerKind::Vsftpd, test) {
        return;
    }
    let data = peers::random_bytes(200_000, 16);
    let d2 = data.clone();
    let srv = FtpServer::start_with(ServerKind::Vsftpd, move |root| {
        peers::put_file(root, "file.bin", &d2);
    });
    // A backend that refuses connections: failed health checks.
    let dead = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let checks =
        "health_check = true\nhealth_check_interval = \"200ms\"\nhealth_check_timeout = \"1s\"\n";
    let gw = gateway::start(
        &[srv.addr, dead],
        &format!("admin_listen = \"127.0.0.1:0\"\n{checks}"),
    );
    let admin = gw.admin.expect("admin listener");
    let scrape = || {
        let (status, body) = http_get(admin, "/metrics");
        assert_eq!(status, 200, "{body}");
        body
    };
    let wait_for = |what: &str, ok: &dyn Fn(&str) -> bool| {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let body = scrape();
            if ok(&body) {
                return;
            }
            assert!(Instant::now() < deadline, "{what} never showed:\n{body}");
            thread::sleep(Duration::from_millis(100));
        }
    };
    let dead_down = format!("ftpgate_backend_up{{backend=\"{dead}\"}} 0");
    let live_up = format!("ftpgate_backend_up{{backend=\"{}\"}} 1", srv.addr);
    wait_for("backend health", &|b| {
        b.contains(&dead_down) && b.contains(&live_up)
    });

    let t = Target::for_server(&srv).via(gw.addr);
    let out = clients::curl_get(&t, "file.bin", Mode::Epsv);
    out.assert_ok("curl download (EPSV)");
    assert!(out.stdout == data, "downloaded bytes differ");
    clients::curl_get(&t, "file.bin", Mode::Pasv).assert_ok("curl download (PASV)");
    clients::curl_list(&t, "", Mode::Epsv).assert_ok("curl listing");
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("up.bin");
    fs::write(&local, &data).unwrap();
    clients::curl_put(&t, &local, "upload/up.bin", Mode::Epsv).assert_ok("curl upload");
    let stranger = Target::new("127.0.0.1", gw.port(), "no-such-user", "x");
    assert!(
        !clients::curl_list(&stranger, "", Mode::Epsv).ok,
        "a non-anonymous login to this vsftpd must fail"
    );
    // A data connection nobody prepared.
    drop(TcpStream::connect(("127.0.0.1", gw.passive_ports.0)).unwrap());
    // A reload that allows one session per client, and a second session.
    let reload = format!(
        "listen = [\"{}\"]\nbackends = [\"{}\", \"{dead}\"]\npublic_address = \"127.0.0.1\"\npassive_ports = \"{}-{}\"\nadmin_listen = \"{admin}\"\n{checks}max_sessions_per_client = 1\n",
        gw.addr, srv.addr, gw.passive_ports.0, gw.passive_ports.1
    );
    gw.reload(&reload).expect("reload");
    wait_for("the end of the earlier sessions", &|b| {
        !b.lines()
            .any(|l| l.starts_with("ftpgate_sessions_active{") && !l.ends_with(" 0"))
    });
    let first = TcpStream::connect(gw.addr).unwrap();
    assert!(
        first_line(&first).starts_with("220"),
        "the first session is greeted"
    );
    let second = TcpStream::connect(gw.addr).unwrap();
    let refused = first_line(&second);
    assert!(
        refused.starts_with("421"),
        "the second session is refused: {refused:?}"
    );
    drop((first, second));

    wait_for("every labelled series", &|b| {
        [
            "ftpgate_sessions_total{",
            "ftpgate_transfers_total{",
            "ftpgate_logins_total{result=\"failure\"}",
            "ftpgate_data_connections_refused_total{reason=\"no_pending_transfer\"}",
            "ftpgate_health_check_failures_total{",
            "ftpgate_health_check_duration_seconds_bucket{",
            "ftpgate_limit_hits_total{limit=\"max_sessions_per_client\"}",
            "ftpgate_config_reloads_total{result=\"success\"}",
        ]
        .iter()
        .all(|s| b.contains(s))
    });
    let (series, types) = exposition(&scrape());
    let mut problems = missing_in_metrics(&queries, &series, &types);
    let shown: BTreeSet<String> = queries
        .iter()
        .flat_map(|q| q.selectors.iter().map(|(m, _)| family(m, &types)))
        .collect();
    for m in DASHBOARD_MUST_SHOW {
        if !shown.contains(m) {
            problems.push(format!("no panel shows {m}"));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The dashboard checks can fail: a query with a typo in a metric name, a
/// label a metric does not have, a histogram named without a suffix, a
/// syntax error.
#[test]
fn grafana_dashboard_checks_catch_mistakes() {
    let test = "grafana_dashboard_checks_catch_mistakes";
    let Some(py) = python_or_skip(test) else {
        return;
    };
    let metrics = "# TYPE ftpgate_logins_total counter\nftpgate_logins_total{result=\"success\"} 1\n# TYPE ftpgate_reply_latency_seconds histogram\nftpgate_reply_latency_seconds_bucket{le=\"0.1\"} 1\nftpgate_reply_latency_seconds_sum 0.01\nftpgate_reply_latency_seconds_count 1\n";
    let (series, types) = exposition(metrics);
    let cases = [
        (
            "sum by (result) (rate(ftpgate_logins_total{job=~\"$job\"}[$__rate_interval]))",
            None,
        ),
        (
            "histogram_quantile(0.9, sum by (le) (rate(ftpgate_reply_latency_seconds_bucket[5m])))",
            None,
        ),
        (
            "rate(ftpgate_login_total[5m])",
            Some("ftpgate_login_total is not on /metrics"),
        ),
        (
            "rate(ftpgate_logins_total{outcome=\"x\"}[5m])",
            Some("has no label \"outcome\""),
        ),
        (
            "sum by (outcome) (rate(ftpgate_logins_total[5m]))",
            Some("groups by \"outcome\""),
        ),
        (
            "rate(ftpgate_reply_latency_seconds[5m])",
            Some("a histogram: use _bucket"),
        ),
        ("sum(rate(ftpgate_logins_total[5m])", Some("does not parse")),
        (
            "histogram_quantile(ftpgate_reply_latency_seconds_bucket)",
            Some("does not parse"),
        ),
    ];
    let mut queries: Vec<Query> = cases
        .iter()
        .enumerate()
        .map(|(i, (e, _))| Query {
            place: format!("case {i}"),
            expr: e.to_string(),
            ..Default::default()
        })
        .collect();
    let mut problems = parse_queries(&py, &mut queries);
    problems.extend(missing_in_metrics(&queries, &series, &types));
    for (i, (expr, want)) in cases.iter().enumerate() {
        let place = format!("case {i}:");
        let found: Vec<&String> = problems.iter().filter(|p| p.starts_with(&place)).collect();
        match want {
            None => assert!(found.is_empty(), "{expr}: {found:?}"),
            Some(w) => assert!(
                found.iter().any(|p| p.contains(w)),
                "{expr}: want {w:?}, got {found:?}"
            ),
        }
    }
}

// === beside an HTTP proxy: the HAProxy recipe ===

/// A child process (HAProxy, an HTTP server), killed by PID on drop.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `text` with each `(from, to)` replaced in turn; every `from` must occur,
/// so the example files and this test cannot drift apart silently.
fn substitute(text: &str, what: &str, pairs: &[(&str, String)]) -> String {
    pairs.iter().fold(text.to_string(), |t, (from, to)| {
        assert!(t.contains(from), "{what} no longer contains {from:?}");
        t.replace(from, to)
    })
}

/// Waits until something listens on every address of `addrs`.
fn wait_listening(addrs: &[SocketAddr], what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !addrs.iter().all(|a| TcpListener::bind(a).is_err()) {
        assert!(
            Instant::now() < deadline,
            "{what} does not listen on all of {addrs:?}"
        );
        thread::sleep(Duration::from_millis(50));
    }
}

/// The README recipe for an HAProxy that keeps HTTP: the exact files of
/// docs/examples (haproxy-beside-http.cfg, behind-haproxy.toml) with
/// loopback addresses, a real HAProxy, the real ftpgate binary, vsftpd and
/// a Python HTTP server; curl fetches a page and FTP files (EPSV and PASV)
/// through the one HAProxy address.
#[test]
fn http_proxy_recipe_haproxy_keeps_http_and_passes_ftp() {
    use std::net::Ipv4Addr;
    let test = "http_proxy_recipe_haproxy_keeps_http_and_passes_ftp";
    let haproxy = ["/usr/sbin/haproxy", "/usr/local/sbin/haproxy"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists());
    let Some(haproxy) = haproxy else {
        assert!(
            !peers::peers_required(),
            "FTPGATE_REQUIRE_PEERS=1 but haproxy is not installed; run scripts/install-test-deps.sh as root"
        );
        println!("SKIP {test}: haproxy not installed");
        return;
    };
    if !peers::available_or_skip(ServerKind::Vsftpd, test) {
        return;
    }
    const FRONT: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 20);
    const GATE: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 21);
    let data = peers::random_bytes(300_000, 17);
    let d2 = data.clone();
    let srv = FtpServer::start_with(ServerKind::Vsftpd, move |root| {
        peers::put_file(root, "file.bin", &d2);
    });

    // The web server HAProxy keeps serving.
    let web_root = tempfile::tempdir().unwrap();
    fs::write(web_root.path().join("index.html"), "the web site\n").unwrap();
    let web = SocketAddr::from(([127, 0, 0, 1], peers::free_port()));
    let _web = Child(
        Command::new("/usr/bin/python3")
            .args(["-m", "http.server", "--bind", "127.0.0.1"])
            .arg(web.port().to_string())
            .arg("--directory")
            .arg(web_root.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("python3 -m http.server"),
    );
    wait_listening(&[web], "python3 -m http.server");

    let ctl = crate::scaleout::port_free_on_all(&[FRONT]);
    let http = crate::scaleout::port_free_on_all(&[FRONT]);
    let pp = crate::scaleout::port_free_on_all(&[GATE]);
    let (first, last) = crate::scaleout::free_range_on(&[FRONT, GATE], 20);
    let range = format!("{first}-{last}");
    let dir = tempfile::tempdir().unwrap();

    let gate_cfg = substitute(
        &fs::read_to_string(root().join("docs/examples/behind-haproxy.toml")).unwrap(),
        "docs/examples/behind-haproxy.toml",
        &[
            ("10.0.0.5:2121", format!("{GATE}:{pp}")),
            ("10.0.0.4/32", "127.0.0.0/8".into()),
            ("\"10.0.0.5\"", format!("\"{GATE}\"")),
            ("10.0.1.11:21", srv.addr.to_string()),
            ("203.0.113.10", FRONT.to_string()),
            ("50000-50019", range.clone()),
        ],
    );
    let _gate = crate::scaleout::Ftpgate::start(&gate_cfg).expect("ftpgate starts");

    let hap_cfg = substitute(
        &fs::read_to_string(root().join("docs/examples/haproxy-beside-http.cfg")).unwrap(),
        "docs/examples/haproxy-beside-http.cfg",
        &[
            ("203.0.113.10:50000-50019", format!("{FRONT}:{range}")),
            ("203.0.113.10:80", format!("{FRONT}:{http}")),
            ("203.0.113.10:21", format!("{FRONT}:{ctl}")),
            ("10.0.0.20:8080", web.to_string()),
            ("10.0.0.5:2121", format!("{GATE}:{pp}")),
            ("server gate 10.0.0.5 ", format!("server gate {GATE} ")),
        ],
    );
    let cfg = dir.path().join("haproxy.cfg");
    fs::write(&cfg, &hap_cfg).unwrap();
    let mut check = Command::new(&haproxy);
    check.arg("-c").arg("-f").arg(&cfg);
    clients::run(check, None, RUN_TIMEOUT).assert_ok("haproxy -c");
    let _hap = Child(
        Command::new(&haproxy)
            .arg("-f")
            .arg(&cfg)
            .arg("-db")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("haproxy"),
    );
    let mut binds = vec![
        SocketAddr::from((FRONT, ctl)),
        SocketAddr::from((FRONT, http)),
    ];
    binds.extend((first..=last).map(|p| SocketAddr::from((FRONT, p))));
    wait_listening(&binds, "haproxy");

    let page = |when: &str| {
        let mut cmd = Command::new("curl");
        cmd.args(["-sS", "--max-time", "10"])
            .arg(format!("http://{FRONT}:{http}/"));
        let out = clients::run(cmd, None, RUN_TIMEOUT);
        out.assert_ok(&format!("HTTP through HAProxy {when}"));
        assert_eq!(out.stdout_str(), "the web site\n", "{when}");
    };
    page("before FTP");
    let t = Target::for_server(&srv).via(SocketAddr::from((FRONT, ctl)));
    for mode in [Mode::Epsv, Mode::Pasv] {
        let out = clients::curl_get(&t, "file.bin", mode);
        out.assert_ok(&format!("FTP download through HAProxy ({mode:?})"));
        assert!(out.stdout == data, "{mode:?}: downloaded bytes differ");
    }
    page("after FTP");
}
