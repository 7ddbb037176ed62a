//! Deterministic tests on the virtual clock, plus real-clock tests of the pacer thread.

use super::*;
use std::collections::HashMap;
use std::sync::Arc;

const MS: i64 = 1_000_000;

fn virtual_pacer() -> FramePacer {
    FramePacer::new(20, ClockKind::Virtual, false).unwrap()
}

fn open(pacer: &FramePacer, cushion_ms: i64, queue_ms: i64) -> StreamInfo {
    pacer
        .open_stream(&StreamConfig {
            sample_rate: 16_000,
            cushion_ms,
            queue_ms,
            ..StreamConfig::default()
        })
        .unwrap()
}

fn take(pacer: &FramePacer) -> Vec<ReleasedFrame> {
    let mut frames = Vec::new();
    pacer.take_released(&mut frames);
    frames
}

fn take_events(pacer: &FramePacer) -> Vec<StreamEvent> {
    let mut events = Vec::new();
    pacer.take_events(&mut events);
    events
}

/// Audio whose sample `i` is `i % 30_000`, so every frame says where it came from.
fn ramp(start: usize, len: usize) -> Vec<i16> {
    (start..start + len).map(|i| (i % 30_000) as i16).collect()
}

#[test]
fn bursts_to_the_cushion_then_releases_one_frame_per_period() {
    let pacer = virtual_pacer();
    let stream = open(&pacer, 120, 2000);
    assert_eq!(pacer.push(stream.id, &ramp(0, 16_000)).unwrap(), 16_000);
    pacer.advance_ns(0).unwrap();
    let burst = take(&pacer);
    assert_eq!(burst.len(), 6, "120 ms cushion = 6 frames of 20 ms at once");
    assert!(burst
        .iter()
        .all(|f| f.deadline_ns == 0 && f.lateness_ns() == 0));
    assert_eq!(burst[5].samples, ramp(5 * 320, 320));
    for n in 1..=20 {
        pacer.advance_ns(20 * MS - 1).unwrap();
        assert!(take(&pacer).is_empty(), "nothing before the deadline");
        pacer.advance_ns(1).unwrap();
        let frames = take(&pacer);
        assert_eq!(frames.len(), 1);
        assert_eq!(frames[0].deadline_ns, n * 20 * MS);
        assert_eq!(frames[0].seq, 5 + n as u64);
    }
    let stats = pacer.stream_stats(stream.id).unwrap();
    assert_eq!(stats.client_buffered_samples, 6 * 320);
}

#[test]
fn deadlines_stay_absolute_over_ten_thousand_frames() {
    let pacer = virtual_pacer();
    let stream = open(&pacer, 20, 600_000);
    let mut seen = 0;
    for _ in 0..10_000 {
        if pacer.stream_stats(stream.id).unwrap().queued_samples < 3200 {
            pacer.push(stream.id, &vec![1; 32_000]).unwrap();
        }
        pacer.advance_ns(20 * MS).unwrap();
        for frame in take(&pacer) {
            assert_eq!(frame.deadline_ns, frame.seq as i64 * 20 * MS);
            assert_eq!(frame.released_ns, frame.deadline_ns);
            seen += 1;
        }
    }
    // Frame 10,000 is due at exactly 200 s: no drift after 10,000 frames.
    assert_eq!(seen, 10_001);
    assert_eq!(pacer.now_ns(), 10_000 * 20 * MS);
}

#[test]
fn a_full_queue_refuses_the_excess_and_signals_space() {
    let pacer = virtual_pacer();
    let stream = open(&pacer, 20, 100); // 1600 samples
    let writable = pacer.writable_event(stream.id).unwrap();
    assert_eq!(pacer.push(stream.id, &ramp(0, 2000)).unwrap(), 1600);
    assert_eq!(pacer.push(stream.id, &ramp(1600, 400)).unwrap(), 0);
    assert!(!writable.drain(), "no space yet");
    pacer.advance_ns(0).unwrap(); // burst of one frame (cushion 20 ms): 1280 left
    assert!(!writable.drain(), "above the half-capacity watermark");
    pacer.advance_ns(40 * MS).unwrap(); // two more frames: 640 left, below 800
    assert!(writable.drain());
    assert_eq!(pacer.push(stream.id, &ramp(1600, 400)).unwrap(), 400);
    let samples: Vec<i16> = take(&pacer).into_iter().flat_map(|f| f.samples).collect();
    assert_eq!(samples, ramp(0, 960));
}

#[test]
fn an_empty_queue_counts_underruns_and_invents_no_audio() {
    let pacer = virtual_pacer();
    let stream = open(&pacer, 40, 2000);
    pacer.push(stream.id, &ramp(0, 320 * 3)).unwrap();
    pacer.advance_ns(0).unwrap();
    assert_eq!(take(&pacer).len(), 2);
    pacer.advance_ns(20 * MS).unwrap();
    assert_eq!(take(&pacer).len(), 1);
    pacer.advance_ns(100 * MS).unwrap();
    assert!(take(&pacer).is_empty(), "no audio is invented");
    let stats = pacer.stream_stats(stream.id).unwrap();
    assert_eq!(
        stats.counters.underruns, 5,
        "one per 20 ms slot from 40 to 120 ms"
    );
    assert!(stats.playing);
    // The client ran dry long ago: audio coming back restarts with a burst, due now.
    pacer.push(stream.id, &ramp(960, 320 * 4)).unwrap();
    pacer.advance_ns(0).unwrap();
    let frames = take(&pacer);
    assert_eq!(frames.len(), 2);
    assert!(frames.iter().all(|f| f.deadline_ns == 120 * MS));
    assert_eq!(frames[0].samples, ramp(960, 320));
    assert_eq!(pacer.stats().counters.underruns, 5);
}

#[test]
fn finish_pads_the_tail_and_goes_idle_without_underruns() {
    let pacer = virtual_pacer();
    let stream = open(&pacer, 20, 2000);
    pacer.push(stream.id, &ramp(0, 500)).unwrap();
    pacer.advance_ns(0).unwrap();
    assert_eq!(take(&pacer).len(), 1);
    assert_eq!(pacer.finish(stream.id).unwrap(), 140);
    pacer.advance_ns(200 * MS).unwrap();
    let frames = take(&pacer);
    assert_eq!(frames.len(), 1);
    assert_eq!(frames[0].samples[..180], ramp(320, 180)[..]);
    assert!(frames[0].samples[180..].iter().all(|&s| s == 0));
    let stats = pacer.stream_stats(stream.id).unwrap();
    assert_eq!((stats.counters.underruns, stats.playing), (0, false));
}

