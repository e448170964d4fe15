//! The shell scripts an operator or CI runs (`scripts/`): what they install,
//! what they say when something fails, and what the README says about them.
//!
//! `scripts/test.sh` runs here with a fake `cargo` first on `PATH`, so no
//! real build or test run happens; everything else reads the scripts' text.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::clients;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("read {rel}: {e}"))
}

/// A `cargo` that succeeds at everything but `cargo test`, which prints a
/// failing test and exits 101 as cargo does.
fn fake_cargo(dir: &Path) {
    let p = dir.join("cargo");
    fs::write(
        &p,
        "#!/bin/sh\n\
         if [ \"$1\" = test ]; then echo 'test some::test ... FAILED'; exit 101; fi\n\
         exit 0\n",
    )
    .unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
}

/// With `set -euo pipefail`, a failed `cargo test | tee` used to end the
/// script before it could say so: the run failed without a word.
#[test]
fn scripts_test_sh_says_cargo_test_failed() {
    let dir = tempfile::tempdir().unwrap();
    fake_cargo(dir.path());
    let path = format!(
        "{}:{}",
        dir.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut cmd = Command::new("bash");
    cmd.arg(root().join("scripts/test.sh"))
        .env("PATH", path)
        .env("SKIP_INSTALL", "1")
        .env("FUZZ_SECONDS", "0");
    let out = clients::run(cmd, None, Duration::from_secs(60));
    assert!(!out.timed_out, "{out:?}");
    assert_eq!(out.status, Some(101), "cargo's exit status: {out:?}");
    assert!(
        out.stderr.contains("cargo test failed"),
        "no failure message: {out:?}"
    );
}

/// The packages of the `apt-get install` command in `script`.
fn apt_packages(script: &str) -> Vec<String> {
    let start = script
        .find("apt-get install")
        .expect("an apt-get install command");
    let mut words = Vec::new();
    for line in script[start..].lines() {
        let body = line.trim().trim_end_matches('\\');
        words.extend(
            body.split_whitespace()
                .filter(|w| !w.starts_with('-') && !["apt-get", "install"].contains(w))
                .map(str::to_owned),
        );
        if !line.trim_end().ends_with('\\') {
            break;
        }
    }
    words
}

/// The README's paragraph on what `scripts/test.sh` installs names every
/// tool the install script installs (libraries of the unpacked servers
/// aside), cargo-fuzz, and a C compiler, which ring needs to build.
#[test]
fn scripts_readme_lists_what_the_test_command_installs() {
    let install = read("scripts/install-test-deps.sh");
    let packages = apt_packages(&install);
    assert!(packages.len() >= 10, "{packages:?}");
    for cc in ["gcc", "g++", "libc6-dev", "make"] {
        assert!(
            packages.iter().any(|p| p == cc),
            "{cc} is not installed: {packages:?}"
        );
    }
    let readme = read("README.md");
    let start = readme
        .find("`scripts/test.sh` installs")
        .expect("a README paragraph on what scripts/test.sh installs");
    let para = &readme[start..start + readme[start..].find("\n\n").unwrap()];
    for p in &packages {
        let shown = match p.as_str() {
            // Debian 12's "ftp" is a transitional package for tnftp.
            "ftp" => "tnftp",
            "python3-yaml" => "PyYAML",
            "proftpd-core" => "proftpd",
            lib if lib.starts_with("lib") && lib != "libc6-dev" => continue,
            other => other,
        };
        assert!(
            para.contains(shown),
            "README does not list {p} ({shown}):\n{para}"
        );
    }
    for unpacked in ["proftpd", "pure-ftpd", "cargo-fuzz"] {
        assert!(para.contains(unpacked), "README omits {unpacked}:\n{para}");
    }
    assert!(
        read("scripts/fuzz-smoke.sh").contains(". scripts/lib/fuzz-common.sh")
            && read("scripts/lib/fuzz-common.sh").contains("cargo install cargo-fuzz"),
        "fuzz-smoke.sh (through scripts/lib/fuzz-common.sh) no longer installs cargo-fuzz"
    );
}

/// fuzz/Cargo.lock is used as committed: the fuzz scripts' shared setup
/// checks it with `--locked` before building, and the lock fits the
/// manifests today.
#[test]
fn scripts_fuzz_lock_is_current_and_used() {
    let smoke = read("scripts/lib/fuzz-common.sh");
    let check = smoke
        .find("metadata --locked")
        .expect("fuzz-common.sh checks fuzz/Cargo.lock with --locked");
    let build = smoke.find("fuzz build -s").expect("fuzz-common.sh builds");
    assert!(check < build, "the lock is checked after the build");
    let mut cmd = Command::new(env!("CARGO"));
    cmd.args(["metadata", "--locked", "--format-version", "1"])
        .arg("--manifest-path")
        .arg(root().join("fuzz/Cargo.toml"));
    // clients::run gives the command a HOME of its own: keep cargo's.
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cargo"));
    cmd.env("CARGO_HOME", cargo_home);
    let out = clients::run(cmd, None, Duration::from_secs(120));
    assert!(
        out.ok,
        "fuzz/Cargo.lock is stale (run `cd fuzz && cargo metadata --format-version 1` and commit it): {}",
        out.stderr
    );
}
