#!/usr/bin/env python3
"""Which code of a running binary is resident: the binary's pages present in the process (from
/proc/PID/pagemap, root only), each page shared out among the symbols on it (`nm -S -C`), summed
by crate (the first path segment of a symbol; aws-lc's C and assembly as one).

Usage: bench/resident-pages.py PID BINARY      e.g. for an idle sidecar:
  target/release/c2c-proxy --listen 127.0.0.1:0 --upstream 127.0.0.1:9 --cert-dir D & \
  sleep 1; bench/resident-pages.py $! target/release/c2c-proxy
"""
import bisect
import collections
import re
import struct
import subprocess
import sys

pid, binary = int(sys.argv[1]), sys.argv[2]
maps = [l.split() for l in open(f"/proc/{pid}/maps") if l.rstrip().endswith(binary)]
if not maps:
    sys.exit(f"{binary} is not mapped by process {pid}")
bias = min(int(m[0].split("-")[0], 16) - int(m[2], 16) for m in maps)


def crate(name):
    if name.startswith(("aws_lc", "ecp_", "Lp", "Lbignum", "Lcurve", "Ledwards")):
        return "aws-lc"
    m = re.match(r"[<(]*(?:&|dyn |mut |impl )*([A-Za-z_][A-Za-z0-9_]*)", name)
    return m.group(1) if m else name[:20]


syms = []
nm = subprocess.run(["nm", "-S", "-C", "--defined-only", binary], capture_output=True, text=True)
for line in nm.stdout.splitlines():
    p = line.split(None, 3)
    if len(p) == 4:
        try:
            syms.append((int(p[0], 16), int(p[1], 16), crate(p[3])))
        except ValueError:
            pass
syms.sort()
starts = [s[0] for s in syms]

by_crate = collections.Counter()
present = 0
with open(f"/proc/{pid}/pagemap", "rb") as pm:
    for m in maps:
        lo, hi = (int(x, 16) for x in m[0].split("-"))
        for va in range(lo, hi, 4096):
            pm.seek(va // 4096 * 8)
            if not (struct.unpack("<Q", pm.read(8))[0] >> 63) & 1:
                continue
            present += 1
            off = va - bias
            share = collections.Counter()
            j = bisect.bisect_right(starts, off + 4096) - 1
            while j >= 0 and off - starts[j] < 1 << 20:
                a, size, k = syms[j]
                overlap = min(a + size, off + 4096) - max(a, off)
                if overlap > 0:
                    share[k] += overlap
                j -= 1
            if not share:
                by_crate["(no symbol: rodata, eh_frame, relocations)"] += 1
                continue
            total = sum(share.values())
            for k, v in share.items():
                by_crate[k] += v / total
print(f"{binary}: {present * 4} KiB of its pages resident in process {pid}")
for k, v in by_crate.most_common(30):
    print(f"{v * 4:8.0f} KiB  {k}")
