//! The guest console's way out: a bounded queue between the serial device (written on a vCPU
//! thread, under the device's lock) and a writer thread that owns the sink. The vCPU only ever
//! appends to the queue; when the sink falls behind (a pipe nobody reads, a slow terminal) and
//! the queue is full, output is dropped and counted rather than stalling the guest. At the end
//! the VMM waits for the writer only while it makes progress: a writer stuck in write(2) is left
//! behind (its thread is detached), so teardown never hangs on the console.

use std::io::Write;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::error::VmmError;

/// The most console bytes queued for the writer; as much again may be in its hands, so the
/// console never holds more than twice this.
pub const QUEUE_CAPACITY: usize = 1 << 20;

/// How a console ended: what was lost and whether the writer finished.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConsoleEnd {
    /// Everything queued reached the sink (or was dropped and counted), and the sink was closed.
    pub complete: bool,
    /// Bytes dropped: the queue was full, the sink failed, or output came after the end.
    pub dropped: u64,
    /// Bytes still queued or being written when the VMM stopped waiting for a stalled sink.
    pub abandoned: u64,
}

impl ConsoleEnd {
    /// Bytes the sink did not get.
    pub fn lost(&self) -> u64 {
        self.dropped + self.abandoned
    }
}

#[derive(Default)]
struct State {
    /// Bytes waiting for the writer, in order (one buffer, however small the chunks).
    queue: Vec<u8>,
    /// Bytes the writer has taken and not yet written.
    in_flight: usize,
    /// Batches the writer has finished with (written or failed): its sign of life.
    settled: u64,
    dropped: u64,
    /// No more output is accepted; the writer ends once the queue is empty.
    closed: bool,
    /// The writer has ended and dropped the sink.
    finished: bool,
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    /// Wakes the writer: output queued, or the console closed.
    work: Condvar,
    /// Wakes the closer: a batch settled, or the writer finished.
    progress: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // The state is counters and bytes: still usable after a panic elsewhere.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The producer's handle; dropping it closes the console without waiting.
pub struct ConsoleWriter {
    shared: Arc<Shared>,
    capacity: usize,
}

impl ConsoleWriter {
    /// Starts the writer thread over `sink`, with a queue of [`QUEUE_CAPACITY`] bytes.
    pub fn spawn(sink: Box<dyn Write + Send>) -> Result<ConsoleWriter, VmmError> {
        ConsoleWriter::with_capacity(sink, QUEUE_CAPACITY)
    }

    /// Starts the writer thread over `sink`, queueing at most `capacity` bytes.
    pub fn with_capacity(sink: Box<dyn Write + Send>, capacity: usize) -> Result<ConsoleWriter, VmmError> {
        let shared = Arc::new(Shared::default());
        let for_thread = shared.clone();
        // The handle is dropped: the thread is detached, so nothing ever waits on a stuck write.
        std::thread::Builder::new()
            .name("sandbox-console".into())
            .spawn(move || write_until_closed(&for_thread, sink))
            .map_err(VmmError::io("starting the console writer thread"))?;
        Ok(ConsoleWriter { shared, capacity })
    }

    /// Queues `chunk` whole, or drops it whole when it does not fit (so lines are not cut);
    /// never blocks on the sink. Returns whether it was queued.
    pub fn send(&self, chunk: &[u8]) -> bool {
        if chunk.is_empty() {
            return true;
        }
        let mut s = self.shared.lock();
        if s.closed || s.queue.len() + chunk.len() > self.capacity {
            s.dropped += chunk.len() as u64;
            return false;
        }
        s.queue.extend_from_slice(chunk);
        drop(s);
        self.shared.work.notify_one();
        true
    }

    /// Bytes dropped so far.
    pub fn dropped(&self) -> u64 {
        self.shared.lock().dropped
    }

    /// Accepts no more output and waits for the writer to write what is queued and close the
    /// sink, for as long as it keeps finishing batches: it is given up on once `stall` passes
    /// without progress.
    pub fn close(&self, stall: Duration) -> ConsoleEnd {
        let mut s = self.shared.lock();
        s.closed = true;
        self.shared.work.notify_all();
        let mut seen = s.settled;
        let mut deadline = Instant::now() + stall;
        while !s.finished {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            s = match self.shared.progress.wait_timeout(s, deadline - now) {
                Ok((s, _)) => s,
                Err(p) => p.into_inner().0,
            };
            if s.settled != seen {
                seen = s.settled;
                deadline = Instant::now() + stall;
            }
        }
        // Zero once the writer finished normally; left over when it stalled (or its sink panicked).
        let abandoned = (s.queue.len() + s.in_flight) as u64;
        ConsoleEnd {
            complete: s.finished && abandoned == 0,
            dropped: s.dropped,
            abandoned,
        }
    }
}

impl Drop for ConsoleWriter {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.work.notify_all();
    }
}

/// Marks the writer finished however it ends (a panicking sink included).
struct Finished<'a>(&'a Shared);

