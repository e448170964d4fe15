//! The packaging files, checked as far as they can be without a container
//! engine or a running systemd:
//!
//! - `docker/ftpgate.toml` validates with the real binary, also with the
//!   flags `docker/compose.yaml` adds;
//! - `docker/compose.yaml` parses as YAML (PyYAML, Debian's python3-yaml) and
//!   agrees with the config and the image: backend addresses, the passive
//!   range published 1:1, control and admin ports, the config mount;
//! - `docker/Dockerfile` has a build and a runtime stage, runs as a numeric
//!   non-root user, exposes the configured ports;
//! - `packaging/systemd/ftpgate.service` has its key lines and passes
//!   `systemd-analyze verify` where that exists.
//!
//! Each check returns the list of problems it found, and
//! `packaging_checks_catch_mistakes` feeds each one broken copies of the
//! files to show that it can fail.

use std::collections::BTreeMap;
use std::fs;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::clients::{self, Output};
use crate::peers;

const RUN_TIMEOUT: Duration = Duration::from_secs(30);

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    let p = root().join(rel);
    fs::read_to_string(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
}

fn ftpgate(args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ftpgate"));
    cmd.env_remove("RUST_LOG").args(args);
    clients::run(cmd, None, RUN_TIMEOUT)
}

#[track_caller]
fn assert_no_problems(what: &str, problems: &[String]) {
    assert!(problems.is_empty(), "{what}:\n  {}", problems.join("\n  "));
}

// === durations and ports ===

/// `500ms`, `30s`, `5m`, `1h`, `2min`, or a bare number of seconds.
fn duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: u64 = n.parse().ok()?;
    let secs = match unit.trim() {
        "ms" => return Some(Duration::from_millis(n)),
        "" | "s" | "sec" => n,
        "m" | "min" => n * 60,
        "h" => n * 3600,
        _ => return None,
    };
    Some(Duration::from_secs(secs))
}

/// `"50000-50099"` or `"2121"` as an inclusive range.
fn port_range(s: &str) -> Option<(u16, u16)> {
    match s.split_once('-') {
        Some((a, b)) => Some((a.trim().parse().ok()?, b.trim().parse().ok()?)),
        None => {
            let p = s.trim().parse().ok()?;
            Some((p, p))
        }
    }
}

// === docker/ftpgate.toml ===

/// What the container files must agree on, read from `docker/ftpgate.toml`.
#[derive(Debug)]
struct GateConfig {
    listen_ports: Vec<u16>,
    backends: Vec<String>,
    passive: (u16, u16),
    admin_port: Option<u16>,
    drain: Duration,
}

fn gate_config(text: &str) -> GateConfig {
    let t: toml::Table = text.parse().expect("docker/ftpgate.toml is TOML");
    let strings = |key: &str| -> Vec<String> {
        t.get(key)
            .and_then(|v| v.as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    };
    let string = |key: &str| t.get(key).and_then(|v| v.as_str()).map(String::from);
    let port_of = |a: &str| -> u16 {
        a.parse::<SocketAddr>()
            .unwrap_or_else(|e| panic!("{a}: not IP:PORT: {e}"))
            .port()
    };
    GateConfig {
        listen_ports: strings("listen").iter().map(|a| port_of(a)).collect(),
        backends: strings("backends"),
        passive: port_range(&string("passive_ports").unwrap_or("50000-50099".into()))
            .expect("passive_ports is FIRST-LAST"),
        admin_port: string("admin_listen").map(|a| port_of(&a)),
        drain: duration(&string("shutdown_drain_timeout").unwrap_or("30s".into()))
            .expect("shutdown_drain_timeout is a duration"),
    }
}

/// `ftpgate check` accepts the container's configuration as it is, and
/// prints it back with the values compose.yaml and the Dockerfile rely on.
#[test]
fn packaging_docker_config_validates() {
    let file = root().join("docker/ftpgate.toml");
    let out = ftpgate(&["check", "--config", file.to_str().unwrap()]);
    out.assert_ok("ftpgate check --config docker/ftpgate.toml");
    let text = out.stdout_str();
    for want in [
        "listen = [\"0.0.0.0:2121\"]",
        "backends = [\"172.28.0.11:21\", \"172.28.0.12:21\"]",
        "passive_ports = \"50000-50099\"",
        "passive_bind_address = \"0.0.0.0\"",
        "admin_listen = \"0.0.0.0:9121\"",
        "shutdown_drain_timeout = \"30s\"",
    ] {
        assert!(
            text.contains(want),
            "effective config lacks {want}:\n{text}"
        );
    }
}

// === docker/Dockerfile ===

/// One instruction: upper-case keyword, arguments, 0-based stage.
#[derive(Debug)]
struct Instruction {
    keyword: String,
    args: String,
    stage: usize,
}

/// Instructions with `\` continuations joined and comments dropped. Stage
/// numbers count `FROM`s (instructions before the first are stage 0 too).
fn instructions(dockerfile: &str) -> Vec<Instruction> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut stage = 0usize;
    let mut froms = 0usize;
    for line in dockerfile.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_empty()) {
            continue;
        }
        let (body, continues) = match trimmed.strip_suffix('\\') {
            Some(b) => (b, true),
            None => (trimmed, false),
        };
        current.push_str(body);
        current.push(' ');
        if continues {
            continue;
        }
        let full = std::mem::take(&mut current);
        let full = full.trim();
        if full.is_empty() {
            continue;
        }
        let (kw, args) = full.split_once(char::is_whitespace).unwrap_or((full, ""));
        let keyword = kw.to_ascii_uppercase();
        if keyword == "FROM" {
            stage = froms;
            froms += 1;
        }
        out.push(Instruction {
            keyword,
            args: args.trim().to_string(),
            stage,
        });
    }
    out
}

