//! The system status object: process and machine figures read from /proc and /sys at the moment
//! of asking (nothing cached, nothing invented; `null` where this machine cannot tell), plus the
//! live counters of cameras, clients and events. A sampler thread publishes it on a timer for
//! `/stream/system-status`.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::hub::{Broadcast, EvictHook, Subscription};
use crate::metrics::{ClientKind, Metrics};
use crate::shutdown::Shutdown;

/// Where the camera part of the status comes from (the capture thread, once it exists).
pub type CameraStatusFn = Box<dyn Fn() -> Value + Send + Sync>;

/// Another part of the status object, measured at the moment of asking (the MQTT bridge and
/// webhooks add theirs).
pub type SectionFn = Box<dyn Fn() -> Value + Send + Sync>;

/// One status document as sent: serialised once, shared by every status client.
pub type SharedStatus = Arc<String>;

/// Reads the figures. `proc_root` and `sys_root` are `/proc` and `/sys`, except in the unit test
/// that reads a fake tree with known values (`with_roots`).
pub struct StatusSampler {
    proc_root: PathBuf,
    sys_root: PathBuf,
    metrics: Arc<Metrics>,
    camera: CameraStatusFn,
    doorbell: Value,
    sections: Vec<(&'static str, SectionFn)>,
    /// CPU time and wall time at the previous sample: cpu_percent covers the span since then.
    previous_cpu: Mutex<(Instant, Option<f64>)>,
    ticks_per_second: f64,
}

impl StatusSampler {
    pub fn new(
        metrics: Arc<Metrics>,
        camera: CameraStatusFn,
        doorbell: &crate::doorbell::DoorbellSpec,
    ) -> StatusSampler {
        // SAFETY: sysconf has no preconditions.
        let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        let sampler = StatusSampler {
            proc_root: PathBuf::from("/proc"),
            sys_root: PathBuf::from("/sys"),
            metrics,
            camera,
            doorbell: json!({"source": doorbell.source_name(), "pin": doorbell.pin()}),
            sections: Vec::new(),
            previous_cpu: Mutex::new((Instant::now(), None)),
            ticks_per_second: if ticks > 0 { ticks as f64 } else { 100.0 },
        };
        let cpu = sampler.process_cpu_seconds();
        sampler.previous_cpu.lock().expect("cpu lock").1 = cpu;
        sampler
    }

    /// Adds `name` to the status object, filled by `section` at each sample.
    pub fn with_section(mut self, name: &'static str, section: SectionFn) -> StatusSampler {
        self.sections.push((name, section));
        self
    }

    /// A sampler reading `proc_root` and `sys_root` instead of `/proc` and `/sys`.
    #[cfg(test)]
    fn with_roots(mut self, proc_root: &Path, sys_root: &Path) -> StatusSampler {
        self.proc_root = proc_root.to_path_buf();
        self.sys_root = sys_root.to_path_buf();
        let cpu = self.process_cpu_seconds();
        self.previous_cpu.lock().expect("cpu lock").1 = cpu;
        self
    }

    /// The whole status object, measured now.
    pub fn sample(&self) -> Value {
        let metrics = &self.metrics;
        let mut status = json!({
            "timestamp": crate::clock::round_ms(crate::clock::unix_now()),
            "uptime_s": crate::clock::round_ms(metrics.uptime_s()),
            "version": env!("CARGO_PKG_VERSION"),
            "cpu_percent": self.cpu_percent(),
            "rss_bytes": self.rss_bytes(),
            "mem_available_bytes": read_meminfo_available(&self.proc_root.join("meminfo")),
            "load_avg": read_loadavg(&self.proc_root.join("loadavg")),
            "temperature_c": read_temperature(&self.sys_root.join("class/thermal")),
            "camera": (self.camera)(),
            "clients": {
                "sse": metrics.clients(ClientKind::Sse),
                "websocket": metrics.clients(ClientKind::WebSocket),
                "video": metrics.clients(ClientKind::Video),
            },
            "events": {
                "last_id": metrics.last_event_id.load(Ordering::Relaxed),
                "stored": metrics.events_stored.load(Ordering::Relaxed),
            },
            "doorbell": self.doorbell,
        });
        for (name, section) in &self.sections {
            status[*name] = section();
        }
        status
    }

    /// This process's CPU use since the previous sample, in percent of one core.
    fn cpu_percent(&self) -> Option<f64> {
        let now_cpu = self.process_cpu_seconds()?;
        let mut previous = self.previous_cpu.lock().expect("cpu lock");
        let (then, then_cpu) = *previous;
        let wall = then.elapsed().as_secs_f64();
        if wall < 0.01 {
            // Too short a span to say anything; keep the older baseline.
            return None;
        }
        *previous = (Instant::now(), Some(now_cpu));
        let used = now_cpu - then_cpu?;
        Some(((used / wall) * 1000.0).round() / 10.0)
    }

