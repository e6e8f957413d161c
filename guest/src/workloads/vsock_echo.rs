//! `vsock-echo`: echoes AF_VSOCK streams, for testing and timing the VM's virtio-vsock device.
//!
//! - `--port P [--count N]`: listens on vsock port P (any CID) and serves N connections, one
//!   after another (default: one): every byte read is written back at once, until the peer
//!   half-closes; then it half-closes too.
//! - `--connect-host P`: connects to the host (CID 2) port P and echoes that one stream the same
//!   way.
//!
//! Prints one JSON line when done: the mode, the port, the connections and bytes echoed.

use super::args::Flags;
use super::WorkloadError;
use nix::sys::socket::{
    accept, bind, connect, listen, shutdown, socket, AddressFamily, Backlog, Shutdown, SockFlag, SockType,
    VsockAddr,
};
use serde_json::{json, Value};
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// The host's CID (`VMADDR_CID_HOST`).
const HOST_CID: u32 = 2;

fn failed(what: &str) -> impl FnOnce(nix::Error) -> WorkloadError + '_ {
    move |e| WorkloadError::Failed(format!("{what}: {e}"))
}

fn vsock_socket() -> Result<OwnedFd, WorkloadError> {
    socket(
        AddressFamily::Vsock,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(failed("cannot create an AF_VSOCK socket (no vsock device?)"))
}

/// Echoes `conn` until EOF; returns the bytes echoed.
fn echo(conn: OwnedFd) -> Result<u64, WorkloadError> {
    let mut file = File::from(conn);
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0u64;
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(WorkloadError::Failed(format!("reading the stream: {e}"))),
        };
        file.write_all(&buf[..n])
            .map_err(|e| WorkloadError::Failed(format!("writing the stream: {e}")))?;
        total += n as u64;
    }
    shutdown(file.as_raw_fd(), Shutdown::Write).map_err(failed("half-closing the stream"))?;
    Ok(total)
}

fn port(flags: &Flags, name: &str, text: &str) -> Result<u32, WorkloadError> {
    text.parse()
        .map_err(|_| flags.bad(name, text, "a vsock port number (0-4294967295)"))
}

/// Runs `vsock-echo --port P [--count N]` or `vsock-echo --connect-host P`.
pub fn run(flags: &Flags) -> Result<Value, WorkloadError> {
    match (flags.get("port"), flags.get("connect-host")) {
        (Some(p), None) => {
            let p = port(flags, "port", p)?;
            let count = flags.positive("count", Some(1))?;
            let listener = vsock_socket()?;
            bind(listener.as_raw_fd(), &VsockAddr::new(libc::VMADDR_CID_ANY, p))
                .map_err(failed("cannot bind the vsock port"))?;
            listen(&listener, Backlog::new(8).map_err(failed("backlog"))?)
                .map_err(failed("cannot listen on the vsock port"))?;
            let mut bytes = 0u64;
            for _ in 0..count {
                let fd = accept(listener.as_raw_fd()).map_err(failed("accept"))?;
                // SAFETY: accept returned a new descriptor that nothing else owns.
                bytes += echo(unsafe { OwnedFd::from_raw_fd(fd) })?;
            }
            Ok(json!({
                "workload": "vsock-echo",
                "mode": "listen",
                "port": p,
                "connections": count,
                "bytes": bytes,
            }))
        }
        (None, Some(p)) => {
            if flags.get("count").is_some() {
                return Err(WorkloadError::Usage(
                    "vsock-echo: --count goes with --port, not --connect-host".into(),
                ));
            }
            let p = port(flags, "connect-host", p)?;
            let conn = vsock_socket()?;
            connect(conn.as_raw_fd(), &VsockAddr::new(HOST_CID, p))
                .map_err(failed("cannot connect to the host's vsock port"))?;
            let bytes = echo(conn)?;
            Ok(json!({
                "workload": "vsock-echo",
                "mode": "connect-host",
                "port": p,
                "connections": 1,
                "bytes": bytes,
            }))
        }
        _ => Err(WorkloadError::Usage(
            "vsock-echo: give exactly one of --port P or --connect-host P".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(args: &[&str]) -> Flags {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        Flags::parse("vsock-echo", &args, &["port", "count", "connect-host"]).unwrap()
    }

    #[test]
    fn arguments_are_checked_before_any_socket() {
        for bad in [
            &[][..],
            &["--port", "1", "--connect-host", "2"],
            &["--port", "x"],
            &["--port", "-1"],
            &["--connect-host", "2", "--count", "3"],
            &["--port", "1", "--count", "0"],
        ] {
            let err = run(&flags(bad)).unwrap_err();
            assert_eq!(err.exit_status(), 2, "{bad:?}: {err}");
        }
    }
}