/// An exec-form (JSON array) argument list, None for shell form.
fn exec_form(args: &str) -> Option<Vec<String>> {
    let t: toml::Table = format!("v = {args}").parse().ok()?;
    t.get("v")?
        .as_array()?
        .iter()
        .map(|v| v.as_str().map(String::from))
        .collect()
}

/// The path after `--config` in an argument list.
fn config_arg(args: &[String]) -> Option<String> {
    let i = args.iter().position(|a| a == "--config" || a == "-c")?;
    args.get(i + 1).cloned()
}

/// What the image promises: where CMD points the config, the exposed ports.
#[derive(Debug, Default)]
struct Image {
    config_path: Option<String>,
    exposed: Vec<(u16, u16)>,
}

fn check_dockerfile(text: &str, config: &GateConfig) -> (Image, Vec<String>) {
    let mut problems = Vec::new();
    let mut image = Image::default();
    let ins = instructions(text);
    let froms: Vec<&Instruction> = ins.iter().filter(|i| i.keyword == "FROM").collect();
    if froms.len() < 2 {
        problems.push(format!(
            "{} FROM stage(s): want a build stage and a runtime stage",
            froms.len()
        ));
        return (image, problems);
    }
    let last = froms.len() - 1;
    if !froms[0].args.starts_with("rust:1.95-bookworm") {
        problems.push(format!(
            "build stage is FROM {}, want rust:1.95-bookworm",
            froms[0].args
        ));
    }
    let runtime = &froms[last].args;
    if !(runtime.starts_with("gcr.io/distroless/cc-debian12")
        || runtime.starts_with("debian:bookworm-slim"))
    {
        problems.push(format!(
            "runtime stage is FROM {runtime}: want distroless/cc-debian12 or debian:bookworm-slim (the build stage's glibc)"
        ));
    }
    if !ins.iter().any(|i| {
        i.stage < last
            && i.keyword == "RUN"
            && i.args.contains("cargo build")
            && i.args.contains("--release")
            && i.args.contains("--locked")
    }) {
        problems.push("no `cargo build --release --locked` in a build stage".into());
    }
    let final_stage: Vec<&Instruction> = ins.iter().filter(|i| i.stage == last).collect();
    match final_stage.iter().rev().find(|i| i.keyword == "USER") {
        None => problems.push("the runtime stage sets no USER: it would run as root".into()),
        Some(u) => {
            let mut parts = u.args.split(':');
            let user = parts.next().unwrap_or("");
            let group = parts.next();
            match user.parse::<u32>() {
                Ok(0) => problems.push(format!("USER {}: uid 0 is root", u.args)),
                Ok(_) => {}
                Err(_) => problems.push(format!(
                    "USER {}: want a numeric uid (runAsNonRoot can only verify numbers)",
                    u.args
                )),
            }
            if group.is_some_and(|g| g == "0" || g == "root") {
                problems.push(format!("USER {}: group 0 is root's", u.args));
            }
        }
    }
    let entrypoint = final_stage
        .iter()
        .rev()
        .find(|i| i.keyword == "ENTRYPOINT")
        .and_then(|i| exec_form(&i.args));
    match &entrypoint {
        None => {
            problems.push("no exec-form ENTRYPOINT in the runtime stage (no shell there)".into())
        }
        Some(e) => {
            let bin = e.first().cloned().unwrap_or_default();
            if !bin.ends_with("/ftpgate") {
                problems.push(format!("ENTRYPOINT {e:?} does not run ftpgate"));
            }
            let copied = final_stage.iter().any(|i| {
                (i.keyword == "COPY" || i.keyword == "ADD")
                    && i.args.split_whitespace().last() == Some(bin.as_str())
            });
            if !copied {
                problems.push(format!("ENTRYPOINT {bin}: no COPY puts the binary there"));
            }
        }
    }
    match final_stage
        .iter()
        .rev()
        .find(|i| i.keyword == "CMD")
        .and_then(|i| exec_form(&i.args))
    {
        None => problems.push("no exec-form CMD in the runtime stage".into()),
        Some(c) => match config_arg(&c) {
            Some(p) => image.config_path = Some(p),
            None => problems.push(format!("CMD {c:?} names no --config file")),
        },
    }
    for e in final_stage.iter().filter(|i| i.keyword == "EXPOSE") {
        for p in e.args.split_whitespace() {
            let p = p.split('/').next().unwrap();
            match port_range(p) {
                Some(r) => image.exposed.push(r),
                None => problems.push(format!("EXPOSE {p}: not a port or range")),
            }
        }
    }
    let mut want: Vec<((u16, u16), &str)> = config
        .listen_ports
        .iter()
        .map(|&p| ((p, p), "control port"))
        .collect();
    want.push((config.passive, "passive range"));
    if let Some(a) = config.admin_port {
        want.push(((a, a), "admin port"));
    }
    for (range, what) in want {
        if !image.exposed.contains(&range) {
            problems.push(format!(
                "EXPOSE lacks the {what} {}-{} of docker/ftpgate.toml",
                range.0, range.1
            ));
        }
    }
    (image, problems)
}

