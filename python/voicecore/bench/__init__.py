"""System benchmarks and robustness tools for a running ``voicecore serve`` (issue 6).

One module per tool, each runnable as ``python -m voicecore.bench.<tool>``; they target
127.0.0.1 only and bound every process they start in count and time.
"""
