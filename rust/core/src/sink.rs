//! A non-blocking writer to a client's socket, shared by the pacer thread and Python.
//!
//! The pacer thread releases frames on time whatever Python is doing, but a frame that then
//! waits for the Python event loop to write it reaches the client exactly as late as the loop
//! is: a 300 ms blocked loop or a GC pause gaps the client's audio. A [`SocketSink`] lets the
//! pacer thread write each released frame itself, as one WebSocket binary message, straight to
//! the connection's socket. Python keeps writing its control messages through the same sink,
//! so every write is one atomic unit under one lock: message boundaries never interleave and
//! the order of writes is the order on the wire.
//!
//! Writes never block. What the kernel does not take at once waits in a bounded pending
//! buffer, sent ahead of any later write (by the next write, by [`SocketSink::flush`], or by
//! the pacer's next wake). A write that would take the pending bytes past the bound is refused
//! whole ([`SinkError::Full`]): the peer reads too slowly, and a partial message would corrupt
//! the stream. A send error other than "would block" (peer gone, reset) marks the sink broken:
//! pending bytes are dropped and every later write fails with [`SinkError::Closed`].
//!
//! The sink does not own the descriptor (Python's socket object does). [`SocketSink::close`]
//! guarantees the descriptor is never touched again once it returns, so Python calls it before
//! closing its socket: the descriptor number cannot be reused under the pacer's feet.
//!
//! Locking: the state is behind a [`PiMutex`] because the real-time pacer thread takes it. The
//! critical section is one non-blocking `send` (plus copying the message into the pending
//! buffer when the kernel's buffer is full). The pacer takes it while holding its engine lock,
//! never the reverse: no code path holding a sink lock takes any pacer lock.

use std::collections::VecDeque;
use std::fmt;
use std::os::fd::RawFd;

pub use crate::error::SinkError;

/// Result of the sink's operations.
type Result<T> = std::result::Result<T, SinkError>;
use crate::pacer::sync::PiMutex;

/// The first byte of a server-to-client binary message: FIN (one frame) + opcode 2 (binary).
const WS_FIN_BINARY: u8 = 0x82;
/// Longest WebSocket frame header without a mask: 1 + 1 + 8 bytes.
const WS_MAX_HEADER: usize = 10;

/// What a sink has done over its life.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SinkStats {
    /// Bytes the kernel accepted.
    pub bytes_written: u64,
    /// Writes accepted (each one message, now on the wire or pending behind earlier ones).
    pub messages: u64,
    /// Writes refused: pending bound exceeded, or the sink closed or broken.
    pub refused: u64,
    /// Accepted writes that left bytes pending (the kernel's buffer was full).
    pub partial_writes: u64,
}

/// Everything behind the sink's lock.
struct SinkState {
    /// Set by [`SocketSink::close`]: the descriptor must never be used again.
    closed: bool,
    /// Set on a fatal send error: the connection is gone.
    broken: bool,
    /// Set by [`SocketSink::stop_audio`]: the pacer's frames are refused from then on.
    audio_stopped: bool,
    /// The most bytes that may wait for the kernel.
    max_pending_bytes: usize,
    /// Where each pending message ends, as a count of bytes accepted since the start (the
    /// first one may be partly sent): lets [`SocketSink::discard_pending`] keep the message
    /// in progress whole, so the stream stays well-formed.
    message_ends: VecDeque<u64>,
    /// Bytes accepted since the start (sent or pending).
    accepted: u64,
    /// Bytes accepted but not yet taken by the kernel; the unsent part is `pending[sent..]`.
    pending: Vec<u8>,
    /// How much of `pending` has been sent (kept so that a partial send does not move the
    /// rest; compacted once it passes half the buffer).
    sent: usize,
    /// Reused to frame a WebSocket message, so writing a frame allocates nothing.
    scratch: Vec<u8>,
    stats: SinkStats,
}

impl SinkState {
    fn pending_len(&self) -> usize {
        self.pending.len() - self.sent
    }

    fn mark_broken(&mut self) {
        self.broken = true;
        self.drop_pending();
    }

    fn drop_pending(&mut self) {
        self.pending.clear();
        self.sent = 0;
        self.message_ends.clear();
    }

    /// Bytes the kernel has taken since the start.
    fn written(&self) -> u64 {
        self.accepted - self.pending_len() as u64
    }

