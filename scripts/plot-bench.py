#!/usr/bin/env python3
"""Draws the scale curve of a chat-bench run (its JSON) as a PNG.

usage: plot-bench.py [BENCH_JSON] [OUT_PNG]   (defaults: target/bench.json docs/scale.png)

Reads the rows of the `scale` workload (each has a `clients` field) and draws, against the
number of connected clients: delivered messages per second, latency p50 and p99, server memory
per session, and CPU (chat: node CPU per 1,000 messages and idle CPU).
"""

import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def series(rows, system, metric):
    """(clients, value) points of one figure, sorted by clients."""
    points = sorted(
        (r["clients"], r["value"])
        for r in rows
        if r["system"] == system and r["metric"] == metric
    )
    return [p[0] for p in points], [p[1] for p in points]


def plot(ax, rows, lines, title, ylabel):
    drawn = False
    for system, metric, label, style in lines:
        xs, ys = series(rows, system, metric)
        if xs:
            ax.plot(xs, ys, style, label=label, marker="o")
            drawn = True
    ax.set_xscale("log")
    ax.set_title(title)
    ax.set_xlabel("connected clients")
    ax.set_ylabel(ylabel)
    ax.grid(True, which="both", alpha=0.3)
    if drawn:
        ax.legend()


# Each panel: title, y label, lines (system, metric, label, style), logarithmic y.
PANELS = [
    (
        "Throughput",
        "delivered messages / s",
        [
            ("chat", "delivered_msgs_per_s", "chat (durable, MySQL)", "-"),
            ("mosquitto", "delivered_msgs_per_s", "Mosquitto QoS 1", "--"),
        ],
        False,
    ),
    (
        "Latency, enqueue to client, 1,000 msg/s",
        "ms",
        [
            ("chat", "p50_ms", "chat p50", "-"),
            ("chat", "p99_ms", "chat p99", "-"),
            ("mosquitto", "p50_ms", "Mosquitto p50", "--"),
            ("mosquitto", "p99_ms", "Mosquitto p99", "--"),
        ],
        False,
    ),
    (
        "Memory with idle sessions",
        "KiB",
        [
            ("chat", "server_rss_kib", "chat-server RSS", "-"),
            ("mosquitto", "broker_rss_kib", "Mosquitto RSS", "--"),
        ],
        True,
    ),
    (
        "CPU",
        "ms per 1,000 messages / % of a core",
        [
            ("chat", "node_cpu_ms_per_1000", "chat-server CPU ms per 1,000 msgs", "-"),
            ("chat", "idle_cpu_percent", "chat-server idle CPU %", ":"),
        ],
        False,
    ),
]


def main():
    src = sys.argv[1] if len(sys.argv) > 1 else "target/bench.json"
    out = sys.argv[2] if len(sys.argv) > 2 else "docs/scale.png"
    with open(src) as f:
        rows = [r for r in json.load(f) if r.get("workload") == "scale" and "clients" in r]
    if not rows:
        sys.exit(f"{src} has no scale rows (run chat-bench with --only scale)")
    fig, axes = plt.subplots(2, 2, figsize=(12, 9))
    for ax, (title, ylabel, lines, log_y) in zip(axes.flat, PANELS):
        plot(ax, rows, lines, title, ylabel)
        if log_y:
            ax.set_yscale("log")
    fig.suptitle("chat-bench scale curve (one node, 2 cores)")
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    print(f"plot-bench: wrote {out}")


if __name__ == "__main__":
    main()
