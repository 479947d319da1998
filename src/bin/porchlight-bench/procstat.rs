//! Reads a process's CPU time, memory and threads from /proc/PID, as the figures to report.

use std::time::Instant;

#[derive(Clone, Copy, Debug, Default)]
pub struct ProcSample {
    pub cpu_seconds: f64,
    pub rss_bytes: u64,
    pub peak_rss_bytes: u64,
    pub threads: u64,
}

pub fn ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as f64 } else { 100.0 }
}

pub fn sample(pid: u32) -> Option<ProcSample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let ticks = porchlight::status::parse_stat_cpu_ticks(&stat)?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Some(ProcSample {
        cpu_seconds: ticks as f64 / ticks_per_second(),
        rss_bytes: field("VmRSS:") * 1024,
        peak_rss_bytes: field("VmHWM:") * 1024,
        threads: field("Threads:"),
    })
}

/// CPU use between two samples, in percent of one core.
pub fn cpu_percent(before: (Instant, ProcSample), after: (Instant, ProcSample)) -> f64 {
    let wall = after.0.duration_since(before.0).as_secs_f64();
    if wall <= 0.0 {
        return 0.0;
    }
    (after.1.cpu_seconds - before.1.cpu_seconds) / wall * 100.0
}
