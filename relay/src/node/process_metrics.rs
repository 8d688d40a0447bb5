//! The standard `process_*` metrics (CPU, memory, open files, start time), read from
//! `/proc/self` at each scrape, as every Prometheus client library exports them.

use std::time::{SystemTime, UNIX_EPOCH};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

/// Reads the process's own figures on each scrape.
#[derive(Debug)]
pub struct ProcessCollector {
    /// When the process started, seconds since the Unix epoch.
    start_time: f64,
}

impl Default for ProcessCollector {
    fn default() -> Self {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        let up = read_stat().map_or(0.0, |s| s.age_secs);
        Self {
            start_time: now - up,
        }
    }
}

/// What `/proc/self/stat` says.
struct Stat {
    cpu_secs: f64,
    virtual_bytes: i64,
    resident_bytes: i64,
    age_secs: f64,
}

fn read_stat() -> Option<Stat> {
    let text = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name (field 2) may hold spaces: the fields after it follow the last ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state is fields[0], so field N of proc(5) is fields[N - 3].
    let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    // SAFETY: sysconf only reads a system constant.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    // SAFETY: as above.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1);
    let uptime: f64 = std::fs::read_to_string("/proc/uptime")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(Stat {
        cpu_secs: (field(14)? + field(15)?) as f64 / ticks,
        virtual_bytes: i64::try_from(field(23)?).unwrap_or(i64::MAX),
        resident_bytes: i64::try_from(field(24)?).unwrap_or(0).saturating_mul(page),
        age_secs: (uptime - field(22)? as f64 / ticks).max(0.0),
    })
}

fn open_fds() -> Option<i64> {
    let n = std::fs::read_dir("/proc/self/fd").ok()?.count();
    i64::try_from(n).ok()
}

fn max_fds() -> Option<i64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return None;
    }
    Some(i64::try_from(limit.rlim_cur).unwrap_or(i64::MAX))
}

fn gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: f64,
) -> Result<(), std::fmt::Error> {
    let g = ConstGauge::new(value);
    g.encode(encoder.encode_descriptor(name, help, None, g.metric_type())?)
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        if let Some(stat) = read_stat() {
            let cpu = ConstCounter::new(stat.cpu_secs);
            let help = "Total user and system CPU time spent in seconds";
            cpu.encode(encoder.encode_descriptor(
                "process_cpu_seconds",
                help,
                None,
                cpu.metric_type(),
            )?)?;
            let help = "Resident memory size in bytes";
            let rss = stat.resident_bytes as f64;
            gauge(&mut encoder, "process_resident_memory_bytes", help, rss)?;
            let help = "Virtual memory size in bytes";
            let vsz = stat.virtual_bytes as f64;
            gauge(&mut encoder, "process_virtual_memory_bytes", help, vsz)?;
        }
        if let Some(n) = open_fds() {
            gauge(
                &mut encoder,
                "process_open_fds",
                "Number of open file descriptors",
                n as f64,
            )?;
        }
        if let Some(n) = max_fds() {
            let help = "Maximum number of open file descriptors";
            gauge(&mut encoder, "process_max_fds", help, n as f64)?;
        }
        let help = "Start time of the process since unix epoch in seconds";
        gauge(
            &mut encoder,
            "process_start_time_seconds",
            help,
            self.start_time,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_its_own_process() {
        let stat = read_stat().expect("/proc/self/stat");
        assert!(stat.resident_bytes > 1 << 20, "{}", stat.resident_bytes);
        assert!(stat.virtual_bytes >= stat.resident_bytes);
        assert!(open_fds().unwrap_or(0) >= 3);
        assert!(max_fds().unwrap_or(0) >= open_fds().unwrap_or(0));
        let c = ProcessCollector::default();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        assert!(c.start_time <= now && c.start_time > now - 3600.0);
    }
}
