//! `--server-cpus` / `--client-cpus`: run the server and the benchmark's clients on separate
//! cores, e.g. the server alone on one core as on a Pi Zero, with the clients (which stand for
//! phones elsewhere on the network) on the other.

/// Parses a CPU list like `0` or `1,3`.
pub fn parse_cpus(text: &str) -> Result<Vec<usize>, String> {
    let cpus: Result<Vec<usize>, _> = text.split(',').map(|c| c.trim().parse()).collect();
    match cpus {
        Ok(cpus) if !cpus.is_empty() && cpus.iter().all(|&c| c < 1024) => Ok(cpus),
        _ => Err(format!(
            "{text:?} is not a list of CPU numbers like 0 or 1,3"
        )),
    }
}

/// Restricts the calling thread — and every thread or process it starts from now on — to
/// `cpus`.
pub fn pin_current_thread(cpus: &[usize]) -> Result<(), String> {
    // SAFETY: a zeroed cpu_set_t is the empty set; CPU_SET writes inside it for c < 1024, and
    // sched_setaffinity only reads it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for &cpu in cpus {
            libc::CPU_SET(cpu, &mut set);
        }
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(format!(
                "cannot run on CPUs {cpus:?}: {}",
                std::io::Error::last_os_error()
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists() {
        assert_eq!(parse_cpus("0").unwrap(), [0]);
        assert_eq!(parse_cpus("1, 3").unwrap(), [1, 3]);
        assert!(parse_cpus("").is_err());
        assert!(parse_cpus("a").is_err());
        assert!(parse_cpus("5000").is_err());
    }
}
