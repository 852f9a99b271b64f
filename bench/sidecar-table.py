#!/usr/bin/env python3
"""Prints issue #15's sidecar figures as a markdown table from one run of bench/sidecar.sh.

Usage: sidecar-table.py CSV MEMFILE N_IDLE
  CSV      tls-peers.sh's results (rows: c2c-proxy, haproxy, nginx-stream, maybe baseline)
  MEMFILE  lines "NAME idle_rss_kb rss_with_idle_conns_kb idle_anon_kb"
"""
import csv
import sys

rows = {r["proxy"]: r for r in csv.DictReader(open(sys.argv[1]))}
mem = {}
for line in open(sys.argv[2]):
    parts = line.split()
    mem[parts[0]] = [int(x) for x in parts[1:]]
n_idle = int(sys.argv[3])


def f(name, col):
    try:
        return float(rows[name][col])
    except (KeyError, ValueError):
        return float("nan")


peers = [p for p in ("haproxy", "nginx-stream") if p in rows]
base = "baseline" in rows
FIGS = [  # label, column, lower is better, format, scale
    ("proxy CPU per keep-alive request (us)", "ka_proxy_cpu_us_per_req", True, "{:.1f}", 1),
    ("proxy CPU per full handshake (us)", "hs_proxy_cpu_us_per_conn", True, "{:.0f}", 1),
    ("proxy CPU per MB, bulk (us)", "bulk_proxy_cpu_us_per_MB", True, "{:.0f}", 1),
    ("bulk MB/s", "bulk_MBps_med", False, "{:.0f}", 1),
    ("keep-alive requests/s", "ka_rps", False, "{:.0f}", 1),
    ("full handshakes/s", "hs_per_s", False, "{:.0f}", 1),
    ("peak RSS under that load (MiB)", "rss_hwm_kb_max", True, "{:.1f}", 1 / 1024),
]
head = ["figure", "c2c-proxy"] + (["baseline"] if base else []) + peers + ["c2c / best peer"]
print("\n| " + " | ".join(head) + " |")
print("|" + "---|" * len(head))
for label, col, lower, fmt, scale in FIGS:
    vals = [f(p, col) * scale for p in peers]
    best = min(vals) if lower else max(vals)
    c = f("c2c-proxy", col) * scale
    cells = [label, fmt.format(c)]
    if base:
        cells.append(fmt.format(f("baseline", col) * scale))
    cells += [fmt.format(v) for v in vals]
    cells.append(f"{c / best:.2f}x" if best else "-")
    print("| " + " | ".join(cells) + " |")
print()
for name in ("c2c-proxy", "baseline"):
    if name in mem:
        idle, conns, anon = mem[name]
        print(
            f"{name}: RSS idle {idle / 1024:.1f} MiB ({anon / 1024:.1f} MiB anonymous), "
            f"with {n_idle} idle TLS connections {conns / 1024:.1f} MiB "
            f"({(conns - idle) / n_idle:.1f} KiB per connection)"
        )
