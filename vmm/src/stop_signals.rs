//! The signals that stop a sandbox (SIGINT, SIGTERM, SIGHUP, SIGQUIT), held blocked for the whole
//! of `run --mode vm` — not just while the VM runs — so none can kill the launcher between
//! creating host state (run directory, disks, tap) and removing it. One that arrives while disks
//! are prepared is noticed between steps ([`StopSignals::take_pending`]) and ends the run
//! cleanly; one that arrives once the VM is built is read by the VMM (`Ending::Signal`).

use nix::sys::signal::{SigSet, SigmaskHow, Signal};

/// The signals that stop a sandbox.
pub fn stop_set() -> SigSet {
    let mut set = SigSet::empty();
    for s in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP, Signal::SIGQUIT] {
        set.add(s);
    }
    set
}

/// Holds [`stop_set`] blocked on this thread (and threads it starts) until dropped.
pub struct StopSignals {
    old: SigSet,
}

impl StopSignals {
    pub fn block() -> std::io::Result<StopSignals> {
        let old = stop_set()
            .thread_swap_mask(SigmaskHow::SIG_BLOCK)
            .map_err(std::io::Error::from)?;
        Ok(StopSignals { old })
    }

    /// A stop signal that arrived since [`StopSignals::block`], consumed; `None` if none did.
    pub fn take_pending(&self) -> Option<Signal> {
        // SAFETY: an all-zero sigset_t is a valid (empty) set; sigpending overwrites it.
        let mut pending: libc::sigset_t = unsafe { std::mem::zeroed() };
        // SAFETY: sigpending writes the sigset_t it is given, which lives for the call.
        if unsafe { libc::sigpending(&mut pending) } != 0 {
            return None;
        }
        let set = stop_set();
        // SAFETY: sigismember only reads the initialised set.
        if !set
            .iter()
            .any(|s| unsafe { libc::sigismember(&pending, s as libc::c_int) } == 1)
        {
            return None;
        }
        // One of the set is pending, so sigwait returns at once, consuming it.
        set.wait().ok()
    }
}

impl Drop for StopSignals {
    fn drop(&mut self) {
        // Restoring a mask read from the kernel cannot fail.
        let _ = self.old.thread_set_mask();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signal_raised_while_blocked_is_taken_not_delivered() {
        let guard = StopSignals::block().unwrap();
        assert_eq!(guard.take_pending(), None);
        // SAFETY: pthread_self and pthread_kill on this very thread; SIGHUP is blocked here.
        unsafe { libc::pthread_kill(libc::pthread_self(), libc::SIGHUP) };
        assert_eq!(guard.take_pending(), Some(Signal::SIGHUP));
        assert_eq!(guard.take_pending(), None);
    }
}
