//! PID 1's duties while the workload runs: forward termination signals to it, reap every
//! zombie (orphans are re-parented to PID 1), and when the workload ends, kill and reap whatever
//! it left behind.
//!
//! With the guest agent (a VM with vsock) the same loop runs on the main thread, and the
//! processes the agent starts — and the workload itself, when the agent's `run` starts it — are
//! registered in [`Children`], through which the main thread hands each reaped status to the
//! agent's thread waiting for it ([`wait_for_workload`], [`kill_remaining_into`]).

use super::exec::SpawnError;
use nix::errno::Errno;
use nix::sys::signal::{kill, SigSet, SigmaskHow, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

/// The signals init passes on to the workload.
pub const FORWARDED: [Signal; 4] = [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP, Signal::SIGQUIT];

/// The signals init waits for: the forwarded ones and SIGCHLD.
fn waited() -> SigSet {
    let mut set = SigSet::empty();
    for s in FORWARDED {
        set.add(s);
    }
    set.add(Signal::SIGCHLD);
    set
}

/// Blocks the waited-for signals, so they queue for [`wait_for`] instead of being dropped (the
/// kernel discards default-action signals sent to a namespace's PID 1). Call before forking.
pub fn block_signals() -> Result<(), Errno> {
    waited().thread_block()
}

/// Undoes [`block_signals`] in the child before it runs the workload.
pub fn unblock_all() {
    let _ = nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None);
}

/// The shell convention for a wait status: the exit code, or 128 + the signal number.
pub fn status_code(status: WaitStatus) -> Option<i32> {
    match status {
        WaitStatus::Exited(_, code) => Some(code),
        WaitStatus::Signaled(_, sig, _) => Some(128 + sig as i32),
        _ => None,
    }
}

/// Reaps every child that has ended; returns `main`'s status code if it was among them.
fn reap_ready(main: Pid) -> Option<i32> {
    let mut found = None;
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(_) => return found,
            Ok(status) => {
                if status.pid() == Some(main) {
                    found = found.or(status_code(status));
                }
            }
        }
    }
}

/// Waits until `main` ends, forwarding signals to it and reaping every other child meanwhile;
/// returns its status code.
pub fn wait_for(main: Pid) -> i32 {
    let set = waited();
    loop {
        if let Some(code) = reap_ready(main) {
            return code;
        }
        match set.wait() {
            Ok(Signal::SIGCHLD) => {}
            Ok(sig) => {
                let _ = kill(main, sig);
            }
            Err(_) => {
                // sigwait only fails for a bad set; fall back to a blocking wait for the child.
                if let Ok(status) = waitpid(main, None) {
                    if let Some(code) = status_code(status) {
                        return code;
                    }
                }
            }
        }
    }
}

/// Kills every process left (only as PID 1, where `kill(-1)` means "everyone in this sandbox")
/// and reaps them all.
pub fn kill_remaining() {
    if std::process::id() == 1 {
        let _ = kill(Pid::from_raw(-1), Signal::SIGKILL);
    }
    while let Ok(status) = waitpid(Pid::from_raw(-1), None) {
        let _ = status;
    }
}

/// Where the workload is, for init and the guest agent that may start it (`run`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Workload {
    /// Not started: a plan started `on_request` waits for the agent's `run`.
    NotStarted,
    /// A `run` is starting it.
    Starting,
    Running(Pid),
    Ended(i32),
}

#[derive(Debug)]
struct Table {
    workload: Workload,
    /// The guest agent's children: their status once reaped.
    children: std::collections::HashMap<i32, Option<i32>>,
}

impl Table {
    /// Once the workload has ended init kills what is left: nothing new may start then.
    fn refuse_spawn(&self) -> Result<(), SpawnError> {
        match self.workload {
            Workload::Ended(_) => Err(SpawnError::Ending),
            _ => Ok(()),
        }
    }
}

/// Why the workload could not be claimed for starting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// It is starting or running already (or has ended).
    AlreadyStarted,
}

/// The processes init and the guest agent share: the workload, and the agent's children.
///
/// With the agent, init's main thread stays the only reaper (`waitpid(-1)`, see
/// [`wait_for_workload`]) and hands each reaped status to whoever waits for that child
/// ([`Children::wait`]). Children are forked with the table locked ([`Children::spawn`]), so
/// the reaper, which locks it to deliver a status, can never see a child before it is
/// registered. Without init as the reaper ([`Children::direct`]: the agent run in a test, not
/// as PID 1), each waiter waits for its own child instead.
#[derive(Debug)]
pub struct Children {
    table: std::sync::Mutex<Table>,
    changed: std::sync::Condvar,
    direct: bool,
}

impl Children {
    /// Init's main thread reaps and delivers ([`wait_for_workload`]).
    pub fn for_init() -> Children {
        Children::new(false)
    }

    /// Each [`Children::wait`] reaps its own child (`waitpid(pid)`).
    pub fn direct() -> Children {
        Children::new(true)
    }

