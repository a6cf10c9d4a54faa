//! The CPU the autoscaler looks at: the node's own, never the host's. A
//! node in a container with a CPU quota (cgroup v2 `cpu.max`, or v1
//! `cpu.cfs_quota_us`) is measured as its cgroup's usage against that
//! quota; without a quota, as the CPU time of the node's own processes
//! (the supervisor and its children) against the cores it may use. So a
//! busy neighbour on the host never keeps the node from growing, and a
//! node at its quota stops growing even when the host is idle.

use std::time::Instant;
use sysinfo::{Pid, ProcessRefreshKind, ProcessesToUpdate, System};

/// Where the node's CPU time is read.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Source {
    /// cgroup v2: usage in `cpu.stat` (`usage_usec`).
    CgroupV2 { cores: f64 },
    /// cgroup v1: usage in `cpuacct.usage` (nanoseconds).
    CgroupV1 { cores: f64 },
    /// The supervisor's and its children's CPU time.
    Processes { cores: f64 },
}

/// Cores a cgroup v2 `cpu.max` line allows (`"max 100000"`: no limit).
fn v2_quota(text: &str) -> Option<f64> {
    let mut parts = text.split_whitespace();
    let quota: f64 = parts.next()?.parse().ok()?;
    let period: f64 = parts.next()?.parse().ok()?;
    (quota > 0.0 && period > 0.0).then(|| quota / period)
}

/// Cores a cgroup v1 quota and period allow (a quota of -1: no limit).
fn v1_quota(quota: &str, period: &str) -> Option<f64> {
    let quota: f64 = quota.trim().parse().ok()?;
    let period: f64 = period.trim().parse().ok()?;
    (quota > 0.0 && period > 0.0).then(|| quota / period)
}

/// `usage_usec` of a cgroup v2 `cpu.stat`.
fn v2_usage_us(stat: &str) -> Option<f64> {
    stat.lines()
        .find_map(|l| l.strip_prefix("usage_usec "))
        .and_then(|v| v.trim().parse().ok())
}

/// Percent of `cores` that `used_us` of CPU time over `wall_us` is.
fn percent(used_us: f64, wall_us: f64, cores: f64) -> f32 {
    if wall_us <= 0.0 || cores <= 0.0 {
        return 0.0;
    }
    ((used_us.max(0.0) / (wall_us * cores)) * 100.0).clamp(0.0, 100.0) as f32
}

fn read(path: &str) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

/// Measures the node's CPU between two calls.
pub(super) struct CpuMeter {
    source: Source,
    last: Option<(Instant, f64)>,
    system: System,
}

impl CpuMeter {
    /// A meter on the cgroup quota if there is one, else on the processes.
    pub(super) fn new() -> Option<Self> {
        let source = if let Some(cores) = read("/sys/fs/cgroup/cpu.max").and_then(|t| v2_quota(&t))
        {
            Source::CgroupV2 { cores }
        } else if let Some(cores) = read("/sys/fs/cgroup/cpu/cpu.cfs_quota_us")
            .zip(read("/sys/fs/cgroup/cpu/cpu.cfs_period_us"))
            .and_then(|(q, p)| v1_quota(&q, &p))
        {
            Source::CgroupV1 { cores }
        } else {
            Source::Processes {
                cores: weir_shared::config::cpu_cores() as f64,
            }
        };
        Some(CpuMeter {
            source,
            last: None,
            system: System::new().ok()?,
        })
    }

    /// CPU time used so far by what the source measures, in microseconds.
    fn used_us(&mut self, children: &[u32]) -> Option<f64> {
        match self.source {
            Source::CgroupV2 { .. } => {
                read("/sys/fs/cgroup/cpu.stat").and_then(|s| v2_usage_us(&s))
            }
            Source::CgroupV1 { .. } => read("/sys/fs/cgroup/cpuacct/cpuacct.usage")
                .and_then(|s| s.trim().parse::<f64>().ok())
                .map(|ns| ns / 1000.0),
            Source::Processes { .. } => {
                let mut pids: Vec<Pid> = children.iter().map(|p| Pid::from_u32(*p)).collect();
                pids.push(Pid::from_u32(std::process::id()));
                self.system.refresh_processes_specifics(
                    ProcessesToUpdate::Some(&pids),
                    true,
                    ProcessRefreshKind::nothing().with_cpu(),
                );
                let ms: u64 = pids
                    .iter()
                    .filter_map(|p| self.system.process(*p))
                    .map(|p| p.accumulated_cpu_time())
                    .sum();
                Some(ms as f64 * 1000.0)
            }
        }
    }

    /// The node's CPU use since the last call, percent of what it may use
    /// (0 on the first call). `children`: the pids of the node's children.
    pub(super) fn sample(&mut self, children: &[u32]) -> f32 {
        let cores = match self.source {
            Source::CgroupV2 { cores }
            | Source::CgroupV1 { cores }
            | Source::Processes { cores } => cores,
        };
        let Some(used) = self.used_us(children) else {
            return 0.0;
        };
        let now = Instant::now();
        let previous = self.last.replace((now, used));
        match previous {
            Some((at, before)) => percent(used - before, (now - at).as_micros() as f64, cores),
            None => 0.0,
        }
    }

    /// What is measured, for the log.
    pub(super) fn describe(&self) -> String {
        match self.source {
            Source::CgroupV2 { cores } => format!("cgroup v2 quota of {cores:.2} cores"),
            Source::CgroupV1 { cores } => format!("cgroup v1 quota of {cores:.2} cores"),
            Source::Processes { cores } => format!("the node's processes on {cores} cores"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotas_are_read_as_cores() {
        assert_eq!(v2_quota("200000 100000\n"), Some(2.0));
        assert_eq!(v2_quota("max 100000\n"), None);
        assert_eq!(v1_quota("50000\n", "100000\n"), Some(0.5));
        assert_eq!(v1_quota("-1\n", "100000\n"), None);
        assert_eq!(
            v2_usage_us("usage_usec 1234\nuser_usec 1000\n"),
            Some(1234.0)
        );
    }

    #[test]
    fn percent_is_of_the_cores_allowed() {
        // Half a core used for one second on a quota of one core: 50%.
        assert_eq!(percent(500_000.0, 1_000_000.0, 1.0), 50.0);
        // The same on four cores: 12.5%.
        assert_eq!(percent(500_000.0, 1_000_000.0, 4.0), 12.5);
        // A child that exited makes the total go back: never below 0.
        assert_eq!(percent(-10.0, 1_000_000.0, 1.0), 0.0);
        assert_eq!(percent(5e6, 1e6, 1.0), 100.0);
    }

    #[test]
    fn a_neighbour_burning_cpu_is_not_the_nodes_cpu() {
        let mut meter = CpuMeter::new().expect("meter");
        meter.source = Source::Processes { cores: 1.0 };
        meter.sample(&[]);
        // Another process spins for 300 ms; this one sleeps.
        let mut spinner = std::process::Command::new("sh")
            .args([
                "-c",
                "end=$(($(date +%s%N)+300000000)); while [ $(date +%s%N) -lt $end ]; do :; done",
            ])
            .spawn()
            .expect("sh");
        std::thread::sleep(std::time::Duration::from_millis(350));
        let _ = spinner.wait();
        let seen = meter.sample(&[]);
        assert!(
            seen < 20.0,
            "the node's own CPU is not the neighbour's: {seen}%"
        );
    }
}
