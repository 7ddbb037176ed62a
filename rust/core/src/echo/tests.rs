//! The gate on synthesized voices (always) and on the real speech corpus beside the
//! repository (`../shared/data/speech`, skipped with a message where it is absent). The
//! Python tests (`tests/test_echo_gate.py`) measure the same over many more conditions.

use super::*;

const RATE: usize = SAMPLE_RATE as usize;

/// A deterministic random source (an LCG: reproducible, no dependency).
struct Random(u64);

impl Random {
    fn next(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }

    fn between(&mut self, low: f64, high: f64) -> f64 {
        low + (high - low) * self.next()
    }

    fn gaussian(&mut self) -> f64 {
        (0..12).map(|_| self.next()).sum::<f64>() - 6.0
    }
}

/// A synthetic talker: syllables of 80-300 ms (voiced: a pitch glide with harmonics shaped
/// by two formants; now and then a fricative of high-passed noise) separated by 30-400 ms
/// pauses, `seconds` long, peaking near -20 dBFS.
fn voice(seconds: f64, pitch_hz: (f64, f64), seed: u64) -> Vec<f64> {
    let mut random = Random(seed);
    let n = (seconds * RATE as f64) as usize;
    let mut out = vec![0.0; n];
    let mut t = (random.between(0.0, 0.2) * RATE as f64) as usize;
    let mut previous_noise = 0.0;
    while t < n {
        let length = (random.between(0.08, 0.3) * RATE as f64) as usize;
        let end = (t + length).min(n);
        let level = 0.1 * random.between(0.3, 1.0);
        if random.next() < 0.2 {
            for (i, sample) in out[t..end].iter_mut().enumerate() {
                let envelope = (std::f64::consts::PI * i as f64 / length as f64).sin();
                let white = random.gaussian();
                *sample = 0.4 * level * envelope * (white - previous_noise);
                previous_noise = white;
            }
        } else {
            let (f_start, f_end) = (
                random.between(pitch_hz.0, pitch_hz.1),
                random.between(pitch_hz.0, pitch_hz.1),
            );
            let formants = [random.between(300.0, 900.0), random.between(900.0, 2500.0)];
            let mut phase = 0.0;
            for (i, sample) in out[t..end].iter_mut().enumerate() {
                let progress = i as f64 / length as f64;
                let f0 = f_start + (f_end - f_start) * progress;
                phase += std::f64::consts::TAU * f0 / RATE as f64;
                let envelope = (std::f64::consts::PI * progress).sin().powf(0.7);
                let mut value = 0.0;
                for harmonic in 1..(7000.0 / f0) as usize {
                    let f = f0 * harmonic as f64;
                    let shape: f64 = formants
                        .iter()
                        .map(|&fm| 1.0 / (1.0 + ((f - fm) / 150.0).powi(2)))
                        .sum::<f64>()
                        + 0.02;
                    value += shape * (phase * harmonic as f64).sin() / harmonic as f64;
                }
                *sample = level * envelope * value;
            }
        }
        t = end + (random.between(0.03, 0.4) * RATE as f64) as usize;
    }
    out
}

fn noise(n: usize, dbfs: f64, seed: u64) -> Vec<f64> {
    let mut random = Random(seed);
    let rms = 10f64.powf(dbfs / 20.0);
    (0..n).map(|_| random.gaussian() * rms).collect()
}

fn to_pcm(samples: &[f64]) -> Vec<i16> {
    samples
        .iter()
        .map(|&s| (s * 32768.0).round().clamp(-32768.0, 32767.0) as i16)
        .collect()
}

/// The far end `far` (played from sample `start`) as heard `delay` samples later at
/// `gain_db`, through `room` (an impulse response, or none).
fn echo_of(
    far: &[f64],
    len: usize,
    start: usize,
    delay: usize,
    gain_db: f64,
    room: &[f64],
) -> Vec<f64> {
    let gain = 10f64.powf(gain_db / 20.0);
    let mut echo = vec![0.0; len];
    for (i, &sample) in far.iter().enumerate() {
        for (j, &tap) in room.iter().enumerate() {
            if let Some(slot) = echo.get_mut(start + delay + i + j) {
                *slot += gain * tap * sample;
            }
        }
    }
    echo
}