    fn new(direct: bool) -> Children {
        Children {
            table: std::sync::Mutex::new(Table {
                workload: Workload::NotStarted,
                children: std::collections::HashMap::new(),
            }),
            changed: std::sync::Condvar::new(),
            direct,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        // A panic elsewhere must not take init down with a poisoned lock: the table stays
        // consistent (every change is one assignment).
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Forks with `fork` (which returns the child's pid) and registers the child for
    /// [`Children::wait`], which must follow.
    pub fn spawn(&self, fork: impl FnOnce() -> Result<Pid, SpawnError>) -> Result<Pid, SpawnError> {
        let mut table = self.lock();
        table.refuse_spawn()?;
        let pid = fork()?;
        table.children.insert(pid.as_raw(), None);
        Ok(pid)
    }

    /// Claims the right to start the workload (once).
    pub fn claim_workload(&self) -> Result<(), Claim> {
        let mut table = self.lock();
        if table.workload != Workload::NotStarted {
            return Err(Claim::AlreadyStarted);
        }
        table.workload = Workload::Starting;
        Ok(())
    }

    /// Forks the workload with `fork` (after [`Children::claim_workload`], or directly at
    /// boot); with `waited`, it is also registered for [`Children::wait`]. A failed fork gives
    /// the claim back.
    pub fn spawn_workload(
        &self,
        waited: bool,
        fork: impl FnOnce() -> Result<Pid, SpawnError>,
    ) -> Result<Pid, SpawnError> {
        let mut table = self.lock();
        table.refuse_spawn()?;
        match fork() {
            Ok(pid) => {
                table.workload = Workload::Running(pid);
                if waited {
                    table.children.insert(pid.as_raw(), None);
                }
                Ok(pid)
            }
            Err(e) => {
                table.workload = Workload::NotStarted;
                Err(e)
            }
        }
    }

    /// Gives back a claim whose start failed before the fork.
    pub fn unclaim_workload(&self) {
        let mut table = self.lock();
        if table.workload == Workload::Starting {
            table.workload = Workload::NotStarted;
        }
    }

    /// Sends `signal` to the workload while it runs (under the lock: a reaped pid that could
    /// be reused is never signalled); `false` when it does not run.
    pub fn signal_workload(&self, signal: i32) -> Result<bool, Errno> {
        let table = self.lock();
        match table.workload {
            Workload::Running(pid) => {
                // SAFETY: kill(2) takes no pointers.
                Errno::result(unsafe { libc::kill(pid.as_raw(), signal) }).map(|_| true)
            }
            _ => Ok(false),
        }
    }

    /// Sends `signal` to `pid`, registered and not yet reaped (`false` once it has been).
    pub fn signal(&self, pid: Pid, signal: i32) -> Result<bool, Errno> {
        let table = self.lock();
        match table.children.get(&pid.as_raw()) {
            Some(None) => {
                // SAFETY: kill(2) takes no pointers.
                Errno::result(unsafe { libc::kill(pid.as_raw(), signal) }).map(|_| true)
            }
            _ => Ok(false),
        }
    }

    /// The running workload.
    pub fn workload_pid(&self) -> Option<Pid> {
        match self.lock().workload {
            Workload::Running(pid) => Some(pid),
            _ => None,
        }
    }

    /// The workload's status, once it has ended.
    pub fn workload_status(&self) -> Option<i32> {
        match self.lock().workload {
            Workload::Ended(code) => Some(code),
            _ => None,
        }
    }

    /// The reaper's delivery: `pid` ended with `code`.
    pub fn reaped(&self, pid: Pid, code: i32) {
        let mut table = self.lock();
        if table.workload == Workload::Running(pid) {
            table.workload = Workload::Ended(code);
        }
        if let Some(slot) = table.children.get_mut(&pid.as_raw()) {
            *slot = Some(code);
        }
        drop(table);
        self.changed.notify_all();
    }

    /// Waits until `pid` (registered by [`Children::spawn`] or [`Children::spawn_workload`])
    /// ends; returns its status code.
    pub fn wait(&self, pid: Pid) -> i32 {
        if self.direct {
            let code = loop {
                match waitpid(pid, None) {
                    Ok(status) => {
                        if let Some(code) = status_code(status) {
                            break code;
                        }
                    }
                    Err(Errno::EINTR) => {}
                    // Not a child of this process (cannot happen for a registered one).
                    Err(_) => break 1,
                }
            };
            self.reaped(pid, code);
        }
        let mut table = self.lock();
        loop {
            if let Some(Some(code)) = table.children.get(&pid.as_raw()) {
                let code = *code;
                table.children.remove(&pid.as_raw());
                return code;
            }
            if !table.children.contains_key(&pid.as_raw()) {
                return 1;
            }
            table = self.changed.wait(table).unwrap_or_else(|e| e.into_inner());
        }
    }
}

/// Reaps every child that has ended, delivering each status to `children`.
fn reap_ready_into(children: &Children) {
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(_) => return,
            Ok(status) => {
                if let (Some(pid), Some(code)) = (status.pid(), status_code(status)) {
                    children.reaped(pid, code);
                }
            }
        }
    }
}

/// [`wait_for`] with the guest agent: waits until the workload (started at boot, or later by
/// the agent's `run`) ends, forwarding signals to it once it runs, reaping every child and
/// delivering the agent's children's statuses; returns the workload's status code.
pub fn wait_for_workload(children: &Children) -> i32 {
    let set = waited();
    loop {
        reap_ready_into(children);
        if let Some(code) = children.workload_status() {
            return code;
        }
        match set.wait() {
            Ok(Signal::SIGCHLD) => {}
            Ok(sig) => {
                if let Some(pid) = children.workload_pid() {
                    let _ = kill(pid, sig);
                }
            }
            // sigwait only fails for a bad set; wait for any child instead.
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(10)),
        }
    }
}

/// [`kill_remaining`] with the guest agent: the statuses reaped go to `children`, so the
/// agent's sessions can still report them.
pub fn kill_remaining_into(children: &Children) {
    if std::process::id() == 1 {
        let _ = kill(Pid::from_raw(-1), Signal::SIGKILL);
    }
    while let Ok(status) = waitpid(Pid::from_raw(-1), None) {
        if let (Some(pid), Some(code)) = (status.pid(), status_code(status)) {
            children.reaped(pid, code);
        }
    }
}
