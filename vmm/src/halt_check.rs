//! Whether the guest has halted for good, asked of KVM rather than read from the console.
//!
//! A kernel that powers off or halts without ACPI ends with every vCPU in `hlt` with interrupts
//! off; with KVM's in-kernel LAPIC that never reaches the VMM as an exit. Once the workload can
//! write to the console, the kernel's power-down line there is only a hint: it makes the VMM run
//! a check for a while ([`CHECK_WINDOW`]). Each round of the check kicks every vCPU thread out of
//! KVM_RUN; each answers whether its vCPU can run again (see [`crate::vcpu`]). The VM ends when
//! every vCPU has answered "cannot run again" in two rounds running: a workload that only prints
//! the line finds its vCPUs running and the VM going on.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use vmm_sys_util::eventfd::EventFd;

use crate::error::VmmError;

/// How long after the last request the check keeps running rounds.
pub const CHECK_WINDOW: Duration = Duration::from_secs(10);
/// The time between rounds.
pub const ROUND_INTERVAL: Duration = Duration::from_millis(50);
/// How many rounds running every vCPU must answer "cannot run again" in.
const ROUNDS_TO_CONFIRM: u32 = 2;

/// One vCPU's answers.
#[derive(Debug, Default, Clone, Copy)]
struct Answers {
    /// The last round it answered in (0: none).
    round: u64,
    /// How many rounds running it answered "cannot run again".
    stuck_streak: u32,
}

#[derive(Debug, Default)]
struct Rounds {
    /// The current round (0: none run yet).
    current: u64,
    /// Rounds run until then.
    until: Option<Instant>,
    answers: Vec<Answers>,
}

/// The check, shared by whoever asks for it, the thread that runs rounds, and the vCPU threads.
pub struct HaltCheck {
    rounds: Mutex<Rounds>,
    /// Wakes the thread that runs rounds: a check was asked for.
    requested: EventFd,
}

impl HaltCheck {
    /// A check over `vcpus` vCPUs, idle until requested.
    pub fn new(vcpus: usize) -> Result<HaltCheck, VmmError> {
        Ok(HaltCheck {
            rounds: Mutex::new(Rounds {
                answers: vec![Answers::default(); vcpus],
                ..Rounds::default()
            }),
            requested: EventFd::new(libc::EFD_NONBLOCK)
                .map_err(VmmError::io("creating the halt-check eventfd"))?,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Rounds> {
        // Plain counters: still meaningful after a panic elsewhere.
        self.rounds.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs rounds from now until [`CHECK_WINDOW`] after `now`, and wakes the round runner.
    pub fn request(&self, now: Instant) {
        let until = now + CHECK_WINDOW;
        let mut r = self.lock();
        r.until = Some(r.until.map_or(until, |u| u.max(until)));
        drop(r);
        // A full counter still wakes the runner, so an error here loses nothing.
        let _ = self.requested.write(1);
    }

    /// The eventfd a request writes (the round runner reads it to clear it).
    pub fn eventfd(&self) -> &EventFd {
        &self.requested
    }

    /// Whether a check is running at `now`.
    pub fn running(&self, now: Instant) -> bool {
        self.lock().until.is_some_and(|u| now < u)
    }

    /// Starts a round (the caller then kicks every vCPU thread); false when no check is running.
    pub fn start_round(&self, now: Instant) -> bool {
        let mut r = self.lock();
        if r.until.is_none_or(|u| now >= u) {
            r.until = None;
            return false;
        }
        r.current += 1;
        true
    }

    /// Whether a round is waiting for this vCPU's answer.
    pub fn wants_answer(&self, vcpu: usize) -> bool {
        let r = self.lock();
        r.answers.get(vcpu).is_some_and(|a| a.round < r.current)
    }

    /// Records vCPU `vcpu`'s answer to the current round; returns true when that completes the
    /// proof that no vCPU can run again.
    pub fn answer(&self, vcpu: usize, cannot_run: bool) -> bool {
        let mut r = self.lock();
        let current = r.current;
        let Some(a) = r.answers.get_mut(vcpu) else {
            return false;
        };
        if current == 0 || a.round == current {
            return false;
        }
        a.stuck_streak = if !cannot_run {
            0
        } else if a.round + 1 == current {
            a.stuck_streak + 1
        } else {
            // A round missed in between proves nothing about it: start again.
            1
        };
        a.round = current;
        r.answers
            .iter()
            .all(|a| a.round == current && a.stuck_streak >= ROUNDS_TO_CONFIRM)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round(check: &HaltCheck, now: Instant, answers: &[bool]) -> bool {
        assert!(check.start_round(now));
        let mut done = false;
        for (i, &stuck) in answers.iter().enumerate() {
            assert!(check.wants_answer(i));
            done = check.answer(i, stuck);
            assert!(!check.wants_answer(i));
        }
        done
    }

    #[test]
    fn nothing_runs_until_requested_and_a_request_wakes_the_runner() {
        let check = HaltCheck::new(1).unwrap();
        let now = Instant::now();
        assert!(!check.running(now));
        assert!(!check.start_round(now));
        assert!(!check.wants_answer(0));
        assert!(!check.answer(0, true));
        check.request(now);
        assert_eq!(check.eventfd().read().unwrap(), 1);
        assert!(check.running(now));
        // The window closes.
        assert!(!check.start_round(now + CHECK_WINDOW));
        assert!(!check.running(now + CHECK_WINDOW));
    }

    #[test]
    fn every_vcpu_stuck_in_two_rounds_running_confirms() {
        let check = HaltCheck::new(2).unwrap();
        let now = Instant::now();
        check.request(now);
        assert!(!round(&check, now, &[true, true]));
        assert!(round(&check, now, &[true, true]));
    }

    #[test]
    fn a_running_vcpu_or_a_missed_round_proves_nothing() {
        let check = HaltCheck::new(2).unwrap();
        let now = Instant::now();
        check.request(now);
        // One vCPU still runs (a workload that printed the power-down line).
        for _ in 0..5 {
            assert!(!round(&check, now, &[true, false]));
        }
        // It stops: two more rounds are needed.
        assert!(!round(&check, now, &[true, true]));
        // vCPU 1 misses a round: its streak starts again.
        assert!(check.start_round(now));
        assert!(!check.answer(0, true));
        assert!(!round(&check, now, &[true, true]));
        assert!(round(&check, now, &[true, true]));
    }

    #[test]
    fn answers_out_of_range_or_twice_in_a_round_are_ignored() {
        let check = HaltCheck::new(1).unwrap();
        let now = Instant::now();
        check.request(now);
        assert!(check.start_round(now));
        assert!(!check.answer(7, true));
        assert!(!check.wants_answer(7));
        assert!(!check.answer(0, true));
        assert!(!check.answer(0, true));
        assert!(round(&check, now, &[true]));
    }
}