/// A small room: the direct sound, then a tail decaying by 60 dB in `t60_ms`, 8 dB below it.
fn room(t60_ms: f64, seed: u64) -> Vec<f64> {
    let len = (t60_ms / 1000.0 * RATE as f64) as usize;
    let mut random = Random(seed);
    let mut ir: Vec<f64> = (0..len)
        .map(|i| random.gaussian() * 10f64.powf(-3.0 * i as f64 / len as f64))
        .collect();
    ir[..48].fill(0.0);
    let energy: f64 = ir.iter().map(|x| x * x).sum();
    for tap in &mut ir {
        *tap *= (10f64.powf(-0.8) / energy).sqrt();
    }
    ir[0] = 1.0;
    ir
}

/// What one run of the gate saw, per 10 ms block.
struct Run {
    near: Vec<bool>,
    output: Vec<i16>,
    gate: EchoGate,
}

/// Runs the gate over `mic` in 10 ms chunks, feeding `far` and playing it from block
/// `start_block` (no far end when `far` is None).
fn run(mic: &[f64], far: Option<&[f64]>, start_block: usize, config: EchoGateConfig) -> Run {
    let mut gate = EchoGate::new(config).unwrap();
    let pcm = to_pcm(mic);
    let mut near = Vec::new();
    let mut output = Vec::with_capacity(pcm.len());
    for (block, chunk) in pcm.chunks(BLOCK_LEN).enumerate() {
        if block == start_block {
            if let Some(far) = far {
                gate.far_audio(&to_pcm(far));
                gate.set_playing(true);
            }
        }
        output.extend(gate.process(chunk));
        near.push(gate.near_end_ms() > 0);
    }
    Run { near, output, gate }
}

/// The longest run of near-end blocks in `near[from..]`, in blocks.
fn longest_run(near: &[bool]) -> usize {
    near.split(|&n| !n).map(<[bool]>::len).max().unwrap_or(0)
}

fn add(parts: &[&[f64]]) -> Vec<f64> {
    let len = parts.iter().map(|p| p.len()).max().unwrap();
    (0..len)
        .map(|i| parts.iter().filter_map(|p| p.get(i)).sum())
        .collect()
}

#[test]
fn the_agents_echo_never_reads_as_the_user() {
    let far = voice(8.0, (100.0, 160.0), 1);
    let len = RATE * 10;
    let background = noise(len, -65.0, 2);
    for (gain_db, room_ir) in [
        (-10.0, vec![1.0]),
        (-6.0, vec![1.0]),
        (-10.0, room(250.0, 3)),
    ] {
        for delay_ms in [40, 80, 150] {
            let delay = delay_ms * RATE / 1000 + 37;
            let echo = echo_of(&far, len, RATE, delay, gain_db, &room_ir);
            let result = run(
                &add(&[&echo, &background]),
                Some(&far),
                100,
                EchoGateConfig::default(),
            );
            let longest = longest_run(&result.near);
            assert!(
                longest < 2,
                "echo at {gain_db} dB, {delay_ms} ms, room of {} taps: near end for {} ms",
                room_ir.len(),
                longest * 10
            );
            let stats = result.gate.stats();
            let found = stats.delay_ms.expect("the delay is found");
            assert!(
                (found as i64 - delay_ms as i64 - 2).abs() <= 10,
                "delay {found} ms for {delay_ms} ms"
            );
            let gain = stats.echo_gain_db.unwrap();
            assert!(
                (gain - gain_db as f32).abs() < 4.0,
                "gain {gain} dB for {gain_db}"
            );
            assert!(stats.echo_blocks > 300, "{stats:?}");
        }
    }
}