/// `.dockerignore` keeps build output out of the build context.
fn check_dockerignore(text: &str) -> Vec<String> {
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    let mut problems = Vec::new();
    if !lines.iter().any(|l| l.trim_matches('/') == "target") {
        problems.push(".dockerignore does not exclude target/".into());
    }
    if !lines
        .iter()
        .any(|l| matches!(l.trim_end_matches('/'), "fuzz" | "fuzz/target"))
    {
        problems.push(".dockerignore does not exclude fuzz/target".into());
    }
    problems
}

#[test]
fn packaging_dockerfile_two_stages_non_root() {
    let config = gate_config(&read("docker/ftpgate.toml"));
    let (image, problems) = check_dockerfile(&read("docker/Dockerfile"), &config);
    assert_no_problems("docker/Dockerfile", &problems);
    assert_eq!(
        image.config_path.as_deref(),
        Some("/etc/ftpgate/ftpgate.toml")
    );
    assert_no_problems(".dockerignore", &check_dockerignore(&read(".dockerignore")));
}

// === docker/compose.yaml ===

/// A YAML document flattened by PyYAML into `path -> (python type, value)`,
/// paths like `services/ftpgate/ports/1`.
struct Yaml(BTreeMap<String, (String, String)>);

const FLATTEN_PY: &str = r#"
import sys, yaml
doc = yaml.safe_load(sys.stdin.read())
def esc(s):
    return s.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n")
def walk(path, v):
    if isinstance(v, dict):
        if not v:
            print(esc("/".join(path)) + "\tdict\t")
        for k, x in v.items():
            walk(path + [str(k)], x)
    elif isinstance(v, list):
        for i, x in enumerate(v):
            walk(path + [str(i)], x)
    else:
        print(esc("/".join(path)) + "\t" + type(v).__name__ + "\t" + esc(str(v)))
if not isinstance(doc, dict):
    sys.exit("top level is not a mapping")
walk([], doc)
"#;

/// A python3 with PyYAML: the one on PATH, else Debian's.
fn python_with_yaml() -> Option<&'static str> {
    ["python3", "/usr/bin/python3"].into_iter().find(|py| {
        let mut cmd = Command::new(py);
        cmd.args(["-c", "import yaml"]);
        clients::run(cmd, None, RUN_TIMEOUT).ok
    })
}

/// The python to parse YAML with; None (after a SKIP line) when there is
/// none, a panic when `FTPGATE_REQUIRE_PEERS=1`.
fn yaml_parser_or_skip(test: &str) -> Option<&'static str> {
    let py = python_with_yaml();
    if py.is_none() {
        assert!(
            !peers::peers_required(),
            "FTPGATE_REQUIRE_PEERS=1 but no python3 with PyYAML: install python3-yaml (scripts/install-test-deps.sh)"
        );
        println!("SKIP {test}: no python3 with PyYAML (apt-get install python3-yaml)");
    }
    py
}

fn parse_yaml(py: &str, text: &str) -> Result<Yaml, String> {
    let mut cmd = Command::new(py);
    cmd.args(["-c", FLATTEN_PY]);
    let out = clients::run(cmd, Some(text.as_bytes()), RUN_TIMEOUT);
    if !out.ok {
        return Err(format!("not valid YAML: {}", out.stderr));
    }
    let unesc = |s: &str| {
        s.replace("\\n", "\n")
            .replace("\\t", "\t")
            .replace("\\\\", "\\")
    };
    let mut map = BTreeMap::new();
    for line in out.stdout_str().lines() {
        let mut f = line.splitn(3, '\t');
        let (Some(path), Some(ty), Some(value)) = (f.next(), f.next(), f.next()) else {
            return Err(format!("unexpected flattener output {line:?}"));
        };
        map.insert(unesc(path), (ty.to_string(), unesc(value)));
    }
    Ok(Yaml(map))
}

impl Yaml {
    fn get(&self, path: &str) -> Option<&str> {
        self.0.get(path).map(|(_, v)| v.as_str())
    }