    /// Forgets the ends of messages the kernel has taken whole.
    fn forget_sent_messages(&mut self) {
        let written = self.written();
        while self.message_ends.front().is_some_and(|&end| end <= written) {
            self.message_ends.pop_front();
        }
    }
}

/// A bounded, non-blocking writer to a socket it does not own; see the [module docs](self).
///
/// Every method takes `&self` and is safe to call from any thread (share it as an
/// `Arc<SocketSink>`).
pub struct SocketSink {
    fd: RawFd,
    state: PiMutex<SinkState>,
}

impl fmt::Debug for SocketSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SocketSink")
            .field("fd", &self.fd)
            .finish_non_exhaustive()
    }
}

/// Outcome of sending as much of a buffer as the kernel takes without waiting.
enum Sent {
    /// This many bytes went out (all of them, or fewer when the socket buffer filled up).
    Bytes(usize),
    /// A fatal error after this many bytes: the connection is unusable.
    Failed,
}

/// Sends `data` to `fd` without ever waiting, retrying on EINTR.
fn send_nonblocking(fd: RawFd, data: &[u8]) -> Sent {
    let mut sent = 0;
    while sent < data.len() {
        let rest = &data[sent..];
        // SAFETY: `rest` is a live, initialised slice for the duration of the call; the caller
        // holds the sink's lock and has checked that the sink is not closed, so `fd` is still
        // the socket its owner gave us.
        let result = unsafe {
            libc::send(
                fd,
                rest.as_ptr().cast(),
                rest.len(),
                libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
            )
        };
        if result > 0 {
            sent += result as usize;
            continue;
        }
        if result == 0 {
            // A stream socket takes at least one byte or reports an error; treat the
            // impossible zero as "full" rather than spin.
            break;
        }
        match std::io::Error::last_os_error().raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(code) if code == libc::EAGAIN || code == libc::EWOULDBLOCK => break,
            _ => return Sent::Failed,
        }
    }
    Sent::Bytes(sent)
}

/// Writes the RFC 6455 header of an unmasked, final, binary frame of `payload_len` bytes into
/// `out`.
fn ws_binary_header(payload_len: usize, out: &mut Vec<u8>) {
    out.push(WS_FIN_BINARY);
    if payload_len < 126 {
        out.push(payload_len as u8);
    } else if let Ok(short) = u16::try_from(payload_len) {
        out.push(126);
        out.extend_from_slice(&short.to_be_bytes());
    } else {
        out.push(127);
        out.extend_from_slice(&(payload_len as u64).to_be_bytes());
    }
}

impl SocketSink {
    /// A sink writing to the socket `fd` (which it does not own), holding at most
    /// `max_pending_bytes` (>= 1) the kernel has not yet taken.
    ///
    /// Fails with [`SinkError::BadDescriptor`] or [`SinkError::NotASocket`] when `fd` is not
    /// an open socket, [`SinkError::InvalidBound`] when the bound is 0.
    pub fn new(fd: RawFd, max_pending_bytes: usize) -> Result<Self> {
        if max_pending_bytes == 0 {
            return Err(SinkError::InvalidBound { max_pending_bytes });
        }
        // SAFETY: `stat` is plain old data, so all-zero is a valid value; fstat only writes it.
        let mut stat: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: fstat reads no memory of ours and writes only `stat`; an invalid `fd` makes
        // it return -1 (EBADF), which is handled.
        let status = unsafe { libc::fstat(fd, &mut stat) };
        if status != 0 {
            return Err(SinkError::BadDescriptor { fd });
        }
        if stat.st_mode & libc::S_IFMT != libc::S_IFSOCK {
            return Err(SinkError::NotASocket { fd });
        }
        Ok(Self {
            fd,
            state: PiMutex::new(SinkState {
                closed: false,
                broken: false,
                audio_stopped: false,
                max_pending_bytes,
                message_ends: VecDeque::new(),
                accepted: 0,
                pending: Vec::new(),
                sent: 0,
                scratch: Vec::new(),
                stats: SinkStats::default(),
            }),
        })
    }

    /// The socket's descriptor (still owned by the caller).
    pub fn fd(&self) -> RawFd {
        self.fd
    }

    /// The most bytes that may wait for the kernel.
    pub fn max_pending_bytes(&self) -> usize {
        self.state.lock().max_pending_bytes
    }

