//! CPU time and peak memory of a process, read from Linux `/proc`: the
//! harness's own (`/proc/self`) to show when the harness saturates, and the
//! server's when its process id is given.

use std::path::PathBuf;

/// Failure to read a process's figures from `/proc`.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    /// A `/proc` file could not be read, usually because the process ended
    /// or the process id is wrong.
    #[error("reading {path}: {source}")]
    Read {
        /// Path of the file.
        path: PathBuf,
        /// Underlying I/O error.
        source: std::io::Error,
    },

    /// A `/proc` file did not have the expected layout.
    #[error("unexpected content in {path}: {reason}")]
    Format {
        /// Path of the file.
        path: PathBuf,
        /// What was missing.
        reason: &'static str,
    },
}

/// A process to sample: this process or another by id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcessRef {
    /// The harness itself.
    SelfProcess,
    /// Another process.
    Pid(u32),
}

impl ProcessRef {
    fn dir(self) -> PathBuf {
        match self {
            Self::SelfProcess => PathBuf::from("/proc/self"),
            Self::Pid(pid) => PathBuf::from(format!("/proc/{pid}")),
        }
    }

    /// Returns the user plus system CPU time the process used so far, in
    /// seconds (fields `utime` and `stime` of `/proc/PID/stat`).
    pub fn cpu_seconds(self) -> Result<f64, ProcessError> {
        let path = self.dir().join("stat");
        let text = std::fs::read_to_string(&path).map_err(|source| ProcessError::Read {
            path: path.clone(),
            source,
        })?;
        let ticks = parse_stat_cpu_ticks(&text).ok_or(ProcessError::Format {
            path,
            reason: "fields utime and stime",
        })?;
        Ok(ticks as f64 / clock_ticks_per_second())
    }

    /// Returns user and system CPU time so far, in seconds, apart.
    pub fn cpu_times(self) -> Result<CpuTimes, ProcessError> {
        let path = self.dir().join("stat");
        let text = std::fs::read_to_string(&path).map_err(|source| ProcessError::Read {
            path: path.clone(),
            source,
        })?;
        let (utime, stime) = parse_stat_cpu_fields(&text).ok_or(ProcessError::Format {
            path,
            reason: "fields utime and stime",
        })?;
        let hz = clock_ticks_per_second();
        Ok(CpuTimes {
            user_s: utime as f64 / hz,
            system_s: stime as f64 / hz,
        })
    }

    /// Returns the peak resident set size in KiB (`VmHWM` of
    /// `/proc/PID/status`).
    pub fn peak_rss_kib(self) -> Result<u64, ProcessError> {
        let path = self.dir().join("status");
        let text = std::fs::read_to_string(&path).map_err(|source| ProcessError::Read {
            path: path.clone(),
            source,
        })?;
        parse_status_kib(&text, "VmHWM").ok_or(ProcessError::Format {
            path,
            reason: "field VmHWM",
        })
    }
}

/// User and system CPU time of a process, in seconds.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CpuTimes {
    /// `utime`.
    pub user_s: f64,
    /// `stime`.
    pub system_s: f64,
}

/// Returns `utime + stime` in clock ticks from the text of `/proc/PID/stat`.
pub fn parse_stat_cpu_ticks(stat: &str) -> Option<u64> {
    parse_stat_cpu_fields(stat).map(|(utime, stime)| utime + stime)
}

/// Returns `utime` and `stime` in clock ticks from the text of
/// `/proc/PID/stat`. The command name in brackets may hold spaces, so
/// fields are counted from the last `)`.
pub fn parse_stat_cpu_fields(stat: &str) -> Option<(u64, u64)> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // After the name, field 3 (state) is index 0, so utime (14) and stime
    // (15) are at 11 and 12.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime, stime))
}

/// Returns the value in KiB of a `NAME:   1234 kB` line of `/proc/PID/status`.
pub fn parse_status_kib(status: &str, name: &str) -> Option<u64> {
    status.lines().find_map(|line| {
        let value = line.strip_prefix(name)?.strip_prefix(':')?;
        value.split_whitespace().next()?.parse().ok()
    })
}

/// Returns the kernel's clock ticks per second, the unit of the CPU times
/// in `/proc`.
pub fn clock_ticks_per_second() -> f64 {
    // SAFETY: sysconf only reads a configuration value.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 {
        ticks as f64
    } else {
        100.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_ticks_with_spaces_in_name() {
        let stat = "1234 (vpr server) S 1 1234 1234 0 -1 4194560 500 0 0 0 250 75 0 0 20 0 9 0 100 \
                    1000000 500 18446744073709551615";
        assert_eq!(parse_stat_cpu_ticks(stat), Some(325));
        assert_eq!(parse_stat_cpu_fields(stat), Some((250, 75)));
    }

    #[test]
    fn stat_ticks_of_truncated_text_is_none() {
        assert_eq!(parse_stat_cpu_ticks("1234 (x) S 1 2 3"), None);
    }

    #[test]
    fn status_peak_rss() {
        let status = "Name:\tvpr-server\nVmPeak:\t  900000 kB\nVmHWM:\t   51234 kB\nVmRSS:\t   40000 kB\n";
        assert_eq!(parse_status_kib(status, "VmHWM"), Some(51234));
        assert_eq!(parse_status_kib(status, "VmSwap"), None);
    }

    #[test]
    fn own_process_is_readable() {
        let cpu = ProcessRef::SelfProcess.cpu_seconds().unwrap();
        assert!(cpu >= 0.0);
        let peak = ProcessRef::SelfProcess.peak_rss_kib().unwrap();
        assert!(peak > 0, "VmHWM of a running test process is positive");
        let own = ProcessRef::Pid(std::process::id()).peak_rss_kib().unwrap();
        assert!(own > 0);
    }
}