#[test]
fn the_user_talking_over_the_agent_is_heard_at_once() {
    let far = voice(8.0, (100.0, 160.0), 11);
    let user = voice(2.5, (180.0, 260.0), 12);
    let len = RATE * 10;
    let background = noise(len, -65.0, 13);
    let echo = echo_of(&far, len, RATE, 80 * RATE / 1000, -10.0, &[1.0]);
    let user_at = 5 * RATE;
    let mut user_part = vec![0.0; len];
    for (i, &s) in user.iter().enumerate() {
        // The user 6 dB above the echo (4 dB below the far end).
        user_part[user_at + i] = s * 10f64.powf(-4.0 / 20.0);
    }
    let alone = run(
        &add(&[&user_part, &background]),
        None,
        0,
        EchoGateConfig::default(),
    );
    let together = run(
        &add(&[&user_part, &echo, &background]),
        Some(&far),
        100,
        EchoGateConfig::default(),
    );
    // Onsets: where the gate hears the user with no far end (two near-end blocks in a row
    // after at least 200 ms without).
    let mut onsets = Vec::new();
    let mut last = None;
    for block in 1..alone.near.len() {
        if alone.near[block] && alone.near[block - 1] {
            if last.map_or(true, |l: usize| block - 1 - l > 20) {
                onsets.push(block - 1);
            }
            last = Some(block);
        }
    }
    assert!(onsets.len() >= 3, "{onsets:?}");
    let heard = onsets
        .iter()
        .filter(|&&onset| together.near[onset..onset + 3].iter().any(|&n| n))
        .count();
    assert!(
        heard * 10 >= onsets.len() * 8,
        "{heard} of {} onsets heard within 30 ms",
        onsets.len()
    );
    // Blocks judged near end are passed untouched.
    let near_blocks: Vec<usize> = (0..together.near.len())
        .filter(|&b| together.near[b])
        .collect();
    assert!(!near_blocks.is_empty());
    let mic = to_pcm(&add(&[&user_part, &echo, &background]));
    for &block in &near_blocks {
        let range = block * BLOCK_LEN..(block + 1) * BLOCK_LEN;
        // The fade out of suppression takes the first 2 ms of a near-end block after echo.
        let whole = !together.near[block.saturating_sub(1)];
        let skip = if whole { 32 } else { 0 };
        assert_eq!(
            together.output[range.start + skip..range.end],
            mic[range.start + skip..range.end],
            "block {block}"
        );
    }
}

#[test]
fn without_a_far_end_the_mic_passes_bit_for_bit() {
    let talk = voice(4.0, (120.0, 220.0), 21);
    let mic = add(&[&talk, &noise(talk.len(), -55.0, 22)]);
    let result = run(&mic, None, 0, EchoGateConfig::default());
    assert_eq!(result.output, to_pcm(&mic));
    assert!(result.gate.stats().near_end_blocks > 50);
    assert_eq!(result.gate.stats().echo_blocks, 0);
}

#[test]
fn a_far_end_playing_silence_or_nothing_changes_nothing() {
    let talk = voice(4.0, (120.0, 220.0), 31);
    let mic = to_pcm(&add(&[&talk, &noise(talk.len(), -55.0, 32)]));
    // Playing digital silence, then an empty queue.
    let mut gate = EchoGate::new(EchoGateConfig::default()).unwrap();
    gate.far_audio(&vec![0i16; RATE]);
    gate.set_playing(true);
    let output = gate.process(&mic);
    assert_eq!(output, mic);
    assert_eq!(gate.stats().far_queued_ms, 0.0);
}

#[test]
fn whole_block_chunks_give_the_same_output_whatever_their_size() {
    let far = voice(4.0, (100.0, 160.0), 41);
    let len = RATE * 5;
    let mic = to_pcm(&add(&[
        &echo_of(&far, len, 0, 1000, -10.0, &[1.0]),
        &noise(len, -60.0, 42),
    ]));
    let far_pcm = to_pcm(&far);
    let mut outputs = Vec::new();
    for chunk in [BLOCK_LEN, 2 * BLOCK_LEN, 3 * BLOCK_LEN, len] {
        let mut gate = EchoGate::new(EchoGateConfig::default()).unwrap();
        gate.far_audio(&far_pcm);
        gate.set_playing(true);
        let output: Vec<i16> = mic.chunks(chunk).flat_map(|c| gate.process(c)).collect();
        assert_eq!(output.len(), mic.len());
        outputs.push(output);
    }
    for other in &outputs[1..] {
        assert!(other == &outputs[0]);
    }
    // Odd chunk sizes: the same length out, the same decisions (a partial block is gated by
    // the decision before it until it completes).
    let mut gate = EchoGate::new(EchoGateConfig::default()).unwrap();
    gate.far_audio(&far_pcm);
    gate.set_playing(true);
    let mut at = 0;
    let mut sizes = [1usize, 7, 159, 161, 333, 0].iter().cycle();
    while at < mic.len() {
        let size = (*sizes.next().unwrap()).min(mic.len() - at);
        assert_eq!(gate.process(&mic[at..at + size]).len(), size);
        at += size;
    }
    let mut reference = EchoGate::new(EchoGateConfig::default()).unwrap();
    reference.far_audio(&far_pcm);
    reference.set_playing(true);
    reference.process(&mic);
    assert_eq!(gate.stats().echo_blocks, reference.stats().echo_blocks);
}