    /// Changes the bound (>= 1 byte; [`SinkError::InvalidBound`] otherwise). Bytes already
    /// pending stay, even above a lower bound: only later writes are refused.
    pub fn set_max_pending_bytes(&self, max_pending_bytes: usize) -> Result<()> {
        if max_pending_bytes == 0 {
            return Err(SinkError::InvalidBound { max_pending_bytes });
        }
        self.state.lock().max_pending_bytes = max_pending_bytes;
        Ok(())
    }

    /// Drops every pending message except the one the kernel has partly taken (its rest is
    /// kept, so the byte stream stays well-formed); returns the bytes dropped. For a peer
    /// too far behind: its stale backlog goes, a last message can still reach it.
    pub fn discard_pending(&self) -> usize {
        let mut state = self.state.lock();
        state.forget_sent_messages();
        let written = state.written();
        let keep = match state.message_ends.front() {
            Some(&end) => (end - written) as usize,
            None => 0,
        };
        let dropped = state.pending_len() - keep;
        let new_len = state.sent + keep;
        state.pending.truncate(new_len);
        state.accepted -= dropped as u64;
        state.message_ends.truncate(usize::from(keep > 0));
        dropped
    }

    /// Refuses the pacer's frames ([`write_ws_binary_pcm16`](Self::write_ws_binary_pcm16))
    /// from now on, while [`write`](Self::write) goes on: called before a close frame, after
    /// which RFC 6455 allows no data frame. Idempotent.
    pub fn stop_audio(&self) {
        self.state.lock().audio_stopped = true;
    }

    /// Writes `data` as one unit, never blocking, and returns the bytes pending afterwards.
    ///
    /// All or nothing: [`SinkError::Full`] (nothing queued) when the pending bytes would pass
    /// the bound; [`SinkError::Closed`] when the sink is closed or the connection broke
    /// (including by this very send).
    pub fn write(&self, data: &[u8]) -> Result<usize> {
        let mut state = self.state.lock();
        self.write_locked(&mut state, data)
    }

    /// Writes `samples` as one WebSocket binary message (server to client: unmasked; payload
    /// PCM16 little-endian), header and payload as one unit, with the rules of
    /// [`write`](Self::write). Allocates nothing once the sink has framed a message of this
    /// size.
    pub fn write_ws_binary_pcm16(&self, samples: &[i16]) -> Result<usize> {
        let mut state = self.state.lock();
        if state.audio_stopped {
            state.stats.refused += 1;
            return Err(SinkError::Closed {
                broken: state.broken,
            });
        }
        let mut message = std::mem::take(&mut state.scratch);
        message.clear();
        message.reserve(WS_MAX_HEADER + 2 * samples.len());
        ws_binary_header(2 * samples.len(), &mut message);
        for sample in samples {
            message.extend_from_slice(&sample.to_le_bytes());
        }
        let result = self.write_locked(&mut state, &message);
        state.scratch = message;
        result
    }

    /// Sends what is pending, as far as the kernel takes it now; returns the bytes still
    /// pending. Never fails: a fatal send error marks the sink broken (pending dropped, 0
    /// returned).
    pub fn flush(&self) -> usize {
        let mut state = self.state.lock();
        self.flush_locked(&mut state);
        state.pending_len()
    }

    /// Bytes accepted but not yet taken by the kernel.
    pub fn pending_bytes(&self) -> usize {
        self.state.lock().pending_len()
    }

    /// Stops using the descriptor: once this returns, the sink never touches it again and
    /// pending bytes are dropped. Call it before closing the socket. Idempotent.
    pub fn close(&self) {
        let mut state = self.state.lock();
        state.closed = true;
        // Release the memory too: a closed sink has no further use for it.
        state.pending = Vec::new();
        state.sent = 0;
        state.scratch = Vec::new();
    }

    /// Whether [`close`](Self::close) has been called.
    pub fn is_closed(&self) -> bool {
        self.state.lock().closed
    }

    /// Whether a send failed fatally (peer closed, reset...).
    pub fn is_broken(&self) -> bool {
        self.state.lock().broken
    }

    /// The sink's counters.
    pub fn stats(&self) -> SinkStats {
        self.state.lock().stats
    }