    fn type_of(&self, path: &str) -> Option<&str> {
        self.0.get(path).map(|(t, _)| t.as_str())
    }

    /// The distinct next path components under `prefix` (map keys or list
    /// indexes), in document order for lists.
    fn children(&self, prefix: &str) -> Vec<String> {
        let p = format!("{prefix}/");
        let mut seen: Vec<String> = Vec::new();
        for k in self.0.keys().filter(|k| k.starts_with(&p)) {
            let c = k[p.len()..].split('/').next().unwrap().to_string();
            if !seen.contains(&c) {
                seen.push(c);
            }
        }
        if seen.iter().all(|c| c.parse::<usize>().is_ok()) {
            seen.sort_by_key(|c| c.parse::<usize>().unwrap());
        }
        seen
    }

    /// The scalar items of the list at `path`.
    fn list(&self, path: &str) -> Vec<(String, String)> {
        self.children(path)
            .into_iter()
            .filter_map(|i| {
                let item = format!("{path}/{i}");
                self.0.get(&item).cloned()
            })
            .collect()
    }
}

/// `${VAR:-default}`, `${VAR-default}` and `${VAR:?msg}` as compose expands
/// them with VAR unset (an error for `:?`), `$$` as `$`.
fn interpolate_unset(s: &str) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        if let Some(r) = rest.strip_prefix("$$") {
            out.push('$');
            rest = r;
        } else if let Some(r) = rest.strip_prefix("${") {
            let end = r
                .find('}')
                .ok_or_else(|| format!("unclosed ${{ in {s:?}"))?;
            let inner = &r[..end];
            // The first '-' or '?' after the name is the operator.
            match inner.find(['-', '?']).map(|p| (p, inner.as_bytes()[p])) {
                Some((p, b'-')) => out.push_str(&inner[p + 1..]),
                Some(_) => return Err(format!("{s:?} requires a variable to be set")),
                None => {}
            }
            rest = &r[end + 1..];
        } else {
            out.push('$');
            rest = &rest[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// One published port mapping (short syntax): host IP, published range,
/// container range.
#[derive(Debug, PartialEq)]
struct Published {
    host_ip: Option<String>,
    published: (u16, u16),
    target: (u16, u16),
}

fn published(spec: &str) -> Option<Published> {
    let spec = spec.split('/').next()?;
    let parts: Vec<&str> = spec.split(':').collect();
    let (host_ip, published, target) = match parts.as_slice() {
        [t] => (None, *t, *t),
        [p, t] => (None, *p, *t),
        [ip, p, t] => (Some(ip.to_string()), *p, *t),
        _ => return None,
    };
    Some(Published {
        host_ip,
        published: port_range(published)?,
        target: port_range(target)?,
    })
}

/// What the compose file says ftpgate runs: the `command:` arguments (the
/// image's CMD when absent), expanded with every variable unset.
fn compose_command(yaml: &Yaml, svc: &str, image: &Image) -> Result<Vec<String>, String> {
    let items = yaml.list(&format!("services/{svc}/command"));
    if items.is_empty() {
        if yaml.get(&format!("services/{svc}/command")).is_some() {
            return Err("command: is a string; use a list (no shell in the image)".into());
        }
        return Ok(image
            .config_path
            .iter()
            .flat_map(|p| ["--config".to_string(), p.clone()])
            .collect());
    }
    items.iter().map(|(_, v)| interpolate_unset(v)).collect()
}

fn check_compose(yaml: &Yaml, config: &GateConfig, image: &Image) -> Vec<String> {
    let mut problems = Vec::new();
    let svc = "ftpgate";
    let s = |rest: &str| format!("services/{svc}/{rest}");
    if yaml.children("services").iter().all(|c| c != svc) {
        return vec!["no service named ftpgate".into()];
    }

    // The image it builds is docker/Dockerfile, from the repository root.
    let context = yaml.get(&s("build/context")).unwrap_or(".");
    let dockerfile = yaml.get(&s("build/dockerfile")).unwrap_or("Dockerfile");
    let built = root().join("docker").join(context).join(dockerfile);
    if built.canonicalize().ok() != root().join("docker/Dockerfile").canonicalize().ok() {
        problems.push(format!(
            "build: context {context}, dockerfile {dockerfile} is not docker/Dockerfile"
        ));
    }

    // vsftpd backends on a network with a fixed subnet, each at a fixed address.
    let mut backend_ips: Vec<(String, IpAddr)> = Vec::new();
    for name in yaml.children("services") {
        let image = yaml.get(&format!("services/{name}/image")).unwrap_or("");
        if !image.contains("vsftpd") {
            continue;
        }
        let nets = yaml.children(&format!("services/{name}/networks"));
        let mut found = false;
        for net in nets {
            let Some(addr) = yaml.get(&format!("services/{name}/networks/{net}/ipv4_address"))
            else {
                continue;
            };
            let Ok(ip) = addr.parse::<IpAddr>() else {
                problems.push(format!("{name}: ipv4_address {addr:?} is not an address"));
                continue;
            };
            found = true;
            let subnets: Vec<String> = yaml
                .children(&format!("networks/{net}/ipam/config"))
                .iter()
                .filter_map(|i| yaml.get(&format!("networks/{net}/ipam/config/{i}/subnet")))
                .map(String::from)
                .collect();
            let inside = subnets
                .iter()
                .filter_map(|n| n.parse::<ipnet::IpNet>().ok())
                .any(|n| n.contains(&ip));
            if !inside {
                problems.push(format!(
                    "{name}: {ip} is in no fixed subnet of network {net} ({subnets:?})"
                ));
            }
            backend_ips.push((name.clone(), ip));
        }
        if !found {
            problems.push(format!("{name}: no fixed ipv4_address on any network"));
        }
    }
    if backend_ips.len() < 2 {
        problems.push(format!(
            "want two vsftpd services at fixed addresses, found {backend_ips:?}"
        ));
    }
    for b in &config.backends {
        match b.parse::<SocketAddr>() {
            Err(_) => problems.push(format!(
                "backend {b} is not IP:PORT (a name would have to resolve where ftpgate starts)"
            )),
            Ok(a) => {
                if !backend_ips.iter().any(|(_, ip)| *ip == a.ip()) {
                    problems.push(format!(
                        "backend {b}: no vsftpd service has ipv4_address {}",
                        a.ip()
                    ));
                }
                if a.port() != 21 {
                    problems.push(format!("backend {b}: vsftpd listens on 21"));
                }
            }
        }
    }
    for (name, ip) in &backend_ips {
        if !config
            .backends
            .iter()
            .any(|b| b.parse::<SocketAddr>().is_ok_and(|a| a.ip() == *ip))
        {
            problems.push(format!("{name} ({ip}) is not among ftpgate's backends"));
        }
    }

    // Published ports: strings (PyYAML reads an unquoted 21:21 as a base-60
    // number), the passive range 1:1, control, admin on loopback only.
    let mut maps = Vec::new();
    for (i, (ty, v)) in yaml.list(&s("ports")).into_iter().enumerate() {
        if ty != "str" {
            problems.push(format!("ports[{i}] = {v} is a YAML {ty}: quote it"));
            continue;
        }
        match published(&v) {
            Some(p) => maps.push(p),
            None => problems.push(format!("ports[{i}] = {v:?}: not [IP:]PUBLISHED:TARGET")),
        }
    }
    let passive = config.passive;
    if !maps
        .iter()
        .any(|m| m.target == passive && m.published == passive)
    {
        problems.push(format!(
            "passive range {}-{} is not published 1:1 (host ports = container ports)",
            passive.0, passive.1
        ));
    }
    for m in &maps {
        let overlaps = m.target.0 <= passive.1 && passive.0 <= m.target.1;
        if overlaps && (m.target != passive || m.published != passive) {
            problems.push(format!(
                "{m:?} maps part of the passive range to other host ports"
            ));
        }
    }
    for port in &config.listen_ports {
        if !maps.iter().any(|m| m.target == (*port, *port)) {
            problems.push(format!("control port {port} is not published"));
        }
    }
    if let Some(a) = config.admin_port {
        match maps.iter().find(|m| m.target == (a, a)) {
            None => problems.push(format!("admin port {a} is not published")),
            Some(m) if m.host_ip.as_deref() != Some("127.0.0.1") => problems.push(format!(
                "admin port {a} is published on {:?}, want the host's loopback 127.0.0.1",
                m.host_ip
            )),
            Some(_) => {}
        }
    }

    // The command ftpgate runs names the config file, and docker/ftpgate.toml
    // is mounted there, read-only.
    let command = match compose_command(yaml, svc, image) {
        Ok(c) => c,
        Err(e) => {
            problems.push(e);
            return problems;
        }
    };
    let Some(config_path) = config_arg(&command) else {
        problems.push(format!("ftpgate's command {command:?} names no --config"));
        return problems;
    };
    if image.config_path.as_deref() != Some(config_path.as_str()) {
        problems.push(format!(
            "command reads {config_path}, the image's CMD {:?}",
            image.config_path
        ));
    }
    let mount = yaml.list(&s("volumes")).into_iter().find_map(|(_, v)| {
        let parts: Vec<String> = v.split(':').map(String::from).collect();
        (parts.len() >= 2 && parts[1] == config_path).then_some(parts)
    });
    match mount {
        None => problems.push(format!("nothing is mounted at {config_path}")),
        Some(parts) => {
            let src = root().join("docker").join(&parts[0]);
            if src.canonicalize().ok() != root().join("docker/ftpgate.toml").canonicalize().ok() {
                problems.push(format!(
                    "{config_path} is {}, not docker/ftpgate.toml",
                    parts[0]
                ));
            }
            if !parts
                .get(2)
                .is_some_and(|m| m.split(',').any(|o| o == "ro"))
            {
                problems.push(format!("{config_path} is mounted writable: add :ro"));
            }
        }
    }

    // docker stop waits longer than the drain.
    match yaml.get(&s("stop_grace_period")).map(|g| (g, duration(g))) {
        None => problems.push(format!(
            "no stop_grace_period: Docker's 10 s default cuts the {:?} drain short",
            config.drain
        )),
        Some((g, None)) => problems.push(format!("stop_grace_period {g:?}: not a duration")),
        Some((g, Some(d))) if d <= config.drain => problems.push(format!(
            "stop_grace_period {g} is not longer than shutdown_drain_timeout {:?}",
            config.drain
        )),
        Some(_) => {}
    }
    if yaml.type_of(&s("read_only")) == Some("bool") && yaml.get(&s("read_only")) != Some("True") {
        problems.push("read_only is set false".into());
    }
    problems
}

#[test]
fn packaging_compose_matches_config_and_image() {
    let Some(py) = yaml_parser_or_skip("packaging_compose_matches_config_and_image") else {
        return;
    };
    let config = gate_config(&read("docker/ftpgate.toml"));
    let (image, dp) = check_dockerfile(&read("docker/Dockerfile"), &config);
    assert_no_problems("docker/Dockerfile", &dp);
    let yaml = parse_yaml(py, &read("docker/compose.yaml"))
        .unwrap_or_else(|e| panic!("docker/compose.yaml: {e}"));
    assert_no_problems(
        "docker/compose.yaml",
        &check_compose(&yaml, &config, &image),
    );

    // ftpgate accepts what compose runs, with docker/ftpgate.toml as the file.
    let mut args = compose_command(&yaml, "ftpgate", &image).unwrap();
    let i = args.iter().position(|a| a == "--config").unwrap();
    args[i + 1] = root()
        .join("docker/ftpgate.toml")
        .to_str()
        .unwrap()
        .to_string();
    let mut check = vec!["check".to_string()];
    check.extend(args);
    let check: Vec<&str> = check.iter().map(String::as_str).collect();
    let out = ftpgate(&check);
    out.assert_ok("ftpgate check with compose.yaml's command");
    assert!(
        out.stdout_str().contains("public_address = \"127.0.0.1\""),
        "compose's --public-address did not take: {}",
        out.stdout_str()
    );
}

// === packaging/systemd/ftpgate.service ===

/// `section -> key -> values` of a unit file (a key may repeat).
fn unit_entries(text: &str) -> BTreeMap<String, BTreeMap<String, Vec<String>>> {
    let mut out: BTreeMap<String, BTreeMap<String, Vec<String>>> = BTreeMap::new();
    let mut section = String::new();
    for line in text.lines() {
        let l = line.trim();
        if l.is_empty() || l.starts_with('#') || l.starts_with(';') {
            continue;
        }
        if let Some(s) = l.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
            section = s.to_string();
            continue;
        }
        if let Some((k, v)) = l.split_once('=') {
            out.entry(section.clone())
                .or_default()
                .entry(k.trim().to_string())
                .or_default()
                .push(v.trim().to_string());
        }
    }
    out
}

fn check_unit(text: &str, drain: Duration) -> Vec<String> {
    let units = unit_entries(text);
    let empty = BTreeMap::new();
    let svc = units.get("Service").unwrap_or(&empty);
    let one = |k: &str| svc.get(k).and_then(|v| v.last()).map(String::as_str);
    let mut problems = Vec::new();
    fn need(problems: &mut Vec<String>, ok: bool, what: &str) {
        if !ok {
            problems.push(what.to_string());
        }
    }
    need(
        &mut problems,
        units.contains_key("Install"),
        "no [Install] section",
    );
    need(
        &mut problems,
        matches!(one("Type"), Some("simple" | "exec")),
        "Type= is not simple or exec (ftpgate neither forks nor notifies)",
    );
    let exec = one("ExecStart").unwrap_or("");
    need(
        &mut problems,
        exec.starts_with("/usr/local/bin/ftpgate ")
            && exec.contains("--config /etc/ftpgate/ftpgate.toml"),
        "ExecStart is not /usr/local/bin/ftpgate --config /etc/ftpgate/ftpgate.toml",
    );
    let reload = one("ExecReload").unwrap_or("");
    need(
        &mut problems,
        reload.contains("kill") && reload.contains("-HUP") && reload.contains("$MAINPID"),
        "ExecReload does not send SIGHUP to $MAINPID",
    );
    need(
        &mut problems,
        one("KillSignal").is_none_or(|s| s == "SIGTERM"),
        "KillSignal is not SIGTERM (ftpgate drains on SIGTERM)",
    );
    match one("TimeoutStopSec").map(|t| (t, duration(t))) {
        Some((_, Some(t))) if t > drain => {}
        other => problems.push(format!(
            "TimeoutStopSec {other:?} is not longer than shutdown_drain_timeout {drain:?}"
        )),
    }
    let caps = |k: &str| -> Vec<String> {
        svc.get(k)
            .map(|v| {
                v.iter()
                    .flat_map(|l| l.split_whitespace().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    };
    need(
        &mut problems,
        caps("AmbientCapabilities") == ["CAP_NET_BIND_SERVICE"],
        "AmbientCapabilities is not exactly CAP_NET_BIND_SERVICE",
    );
    need(
        &mut problems,
        caps("CapabilityBoundingSet") == ["CAP_NET_BIND_SERVICE"],
        "CapabilityBoundingSet is not exactly CAP_NET_BIND_SERVICE",
    );
    let dynamic = one("DynamicUser") == Some("yes");
    need(
        &mut problems,
        dynamic || one("User").is_some_and(|u| u != "root" && u != "0"),
        "neither DynamicUser=yes nor a non-root User=",
    );
    for (k, v) in [
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("PrivateTmp", "yes"),
        ("LogsDirectory", "ftpgate"),
        ("Restart", "on-failure"),
    ] {
        if one(k) != Some(v) {
            problems.push(format!("{k}={v} missing"));
        }
    }
    need(
        &mut problems,
        matches!(one("ProtectHome"), Some("yes" | "read-only" | "tmpfs")),
        "ProtectHome missing",
    );
    need(
        &mut problems,
        one("LimitNOFILE")
            .and_then(|n| n.parse::<u64>().ok())
            .is_some_and(|n| n >= 65536),
        "LimitNOFILE below 65536",
    );
    problems
}

/// `systemd-analyze verify` on a copy whose ExecStart runs the test build of
/// ftpgate (systemd checks that the binary exists). Problems: any complaint
/// about the unit, or a failing exit.
fn systemd_verify(analyze: &Path, unit_text: &str) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let bin = env!("CARGO_BIN_EXE_ftpgate");
    let text = unit_text.replace(
        "ExecStart=/usr/local/bin/ftpgate ",
        &format!("ExecStart={bin} "),
    );
    let unit = dir.path().join("ftpgate.service");
    fs::write(&unit, text).unwrap();
    let mut cmd = Command::new(analyze);
    cmd.arg("verify").arg(&unit);
    // No pager, no attempt to reach a running systemd's bus.
    cmd.env("SYSTEMD_PAGER", "").env("SYSTEMD_LOG_COLOR", "0");
    let out = clients::run(cmd, None, RUN_TIMEOUT);
    let mut problems: Vec<String> = out
        .stderr
        .lines()
        .chain(out.stdout_str().lines())
        .filter(|l| l.contains("ftpgate.service"))
        .map(|l| format!("systemd-analyze: {l}"))
        .collect();
    if !out.ok {
        problems.push(format!(
            "systemd-analyze verify failed: {:?} {}",
            out.status, out.stderr
        ));
    }
    problems
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(name))
            .find(|f| f.is_file())
    })
}

