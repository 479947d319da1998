//! Thread priorities: video work yields the CPU to events.
//!
//! On a Pi Zero every thread shares one core. A JPEG encode (the synthetic camera, a preset's
//! encoder) or a motion decode holds it for milliseconds; an event that arrives meanwhile waits
//! for the scheduler to take the core back. Threads that make or examine video therefore run
//! a few nice levels below the rest: the scheduler then gives the event writer, the connection
//! threads and the syncer the core as soon as they wake, while video still gets every cycle
//! they leave (a nice level only weighs shares under contention; it never idles a core).
//! Raising one's own nice value needs no privilege; it is relative to the process's, so a
//! systemd `Nice=` still moves the whole server.
//!
//! The event fan-out goes further where it is allowed to: its two threads (the event writer
//! and its pass helper) run at the lowest real-time priority, `SCHED_FIFO` 1. A nice level only
//! shares the core; under it, every client the writer's `send` wakes on the same core (a
//! dashboard, a local NVR or Home Assistant, a benchmark's readers) and the video encoder can
//! still take the core in the middle of a pass, so a pass over hundreds of clients is cut into
//! hundreds of context switches and the last client waits for all of them. At `SCHED_FIFO` a
//! pass runs from its first client to its last, and everything it woke runs after it. This
//! cannot starve the rest of the server: the writer runs only for events, which normal-priority
//! threads (connections, the doorbell, the camera) must publish first, and each wake-up's work
//! is bounded (one non-blocking `send` per client per event); the kernel also keeps a share of
//! every second for normal threads. It needs root, `CAP_SYS_NICE` or an `RLIMIT_RTPRIO` of 1
//! (the systemd unit's `LimitRTPRIO=1`); without, the fan-out runs at normal priority, as
//! before, and says so once in the log.

use std::sync::atomic::{AtomicBool, Ordering};

/// Nice levels the video threads run below the others: weight 335 against 1024, so with both
/// wanting the core an event thread gets three quarters of it.
pub const VIDEO_NICE_STEP: i32 = 5;

/// Lowers the calling thread's priority by [`VIDEO_NICE_STEP`] (what it is: for the log).
pub fn yield_to_events(what: &str) {
    // On Linux `setpriority(PRIO_PROCESS, tid)` applies to the one thread (nptl threads are
    // tasks of their own).
    // SAFETY: plain system calls on the calling thread's id; no memory is passed.
    let tid = unsafe { libc::gettid() };
    let Ok(who) = libc::id_t::try_from(tid) else {
        return;
    };
    // SAFETY: as above. getpriority can return -1 legitimately; errno is cleared first.
    let current = unsafe {
        *libc::__errno_location() = 0;
        libc::getpriority(libc::PRIO_PROCESS, who)
    };
    let target = (current + VIDEO_NICE_STEP).min(19);
    // SAFETY: as above.
    if unsafe { libc::setpriority(libc::PRIO_PROCESS, who, target) } != 0 {
        log::debug!(
            "{what}: cannot lower its priority: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// The real-time priority of the event fan-out's threads: the lowest `SCHED_FIFO` level, so any
/// real-time work of the system's own (audio, the kernel's threads) still comes first.
pub const EVENT_FANOUT_RT_PRIORITY: i32 = 1;

/// Whether the fan-out's real-time priority has been reported in the log (once a process).
static FANOUT_PRIORITY_LOGGED: AtomicBool = AtomicBool::new(false);

/// Runs the calling thread (one of the event fan-out's) at [`EVENT_FANOUT_RT_PRIORITY`] under
/// `SCHED_FIFO` if the system allows it (see the module's doc); returns whether it does.
/// `SCHED_RESET_ON_FORK`: a thread it spawns starts at normal priority, so only the threads
/// that call this run in real time.
pub fn run_event_fanout_first(what: &str) -> bool {
    let param = libc::sched_param {
        sched_priority: EVENT_FANOUT_RT_PRIORITY,
    };
    // SAFETY: pid 0 is the calling thread; `param` is valid for the call.
    let set = unsafe {
        libc::sched_setscheduler(0, libc::SCHED_FIFO | libc::SCHED_RESET_ON_FORK, &param)
    } == 0;
    let refusal = (!set).then(std::io::Error::last_os_error);
    if !FANOUT_PRIORITY_LOGGED.swap(true, Ordering::Relaxed) {
        match refusal {
            None => log::info!(
                "event fan-out: real-time priority (SCHED_FIFO {EVENT_FANOUT_RT_PRIORITY}): a \
                 pass over the clients is not interrupted by the threads it wakes"
            ),
            Some(err) => log::info!(
                "event fan-out: normal priority; real-time scheduling refused ({err}); root, \
                 CAP_SYS_NICE or LimitRTPRIO=1 allows it"
            ),
        }
    } else if let Some(err) = refusal {
        log::debug!("{what}: real-time scheduling refused ({err})");
    }
    set
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nice_of_this_thread() -> i32 {
        // SAFETY: plain system calls on the calling thread's id.
        unsafe { libc::getpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t) }
    }

    #[test]
    fn a_video_thread_runs_below_its_siblings_and_only_it() {
        let before = nice_of_this_thread();
        let lowered = std::thread::spawn(|| {
            yield_to_events("test");
            nice_of_this_thread()
        })
        .join()
        .unwrap();
        assert_eq!(lowered, (before + VIDEO_NICE_STEP).min(19));
        assert_eq!(
            nice_of_this_thread(),
            before,
            "the other threads keep theirs"
        );
    }

    fn policy_of_this_thread() -> i32 {
        // SAFETY: pid 0 is the calling thread.
        unsafe { libc::sched_getscheduler(0) }
    }

    #[test]
    fn a_fanout_thread_runs_in_real_time_when_allowed_and_only_it() {
        let before = policy_of_this_thread();
        let (set, policy, child_policy) = std::thread::spawn(|| {
            let set = run_event_fanout_first("test");
            let child = std::thread::spawn(policy_of_this_thread).join().unwrap();
            (set, policy_of_this_thread(), child)
        })
        .join()
        .unwrap();
        // CAP_SYS_NICE (bit 23 of the effective set) or an RLIMIT_RTPRIO of 1 allows it.
        let cap_sys_nice = std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|status| {
                let hex = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?;
                u64::from_str_radix(hex.trim(), 16).ok()
            })
            .is_some_and(|caps| caps & (1 << 23) != 0);
        let allowed = cap_sys_nice || {
            let mut limit = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            // SAFETY: `limit` is valid for the call.
            let read = unsafe { libc::getrlimit(libc::RLIMIT_RTPRIO, &mut limit) } == 0;
            read && limit.rlim_cur >= 1
        };
        if allowed {
            assert!(set, "root or RLIMIT_RTPRIO >= 1 allows SCHED_FIFO 1");
        }
        if set {
            assert_eq!(policy & !libc::SCHED_RESET_ON_FORK, libc::SCHED_FIFO);
            assert_eq!(
                child_policy,
                libc::SCHED_OTHER,
                "a thread it spawns starts at normal priority"
            );
        } else {
            assert_eq!(policy, before, "refused: the thread keeps its policy");
        }
        assert_eq!(
            policy_of_this_thread(),
            before,
            "the other threads keep theirs"
        );
    }
}