impl Drop for Finished<'_> {
    fn drop(&mut self) {
        self.0.lock().finished = true;
        self.0.progress.notify_all();
    }
}

/// The writer thread: takes everything queued, in order, and writes it, until the console is
/// closed and empty; then drops the sink (which may flush a held partial line) and says it
/// finished.
fn write_until_closed(shared: &Shared, sink: Box<dyn Write + Send>) {
    let _finished = Finished(shared);
    // Declared after `_finished`, so dropped (and flushed) before it reports the end.
    let mut sink = sink;
    let mut batch = Vec::new();
    let mut broken = false;
    while take_batch(shared, &mut batch) {
        // After one failure (a closed stdout) the rest is discarded, not retried.
        broken = broken || sink.write_all(&batch).and_then(|()| sink.flush()).is_err();
        let mut s = shared.lock();
        s.in_flight = 0;
        s.settled += 1;
        if broken {
            s.dropped += batch.len() as u64;
        }
        drop(s);
        shared.progress.notify_all();
    }
}

/// Waits for queued bytes and swaps them into `batch` (whose old contents are spent); false
/// once the console is closed and nothing is left.
fn take_batch(shared: &Shared, batch: &mut Vec<u8>) -> bool {
    batch.clear();
    let mut s = shared.lock();
    loop {
        if !s.queue.is_empty() {
            std::mem::swap(&mut s.queue, batch);
            s.in_flight = batch.len();
            return true;
        }
        if s.closed {
            return false;
        }
        s = shared.work.wait(s).unwrap_or_else(|p| p.into_inner());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;
    use std::sync::mpsc;

    /// A sink the test can read back.
    #[derive(Clone, Default)]
    struct Collect(Arc<Mutex<Vec<u8>>>);
    impl Write for Collect {
        fn write(&mut self, d: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(d);
            Ok(d.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// A sink whose writes block until the test lets go of the other end.
    struct Stalled(mpsc::Receiver<()>);
    impl Write for Stalled {
        fn write(&mut self, d: &[u8]) -> io::Result<usize> {
            let _ = self.0.recv();
            Ok(d.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// A sink that has been closed (EPIPE).
    struct Closed;
    impl Write for Closed {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::ErrorKind::BrokenPipe.into())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_fast_sink_gets_every_chunk_in_order() {
        let sink = Collect::default();
        let w = ConsoleWriter::spawn(Box::new(sink.clone())).unwrap();
        let mut expected = Vec::new();
        for i in 0..10_000 {
            let line = format!("line {i}\n");
            // A queue full for a moment would drop: wait for room instead, as a test may.
            while !w.send(line.as_bytes()) {
                std::thread::yield_now();
            }
            expected.extend_from_slice(line.as_bytes());
        }
        let end = w.close(Duration::from_secs(10));
        assert!(end.complete, "{end:?}");
        assert_eq!(end.lost(), 0);
        assert_eq!(*sink.0.lock().unwrap(), expected);
    }

    #[test]
    fn a_stalled_sink_costs_dropped_output_not_a_blocked_caller() {
        let (release, rx) = mpsc::channel();
        let w = ConsoleWriter::with_capacity(Box::new(Stalled(rx)), 64).unwrap();
        let began = Instant::now();
        let accepted = (0..100_000).filter(|_| w.send(b"0123456789abcde\n")).count();
        // At most a queue's worth is in the writer's hands, and another fills the queue.
        assert!(accepted <= 8, "{accepted}");
        assert_eq!(w.dropped(), (100_000 - accepted as u64) * 16);
        let end = w.close(Duration::from_millis(100));
        assert!(began.elapsed() < Duration::from_secs(5), "{:?}", began.elapsed());
        assert!(!end.complete);
        assert_eq!(end.lost(), 100_000 * 16);
        drop(release);
    }

    #[test]
    fn a_failed_sink_drops_the_rest_and_output_after_the_end_is_dropped() {
        let w = ConsoleWriter::spawn(Box::new(Closed)).unwrap();
        assert!(w.send(b"one\n"));
        let end = w.close(Duration::from_secs(10));
        assert_eq!(
            end,
            ConsoleEnd {
                complete: true,
                dropped: 4,
                abandoned: 0
            }
        );
        assert!(!w.send(b"late\n"));
        assert_eq!(w.dropped(), 9);
    }

    #[test]
    fn the_sink_is_dropped_before_the_end_is_reported() {
        struct FlushOnDrop(Collect);
        impl Write for FlushOnDrop {
            fn write(&mut self, d: &[u8]) -> io::Result<usize> {
                self.0.write(d)
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        impl Drop for FlushOnDrop {
            fn drop(&mut self) {
                let _ = self.0.write(b"held");
            }
        }
        let sink = Collect::default();
        let w = ConsoleWriter::spawn(Box::new(FlushOnDrop(sink.clone()))).unwrap();
        w.send(b"a\n");
        assert!(w.close(Duration::from_secs(10)).complete);
        assert_eq!(*sink.0.lock().unwrap(), b"a\nheld");
    }
}
