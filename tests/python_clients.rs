//! Clients generated from `proto/` alone, in another language: Python's
//! grpcio, with grpcio-status reading each refusal's `google.rpc.ErrorInfo`
//! (tests/python/refusals.py) against the real broker.
//!
//! The packages are installed by this test into a virtual environment under
//! the target directory (pinned versions, from the Python package
//! registry); without python3 and pip, or without the registry, the test
//! fails saying so. It never skips.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

/// The pinned packages (grpcio-status brings the protobuf runtime).
const PACKAGES: &[&str] = &["grpcio==1.85.4", "grpcio-tools==1.85.4", "grpcio-status==1.85.3", "protobuf==7.36.2"];

fn run(cmd: &mut Command, what: &str) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: cannot run {cmd:?}: {e}"));
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{what} failed ({}):\n{text}", out.status);
    text
}

/// A Python with the packages, installed once per target directory.
fn python() -> PathBuf {
    let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join("python-grpc");
    let python = venv.join("bin/python");
    let marker = venv.join(format!("installed-{}", PACKAGES.join("-")));
    if !marker.exists() {
        run(
            Command::new("python3").args(["-m", "venv"]).arg(&venv),
            "creating a Python virtual environment (python3 -m venv)",
        );
        run(
            Command::new(&python)
                .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check"])
                .args(PACKAGES),
            "installing grpcio, grpcio-tools, grpcio-status with pip",
        );
        std::fs::write(&marker, b"").unwrap();
    }
    python
}

/// Python modules generated from `proto/strata/v1/*.proto` into `out`.
fn generate(python: &Path, out: &Path) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let protos: Vec<PathBuf> = std::fs::read_dir(root.join("proto/strata/v1"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "proto"))
        .collect();
    let mut cmd = Command::new(python);
    cmd.args(["-m", "grpc_tools.protoc"])
        .arg(format!("-I{}", root.join("proto").display()))
        .arg(format!("--python_out={}", out.display()))
        .arg(format!("--grpc_python_out={}", out.display()))
        .args(&protos);
    run(&mut cmd, "generating Python stubs with grpc_tools.protoc");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_client_tells_every_refusal_apart_by_its_error_info() {
    let python = tokio::task::spawn_blocking(python).await.unwrap();
    let generated = tempfile::tempdir().unwrap();
    generate(&python, generated.path());
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path());
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/python/refusals.py");
    let (py, gen, addr) = (python.clone(), generated.path().to_path_buf(), broker.addr.clone());
    let out = tokio::task::spawn_blocking(move || Command::new(py).arg(script).arg(gen).arg(addr).output())
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    println!("{text}");
    assert!(out.status.success(), "the Python client's checks failed:\n{text}");
    assert!(text.contains(" passed, 0 failed"), "{text}");
}
