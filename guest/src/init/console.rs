//! The VM console as the workload's stdio when it is not a terminal (`sandbox run --mode vm`
//! without `-t`): input the host pipes in (`-i`) must not come back as output, so the console
//! does not echo. Line editing stays on, so the host's end of input (which the VMM sends as
//! Ctrl-D) is an end of file for the reader.

use nix::sys::termios::{tcgetattr, tcsetattr, LocalFlags, SetArg};
use std::os::fd::BorrowedFd;

/// Turns echo off on the console at descriptor 0, if it is a terminal.
pub fn no_echo() {
    // SAFETY: descriptor 0 stays open for init's life (see `mounts::ensure_console_fds`).
    let stdin = unsafe { BorrowedFd::borrow_raw(0) };
    let Ok(mut t) = tcgetattr(stdin) else {
        return;
    };
    t.local_flags
        .remove(LocalFlags::ECHO | LocalFlags::ECHOE | LocalFlags::ECHOK | LocalFlags::ECHONL);
    let _ = tcsetattr(stdin, SetArg::TCSANOW, &t);
}