#[test]
fn suppressed_echo_becomes_noise_at_the_mics_own_level() {
    let far = voice(8.0, (100.0, 160.0), 51);
    let len = RATE * 10;
    let background = noise(len, -50.0, 52);
    let echo = echo_of(&far, len, RATE, 1600, -10.0, &[1.0]);
    let result = run(
        &add(&[&echo, &background]),
        Some(&far),
        100,
        EchoGateConfig::default(),
    );
    let level = |samples: &[i16]| {
        let mean_square: f64 = samples
            .iter()
            .map(|&s| (f64::from(s) / 32768.0).powi(2))
            .sum::<f64>()
            / samples.len() as f64;
        10.0 * mean_square.log10()
    };
    // From 3 s on (the delay found), the agent's words are gone: what is left sits at the
    // noise's level, with no syllables in it.
    let after = &result.output[3 * RATE..9 * RATE];
    let overall = level(after);
    assert!((overall - -50.0).abs() < 2.0, "{overall} dBFS");
    let loudest_block = after
        .chunks(BLOCK_LEN * 5)
        .map(level)
        .fold(f64::NEG_INFINITY, f64::max);
    assert!(loudest_block < -47.0, "{loudest_block} dBFS");
}

#[test]
fn realign_forgets_the_delay_until_it_is_found_again() {
    let far = voice(8.0, (100.0, 160.0), 61);
    let len = RATE * 9;
    let mic = to_pcm(&add(&[
        &echo_of(&far, len, 0, 960, -10.0, &[1.0]),
        &noise(len, -60.0, 62),
    ]));
    let mut gate = EchoGate::new(EchoGateConfig::default()).unwrap();
    gate.far_audio(&to_pcm(&far));
    gate.set_playing(true);
    // The echo 60 ms behind the far end: found within a block (the reference covers one
    // block either side).
    gate.process(&mic[..4 * RATE]);
    let found = gate.stats().delay_ms.unwrap();
    assert!((50..=70).contains(&found), "{found}");
    gate.realign();
    assert_eq!(gate.stats().delay_ms, None);
    gate.process(&mic[4 * RATE..]);
    let found_again = gate.stats().delay_ms.unwrap();
    assert!((50..=70).contains(&found_again), "{found_again}");
}

#[test]
fn a_far_end_at_another_rate_is_resampled() {
    let far = voice(8.0, (100.0, 160.0), 71);
    let len = RATE * 10;
    let mic = add(&[
        &echo_of(&far, len, RATE, 1280, -10.0, &[1.0]),
        &noise(len, -65.0, 72),
    ]);
    // The far end as a 48 kHz TTS would deliver it (each sample three times is a crude
    // upsampling, which the gate's resampler takes back to 16 kHz).
    let far_48k: Vec<f64> = far.iter().flat_map(|&s| [s, s, s]).collect();
    let mut gate = EchoGate::new(EchoGateConfig {
        far_rate: 48_000,
        ..EchoGateConfig::default()
    })
    .unwrap();
    let pcm = to_pcm(&mic);
    gate.process(&pcm[..RATE]);
    gate.far_audio(&to_pcm(&far_48k));
    gate.set_playing(true);
    let mut longest = 0;
    let mut run = 0;
    for chunk in pcm[RATE..].chunks(BLOCK_LEN) {
        gate.process(chunk);
        run = if gate.near_end_ms() > 0 { run + 1 } else { 0 };
        longest = longest.max(run);
    }
    assert!(longest < 2, "{longest}");
    // 80 ms and the resampler's 1.4 ms, within a block.
    let delay = gate.stats().delay_ms.unwrap();
    assert!((70..=90).contains(&delay), "{delay}");
}