#[test]
fn flush_reports_dropped_and_released_and_nothing_flushed_comes_out() {
    let pacer = virtual_pacer();
    let stream = open(&pacer, 60, 2000);
    pacer.push(stream.id, &vec![7; 320 * 20 + 100]).unwrap();
    pacer.advance_ns(0).unwrap();
    let taken = take(&pacer);
    assert_eq!(taken.len(), 3);
    pacer.advance_ns(40 * MS).unwrap(); // two more released, not taken yet
    let report = pacer.flush(stream.id).unwrap();
    assert_eq!(
        report.released_samples,
        3 * 320,
        "untaken frames are taken back"
    );
    assert_eq!(report.dropped_samples, 17 * 320 + 100);
    assert_eq!(
        report.client_buffered_samples, 320,
        "60 ms sent, 40 ms played"
    );
    pacer.advance_ns(1000 * MS).unwrap();
    assert!(take(&pacer).is_empty());
    let stats = pacer.stream_stats(stream.id).unwrap();
    assert_eq!((stats.counters.flushes, stats.counters.underruns), (1, 0));
    // New audio starts a fresh burst.
    pacer.push(stream.id, &vec![9; 320 * 5]).unwrap();
    pacer.advance_ns(0).unwrap();
    let frames = take(&pacer);
    assert_eq!(frames.len(), 3);
    assert!(frames
        .iter()
        .all(|f| f.samples[0] == 9 && f.deadline_ns == 1040 * MS));
}

#[test]
fn a_client_report_above_max_lead_holds_releases_back() {
    let pacer = virtual_pacer();
    let stream = pacer
        .open_stream(&StreamConfig {
            cushion_ms: 60,
            max_lead_ms: Some(100),
            ..StreamConfig::default()
        })
        .unwrap();
    pacer.push(stream.id, &vec![1; 320 * 50]).unwrap();
    pacer.advance_ns(0).unwrap();
    assert_eq!(take(&pacer).len(), 3);
    // The client says it holds 200 ms (say, a network burst delivered late audio at once).
    pacer.report_playout(stream.id, 200.0).unwrap();
    // It may get a frame only when 200 - played + 20 <= 100: after 120 ms.
    pacer.advance_ns(120 * MS - 1).unwrap();
    assert!(take(&pacer).is_empty());
    pacer.advance_ns(1).unwrap();
    let frames = take(&pacer);
    assert_eq!(frames.len(), 1);
    assert_eq!(frames[0].deadline_ns, 120 * MS);
}

/// A simulated client playing at `1 + drift` of nominal speed for 60 s, reporting its buffer
/// every 250 ms when `reports`; returns the mean, min and max of its buffer (ms) over the
/// last 20 s.
fn simulate_drift(drift: f64, reports: bool) -> (f64, f64, f64) {
    let pacer = virtual_pacer();
    let stream = open(&pacer, 120, 2000);
    let rate = 16_000.0 * (1.0 + drift);
    let (mut received, mut played) = (0.0f64, 0.0f64);
    let mut tail = Vec::new();
    let (mut low, mut high) = (f64::MAX, f64::MIN);
    for tick in 0..60_000 {
        // 1 ms steps.
        if pacer.stream_stats(stream.id).unwrap().queued_samples < 16_000 {
            pacer.push(stream.id, &vec![0; 16_000]).unwrap();
        }
        pacer.advance_ns(MS).unwrap();
        received += take(&pacer)
            .iter()
            .map(|f| f.samples.len() as f64)
            .sum::<f64>();
        if received > 0.0 {
            played = (played + rate / 1000.0).min(received);
        }
        let buffered_ms = (received - played) / 16.0;
        if reports && tick % 250 == 249 {
            pacer.report_playout(stream.id, buffered_ms).unwrap();
        }
        if tick >= 40_000 {
            tail.push(buffered_ms);
            low = low.min(buffered_ms);
            high = high.max(buffered_ms);
        }
    }
    assert_eq!(pacer.stream_stats(stream.id).unwrap().counters.underruns, 0);
    (tail.iter().sum::<f64>() / tail.len() as f64, low, high)
}

#[test]
fn the_cushion_converges_under_client_clock_drift() {
    for drift in [0.01, -0.01, 0.03, 0.0] {
        let (mean, low, high) = simulate_drift(drift, true);
        // Released up to 120 ms, played down to 100 ms before the next frame: a 110 ms mean.
        assert!((mean - 110.0).abs() < 4.0, "drift {drift}: mean {mean}");
        assert!(low > 90.0 && high < 130.0, "drift {drift}: {low}..{high}");
    }
}

#[test]
fn without_reports_a_drifting_client_starves_or_overfills() {
    // The counter-example that makes reports necessary: 1 % off for 60 s is 600 ms.
    let (_, fast_low, _) = simulate_drift(0.01, false);
    assert_eq!(fast_low, 0.0, "a fast client runs dry");
    let (slow_mean, _, _) = simulate_drift(-0.01, false);
    assert!(slow_mean > 400.0, "a slow client piles up {slow_mean} ms");
}

#[test]
fn one_thread_serves_many_streams_in_deadline_order() {
    let pacer = virtual_pacer();
    let streams: Vec<_> = (0..50).map(|_| open(&pacer, 20, 2000)).collect();
    for (n, stream) in streams.iter().enumerate() {
        pacer.push(stream.id, &vec![n as i16; 320 * 10]).unwrap();
        pacer.advance_ns(MS / 10).unwrap(); // staggered starts, 0 to 4.9 ms
    }
    // Every stream has had its burst frame and 5 periods by 110 ms, none a 6th period.
    pacer.advance_ns(105 * MS).unwrap();
    let frames = take(&pacer);
    assert_eq!(frames.len(), 50 * 6);
    assert!(frames
        .windows(2)
        .all(|w| w[0].deadline_ns <= w[1].deadline_ns));
    for stream in &streams {
        let own: Vec<_> = frames.iter().filter(|f| f.stream_id == stream.id).collect();
        assert_eq!(own.len(), 6);
        assert!(own.iter().all(|f| f.samples[0] == (stream.id - 1) as i16));
    }
    assert_eq!(pacer.stats().open_streams, 50);
}

