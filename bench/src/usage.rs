//! Process accounting from /proc: a process's CPU time and memory, and how
//! a measured window's CPU time split between this tool, the server under
//! test and everything else on the machine.

use std::fs;

use anyhow::{Context, Result};
use serde::Serialize;

/// A process's CPU time and memory, from /proc.
#[derive(Debug, Clone, Copy)]
pub struct ProcUsage {
    pub user_seconds: f64,
    pub system_seconds: f64,
    pub rss_bytes: u64,
    pub peak_rss_bytes: u64,
}

impl ProcUsage {
    pub fn read(pid: u32) -> Result<Self> {
        let stat =
            fs::read_to_string(format!("/proc/{pid}/stat")).context("reading /proc/PID/stat")?;
        // The command name may hold spaces and parentheses: fields are
        // counted from the last ')'. utime and stime are fields 14 and 15,
        // that is the 12th and 13th after it.
        let after_name = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest)
            .unwrap_or_default();
        let fields: Vec<&str> = after_name.split_whitespace().collect();
        let ticks = |index: usize| -> Result<u64> {
            fields
                .get(index)
                .and_then(|f| f.parse().ok())
                .context("parsing /proc/PID/stat")
        };
        let user_seconds = ticks(11)? as f64 / ticks_per_second();
        let system_seconds = ticks(12)? as f64 / ticks_per_second();

        let status = fs::read_to_string(format!("/proc/{pid}/status"))
            .context("reading /proc/PID/status")?;
        let kib = |key: &str| -> u64 {
            status
                .lines()
                .find_map(|line| line.strip_prefix(key))
                .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
                .unwrap_or(0)
        };
        Ok(Self {
            user_seconds,
            system_seconds,
            rss_bytes: kib("VmRSS:") * 1024,
            peak_rss_bytes: kib("VmHWM:") * 1024,
        })
    }

    pub fn cpu_seconds(&self) -> f64 {
        self.user_seconds + self.system_seconds
    }
}

/// CPU time of this process, the server under test and everything else on
/// the machine over a window. The client and server share the machine's
/// cores, and anything else running (a build, say) skews both: a run with
/// much `other` CPU time is not to be trusted.
pub struct CpuWindow {
    pub machine_busy_s: f64,
    pub client: ProcUsage,
    pub server: Option<ProcUsage>,
    pub server_pid: Option<u32>,
}

/// The window's CPU seconds by whom.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct CpuSplit {
    /// This process: the load client (and the bare server, in bare rounds).
    pub client_s: f64,
    pub server_s: Option<f64>,
    pub server_system_s: Option<f64>,
    /// Busy CPU time of every other process and the kernel's own threads.
    pub other_s: f64,
}

impl CpuWindow {
    pub fn start(server_pid: Option<u32>) -> Result<Self> {
        Ok(Self {
            machine_busy_s: machine_busy_seconds()?,
            client: ProcUsage::read(std::process::id())?,
            server: server_pid.map(ProcUsage::read).transpose()?,
            server_pid,
        })
    }

    pub fn end(&self) -> Result<CpuSplit> {
        let later = Self::start(self.server_pid)?;
        let client_s = later.client.cpu_seconds() - self.client.cpu_seconds();
        let server_s = later
            .server
            .zip(self.server)
            .map(|(b, a)| b.cpu_seconds() - a.cpu_seconds());
        let server_system_s = later
            .server
            .zip(self.server)
            .map(|(b, a)| b.system_seconds - a.system_seconds);
        let machine_s = later.machine_busy_s - self.machine_busy_s;
        Ok(CpuSplit {
            client_s,
            server_s,
            server_system_s,
            other_s: (machine_s - client_s - server_s.unwrap_or(0.0)).max(0.0),
        })
    }
}

/// Seconds all CPUs together have been busy since boot, from /proc/stat.
fn machine_busy_seconds() -> Result<f64> {
    let stat = fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
    let ticks: Vec<u64> = stat
        .lines()
        .next()
        .and_then(|line| line.strip_prefix("cpu "))
        .context("parsing /proc/stat")?
        .split_whitespace()
        .filter_map(|field| field.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal: all but idle and
    // iowait are busy (guest time is already counted in user).
    let busy: u64 = ticks
        .iter()
        .take(8)
        .enumerate()
        .filter(|(index, _)| !matches!(index, 3 | 4))
        .map(|(_, ticks)| ticks)
        .sum();
    Ok(busy as f64 / ticks_per_second())
}

fn ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64
}
