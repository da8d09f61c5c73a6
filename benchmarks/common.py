"""Helpers shared by the benchmark scripts: repeated timing with medians, a matmul roofline."""
import logging
import statistics
import time

import numpy as np
import tensorflow as tf


def median_rate(fn, items_per_call, repeats=5, warmup=1):
    """Calls fn() warmup + repeats times; returns (median items/s, list of items/s)."""
    for _ in range(warmup):
        fn()
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        rates.append(items_per_call / (time.perf_counter() - t0))
    return statistics.median(rates), rates


def matmul_roofline_gflops(n=2048, dtype=tf.float32, repeats=5):
    """Median GFLOP/s of an n x n matmul: what this CPU reaches on the densest kernel it has."""
    a = tf.random.normal((n, n), dtype=tf.float32)
    a = tf.cast(a, dtype)
    f = tf.function(lambda x: tf.matmul(x, x))
    rate, _ = median_rate(lambda: f(a).numpy(), 2 * n**3, repeats=repeats)
    return rate / 1e9


def show_progress():
    """Training runs inside a benchmark log their progress lines (rate, ETA) as the CLI does."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")


def env_line():
    return (f"tensorflow {tf.__version__}, intra-op threads {tf.config.threading.get_intra_op_parallelism_threads() or 'auto'}, "
            f"devices {[d.name for d in tf.config.list_logical_devices()]}")


def fmt_rates(rates):
    return "[" + ", ".join(f"{r:.3g}" for r in rates) + "]"


__all__ = ["median_rate", "matmul_roofline_gflops", "env_line", "fmt_rates", "show_progress", "np"]