#[test]
fn bad_inputs_are_refused_with_precise_errors() {
    assert_eq!(
        FramePacer::new(15, ClockKind::Virtual, false).unwrap_err(),
        PacerError::UnsupportedFrameDuration { frame_ms: 15 }
    );
    let pacer = virtual_pacer();
    let config = StreamConfig::default();
    let cases = [
        (
            StreamConfig {
                sample_rate: 11_025,
                ..config.clone()
            },
            PacerError::UnsupportedSampleRate {
                rate: 11_025,
                frame_ms: 20,
            },
        ),
        (
            StreamConfig {
                sample_rate: -1,
                ..config.clone()
            },
            PacerError::InvalidSampleRate { sample_rate: -1 },
        ),
        (
            StreamConfig {
                channels: 2,
                ..config.clone()
            },
            PacerError::UnsupportedChannels { channels: 2 },
        ),
        (
            StreamConfig {
                cushion_ms: 0,
                ..config.clone()
            },
            PacerError::InvalidCushion {
                cushion_ms: 0,
                frame_ms: 20,
            },
        ),
        (
            StreamConfig {
                queue_ms: -5,
                ..config.clone()
            },
            PacerError::InvalidQueue {
                queue_ms: -5,
                frame_ms: 20,
            },
        ),
        (
            StreamConfig {
                max_lead_ms: Some(130),
                ..config.clone()
            },
            PacerError::InvalidMaxLead {
                max_lead_ms: 130,
                cushion_ms: 120,
                frame_ms: 20,
            },
        ),
    ];
    for (config, expected) in cases {
        assert_eq!(pacer.open_stream(&config).unwrap_err(), expected);
    }
    let pacer10 = FramePacer::new(10, ClockKind::Virtual, false).unwrap();
    assert_eq!(
        pacer10.open_stream(&StreamConfig {
            sample_rate: 22_050,
            ..config.clone()
        }),
        Err(PacerError::UnsupportedSampleRate {
            rate: 22_050,
            frame_ms: 10
        })
    );
    let stream = open(&pacer, 120, 2000);
    assert!(matches!(
        pacer.report_playout(stream.id, f64::NAN),
        Err(PacerError::InvalidPlayoutReport { buffered_ms }) if buffered_ms.is_nan()
    ));
    assert_eq!(
        pacer.report_playout(stream.id, -1.0),
        Err(PacerError::InvalidPlayoutReport { buffered_ms: -1.0 })
    );
    assert_eq!(
        pacer.push_f32(stream.id, &[0.0, f32::INFINITY]),
        Err(PacerError::NonFiniteSample {
            index: 1,
            value: f32::INFINITY
        })
    );
    assert_eq!(
        pacer.advance_to(-1),
        Err(PacerError::TimeBackwards {
            requested_ns: -1,
            now_ns: 0
        })
    );
    assert_eq!(
        pacer.advance_ns(3_601_000 * MS),
        Err(PacerError::StepTooLong {
            requested_ns: 3_601_000 * MS,
            now_ns: 0
        })
    );
    assert_eq!(
        pacer.advance_ns(-1),
        Err(PacerError::NegativeDuration { duration_ns: -1 })
    );
    pacer.close_stream(stream.id).unwrap();
    assert_eq!(
        pacer.push(stream.id, &[0; 4]),
        Err(PacerError::UnknownStream { id: stream.id })
    );
    assert_eq!(pacer.flush(99), Err(PacerError::UnknownStream { id: 99 }));
    pacer.stop();
    assert_eq!(pacer.open_stream(&config), Err(PacerError::Stopped));
    assert_eq!(pacer.advance_ns(1), Err(PacerError::Stopped));
}

#[test]
fn float_audio_is_converted_to_pcm16() {
    let pacer = virtual_pacer();
    let stream = open(&pacer, 20, 2000);
    let mut audio = vec![0.5f32; 320];
    audio[0] = 2.0;
    audio[1] = -1.0;
    pacer.push_f32(stream.id, &audio).unwrap();
    pacer.advance_ns(0).unwrap();
    let frame = &take(&pacer)[0];
    assert_eq!(frame.samples[..3], [32767, -32767, 16384]);
}

#[test]
fn the_real_clock_thread_releases_on_time() {
    let pacer = FramePacer::new(10, ClockKind::Real, true).unwrap();
    let stream = pacer
        .open_stream(&StreamConfig {
            cushion_ms: 10,
            ..StreamConfig::default()
        })
        .unwrap();
    let start = monotonic_now_ns();
    pacer.push(stream.id, &vec![3; 160 * 10]).unwrap();
    let mut frames = Vec::new();
    while frames.len() < 10 && monotonic_now_ns() - start < 2_000 * MS {
        std::thread::sleep(std::time::Duration::from_millis(5));
        pacer.take_released(&mut frames);
    }
    assert_eq!(frames.len(), 10);
    let first = frames[0].deadline_ns;
    for (n, frame) in frames.iter().enumerate() {
        assert_eq!(frame.deadline_ns, first + n as i64 * 10 * MS);
        assert!(frame.lateness_ns() >= 0 && frame.released_ns >= frame.deadline_ns);
    }
    // Generous: this machine is shared; the benchmark measures the real figures.
    assert!(pacer.stats().lateness.max_ns < 50 * MS as u64);
    pacer.recycle(frames);
    pacer.stop();
    assert!(pacer.is_stopped());
}

#[test]
fn concurrent_producers_and_consumer_lose_and_reorder_nothing() {
    // A 10 s cushion makes the real pacer thread release audio as soon as it arrives, so the
    // producers' pushes, the thread's releases and the consumer's takes all race.
    let pacer = Arc::new(FramePacer::new(10, ClockKind::Real, false).unwrap());
    let total = 16_000 * 3;
    let streams: Vec<StreamInfo> = (0..4)
        .map(|_| {
            pacer
                .open_stream(&StreamConfig {
                    cushion_ms: 10_000,
                    max_lead_ms: Some(20_000),
                    queue_ms: 100,
                    ..StreamConfig::default()
                })
                .unwrap()
        })
        .collect();
    let producers: Vec<_> = streams
        .iter()
        .map(|info| {
            let (pacer, id) = (Arc::clone(&pacer), info.id);
            std::thread::spawn(move || {
                let audio = ramp(id as usize * 1000, total);
                let writable = pacer.writable_event(id).unwrap();
                let (mut done, mut chunk) = (0, 97);
                while done < audio.len() {
                    let end = (done + chunk).min(audio.len());
                    let accepted = pacer.push(id, &audio[done..end]).unwrap();
                    done += accepted;
                    if accepted < end - (done - accepted) {
                        // Queue full: wait for the writable flag (poll with a short sleep;
                        // Python awaits the eventfd itself).
                        while !writable.drain() {
                            std::thread::sleep(std::time::Duration::from_micros(200));
                        }
                    }
                    chunk = chunk * 7 % 1013 + 1;
                }
                pacer.finish(id).unwrap();
            })
        })
        .collect();
    let mut received: HashMap<u64, Vec<i16>> = HashMap::new();
    let mut next_seq: HashMap<u64, u64> = HashMap::new();
    let deadline = monotonic_now_ns() + 20_000 * MS;
    let mut frames = Vec::new();
    while received.values().map(Vec::len).sum::<usize>() < 4 * total {
        assert!(monotonic_now_ns() < deadline, "timed out");
        std::thread::sleep(std::time::Duration::from_micros(500));
        pacer.take_released(&mut frames);
        for frame in &frames {
            let seq = next_seq.entry(frame.stream_id).or_insert(0);
            assert_eq!(frame.seq, *seq, "frames of a stream arrive in order");
            *seq += 1;
            received
                .entry(frame.stream_id)
                .or_default()
                .extend(&frame.samples);
        }
        pacer.recycle(frames.drain(..));
    }
    for producer in producers {
        producer.join().unwrap();
    }
    for info in &streams {
        assert_eq!(received[&info.id], ramp(info.id as usize * 1000, total));
    }
    // The producers are slower than this pacer (it releases whatever arrives), so it does
    // find queues empty on the way: underruns, but never invented or lost audio.
    let stats = pacer.stats();
    assert_eq!(stats.counters.frames_released, 4 * total as u64 / 160);
    assert_eq!(stats.counters.dropped_samples, 0);
}

