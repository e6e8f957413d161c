//! `net serve` and `net`: TCP throughput and request/response latency between two
//! `sandbox-guest` processes.
//!
//! Protocol: the client's first byte picks the test. `S` (stream): the client sends bytes until
//! it half-closes; the server answers the byte count as a little-endian u64. `R`
//! (request/response): the client sends [`MESSAGE`]-byte requests one at a time and the server
//! echoes each.

use super::args::{round3, Flags};
use super::WorkloadError;
use serde_json::{json, Value};
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

/// Request and reply size of the request/response phase.
pub const MESSAGE: usize = 64;
/// Write size of the stream phase.
const STREAM_BUF: usize = 64 * 1024;

fn serve_stream(conn: &mut TcpStream) -> io::Result<()> {
    let mut buf = vec![0u8; STREAM_BUF];
    let mut total = 0u64;
    loop {
        match conn.read(&mut buf)? {
            0 => break,
            n => total += n as u64,
        }
    }
    conn.write_all(&total.to_le_bytes())
}

fn serve_requests(conn: &mut TcpStream) -> io::Result<()> {
    conn.set_nodelay(true)?;
    let mut msg = [0u8; MESSAGE];
    loop {
        match conn.read_exact(&mut msg) {
            Ok(()) => conn.write_all(&msg)?,
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        }
    }
}

fn serve_one(mut conn: TcpStream) {
    let mut kind = [0u8; 1];
    let result = match conn.read_exact(&mut kind) {
        Ok(()) if kind[0] == b'S' => serve_stream(&mut conn),
        Ok(()) if kind[0] == b'R' => serve_requests(&mut conn),
        Ok(()) => Err(io::Error::other(format!(
            "unknown test byte {:#04x}: expected 'S' or 'R'",
            kind[0]
        ))),
        Err(e) => Err(e),
    };
    if let Err(e) = result {
        let peer = conn
            .peer_addr()
            .map(|a| a.to_string())
            .unwrap_or_else(|_| "?".into());
        eprintln!("sandbox-guest net serve: connection from {peer}: {e}");
    }
}

/// Runs `net serve --port P [--bind ADDR]`: prints the listening line, then serves until killed.
pub fn serve(flags: &Flags) -> Result<Value, WorkloadError> {
    let port_text = flags.required("port")?;
    let port: u16 = port_text
        .parse()
        .map_err(|_| flags.bad("port", port_text, "a TCP port number (0-65535)"))?;
    let bind = flags.get("bind").unwrap_or("0.0.0.0");
    let ip: std::net::IpAddr = bind
        .parse()
        .map_err(|_| flags.bad("bind", bind, "an IP address such as 0.0.0.0"))?;
    let listener = TcpListener::bind(SocketAddr::new(ip, port))
        .map_err(|e| WorkloadError::Failed(format!("cannot listen on {bind}:{port}: {e}")))?;
    let local = listener
        .local_addr()
        .map_err(|e| WorkloadError::Failed(format!("cannot read the listening address: {e}")))?;
    super::args::emit(&json!({ "workload": "net-serve", "listening": local.to_string() }))?;
    for conn in listener.incoming() {
        match conn {
            Ok(conn) => {
                std::thread::spawn(move || serve_one(conn));
            }
            Err(e) => eprintln!("sandbox-guest net serve: accept failed: {e}"),
        }
    }
    Err(WorkloadError::Failed(format!("the listener on {local} stopped")))
}

fn connect(addr: SocketAddr, shown: &str, test: u8) -> Result<TcpStream, WorkloadError> {
    let mut conn = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).map_err(|e| {
        WorkloadError::Failed(format!(
            "cannot connect to {shown}: {e} (is `sandbox-guest net serve` running there and reachable?)"
        ))
    })?;
    conn.write_all(&[test])
        .map_err(|e| WorkloadError::Failed(format!("cannot talk to {shown}: {e}")))?;
    Ok(conn)
}

fn stream_phase(addr: SocketAddr, shown: &str, budget: Duration) -> Result<Value, WorkloadError> {
    let io_err = |e: io::Error| WorkloadError::Failed(format!("stream test with {shown}: {e}"));
    let mut conn = connect(addr, shown, b'S')?;
    let buf = vec![0x5au8; STREAM_BUF];
    let start = Instant::now();
    let mut sent = 0u64;
    while start.elapsed() < budget {
        conn.write_all(&buf).map_err(io_err)?;
        sent += buf.len() as u64;
    }
    conn.shutdown(Shutdown::Write).map_err(io_err)?;
    let mut count = [0u8; 8];
    conn.read_exact(&mut count).map_err(io_err)?;
    let seconds = start.elapsed().as_secs_f64();
    let received = u64::from_le_bytes(count);
    if received != sent {
        return Err(WorkloadError::Failed(format!(
            "stream test with {shown}: sent {sent} bytes but the server counted {received}"
        )));
    }
    Ok(json!({
        "bytes": sent,
        "buffer_bytes": STREAM_BUF,
        "seconds": round3(seconds),
        "mbit_per_second": round3(sent as f64 * 8.0 / seconds / 1e6),
    }))
}

fn percentile_us(sorted_ns: &[u64], p: f64) -> f64 {
    let idx = ((sorted_ns.len() as f64 - 1.0) * p).round() as usize;
    round3(sorted_ns[idx.min(sorted_ns.len() - 1)] as f64 / 1000.0)
}

fn request_phase(addr: SocketAddr, shown: &str, budget: Duration) -> Result<Value, WorkloadError> {
    let io_err = |e: io::Error| WorkloadError::Failed(format!("request/response test with {shown}: {e}"));
    let mut conn = connect(addr, shown, b'R')?;
    conn.set_nodelay(true).map_err(io_err)?;
    let request = [0xa5u8; MESSAGE];
    let mut reply = [0u8; MESSAGE];
    let mut latencies: Vec<u64> = Vec::new();
    let start = Instant::now();
    while start.elapsed() < budget || latencies.is_empty() {
        let t = Instant::now();
        conn.write_all(&request).map_err(io_err)?;
        conn.read_exact(&mut reply).map_err(io_err)?;
        latencies.push(t.elapsed().as_nanos() as u64);
    }
    let seconds = start.elapsed().as_secs_f64();
    drop(conn);
    if reply != request {
        return Err(WorkloadError::Failed(format!(
            "request/response test with {shown}: the reply differs from the request"
        )));
    }
    latencies.sort_unstable();
    Ok(json!({
        "transactions": latencies.len(),
        "message_bytes": MESSAGE,
        "seconds": round3(seconds),
        "transactions_per_second": round3(latencies.len() as f64 / seconds),
        "latency_p50_us": percentile_us(&latencies, 0.50),
        "latency_p99_us": percentile_us(&latencies, 0.99),
        "latency_max_us": percentile_us(&latencies, 1.0),
    }))
}

/// Runs `net --addr HOST:PORT [--seconds S]`.
pub fn client(flags: &Flags) -> Result<Value, WorkloadError> {
    let shown = flags.required("addr")?;
    let seconds = flags.seconds(2.0)?;
    let addr = shown
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| flags.bad("addr", shown, "HOST:PORT, e.g. 172.30.0.1:5201"))?;
    super::args::progress("net", seconds, "stream, then request/response");
    let half = Duration::from_secs_f64(seconds / 2.0);
    let stream = stream_phase(addr, shown, half)?;
    let rr = request_phase(addr, shown, half)?;
    Ok(json!({
        "workload": "net",
        "addr": addr.to_string(),
        "stream": stream,
        "request_response": rr,
    }))
}
