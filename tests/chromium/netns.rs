//! A network namespace with only `lo` up. Dropping the guard kills every
//! process still inside the namespace and deletes it, also when a test fails.

use std::ffi::OsStr;
use std::io;
use std::process::{Command, Output};
use std::thread;
use std::time::{Duration, Instant};

use thiserror::Error;

/// Maximum time [`NetNamespace::kill_remaining`] waits for killed processes
/// to exit.
const KILL_TIMEOUT: Duration = Duration::from_secs(5);

/// Failure of an `ip` or `kill` command run by [`NetNamespace`].
#[derive(Debug, Error)]
pub enum NetnsError {
    /// The command could not be started (e.g. `ip` is not installed).
    #[error("running `{command}` failed: {source}")]
    Spawn {
        command: String,
        #[source]
        source: io::Error,
    },
    /// The command exited unsuccessfully. Creating a namespace needs root
    /// or CAP_SYS_ADMIN.
    #[error("`{command}` exited with {status}: {stderr}")]
    Failed {
        command: String,
        status: std::process::ExitStatus,
        stderr: String,
    },
    /// Processes were still inside the namespace after SIGKILL and
    /// [`KILL_TIMEOUT`], for example stuck in uninterruptible sleep.
    #[error("processes {pids} were still in network namespace {namespace} {KILL_TIMEOUT:?} after SIGKILL")]
    StillRunning { namespace: String, pids: String },
}

/// Guard of a network namespace created by this process.
pub struct NetNamespace {
    name: String,
}

impl NetNamespace {
    /// Creates namespace `name` and sets its loopback interface up.
    pub fn create(name: &str) -> Result<Self, NetnsError> {
        run(["ip", "netns", "add", name])?;

        // From here on the guard deletes the namespace, also if `lo` fails.
        let namespace = Self {
            name: name.to_owned(),
        };
        run(["ip", "netns", "exec", name, "ip", "link", "set", "lo", "up"])?;
        Ok(namespace)
    }

    /// Builds a command that runs `program` inside the namespace.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.name]).arg(program);
        command
    }

    /// Sends SIGKILL to every process still inside the namespace, such as
    /// Chromium or the server left behind by a killed test, and waits up to
    /// [`KILL_TIMEOUT`] until none is listed.
    pub fn kill_remaining(&self) -> Result<(), NetnsError> {
        let deadline = Instant::now() + KILL_TIMEOUT;
        loop {
            let output = run(["ip", "netns", "pids", &self.name])?;
            let listing = String::from_utf8_lossy(&output.stdout);
            let pids: Vec<&str> = listing.split_whitespace().collect();
            if pids.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(NetnsError::StillRunning {
                    namespace: self.name.clone(),
                    pids: pids.join(" "),
                });
            }
            for pid in pids {
                // The process may have exited since the listing.
                let _ = Command::new("kill").args(["-KILL", pid]).status();
            }
            // Killed processes leave the listing only once they are reaped.
            thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for NetNamespace {
    fn drop(&mut self) {
        if let Err(error) = self.kill_remaining() {
            eprintln!("cleaning up network namespace {}: {error}", self.name);
        }
        if let Err(error) = run(["ip", "netns", "del", &self.name]) {
            eprintln!("deleting network namespace {}: {error}", self.name);
        }
    }
}

fn run<const N: usize>(words: [&str; N]) -> Result<Output, NetnsError> {
    let command = words.join(" ");
    let output = Command::new(words[0])
        .args(&words[1..])
        .output()
        .map_err(|source| NetnsError::Spawn {
            command: command.clone(),
            source,
        })?;
    if !output.status.success() {
        return Err(NetnsError::Failed {
            command,
            status: output.status,
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        });
    }
    Ok(output)
}