mod sink {
    use super::*;
    use crate::sink::SocketSink;
    use std::io::Read;
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;

    fn open_with_sink(pacer: &FramePacer, sink: &Arc<SocketSink>) -> StreamInfo {
        pacer
            .open_stream(&StreamConfig {
                sink: Some(Arc::clone(sink)),
                ..StreamConfig::default()
            })
            .unwrap()
    }

    /// Reads whatever the peer has now (non-blocking) and splits it into WebSocket binary
    /// payloads; every byte must belong to a whole message.
    fn read_messages(peer: &mut UnixStream) -> Vec<Vec<i16>> {
        peer.set_nonblocking(true).unwrap();
        let mut bytes = Vec::new();
        let mut buffer = vec![0u8; 1 << 16];
        while let Ok(n) = peer.read(&mut buffer) {
            if n == 0 {
                break;
            }
            bytes.extend_from_slice(&buffer[..n]);
        }
        let mut messages = Vec::new();
        let mut rest = &bytes[..];
        while !rest.is_empty() {
            assert_eq!(rest[0], 0x82);
            let (len, header) = match rest[1] {
                126 => (u16::from_be_bytes([rest[2], rest[3]]) as usize, 4),
                127 => panic!("no frame of a pacer is that long"),
                short => (short as usize, 2),
            };
            let payload = &rest[header..header + len];
            messages.push(
                payload
                    .chunks_exact(2)
                    .map(|pair| i16::from_le_bytes([pair[0], pair[1]]))
                    .collect(),
            );
            rest = &rest[header + len..];
        }
        messages
    }

    #[test]
    fn released_frames_go_on_the_wire_and_not_to_the_consumer() {
        let pacer = virtual_pacer();
        let (ours, mut peer) = UnixStream::pair().unwrap();
        let sink = Arc::new(SocketSink::new(ours.as_raw_fd(), 1 << 20).unwrap());
        let stream = open_with_sink(&pacer, &sink);
        pacer.push(stream.id, &ramp(0, 16_000)).unwrap();
        pacer.advance_ns(0).unwrap();
        // The burst (6 frames) is on the wire, in order; the consumer gets no copy of it,
        // only the stream's `started` event.
        let wire = read_messages(&mut peer);
        assert_eq!(wire.len(), 6);
        for (index, message) in wire.iter().enumerate() {
            assert_eq!(message, &ramp(index * 320, 320));
        }
        assert!(take(&pacer).is_empty());
        assert_eq!(
            take_events(&pacer),
            vec![StreamEvent {
                stream_id: stream.id,
                kind: StreamEventKind::Started { lateness_ns: 0 },
                at_ns: 0
            }]
        );
        pacer.advance_ns(100 * MS).unwrap();
        assert_eq!(read_messages(&mut peer).len(), 5);
        assert_eq!(sink.stats().messages, 11);
        assert_eq!(
            pacer.stream_stats(stream.id).unwrap().counters.sink_refused,
            0
        );
    }

    #[test]
    fn a_refusing_sink_is_counted_and_pacing_goes_on() {
        let pacer = virtual_pacer();
        let (ours, _peer) = UnixStream::pair().unwrap();
        let sink = Arc::new(SocketSink::new(ours.as_raw_fd(), 1 << 20).unwrap());
        let stream = open_with_sink(&pacer, &sink);
        sink.close();
        pacer.push(stream.id, &ramp(0, 16_000)).unwrap();
        pacer.advance_ns(100 * MS).unwrap();
        assert!(
            take(&pacer).is_empty(),
            "refused or not, sink frames are not handed over"
        );
        let counters = pacer.stream_stats(stream.id).unwrap().counters;
        assert_eq!(counters.frames_released, 11);
        assert_eq!(counters.sink_refused, 11);
        assert_eq!(pacer.stats().counters.sink_refused, 11);
    }

    #[test]
    fn a_wake_drains_bytes_the_socket_kept_back() {
        let pacer = virtual_pacer();
        let (ours, mut peer) = UnixStream::pair().unwrap();
        let sink = Arc::new(SocketSink::new(ours.as_raw_fd(), 1 << 22).unwrap());
        let stream = open_with_sink(&pacer, &sink);
        // Fill the socket so the next bytes stay pending.
        while sink.write(&[0u8; 4096]).unwrap() == 0 {}
        peer.set_nonblocking(true).unwrap();
        let mut buffer = vec![0u8; 1 << 22];
        while peer.read(&mut buffer).is_ok() {}
        assert!(sink.pending_bytes() > 0);
        pacer.push(stream.id, &ramp(0, 320)).unwrap();
        pacer.advance_ns(0).unwrap();
        // The release wrote behind the pending bytes and flushed; what was left drains on
        // the wake, with no call from the consumer.
        while sink.pending_bytes() > 0 {
            while peer.read(&mut buffer).is_ok() {}
            pacer.push(stream.id, &ramp(0, 320)).unwrap();
            pacer.advance_ns(20 * MS).unwrap();
        }
        assert_eq!(sink.pending_bytes(), 0);
    }

    #[test]
    fn flush_counts_frames_already_on_the_wire_as_released() {
        let pacer = virtual_pacer();
        let (ours, _peer) = UnixStream::pair().unwrap();
        let sink = Arc::new(SocketSink::new(ours.as_raw_fd(), 1 << 20).unwrap());
        let stream = open_with_sink(&pacer, &sink);
        pacer.push(stream.id, &ramp(0, 16_000)).unwrap();
        pacer.advance_ns(0).unwrap();
        let report = pacer.flush(stream.id).unwrap();
        assert_eq!(report.released_samples, 6 * 320);
        assert_eq!(report.dropped_samples, 16_000 - 6 * 320);
        assert!(take(&pacer).is_empty());
    }

    #[test]
    fn the_thread_writes_while_nobody_takes() {
        let pacer = FramePacer::new(20, ClockKind::Real, false).unwrap();
        let (ours, mut peer) = UnixStream::pair().unwrap();
        let sink = Arc::new(SocketSink::new(ours.as_raw_fd(), 1 << 20).unwrap());
        let stream = open_with_sink(&pacer, &sink);
        pacer.push(stream.id, &ramp(0, 16_000)).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(200));
        // 6 burst frames plus ~10 paced ones, none taken by a consumer.
        let received = read_messages(&mut peer).len();
        assert!(received >= 10, "{received} frames on the wire");
        pacer.stop();
    }
}

