//! Giving back the stack pages a thread's busy phase touched, before it waits for a long time.
//!
//! A connection thread parses a request, checks a token, maybe replays events from SQLite —
//! deep call chains that touch 16–20 KiB of its stack — and then, as an event stream, sleeps for
//! hours in a shallow loop. The kernel keeps every page once touched, so 500 idle streams would
//! hold ~10 MB of dead stack. [`release_unused`] hands the pages below the current frame back
//! (`MADV_DONTNEED`: they read as zeros if touched again, so a later deep call simply faults
//! fresh pages in). Nothing lives below the stack pointer of a running function, so this
//! changes no data.

/// Bytes below `release_unused`'s own frame that are never released: far more than that
/// frame and the libc calls it makes from there use.
const MARGIN: usize = 1024;

/// Releases the pages of this thread's stack below the caller's frame. Does nothing on a
/// thread whose stack bounds cannot be read (or on targets other than Linux).
#[inline(never)]
pub fn release_unused() {
    #[cfg(target_os = "linux")]
    {
        let marker = 0u8;
        let here = std::ptr::addr_of!(marker) as usize;
        let Some((low, _high)) = bounds() else {
            return;
        };
        // SAFETY: sysconf has no preconditions.
        let page = match usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }) {
            Ok(page) if page.is_power_of_two() => page,
            _ => return,
        };
        // Pages from MARGIN below this frame's marker stay: this function's own frame (the
        // stack pointer is below the marker) and the calls it makes from here — `madvise`'s
        // return address must not be in a page that `madvise` drops — and the shallow calls
        // the caller makes next.
        let Some(end) = here.checked_sub(MARGIN).map(|keep| keep & !(page - 1)) else {
            return;
        };
        let start = (low + page - 1) & !(page - 1);
        if end <= start {
            return;
        }
        // SAFETY: [start, end) lies inside this thread's own stack mapping and entirely below
        // the current frame, where no live data can be: the stack grows
        // down and everything below the stack pointer is dead. MADV_DONTNEED on private
        // anonymous memory only makes those pages read as zeros when touched next.
        unsafe {
            libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED);
        }
    }
}

/// This thread's stack as `(lowest address, highest address)`.
#[cfg(target_os = "linux")]
fn bounds() -> Option<(usize, usize)> {
    // SAFETY: pthread_getattr_np fills an attr we own (destroyed below); getstack only reads it.
    unsafe {
        let mut attr: libc::pthread_attr_t = std::mem::zeroed();
        if libc::pthread_getattr_np(libc::pthread_self(), &mut attr) != 0 {
            return None;
        }
        let mut addr: *mut libc::c_void = std::ptr::null_mut();
        let mut size: libc::size_t = 0;
        let read = libc::pthread_attr_getstack(&attr, &mut addr, &mut size);
        libc::pthread_attr_destroy(&mut attr);
        if read != 0 || addr.is_null() {
            return None;
        }
        let low = addr as usize;
        Some((low, low.checked_add(size)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Touches `bytes` of stack below the caller, so there is something to release; returns a
    /// sum of what it wrote there, read back.
    #[inline(never)]
    fn deep(bytes: usize) -> u64 {
        let mut buf = [0u8; 64 * 1024];
        for i in (0..bytes.min(buf.len())).step_by(512) {
            buf[i] = (i / 512 % 200) as u8 + 1;
        }
        std::hint::black_box(&mut buf);
        buf.iter().map(|&b| u64::from(b)).sum()
    }

    fn resident_stack_bytes() -> usize {
        let (low, high) = bounds().expect("stack bounds");
        let page = 4096;
        let pages = (high - low) / page;
        let mut vec = vec![0u8; pages];
        // SAFETY: mincore writes one byte per page of the range into `vec`, which is that long.
        let ok = unsafe { libc::mincore(low as *mut libc::c_void, high - low, vec.as_mut_ptr()) };
        assert_eq!(ok, 0, "mincore: {}", std::io::Error::last_os_error());
        vec.iter().filter(|b| **b & 1 == 1).count() * page
    }

    #[test]
    fn pages_below_the_frame_are_given_back_and_the_thread_goes_on() {
        std::thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn(|| {
                let sum = deep(60 * 1024);
                let before = resident_stack_bytes();
                release_unused();
                let after = resident_stack_bytes();
                assert!(
                    after + 40 * 1024 <= before,
                    "resident stack {before} -> {after} bytes"
                );
                // The released pages work as fresh stack again.
                assert_eq!(deep(60 * 1024), sum);
            })
            .unwrap()
            .join()
            .unwrap();
    }
}