#[test]
fn the_far_queue_is_bounded() {
    let mut gate = EchoGate::new(EchoGateConfig {
        max_far_ms: 1000,
        ..EchoGateConfig::default()
    })
    .unwrap();
    gate.far_audio(&vec![1000i16; RATE * 3 / 2]);
    let stats = gate.stats();
    assert_eq!(stats.far_queued_ms, 1000.0);
    assert_eq!(stats.far_rejected_ms, 500.0);
    gate.set_playing(true);
    gate.process(&vec![0i16; RATE / 10]);
    assert_eq!(gate.stats().far_queued_ms, 900.0);
    gate.clear_far();
    assert_eq!(gate.stats().far_queued_ms, 0.0);
}

#[test]
fn settings_out_of_range_are_refused_with_their_values() {
    assert_eq!(
        EchoGate::new(EchoGateConfig {
            far_rate: 0,
            ..EchoGateConfig::default()
        })
        .unwrap_err(),
        EchoError::UnsupportedFarRate { rate: 0 }
    );
    let cases: [(EchoGateConfig, &str); 4] = [
        (
            EchoGateConfig {
                max_delay_ms: 5,
                ..EchoGateConfig::default()
            },
            "max_delay_ms",
        ),
        (
            EchoGateConfig {
                margin_db: f32::NAN,
                ..EchoGateConfig::default()
            },
            "margin_db",
        ),
        (
            EchoGateConfig {
                suppression_db: 3.0,
                ..EchoGateConfig::default()
            },
            "suppression_db",
        ),
        (
            EchoGateConfig {
                tail_ms: -1.0,
                ..EchoGateConfig::default()
            },
            "tail_ms",
        ),
    ];
    for (config, setting) in cases {
        match EchoGate::new(config) {
            Err(EchoError::InvalidSetting { name, .. }) => assert_eq!(name, setting),
            other => panic!("{setting}: {other:?}"),
        }
    }
    let mut gate = EchoGate::new(EchoGateConfig::default()).unwrap();
    let mut short = [0i16; 3];
    assert_eq!(
        gate.process_into(&[0i16; 4], &mut short),
        Err(EchoError::OutputLength {
            len: 3,
            expected: 4
        })
    );
}

/// Mono 16-bit WAVs at 16 kHz of the real speech corpus, or None (with a message) where it
/// is absent.
fn real_speech() -> Option<Vec<Vec<f64>>> {
    let folder =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/speech");
    let mut clips = Vec::new();
    let mut names: Vec<_> = std::fs::read_dir(&folder)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .collect();
    names.sort();
    for path in names
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "wav"))
    {
        let bytes = std::fs::read(path).ok()?;
        // The corpus's WAVs have the canonical 44-byte header (checked: PCM, mono, 16 kHz).
        let format = u16::from_le_bytes([bytes[20], bytes[21]]);
        let channels = u16::from_le_bytes([bytes[22], bytes[23]]);
        let rate = u32::from_le_bytes(bytes[24..28].try_into().unwrap());
        if format != 1 || channels != 1 || rate != SAMPLE_RATE || &bytes[36..40] != b"data" {
            continue;
        }
        clips.push(
            bytes[44..]
                .chunks_exact(2)
                .map(|pair| f64::from(i16::from_le_bytes([pair[0], pair[1]])) / 32768.0)
                .collect(),
        );
    }
    (!clips.is_empty()).then_some(clips)
}

#[test]
fn real_speech_echo_never_reads_as_the_user() {
    let Some(clips) = real_speech() else {
        eprintln!("skipped: real speech data not found at ../shared/data/speech");
        return;
    };
    let far: Vec<f64> = clips
        .iter()
        .flat_map(|c| {
            c.iter()
                .copied()
                .chain(std::iter::repeat(0.0).take(RATE / 2))
        })
        .collect();
    let len = far.len() + 2 * RATE;
    let background = noise(len, -65.0, 81);
    for delay_ms in [40, 90, 150] {
        let echo = echo_of(&far, len, RATE, delay_ms * RATE / 1000 + 71, -10.0, &[1.0]);
        let result = run(
            &add(&[&echo, &background]),
            Some(&far),
            100,
            EchoGateConfig::default(),
        );
        assert!(longest_run(&result.near) < 2, "{delay_ms} ms");
        assert!(result.gate.stats().converged());
    }
}