    fn process_cpu_seconds(&self) -> Option<f64> {
        let text = std::fs::read_to_string(self.proc_root.join("self/stat")).ok()?;
        parse_stat_cpu_ticks(&text).map(|ticks| ticks as f64 / self.ticks_per_second)
    }

    pub fn rss_bytes(&self) -> Option<u64> {
        let text = std::fs::read_to_string(self.proc_root.join("self/statm")).ok()?;
        let pages: u64 = text.split_whitespace().nth(1)?.parse().ok()?;
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        Some(pages * page.max(1) as u64)
    }
}

/// utime + stime from /proc/PID/stat (fields 14 and 15; the command name may hold spaces and
/// parentheses, so count from the last ')').
pub fn parse_stat_cpu_ticks(stat: &str) -> Option<u64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // after_name starts at field 3 (state): utime is field 14 → index 11.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

fn read_meminfo_available(path: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

fn read_loadavg(path: &Path) -> Option<[f64; 3]> {
    let text = std::fs::read_to_string(path).ok()?;
    let mut values = text.split_whitespace().map(|v| v.parse::<f64>().ok());
    Some([values.next()??, values.next()??, values.next()??])
}

/// The SoC temperature: the first thermal zone whose type names the CPU/SoC, else the first
/// zone with a readable temperature; `None` on machines without thermal zones (like most VMs).
pub fn read_temperature(thermal_dir: &Path) -> Option<f64> {
    let mut zones: Vec<PathBuf> = std::fs::read_dir(thermal_dir)
        .ok()?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| {
            path.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("thermal_zone"))
        })
        .collect();
    zones.sort();
    let read = |zone: &PathBuf| -> Option<f64> {
        let milli: f64 = std::fs::read_to_string(zone.join("temp"))
            .ok()?
            .trim()
            .parse()
            .ok()?;
        Some((milli / 100.0).round() / 10.0)
    };
    let is_cpu = |zone: &PathBuf| {
        std::fs::read_to_string(zone.join("type")).is_ok_and(|t| {
            let t = t.to_ascii_lowercase();
            t.contains("cpu") || t.contains("soc") || t.contains("x86_pkg")
        })
    };
    zones
        .iter()
        .filter(|z| is_cpu(z))
        .find_map(read)
        .or_else(|| zones.iter().find_map(read))
}

/// The latest status, published every `interval` to status subscribers.
#[derive(Clone)]
pub struct StatusHub {
    sampler: Arc<StatusSampler>,
    broadcast: Broadcast<SharedStatus>,
}

impl StatusHub {
    pub fn new(sampler: StatusSampler) -> StatusHub {
        StatusHub {
            sampler: Arc::new(sampler),
            broadcast: Broadcast::new(),
        }
    }

    /// Measures now (for `/api/status` and a new status stream's first message).
    pub fn sample(&self) -> Value {
        self.sampler.sample()
    }

    pub fn rss_bytes(&self) -> Option<u64> {
        self.sampler.rss_bytes()
    }

    pub fn subscribe(&self, on_evict: Option<EvictHook>) -> Subscription<SharedStatus> {
        // A status client needs only the newest document; a few queued is plenty.
        self.broadcast.subscribe(4, on_evict)
    }