#[test]
fn packaging_systemd_unit() {
    // The drain the stop timeout must outlast: ftpgate's own default.
    let out = ftpgate(&[
        "check",
        "--listen",
        "127.0.0.1:2121",
        "--backend",
        "127.0.0.1:21",
    ]);
    out.assert_ok("ftpgate check with defaults");
    let default_drain = out
        .stdout_str()
        .lines()
        .find_map(|l| {
            l.strip_prefix("shutdown_drain_timeout = ")
                .map(|v| v.trim_matches('"').to_string())
        })
        .and_then(|v| duration(&v))
        .unwrap_or_else(|| panic!("no shutdown_drain_timeout in:\n{}", out.stdout_str()));
    let text = read("packaging/systemd/ftpgate.service");
    assert_no_problems("ftpgate.service", &check_unit(&text, default_drain));
    match find_on_path("systemd-analyze") {
        Some(analyze) => {
            assert_no_problems("systemd-analyze verify", &systemd_verify(&analyze, &text))
        }
        None => println!(
            "NOTE packaging_systemd_unit: no systemd-analyze; checked the unit's lines only"
        ),
    }
}

// === the checks can fail ===

/// Each check, given a copy of its file with one mistake, reports it.
#[test]
fn packaging_checks_catch_mistakes() {
    let config_text = read("docker/ftpgate.toml");
    let config = gate_config(&config_text);
    let dockerfile = read("docker/Dockerfile");
    let unit = read("packaging/systemd/ftpgate.service");

    #[track_caller]
    fn replaced(text: &str, from: &str, to: &str) -> String {
        assert!(text.contains(from), "the file no longer contains {from:?}");
        text.replacen(from, to, 1)
    }

    for (what, broken) in [
        (
            "root user",
            replaced(&dockerfile, "USER 10001:10001", "USER root"),
        ),
        (
            "uid 0",
            replaced(&dockerfile, "USER 10001:10001", "USER 0:0"),
        ),
        ("no user", replaced(&dockerfile, "USER 10001:10001", "")),
        (
            "one stage",
            dockerfile[dockerfile.rfind("FROM ").unwrap()..].to_string(),
        ),
        (
            "passive range not exposed",
            replaced(
                &dockerfile,
                "EXPOSE 2121 9121 50000-50099",
                "EXPOSE 2121 9121",
            ),
        ),
        (
            "shell-form CMD",
            replaced(
                &dockerfile,
                "CMD [\"--config\", \"/etc/ftpgate/ftpgate.toml\"]",
                "CMD --config /etc/ftpgate/ftpgate.toml",
            ),
        ),
        ("unlocked build", replaced(&dockerfile, "--locked", "")),
    ] {
        let (_, problems) = check_dockerfile(&broken, &config);
        assert!(!problems.is_empty(), "Dockerfile check missed: {what}");
    }
    assert!(
        !check_dockerignore("fuzz/\n").is_empty(),
        ".dockerignore check missed target/"
    );

    for (what, broken) in [
        (
            "reload without HUP",
            replaced(
                &unit,
                "ExecReload=/bin/kill -HUP $MAINPID",
                "ExecReload=/bin/true",
            ),
        ),
        (
            "no ambient capability",
            replaced(&unit, "AmbientCapabilities=CAP_NET_BIND_SERVICE", ""),
        ),
        (
            "wide bounding set",
            replaced(
                &unit,
                "CapabilityBoundingSet=CAP_NET_BIND_SERVICE",
                "CapabilityBoundingSet=CAP_NET_BIND_SERVICE CAP_SYS_ADMIN",
            ),
        ),
        (
            "stop timeout shorter than the drain",
            replaced(&unit, "TimeoutStopSec=45s", "TimeoutStopSec=20s"),
        ),
        (
            "root",
            replaced(
                &replaced(&unit, "DynamicUser=yes", "DynamicUser=no"),
                "User=ftpgate",
                "User=root",
            ),
        ),
    ] {
        assert!(
            !check_unit(&broken, Duration::from_secs(30)).is_empty(),
            "unit check missed: {what}"
        );
    }
    if let Some(analyze) = find_on_path("systemd-analyze") {
        let broken = replaced(&unit, "TimeoutStopSec=45s", "TimeoutStopSec=45 parsecs");
        assert!(
            !systemd_verify(&analyze, &broken).is_empty(),
            "systemd-analyze verify missed a bad TimeoutStopSec"
        );
    }

    let Some(py) = yaml_parser_or_skip("packaging_checks_catch_mistakes (compose part)") else {
        return;
    };
    let (image, _) = check_dockerfile(&dockerfile, &config);
    let compose = read("docker/compose.yaml");
    assert!(
        parse_yaml(py, "services: [unclosed\n").is_err(),
        "bad YAML parsed"
    );
    for (what, broken) in [
        (
            "backend address not in compose",
            replaced(
                &compose,
                "ipv4_address: 172.28.0.12",
                "ipv4_address: 172.28.0.13",
            ),
        ),
        (
            "address outside the subnet",
            replaced(&compose, "subnet: 172.28.0.0/24", "subnet: 172.29.0.0/24"),
        ),
        (
            "passive range not 1:1",
            replaced(
                &compose,
                "\"50000-50099:50000-50099\"",
                "\"51000-51099:50000-50099\"",
            ),
        ),
        (
            "passive range missing",
            replaced(&compose, "- \"50000-50099:50000-50099\"", ""),
        ),
        (
            "admin published on every address",
            replaced(&compose, "\"127.0.0.1:9121:9121\"", "\"9121:9121\""),
        ),
        (
            "unquoted port",
            replaced(&compose, "\"2121:2121\"", "21:21"),
        ),
        (
            "config mounted elsewhere",
            replaced(
                &compose,
                "./ftpgate.toml:/etc/ftpgate/ftpgate.toml:ro",
                "./ftpgate.toml:/etc/ftpgate.toml:ro",
            ),
        ),
        (
            "config mounted writable",
            replaced(
                &compose,
                "./ftpgate.toml:/etc/ftpgate/ftpgate.toml:ro",
                "./ftpgate.toml:/etc/ftpgate/ftpgate.toml",
            ),
        ),
        (
            "command reads another file",
            replaced(
                &compose,
                "- \"/etc/ftpgate/ftpgate.toml\"",
                "- \"/etc/ftpgate/other.toml\"",
            ),
        ),
        (
            "short grace period",
            replaced(&compose, "stop_grace_period: 40s", "stop_grace_period: 10s"),
        ),
    ] {
        let yaml = parse_yaml(py, &broken).unwrap_or_else(|e| panic!("{what}: {e}"));
        assert!(
            !check_compose(&yaml, &config, &image).is_empty(),
            "compose check missed: {what}"
        );
    }
    let yaml = parse_yaml(py, &compose).unwrap();
    let hostname_backends = replaced(&config_text, "\"172.28.0.11:21\"", "\"vsftpd-a:21\"");
    assert!(
        !check_compose(&yaml, &gate_config(&hostname_backends), &image).is_empty(),
        "compose check missed a backend named by hostname"
    );
}