/// Stream lifecycle events: `started` once per stream, `drained` once per finished utterance.
mod events {
    use super::*;

    fn started(id: u64, at_ns: i64, lateness_ns: i64) -> StreamEvent {
        StreamEvent {
            stream_id: id,
            kind: StreamEventKind::Started { lateness_ns },
            at_ns,
        }
    }

    fn drained(id: u64, at_ns: i64) -> StreamEvent {
        StreamEvent {
            stream_id: id,
            kind: StreamEventKind::Drained,
            at_ns,
        }
    }

    /// Whether the pacer's descriptor is readable now (without clearing it).
    fn readable(pacer: &FramePacer) -> bool {
        let mut fd = libc::pollfd {
            fd: pacer.released_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd for the duration of the call; a zero timeout never blocks.
        let ready = unsafe { libc::poll(&mut fd, 1, 0) };
        ready == 1 && fd.revents & libc::POLLIN != 0
    }

    #[test]
    fn started_once_per_stream_at_its_first_release() {
        let pacer = virtual_pacer();
        let stream = open(&pacer, 20, 2000);
        pacer.advance_ns(50 * MS).unwrap();
        assert!(take_events(&pacer).is_empty(), "no audio, no event");
        pacer.push(stream.id, &ramp(0, 3 * 320)).unwrap();
        pacer.advance_ns(0).unwrap();
        assert_eq!(take_events(&pacer), vec![started(stream.id, 50 * MS, 0)]);
        pacer.advance_ns(100 * MS).unwrap();
        assert_eq!(take(&pacer).len(), 3);
        // Neither an underrun, nor a flush and a fresh burst, starts it again.
        pacer.flush(stream.id).unwrap();
        pacer.push(stream.id, &ramp(0, 320)).unwrap();
        pacer.advance_ns(100 * MS).unwrap();
        assert_eq!(take(&pacer).len(), 1);
        assert!(take_events(&pacer).is_empty());
        // Each stream has its own.
        let other = open(&pacer, 20, 2000);
        pacer.push(other.id, &ramp(0, 320)).unwrap();
        pacer.advance_ns(0).unwrap();
        assert_eq!(take_events(&pacer), vec![started(other.id, 250 * MS, 0)]);
    }

    #[test]
    fn started_carries_the_lateness_of_the_first_frame() {
        let pacer = FramePacer::new(20, ClockKind::Real, false).unwrap();
        let stream = open(&pacer, 20, 2000);
        let before = pacer.now_ns();
        pacer.push(stream.id, &ramp(0, 320)).unwrap();
        let mut events = Vec::new();
        for _ in 0..200 {
            pacer.take_events(&mut events);
            if !events.is_empty() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        pacer.stop();
        assert_eq!(events.len(), 1, "{events:?}");
        let StreamEventKind::Started { lateness_ns } = events[0].kind else {
            panic!("{events:?}");
        };
        assert!(events[0].at_ns >= before);
        assert!((0..1_000 * MS).contains(&lateness_ns), "{lateness_ns}");
        let stats = pacer.stream_stats(stream.id);
        assert!(stats.is_err(), "stopped");
        assert_eq!(pacer.stats().lateness.count, 1, "the pacer-wide histogram");
    }

    #[test]
    fn drained_when_the_last_frame_of_a_finished_utterance_is_released() {
        let pacer = virtual_pacer();
        let stream = open(&pacer, 20, 2000);
        pacer.push(stream.id, &ramp(0, 500)).unwrap();
        pacer.advance_ns(0).unwrap();
        assert_eq!(take_events(&pacer), vec![started(stream.id, 0, 0)]);
        assert_eq!(pacer.finish(stream.id).unwrap(), 140);
        assert!(
            take_events(&pacer).is_empty(),
            "a padded frame is still queued"
        );
        pacer.advance_ns(20 * MS - 1).unwrap();
        assert!(take_events(&pacer).is_empty());
        pacer.advance_ns(1).unwrap();
        assert_eq!(take_events(&pacer), vec![drained(stream.id, 20 * MS)]);
        assert_eq!(take(&pacer).len(), 2);
        pacer.advance_ns(1000 * MS).unwrap();
        pacer.finish(stream.id).unwrap();
        assert!(take_events(&pacer).is_empty(), "once per utterance");
        // A new utterance drains again.
        pacer.push(stream.id, &ramp(0, 320)).unwrap();
        pacer.finish(stream.id).unwrap();
        pacer.advance_ns(0).unwrap();
        assert_eq!(take_events(&pacer), vec![drained(stream.id, 1020 * MS)]);
    }

    #[test]
    fn finish_with_nothing_queued_drains_at_once() {
        let pacer = virtual_pacer();
        let stream = open(&pacer, 20, 2000);
        pacer.advance_ns(5 * MS).unwrap();
        assert!(!readable(&pacer));
        assert_eq!(pacer.finish(stream.id).unwrap(), 0);
        assert!(readable(&pacer), "the event wakes the consumer");
        assert_eq!(take_events(&pacer), vec![drained(stream.id, 5 * MS)]);
        assert!(!readable(&pacer));
    }

    #[test]
    fn audio_pushed_before_the_drain_continues_the_utterance() {
        let pacer = virtual_pacer();
        let stream = open(&pacer, 20, 2000);
        pacer.push(stream.id, &ramp(0, 640)).unwrap();
        pacer.finish(stream.id).unwrap();
        pacer.push(stream.id, &ramp(640, 320)).unwrap();
        pacer.advance_ns(100 * MS).unwrap();
        assert_eq!(take(&pacer).len(), 3);
        assert_eq!(
            take_events(&pacer),
            vec![started(stream.id, 0, 0)],
            "not finished any more"
        );
        pacer.finish(stream.id).unwrap();
        assert_eq!(take_events(&pacer), vec![drained(stream.id, 100 * MS)]);
    }

    #[test]
    fn no_drained_after_a_flush_or_a_close() {
        let pacer = virtual_pacer();
        let flushed = open(&pacer, 20, 2000);
        let closed = open(&pacer, 20, 2000);
        for id in [flushed.id, closed.id] {
            pacer.push(id, &ramp(0, 1000)).unwrap();
            pacer.finish(id).unwrap();
        }
        pacer.advance_ns(0).unwrap();
        assert_eq!(
            take_events(&pacer).len(),
            2,
            "both started, neither drained"
        );
        pacer.flush(flushed.id).unwrap();
        pacer.close_stream(closed.id).unwrap();
        pacer.advance_ns(1000 * MS).unwrap();
        pacer.finish(flushed.id).unwrap();
        assert!(
            take_events(&pacer).is_empty(),
            "a flush cancels the utterance"
        );
        // New audio after the flush is a new utterance, which drains.
        pacer.push(flushed.id, &ramp(0, 320)).unwrap();
        pacer.finish(flushed.id).unwrap();
        pacer.advance_ns(0).unwrap();
        assert_eq!(take_events(&pacer), vec![drained(flushed.id, 1000 * MS)]);
    }

    #[test]
    fn a_consumer_of_frames_alone_is_not_woken_again_by_events_it_never_takes() {
        let pacer = virtual_pacer();
        let stream = open(&pacer, 20, 2000);
        pacer.push(stream.id, &ramp(0, 320)).unwrap();
        pacer.advance_ns(0).unwrap();
        assert!(readable(&pacer));
        assert_eq!(take(&pacer).len(), 1);
        assert!(!readable(&pacer), "no busy loop on the started event");
        // The events were kept (bounded), for a consumer that starts taking them.
        assert_eq!(take_events(&pacer), vec![started(stream.id, 0, 0)]);
        for _ in 0..MAX_PENDING_EVENTS + 10 {
            pacer.finish(stream.id).unwrap();
            pacer.push(stream.id, &ramp(0, 320)).unwrap();
            pacer.advance_ns(20 * MS).unwrap();
        }
        assert_eq!(take_events(&pacer).len(), MAX_PENDING_EVENTS);
    }

    #[test]
    fn one_descriptor_stays_readable_while_frames_or_events_wait() {
        let pacer = virtual_pacer();
        let stream = open(&pacer, 20, 2000);
        // A consumer of both kinds (as after its first wake-up).
        assert!(take_events(&pacer).is_empty());
        pacer.push(stream.id, &ramp(0, 320)).unwrap();
        pacer.advance_ns(0).unwrap();
        assert!(readable(&pacer));
        assert_eq!(take(&pacer).len(), 1);
        assert!(readable(&pacer), "the started event still waits");
        assert_eq!(take_events(&pacer).len(), 1);
        assert!(!readable(&pacer));
        pacer.push(stream.id, &ramp(0, 320)).unwrap();
        pacer.finish(stream.id).unwrap();
        pacer.advance_ns(20 * MS).unwrap();
        assert_eq!(take_events(&pacer), vec![drained(stream.id, 20 * MS)]);
        assert!(readable(&pacer), "the frame still waits");
        assert_eq!(take(&pacer).len(), 1);
        assert!(!readable(&pacer));
    }
}

#[test]
fn only_late_frames_are_reported_late() {
    let pacer = virtual_pacer();
    let stream = open(&pacer, 20, 2000);
    pacer.push(stream.id, &ramp(0, 3200)).unwrap(); // 200 ms
    pacer.advance_ns(40 * MS).unwrap(); // on time (the virtual clock is never late)
    assert!(take_events(&pacer)
        .iter()
        .all(|e| !matches!(e.kind, StreamEventKind::Late { .. })));
    {
        // The pacer thread wakes 7 ms late for one frame, then 1 ms late for the next.
        let mut engine = pacer.shared.engine.lock();
        let due = engine.next_due().unwrap();
        engine.serve(due, due.deadline_ns + 7 * MS);
        let due = engine.next_due().unwrap();
        engine.serve(due, due.deadline_ns + MS);
    }
    pacer.advance_ns(0).unwrap(); // hands the staged events over
    let late: Vec<(i64, i64)> = take_events(&pacer)
        .iter()
        .filter_map(|e| match e.kind {
            StreamEventKind::Late { lateness_ns } => Some((e.stream_id as i64, lateness_ns)),
            _ => None,
        })
        .collect();
    assert_eq!(late, vec![(stream.id as i64, 7 * MS)]);
    assert_eq!(StreamEventKind::Late { lateness_ns: 1 }.name(), "late");
}

/// Holding a stream (the client paused its playout) and resuming it where it paused.
mod hold {
    use super::*;

    fn open_held(pacer: &FramePacer, cushion_ms: i64) -> StreamInfo {
        pacer
            .open_stream(&StreamConfig {
                cushion_ms,
                held: true,
                ..StreamConfig::default()
            })
            .unwrap()
    }

    /// Whether any stream has a live deadline in the heap.
    fn anything_due(pacer: &FramePacer) -> bool {
        pacer.shared.engine.lock().next_due().is_some()
    }

    #[test]
    fn a_held_stream_releases_nothing_and_counts_no_underrun() {
        let pacer = virtual_pacer();
        let stream = open(&pacer, 120, 2000);
        pacer.push(stream.id, &ramp(0, 16_000)).unwrap();
        pacer.advance_ns(100 * MS).unwrap();
        assert_eq!(take(&pacer).len(), 11);
        assert!(pacer.hold(stream.id).unwrap());
        assert!(
            !anything_due(&pacer),
            "no deadline while held: nothing wakes the thread"
        );
        for _ in 0..100 {
            pacer.advance_ns(100 * MS).unwrap();
            assert!(take(&pacer).is_empty());
        }
        let stats = pacer.stream_stats(stream.id).unwrap();
        assert_eq!(stats.counters.underruns, 0);
        assert_eq!(stats.counters.frames_released, 11);
        assert_eq!(stats.queued_samples, 16_000 - 11 * 320);
        assert_eq!(
            stats.client_buffered_samples,
            6 * 320,
            "the client paused with its cushion: the model is frozen"
        );
        assert!(stats.held && stats.playing);
        assert_eq!((stats.holds, stats.held_ns), (1, 10_000 * MS as u64));
        // A held stream whose queue runs dry counts no underrun either.
        let dry = open(&pacer, 20, 2000);
        pacer.push(dry.id, &ramp(0, 320)).unwrap();
        pacer.advance_ns(0).unwrap();
        pacer.hold(dry.id).unwrap();
        pacer.advance_ns(1000 * MS).unwrap();
        assert_eq!(pacer.stream_stats(dry.id).unwrap().counters.underruns, 0);
        assert_eq!(pacer.stats().counters.underruns, 0);
    }

    #[test]
    fn resume_goes_on_from_the_paused_sample_without_a_burst() {
        let pacer = virtual_pacer();
        let stream = open(&pacer, 120, 2000);
        pacer.push(stream.id, &ramp(0, 16_000)).unwrap();
        pacer.advance_ns(110 * MS).unwrap(); // frames 0-5 at 0, 6-10 at 20..100 ms
        assert_eq!(take(&pacer).len(), 11);
        // Paused halfway through a frame period: 110 ms played of 11 frames (220 ms).
        pacer.hold(stream.id).unwrap();
        pacer.advance_ns(10_000 * MS).unwrap();
        assert!(pacer.resume(stream.id).unwrap());
        assert!(!pacer.is_held(stream.id).unwrap());
        pacer.advance_ns(10 * MS - 1).unwrap();
        assert!(
            take(&pacer).is_empty(),
            "the client still holds its cushion"
        );
        pacer.advance_ns(1).unwrap();
        let frames = take(&pacer);
        assert_eq!(frames.len(), 1, "one frame: the rest of the paused period");
        assert_eq!(
            (
                frames[0].seq,
                frames[0].deadline_ns,
                frames[0].lateness_ns()
            ),
            (11, 10_120 * MS, 0)
        );
        assert_eq!(frames[0].samples, ramp(11 * 320, 320));
        for n in 1..=10 {
            pacer.advance_ns(20 * MS).unwrap();
            let frames = take(&pacer);
            assert_eq!(frames.len(), 1);
            assert_eq!(frames[0].deadline_ns, (10_120 + 20 * n) * MS);
        }
        let stats = pacer.stream_stats(stream.id).unwrap();
        assert_eq!(stats.counters.underruns, 0);
        assert_eq!(stats.client_buffered_samples, 6 * 320);
        assert_eq!((stats.holds, stats.held_ns), (1, 10_000 * MS as u64));
    }

    #[test]
    fn a_stream_opened_held_bursts_and_starts_at_its_resume() {
        let pacer = virtual_pacer();
        let stream = open_held(&pacer, 120);
        assert!(pacer.is_held(stream.id).unwrap());
        assert_eq!(pacer.push(stream.id, &ramp(0, 16_000)).unwrap(), 16_000);
        pacer.advance_ns(5_000 * MS).unwrap();
        assert!(take(&pacer).is_empty());
        assert!(
            take_events(&pacer).is_empty(),
            "no `started` before the resume"
        );
        assert!(!anything_due(&pacer));
        assert!(pacer.resume(stream.id).unwrap());
        pacer.advance_ns(0).unwrap();
        let burst = take(&pacer);
        assert_eq!(burst.len(), 6, "the cushion, at once");
        assert!(burst
            .iter()
            .all(|f| f.deadline_ns == 5_000 * MS && f.lateness_ns() == 0));
        assert_eq!(burst[0].samples, ramp(0, 320));
        assert_eq!(
            take_events(&pacer),
            vec![StreamEvent {
                stream_id: stream.id,
                kind: StreamEventKind::Started { lateness_ns: 0 },
                at_ns: 5_000 * MS
            }]
        );
        pacer.advance_ns(20 * MS).unwrap();
        assert_eq!(take(&pacer)[0].deadline_ns, 5_020 * MS);
        let stats = pacer.stream_stats(stream.id).unwrap();
        assert_eq!(
            (stats.holds, stats.held_ns, stats.counters.underruns),
            (1, 5_000 * MS as u64, 0)
        );
    }

    #[test]
    fn reports_while_held_move_the_phase_not_the_rate_and_never_resume() {
        let pacer = virtual_pacer();
        let stream = open(&pacer, 120, 10_000);
        pacer.push(stream.id, &vec![0; 16_000 * 8]).unwrap();
        // A client 2 % fast: reports every 250 ms move the rate estimate.
        let report_fast_client = |at_ms: i64| {
            let released = pacer.stream_stats(stream.id).unwrap().released_samples as f64;
            let played = at_ms as f64 * 16.0 * 1.02;
            pacer
                .report_playout(stream.id, (released - played).max(0.0) / 16.0)
                .unwrap();
        };
        for k in 1..=8 {
            pacer.advance_to(k * 250 * MS).unwrap();
            report_fast_client(k * 250);
        }
        let rate = pacer.stream_stats(stream.id).unwrap().client_rate_ppm;
        assert!(rate > 1000, "the fast client was measured: {rate} ppm");
        take(&pacer);
        pacer.hold(stream.id).unwrap();
        for (k, buffered_ms) in [0.0, 500.0, 40.0, 100.0].into_iter().enumerate() {
            pacer.advance_ns(250 * MS).unwrap();
            pacer.report_playout(stream.id, buffered_ms).unwrap();
            let stats = pacer.stream_stats(stream.id).unwrap();
            assert_eq!(stats.client_rate_ppm, rate, "report {k}: nothing played");
            assert!(stats.held, "a report never resumes");
            // A paused client's report is exact: the model takes its position as is.
            assert_eq!(stats.client_buffered_samples as f64, 16.0 * buffered_ms);
        }
        assert!(take(&pacer).is_empty());
        pacer.resume(stream.id).unwrap();
        // The client said it holds 100 ms: the stream tops it up to the cushion at once.
        pacer.advance_ns(0).unwrap();
        assert_eq!(take(&pacer).len(), 1);
        // The first report after a resume carries the client's resume delay, not drift.
        pacer.advance_ns(250 * MS).unwrap();
        pacer.report_playout(stream.id, 80.0).unwrap();
        assert_eq!(pacer.stream_stats(stream.id).unwrap().client_rate_ppm, rate);
        pacer.advance_ns(250 * MS).unwrap();
        pacer.report_playout(stream.id, 80.0).unwrap();
        let rate = pacer.stream_stats(stream.id).unwrap().client_rate_ppm;
        // So does the first one after a hold without reports.
        pacer.hold(stream.id).unwrap();
        pacer.advance_ns(1000 * MS).unwrap();
        pacer.resume(stream.id).unwrap();
        pacer.advance_ns(250 * MS).unwrap();
        pacer.report_playout(stream.id, 60.0).unwrap();
        assert_eq!(pacer.stream_stats(stream.id).unwrap().client_rate_ppm, rate);
    }

    #[test]
    fn the_max_lead_guard_skips_the_hold() {
        let pacer = virtual_pacer();
        let stream = pacer
            .open_stream(&StreamConfig {
                cushion_ms: 60,
                max_lead_ms: Some(100),
                ..StreamConfig::default()
            })
            .unwrap();
        pacer.push(stream.id, &vec![1; 320 * 50]).unwrap();
        pacer.advance_ns(0).unwrap();
        assert_eq!(take(&pacer).len(), 3);
        pacer.report_playout(stream.id, 200.0).unwrap();
        // Without a hold the next frame waits until 120 ms (see the guard's test); 50 ms of
        // them pass before the hold, the other 70 after the resume.
        pacer.advance_ns(50 * MS).unwrap();
        pacer.hold(stream.id).unwrap();
        pacer.advance_ns(1000 * MS).unwrap();
        pacer.resume(stream.id).unwrap();
        pacer.advance_ns(70 * MS - 1).unwrap();
        assert!(take(&pacer).is_empty());
        pacer.advance_ns(1).unwrap();
        let frames = take(&pacer);
        assert_eq!(frames.len(), 1);
        assert_eq!(frames[0].deadline_ns, 1120 * MS);
    }

    #[test]
    fn flush_while_held_counts_what_the_client_played_before_it_paused() {
        let pacer = virtual_pacer();
        let stream = open(&pacer, 60, 2000);
        pacer.push(stream.id, &vec![7; 320 * 20]).unwrap();
        pacer.advance_ns(40 * MS).unwrap(); // 3 burst frames, 2 paced: 100 ms sent
        assert_eq!(take(&pacer).len(), 5);
        pacer.hold(stream.id).unwrap();
        pacer.advance_ns(500 * MS).unwrap();
        let report = pacer.flush(stream.id).unwrap();
        assert_eq!(report.released_samples, 5 * 320);
        assert_eq!(report.dropped_samples, 15 * 320);
        assert_eq!(
            report.client_buffered_samples,
            3 * 320,
            "40 ms played, then paused for 500 ms: 60 ms still at the client"
        );
        assert!(pacer.is_held(stream.id).unwrap(), "a flush does not resume");
        pacer.push(stream.id, &vec![9; 320 * 5]).unwrap();
        pacer.advance_ns(100 * MS).unwrap();
        assert!(take(&pacer).is_empty());
        // The client cleared its buffer: the resume starts a fresh burst.
        pacer.resume(stream.id).unwrap();
        pacer.advance_ns(0).unwrap();
        let frames = take(&pacer);
        assert_eq!(frames.len(), 3);
        assert!(frames
            .iter()
            .all(|f| f.samples[0] == 9 && f.deadline_ns == 640 * MS));
        assert_eq!(pacer.stream_stats(stream.id).unwrap().counters.underruns, 0);
    }

    #[test]
    fn finish_while_held_drains_after_the_resume() {
        let pacer = virtual_pacer();
        let stream = open(&pacer, 20, 2000);
        pacer.push(stream.id, &ramp(0, 500)).unwrap();
        pacer.advance_ns(0).unwrap();
        assert_eq!(take(&pacer).len(), 1);
        take_events(&pacer);
        pacer.hold(stream.id).unwrap();
        assert_eq!(pacer.finish(stream.id).unwrap(), 140);
        pacer.advance_ns(1000 * MS).unwrap();
        assert!(take(&pacer).is_empty());
        assert!(take_events(&pacer).is_empty(), "the tail is still queued");
        pacer.resume(stream.id).unwrap();
        // The client held one frame when it paused: the tail is due one period on.
        pacer.advance_ns(20 * MS).unwrap();
        let frames = take(&pacer);
        assert_eq!(frames.len(), 1);
        assert_eq!(frames[0].samples[..180], ramp(320, 180)[..]);
        assert_eq!(
            take_events(&pacer),
            vec![StreamEvent {
                stream_id: stream.id,
                kind: StreamEventKind::Drained,
                at_ns: 1020 * MS
            }]
        );
        pacer.advance_ns(1000 * MS).unwrap();
        let stats = pacer.stream_stats(stream.id).unwrap();
        assert_eq!((stats.counters.underruns, stats.playing), (0, false));
        // With nothing left to release, a finish drains at once, held or not.
        pacer.hold(stream.id).unwrap();
        pacer.finish(stream.id).unwrap();
        assert!(take_events(&pacer).is_empty(), "once per utterance");
        pacer.push(stream.id, &ramp(0, 320)).unwrap();
        pacer.advance_ns(0).unwrap();
        pacer.flush(stream.id).unwrap();
        pacer.finish(stream.id).unwrap();
        assert!(
            take_events(&pacer).is_empty(),
            "a flush cancels the utterance"
        );
    }

    #[test]
    fn push_fills_a_held_queue_with_the_usual_backpressure() {
        let pacer = virtual_pacer();
        let stream = pacer
            .open_stream(&StreamConfig {
                cushion_ms: 20,
                queue_ms: 100, // 1600 samples
                held: true,
                ..StreamConfig::default()
            })
            .unwrap();
        let writable = pacer.writable_event(stream.id).unwrap();
        assert_eq!(pacer.push(stream.id, &ramp(0, 2000)).unwrap(), 1600);
        pacer.advance_ns(1000 * MS).unwrap();
        assert_eq!(pacer.push(stream.id, &ramp(1600, 400)).unwrap(), 0);
        assert!(!writable.drain(), "nothing drains while held");
        pacer.resume(stream.id).unwrap();
        pacer.advance_ns(40 * MS).unwrap(); // a burst of one frame, two paced: 640 left
        assert!(writable.drain());
        assert_eq!(pacer.push(stream.id, &ramp(1600, 400)).unwrap(), 400);
        let samples: Vec<i16> = take(&pacer).into_iter().flat_map(|f| f.samples).collect();
        assert_eq!(samples, ramp(0, 960));
    }

    #[test]
    fn hold_and_resume_are_idempotent_and_refuse_unknown_streams() {
        let pacer = virtual_pacer();
        let stream = open(&pacer, 20, 2000);
        assert!(
            !pacer.resume(stream.id).unwrap(),
            "not held: nothing to resume"
        );
        pacer.advance_ns(10 * MS).unwrap();
        assert!(pacer.hold(stream.id).unwrap());
        pacer.advance_ns(10 * MS).unwrap();
        assert!(!pacer.hold(stream.id).unwrap(), "two holds make one");
        pacer.advance_ns(10 * MS).unwrap();
        assert!(pacer.resume(stream.id).unwrap());
        assert!(!pacer.resume(stream.id).unwrap());
        let stats = pacer.stream_stats(stream.id).unwrap();
        assert_eq!(
            (stats.holds, stats.held_ns, stats.held),
            (1, 20 * MS as u64, false)
        );
        pacer.close_stream(stream.id).unwrap();
        let unknown = Err(PacerError::UnknownStream { id: stream.id });
        assert_eq!(pacer.hold(stream.id), unknown);
        assert_eq!(pacer.resume(stream.id), unknown);
        assert_eq!(pacer.is_held(stream.id), unknown);
        let other = open(&pacer, 20, 2000);
        pacer.stop();
        assert_eq!(pacer.hold(other.id), Err(PacerError::Stopped));
        assert_eq!(pacer.resume(other.id), Err(PacerError::Stopped));
    }

    #[test]
    fn the_real_clock_thread_holds_and_resumes() {
        let pacer = FramePacer::new(10, ClockKind::Real, false).unwrap();
        let stream = pacer
            .open_stream(&StreamConfig {
                cushion_ms: 10,
                held: true,
                ..StreamConfig::default()
            })
            .unwrap();
        pacer.push(stream.id, &vec![3; 160 * 100]).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(300));
        assert!(take(&pacer).is_empty());
        let resumed_at = monotonic_now_ns();
        pacer.resume(stream.id).unwrap();
        let mut frames = Vec::new();
        while frames.len() < 5 && monotonic_now_ns() - resumed_at < 2_000 * MS {
            std::thread::sleep(std::time::Duration::from_millis(5));
            pacer.take_released(&mut frames);
        }
        assert!(frames.len() >= 5);
        assert!(frames[0].deadline_ns >= resumed_at);
        for (n, frame) in frames.iter().enumerate() {
            assert_eq!(
                frame.deadline_ns,
                frames[0].deadline_ns + n as i64 * 10 * MS
            );
        }
        // Measured from the resume, not from the open 300 ms earlier (generous: this
        // machine is shared).
        assert!(
            frames[0].lateness_ns() < 150 * MS,
            "{}",
            frames[0].lateness_ns()
        );
        pacer.stop();
    }
}
