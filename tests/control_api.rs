//! The control plane API from a second language: a Python client generated
//! from proto/ with grpcio-tools drives a room lifecycle against the real
//! vpr-server (tests/python/control_lifecycle.py).
//!
//! The Python packages (tests/python/requirements.txt) are installed from
//! PyPI into a virtual environment under the cargo target directory, which
//! is reused while the requirements file is unchanged. Needs `python3` with
//! the `venv` module (Debian: the python3-venv package); set VPR_PYTHON to
//! use another interpreter.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use common::{TestServer, API_KEY_ID, API_KEY_SECRET};

/// Maximum time for creating the virtual environment and installing the
/// pinned packages.
const VENV_SETUP_TIMEOUT: Duration = Duration::from_secs(300);

/// Maximum time for the lifecycle script.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(60);

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|dir| if dir.is_absolute() { dir } else { repo_root().join(dir) })
        .unwrap_or_else(|| repo_root().join("target"))
}

/// Runs `program` with `args`, failing the test after `timeout`.
async fn run(program: &Path, args: &[&str], timeout: Duration) -> Output {
    let child = tokio::process::Command::new(program)
        .args(args)
        .kill_on_drop(true)
        .output();
    match tokio::time::timeout(timeout, child).await {
        Ok(output) => output.unwrap_or_else(|error| panic!("running {} failed: {error}", program.display())),
        Err(_) => panic!("{} {args:?} did not finish within {timeout:?}", program.display()),
    }
}

fn assert_success(what: &str, output: &Output) {
    assert!(
        output.status.success(),
        "{what} failed with {}\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Returns the Python interpreter of a virtual environment with the pinned
/// requirements, creating or refreshing it when the requirements changed.
async fn python_with_requirements() -> PathBuf {
    let requirements_path = repo_root().join("tests/python/requirements.txt");
    let requirements = std::fs::read_to_string(&requirements_path).unwrap();
    let venv = target_dir().join("python-venv-control-api");
    let python = venv.join("bin/python");
    let stamp = venv.join("requirements.installed");

    if std::fs::read_to_string(&stamp).ok().as_deref() == Some(requirements.as_str()) {
        return python;
    }

    let _ = std::fs::remove_dir_all(&venv);
    let interpreter = std::env::var_os("VPR_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("python3"));
    let created = run(
        &interpreter,
        &["-m", "venv", venv.to_str().unwrap()],
        VENV_SETUP_TIMEOUT,
    )
    .await;
    assert_success(
        "creating the Python venv (Debian needs the python3-venv package)",
        &created,
    );

    let installed = run(
        &python,
        &[
            "-m",
            "pip",
            "install",
            "--disable-pip-version-check",
            "--no-input",
            "--timeout",
            "60",
            "-r",
            requirements_path.to_str().unwrap(),
        ],
        VENV_SETUP_TIMEOUT,
    )
    .await;
    assert_success("installing tests/python/requirements.txt", &installed);

    std::fs::write(&stamp, &requirements).unwrap();
    python
}

#[tokio::test]
async fn python_client_runs_room_lifecycle() {
    let python = python_with_requirements().await;
    let server = TestServer::start().await;
    let generated = tempfile::tempdir().unwrap();

    let address = format!("127.0.0.1:{}", server.ports().grpc);
    let script = repo_root().join("tests/python/control_lifecycle.py");
    let proto_dir = repo_root().join("proto");
    let output = run(
        &python,
        &[
            script.to_str().unwrap(),
            "--address",
            &address,
            "--key-id",
            API_KEY_ID,
            "--key-secret",
            API_KEY_SECRET,
            "--proto-dir",
            proto_dir.to_str().unwrap(),
            "--out-dir",
            generated.path().to_str().unwrap(),
        ],
        SCRIPT_TIMEOUT,
    )
    .await;
    assert_success("tests/python/control_lifecycle.py", &output);

    let stdout = String::from_utf8_lossy(&output.stdout);
    let last = stdout.lines().last().unwrap_or_default();
    let fields: Vec<&str> = last.split(' ').collect();
    assert_eq!(fields.len(), 3, "last line: {last}");
    let room_id = fields[0].strip_prefix("room_id=").expect("room_id field");
    assert!(room_id.starts_with("rm_"), "room id {room_id}");
    assert_eq!(room_id.len(), 19, "room id {room_id}");
    assert_eq!(fields[1], "state=ROOM_STATE_CLOSED");
    assert_eq!(fields[2], "disposition=DISPOSITION_RESOLVED_VIRTUALLY");

    // The server's own record agrees with what the script printed.
    let mut grpc = server.grpc_client().await;
    let room = grpc
        .get_room(vpr_control::pb::GetRoomRequest {
            room_id: room_id.to_owned(),
        })
        .await
        .unwrap_or_else(|status| panic!("GetRoom {room_id} failed: {status}\n{}", server.log_tail(40)))
        .into_inner();
    assert_eq!(room.state, vpr_control::pb::RoomState::Closed as i32);
    assert_eq!(room.notes, "advice given");
}
