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
}