    fn write_locked(&self, state: &mut SinkState, data: &[u8]) -> Result<usize> {
        if state.closed || state.broken {
            state.stats.refused += 1;
            return Err(SinkError::Closed {
                broken: state.broken,
            });
        }
        let pending = state.pending_len();
        if pending + data.len() > state.max_pending_bytes {
            state.stats.refused += 1;
            return Err(SinkError::Full {
                requested: data.len(),
                pending,
                bound: state.max_pending_bytes,
            });
        }
        state.accepted += data.len() as u64;
        if pending == 0 {
            match send_nonblocking(self.fd, data) {
                Sent::Bytes(sent) => {
                    state.stats.bytes_written += sent as u64;
                    if sent < data.len() {
                        state.drop_pending();
                        state.pending.extend_from_slice(&data[sent..]);
                        let end = state.accepted;
                        state.message_ends.push_back(end);
                    }
                }
                Sent::Failed => {
                    state.mark_broken();
                    return Err(SinkError::Closed { broken: true });
                }
            }
        } else {
            // Behind earlier bytes: order on the wire is order of the writes.
            state.pending.extend_from_slice(data);
            let end = state.accepted;
            state.message_ends.push_back(end);
            self.flush_locked(state);
            if state.broken {
                return Err(SinkError::Closed { broken: true });
            }
        }
        state.stats.messages += 1;
        let left = state.pending_len();
        if left > 0 {
            state.stats.partial_writes += 1;
        }
        Ok(left)
    }

