"""The figures the browser tests measure: kept per scenario, printed in the run's summary,
written to ``reports/browser/results.json``."""

from __future__ import annotations

from typing import Any


class Results:
    """Figures the browser tests measured: printed in the run's summary and written to
    reports/browser/results.json."""

    def __init__(self) -> None:
        self.figures: dict[str, Any] = {}

    def record(self, scenario: str, **figures: Any) -> None:
        """Records the figures of one scenario."""
        self.figures.setdefault(scenario, {}).update(figures)

    def summary_lines(self) -> list[str]:
        """One line per scenario: underruns and gaps, barge-in latencies, the echo loop's
        accuracy, the player's pause and resume, what a short sound over the agent did, or
        how long a reconnection took."""
        lines: list[str] = []
        for scenario, f in sorted(self.figures.items()):
            if scenario == "servers":
                lines.extend(f"server ({label}): {figures}" for label, figures in f.items())
            elif "barge_ins" in f:
                each = [b["barge_in_ms"] for b in f["barge_ins"] if b.get("measured")]
                via = f.get("page_barge_in_via") or []
                lines.append(
                    f"{scenario}: guard {f['barge_in_min_speech_ms']} ms, mic onset -> silent "
                    f"output {each} ms, p50 {f.get('p50_ms')} p95 {f.get('p95_ms')} ms "
                    f"(target {f['target_p95_ms']:g} ms: "
                    f"{'met' if f.get('target_met') else 'MISSED'}); silenced by pause "
                    f"{via.count('pause')}, by clear {via.count('clear')}"
                )
            elif "max_residual_lsb" in f:
                lines.append(
                    f"{scenario}: echo {f['gain_db']:g} dB, {f['delay_ms']:g} ms "
                    f"({f['echo_level_dbfs']} dBFS), sent = mic + echo within "
                    f"{f['max_residual_lsb']} LSB; the server's own voice made it clear "
                    f"{f['clears']}x, pause {f['pauses']}x (capabilities "
                    f"{f['server_capabilities']})"
                )
            elif "pause_frame_in_recording" in f:
                lines.append(
                    f"{scenario}: held {f['held_ms']} ms, played {f['played_ms']} of "
                    f"{f['received_ms']} ms, sample-exact {f['sample_exact']}, "
                    f"gaps {f['underruns']}"
                )
            elif "downtime_ms" in f:
                lost = f["reconnecting"]
                lines.append(
                    f"{scenario}: close {lost['code']}, first attempt after "
                    f"{lost['delayMs']:.0f} ms, session back after {f['downtime_ms']} ms "
                    f"({f['attempts']} attempts), resumed {f['resumed']}"
                )
            elif "page_ducks" in f:
                lines.append(
                    f"{scenario}: pause {f['pauses']}, resume {f['resumes']}, clear "
                    f"{f['clears']}; held {f.get('held_ms')} ms, underruns {f.get('underruns')}, "
                    f"page ducks (onset -> silent ms) {[d['ms'] for d in f['page_ducks']]}"
                )
            else:
                lines.append(
                    f"{scenario}: underruns {f.get('underruns')} (player counted "
                    f"{f.get('player_underruns')}), inserted silence "
                    f"{f.get('inserted_silence_ms')} ms, gaps >= 10 ms {f.get('gaps_ge_10ms')}, "
                    f"buffer min/median {f.get('buffered_ms_min')}/"
                    f"{f.get('buffered_ms_median')} ms"
                )
        return lines
