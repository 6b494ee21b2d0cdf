//! Process figures in the Prometheus client conventions (`process_*`), read from
//! `/proc/self` at scrape time: resident memory, CPU seconds, open and maximum file
//! descriptors. Rendered as text appended to the registry's output, since a counter of
//! fractional seconds does not fit the `metrics` crate's integer counters.

use std::fmt::Write as _;

use crate::names;

/// Clock ticks per second for `/proc/self/stat` (fixed at 100 on Linux's supported
/// architectures; `sysconf` would need `unsafe` or a new dependency).
const TICKS_PER_SECOND: f64 = 100.0;

/// Page size for `/proc/self/statm` (4 KiB on the platforms Weft builds for).
const PAGE_SIZE: u64 = 4096;

/// The process metrics as Prometheus text, or an empty string where `/proc` is missing.
pub fn render() -> String {
    let mut out = String::new();
    if let Some(rss) = rss_bytes() {
        gauge(
            &mut out,
            names::PROCESS_RSS,
            "Resident memory in bytes.",
            rss as f64,
        );
    }
    if let Some(cpu) = cpu_seconds() {
        let _ = writeln!(
            out,
            "# HELP {} Total user and system CPU time in seconds.",
            names::PROCESS_CPU
        );
        let _ = writeln!(out, "# TYPE {} counter", names::PROCESS_CPU);
        let _ = writeln!(out, "{} {cpu}", names::PROCESS_CPU);
    }
    if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
        gauge(
            &mut out,
            names::PROCESS_OPEN_FDS,
            "Open file descriptors.",
            dir.count() as f64,
        );
    }
    if let Some(max) = max_fds() {
        gauge(
            &mut out,
            names::PROCESS_MAX_FDS,
            "Maximum number of open file descriptors.",
            max as f64,
        );
    }
    out
}

fn gauge(out: &mut String, name: &str, help: &str, v: f64) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} gauge");
    let _ = writeln!(out, "{name} {v}");
}

/// Resident set size, from the second field of `/proc/self/statm` (pages).
pub fn rss_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * PAGE_SIZE)
}

/// User + system CPU time, from fields 14 and 15 of `/proc/self/stat`.
pub fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: count from the
    // closing one.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    // After ')': field 3 (state) is the first; utime is field 14, stime 15.
    let utime: f64 = fields.nth(11)?.parse().ok()?;
    let stime: f64 = fields.next()?.parse().ok()?;
    Some((utime + stime) / TICKS_PER_SECOND)
}

fn max_fds() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_this_process() {
        let text = super::render();
        for name in [
            "process_resident_memory_bytes",
            "process_cpu_seconds_total",
            "process_open_fds",
            "process_max_fds",
        ] {
            assert!(
                text.lines().any(|l| l.starts_with(&format!("{name} "))),
                "{name} missing:\n{text}"
            );
        }
        assert!(super::rss_bytes().is_some_and(|r| r > 1024 * 1024));
    }
}