    fn flush_locked(&self, state: &mut SinkState) {
        if state.closed || state.broken || state.pending_len() == 0 {
            return;
        }
        match send_nonblocking(self.fd, &state.pending[state.sent..]) {
            Sent::Bytes(sent) => {
                state.stats.bytes_written += sent as u64;
                state.sent += sent;
                state.forget_sent_messages();
                if state.sent == state.pending.len() {
                    state.drop_pending();
                } else if state.sent > state.pending.len() / 2 {
                    // Amortised compaction: the move is at most as long as what was sent.
                    let sent = state.sent;
                    state.pending.drain(..sent);
                    state.sent = 0;
                }
            }
            Sent::Failed => state.mark_broken(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;
    use std::sync::Arc;

    fn pair() -> (UnixStream, UnixStream) {
        UnixStream::pair().unwrap()
    }

    /// Reads exactly `n` bytes from `peer` (blocking).
    fn read_exact(peer: &mut UnixStream, n: usize) -> Vec<u8> {
        let mut out = vec![0; n];
        peer.read_exact(&mut out).unwrap();
        out
    }

    /// Parses one unmasked binary frame from `peer`: returns its payload.
    fn read_ws_binary(peer: &mut UnixStream) -> Vec<u8> {
        let head = read_exact(peer, 2);
        assert_eq!(head[0], 0x82, "FIN + binary opcode");
        assert_eq!(head[1] & 0x80, 0, "server frames are unmasked");
        let len = match head[1] & 0x7f {
            126 => u16::from_be_bytes(read_exact(peer, 2).try_into().unwrap()) as usize,
            127 => u64::from_be_bytes(read_exact(peer, 8).try_into().unwrap()) as usize,
            short => short as usize,
        };
        read_exact(peer, len)
    }

    /// Fills the socket's send buffer until a write stays pending; returns the bytes written.
    fn fill(sink: &SocketSink) -> usize {
        let chunk = [7u8; 4096];
        let mut total = 0;
        loop {
            let pending = sink.write(&chunk).unwrap();
            total += chunk.len();
            if pending > 0 {
                return total;
            }
        }
    }

    #[test]
    fn refuses_a_non_socket_and_a_zero_bound() {
        let file = std::fs::File::open("/dev/null").unwrap();
        assert!(matches!(
            SocketSink::new(file.as_raw_fd(), 1024),
            Err(SinkError::NotASocket { .. })
        ));
        assert!(matches!(
            SocketSink::new(-1, 1024),
            Err(SinkError::BadDescriptor { fd: -1 })
        ));
        let (ours, _peer) = pair();
        assert!(matches!(
            SocketSink::new(ours.as_raw_fd(), 0),
            Err(SinkError::InvalidBound {
                max_pending_bytes: 0
            })
        ));
    }

    #[test]
    fn writes_bytes_through() {
        let (ours, mut peer) = pair();
        let sink = SocketSink::new(ours.as_raw_fd(), 1024).unwrap();
        assert_eq!(sink.write(b"hello").unwrap(), 0);
        assert_eq!(read_exact(&mut peer, 5), b"hello");
        let stats = sink.stats();
        assert_eq!(stats.bytes_written, 5);
        assert_eq!(stats.messages, 1);
        assert_eq!(stats.partial_writes, 0);
    }

    #[test]
    fn frames_ws_binary_messages_of_every_length_class() {
        let (ours, mut peer) = pair();
        let sink = SocketSink::new(ours.as_raw_fd(), 1 << 20).unwrap();
        // Payload bytes 0, 124 and 126 (7-bit, 16-bit), 65534 (16-bit, its maximum even
        // size), 65536 (64-bit).
        for samples in [0usize, 62, 63, 32767, 32768] {
            let audio: Vec<i16> = (0..samples).map(|i| (i as i16).wrapping_mul(3)).collect();
            let reader = {
                let reader_audio = audio.clone();
                let mut reader = peer.try_clone().unwrap();
                std::thread::spawn(move || {
                    let payload = read_ws_binary(&mut reader);
                    let expected: Vec<u8> =
                        reader_audio.iter().flat_map(|s| s.to_le_bytes()).collect();
                    assert_eq!(payload, expected);
                })
            };
            let mut pending = sink.write_ws_binary_pcm16(&audio).unwrap();
            while pending > 0 {
                std::thread::sleep(std::time::Duration::from_millis(1));
                pending = sink.flush();
            }
            reader.join().unwrap();
        }
        assert_eq!(sink.stats().messages, 5);
        // Nothing else on the wire.
        peer.set_nonblocking(true).unwrap();
        assert!(peer.read(&mut [0u8; 1]).is_err());
    }

    #[test]
    fn header_lengths_at_the_boundaries() {
        for (len, expected) in [
            (0usize, vec![0x82, 0]),
            (125, vec![0x82, 125]),
            (126, vec![0x82, 126, 0, 126]),
            (65535, vec![0x82, 126, 0xff, 0xff]),
            (65536, vec![0x82, 127, 0, 0, 0, 0, 0, 1, 0, 0]),
        ] {
            let mut header = Vec::new();
            ws_binary_header(len, &mut header);
            assert_eq!(header, expected, "payload of {len} bytes");
        }
    }

    #[test]
    fn keeps_what_the_socket_does_not_take_and_drains_it_in_order() {
        let (ours, mut peer) = pair();
        let sink = SocketSink::new(ours.as_raw_fd(), 1 << 20).unwrap();
        let filled = fill(&sink);
        assert!(sink.pending_bytes() > 0);
        assert!(sink.stats().partial_writes >= 1);
        // Behind the pending bytes: a marker that must arrive last.
        sink.write(b"END").unwrap();
        let mut received = Vec::new();
        let mut buffer = vec![0u8; 65536];
        while received.len() < filled + 3 {
            let n = peer.read(&mut buffer).unwrap();
            received.extend_from_slice(&buffer[..n]);
            sink.flush();
        }
        assert_eq!(sink.pending_bytes(), 0);
        assert!(received[..filled].iter().all(|&b| b == 7));
        assert_eq!(&received[filled..], b"END");
        assert_eq!(sink.stats().bytes_written, (filled + 3) as u64);
    }

    #[test]
    fn refusal_over_the_bound_queues_nothing() {
        let (ours, _peer) = pair();
        let sink = SocketSink::new(ours.as_raw_fd(), 10_000).unwrap();
        fill(&sink);
        let pending = sink.pending_bytes();
        let room = 10_000 - pending;
        let error = sink.write(&vec![1u8; room + 1]).unwrap_err();
        assert_eq!(
            error,
            SinkError::Full {
                requested: room + 1,
                pending,
                bound: 10_000
            }
        );
        assert_eq!(sink.pending_bytes(), pending);
        assert_eq!(sink.stats().refused, 1);
        // Exactly the room left is accepted.
        assert_eq!(sink.write(&vec![1u8; room]).unwrap(), 10_000);
    }

    #[test]
    fn discard_keeps_the_message_in_progress_whole() {
        let (ours, mut peer) = pair();
        let sink = SocketSink::new(ours.as_raw_fd(), 1 << 22).unwrap();
        let frame = [3i16; 1000];
        let mut whole = 0;
        while sink.write_ws_binary_pcm16(&frame).unwrap() == 0 {
            whole += 1;
        }
        for _ in 0..5 {
            sink.write_ws_binary_pcm16(&frame).unwrap();
        }
        let pending = sink.pending_bytes();
        assert_eq!(
            sink.discard_pending(),
            5 * 2004,
            "the five queued behind are dropped"
        );
        assert_eq!(sink.pending_bytes(), pending - 5 * 2004);
        assert_eq!(sink.discard_pending(), 0, "the partly sent one stays");
        sink.write_ws_binary_pcm16(&[9i16; 10]).unwrap();
        let expected: Vec<u8> = frame.iter().flat_map(|s| s.to_le_bytes()).collect();
        for _ in 0..whole {
            assert_eq!(read_ws_binary(&mut peer), expected);
        }
        assert_eq!(sink.flush(), 0, "the reader made room");
        assert_eq!(
            read_ws_binary(&mut peer),
            expected,
            "the partly sent frame, whole"
        );
        let last: Vec<u8> = [9i16; 10].iter().flat_map(|s| s.to_le_bytes()).collect();
        assert_eq!(read_ws_binary(&mut peer), last);
    }

    #[test]
    fn stop_audio_refuses_frames_but_not_control_messages() {
        let (ours, mut peer) = pair();
        let sink = SocketSink::new(ours.as_raw_fd(), 1024).unwrap();
        sink.stop_audio();
        assert_eq!(
            sink.write_ws_binary_pcm16(&[1, 2]),
            Err(SinkError::Closed { broken: false })
        );
        assert_eq!(sink.write(b"close"), Ok(0));
        assert_eq!(read_exact(&mut peer, 5), b"close");
    }

    #[test]
    fn the_bound_can_change() {
        let (ours, _peer) = pair();
        let sink = SocketSink::new(ours.as_raw_fd(), 1 << 20).unwrap();
        assert!(sink.set_max_pending_bytes(0).is_err());
        fill(&sink);
        sink.set_max_pending_bytes(1).unwrap();
        assert_eq!(sink.max_pending_bytes(), 1);
        assert!(matches!(sink.write(b"x"), Err(SinkError::Full { .. })));
    }

    #[test]
    fn a_closed_peer_breaks_the_sink() {
        let (ours, peer) = pair();
        let sink = SocketSink::new(ours.as_raw_fd(), 1024).unwrap();
        drop(peer);
        assert_eq!(sink.write(b"x"), Err(SinkError::Closed { broken: true }));
        assert!(sink.is_broken());
        assert_eq!(sink.flush(), 0);
        assert_eq!(
            sink.write_ws_binary_pcm16(&[1, 2]),
            Err(SinkError::Closed { broken: true })
        );
        assert_eq!(sink.stats().refused, 1);
    }

    #[test]
    fn close_stops_every_write() {
        let (ours, mut peer) = pair();
        let sink = SocketSink::new(ours.as_raw_fd(), 1 << 20).unwrap();
        fill(&sink);
        sink.close();
        assert!(sink.is_closed());
        assert_eq!(sink.pending_bytes(), 0);
        assert_eq!(sink.write(b"x"), Err(SinkError::Closed { broken: false }));
        assert_eq!(sink.flush(), 0);
        // The descriptor is still open (the sink does not own it) and got nothing more.
        drop(sink);
        peer.set_nonblocking(true).unwrap();
        let mut buffer = vec![0u8; 1 << 16];
        let mut total = 0;
        while let Ok(n) = peer.read(&mut buffer) {
            assert!(buffer[..n].iter().all(|&b| b == 7));
            total += n;
        }
        assert!(total > 0);
    }

    #[test]
    fn concurrent_writers_never_interleave_messages() {
        let (ours, mut peer) = pair();
        let sink = Arc::new(SocketSink::new(ours.as_raw_fd(), 1 << 24).unwrap());
        const WRITERS: i16 = 2;
        const MESSAGES: usize = 500;
        let writers: Vec<_> = (0..WRITERS)
            .map(|writer| {
                let sink = Arc::clone(&sink);
                std::thread::spawn(move || {
                    // Each message: 300 samples all equal to the writer's id.
                    let audio = vec![writer + 1; 300];
                    for _ in 0..MESSAGES {
                        sink.write_ws_binary_pcm16(&audio).unwrap();
                    }
                })
            })
            .collect();
        let drainer = {
            let sink = Arc::clone(&sink);
            std::thread::spawn(move || {
                let mut counts = [0usize; WRITERS as usize];
                for _ in 0..WRITERS as usize * MESSAGES {
                    let payload = read_ws_binary(&mut peer);
                    assert_eq!(payload.len(), 600);
                    let first = payload[0];
                    assert!(payload.iter().step_by(2).all(|&b| b == first));
                    counts[first as usize - 1] += 1;
                    sink.flush();
                }
                counts
            })
        };
        for writer in writers {
            writer.join().unwrap();
        }
        while sink.flush() > 0 {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        assert_eq!(drainer.join().unwrap(), [MESSAGES; WRITERS as usize]);
    }
}