    /// Runs the sampler thread: one sample per `interval` while anyone listens. The handle
    /// tells the main loop whether the thread is still alive (the systemd watchdog).
    pub fn spawn_sampler(
        &self,
        interval: Duration,
        shutdown: Shutdown,
    ) -> std::io::Result<std::thread::JoinHandle<()>> {
        let hub = self.clone();
        std::thread::Builder::new()
            .name("status".into())
            .stack_size(128 * 1024)
            .spawn(move || {
                let stop = shutdown.signal();
                loop {
                    // The shutdown channel never carries a message: it only disconnects.
                    if let Err(crossbeam_channel::RecvTimeoutError::Disconnected) =
                        stop.recv_timeout(interval)
                    {
                        break;
                    }
                    if hub.broadcast.is_empty() {
                        continue;
                    }
                    let status = Arc::new(crate::json::text(&hub.sampler.sample()));
                    hub.broadcast.publish(&status);
                }
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_parsing_survives_odd_command_names() {
        let stat = "1234 (my (odd) name) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 1 0";
        assert_eq!(parse_stat_cpu_ticks(stat), Some(300));
        assert_eq!(parse_stat_cpu_ticks("garbage"), None);
    }

    #[test]
    fn temperature_prefers_the_cpu_zone_and_is_none_without_zones() {
        let dir = std::env::temp_dir().join(format!("porchlight-thermal-{}", std::process::id()));
        let zone = |n: u32, kind: &str, milli: &str| {
            let z = dir.join(format!("thermal_zone{n}"));
            std::fs::create_dir_all(&z).unwrap();
            std::fs::write(z.join("type"), kind).unwrap();
            std::fs::write(z.join("temp"), milli).unwrap();
        };
        assert_eq!(read_temperature(&dir), None);
        zone(0, "acpitz\n", "30000\n");
        zone(1, "cpu-thermal\n", "48312\n");
        assert_eq!(read_temperature(&dir), Some(48.3));
        std::fs::remove_dir_all(&dir).ok();
    }

    /// Every figure read from /proc and /sys is the file's, converted: a fake tree with known
    /// values gives exactly those values (and a tree without the files gives nulls, not zeros).
    #[test]
    fn figures_are_read_from_proc_and_sys() {
        let dir = std::env::temp_dir().join(format!("porchlight-proc-{}", std::process::id()));
        let proc_root = dir.join("proc");
        let sys_root = dir.join("sys");
        std::fs::create_dir_all(proc_root.join("self")).unwrap();
        std::fs::create_dir_all(sys_root.join("class/thermal/thermal_zone0")).unwrap();
        std::fs::write(
            proc_root.join("meminfo"),
            "MemTotal:  500000 kB\nMemFree: 1000 kB\nMemAvailable:  300000 kB\n",
        )
        .unwrap();
        std::fs::write(proc_root.join("loadavg"), "0.10 0.20 0.30 1/80 1234\n").unwrap();
        std::fs::write(proc_root.join("self/statm"), "5000 2000 300 10 0 900 0\n").unwrap();
        let stat = |ticks: u64| format!("9 (porchlight) S 1 2 3 4 5 6 7 8 9 10 {ticks} 0 0 0\n");
        std::fs::write(proc_root.join("self/stat"), stat(100)).unwrap();
        std::fs::write(
            sys_root.join("class/thermal/thermal_zone0/type"),
            "cpu-thermal\n",
        )
        .unwrap();
        std::fs::write(sys_root.join("class/thermal/thermal_zone0/temp"), "51234\n").unwrap();
        let sampler = StatusSampler::new(
            Arc::new(Metrics::new()),
            Box::new(|| json!({})),
            &crate::doorbell::DoorbellSpec::Sim,
        )
        .with_roots(&proc_root, &sys_root);
        // One second of CPU time (at the machine's tick rate) passes between the samples.
        let later = 100 + sampler.ticks_per_second as u64;
        std::fs::write(proc_root.join("self/stat"), stat(later)).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        let status = sampler.sample();
        assert_eq!(status["mem_available_bytes"], 300_000 * 1024);
        assert_eq!(status["load_avg"], json!([0.1, 0.2, 0.3]));
        assert_eq!(status["temperature_c"], 51.2);
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u64;
        assert_eq!(status["rss_bytes"], 2000 * page);
        // A second of CPU in a little more than 20 ms of wall time: far above 100 %.
        assert!(status["cpu_percent"].as_f64().unwrap() > 100.0, "{status}");

        std::fs::remove_dir_all(&dir).unwrap();
        let status = sampler.sample();
        for key in [
            "mem_available_bytes",
            "load_avg",
            "temperature_c",
            "rss_bytes",
            "cpu_percent",
        ] {
            assert!(status[key].is_null(), "{key}: {}", status[key]);
        }
    }

    #[test]
    fn a_sample_has_every_field() {
        let metrics = Arc::new(Metrics::new());
        let sampler = StatusSampler::new(
            metrics,
            Box::new(|| json!({"state": "offline"})),
            &crate::doorbell::DoorbellSpec::Sim,
        );
        std::thread::sleep(Duration::from_millis(20));
        let status = sampler.sample();
        for key in [
            "timestamp",
            "uptime_s",
            "version",
            "cpu_percent",
            "rss_bytes",
            "mem_available_bytes",
            "load_avg",
            "temperature_c",
            "camera",
            "clients",
            "events",
            "doorbell",
        ] {
            assert!(status.get(key).is_some(), "{key} missing");
        }
        assert!(status["rss_bytes"].as_u64().unwrap() > 0);
        assert!(status["cpu_percent"].as_f64().is_some());
        assert_eq!(status["doorbell"]["source"], "sim");
    }
}
