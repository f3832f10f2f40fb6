"""The capture side: standard library plus the py-spy and pystack binaries.

TensorFlow is imported lazily by the one collector that needs it (tf_profiler), and only
inside a bounded subprocess. Nothing here analyzes: collectors write raw facts to a dump.
"""
