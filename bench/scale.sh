#!/usr/bin/env bash
# Watch fan-out at scale: N simulated cells (real mTLS identities, holding streamed watches as the agent does;
# no namespaces) against control, one policy change every 0.5 s. Three setups in one run: the
# reference (each watcher builds its own view, control serve --per-watcher-views, SQLite), shared views on SQLite,
# and shared views on PostgreSQL (a server the run starts in a temp dir) with two replicas.
# Reports per change: p50/p99 per watcher and the time until all N have it (medians over the
# changes), control's CPU per change and RSS per parked watch; ratios against the reference.
#
#   bash bench/scale.sh [N...]      (default: 100 1000; root or a user that can run PostgreSQL)
#   CHANGES=10 APPS=1000 POLICIES=10000 bash bench/scale.sh 100 1000
#   REFERENCE=0 bash bench/scale.sh 5000    (without the reference: its first views take minutes)
#   REFERENCE=0 SQLITE=0 FAILOVER=1 bash bench/scale.sh 5000     (SQLITE=0: the replicated setup only)
#       the replicated setup's cells watch with the agent's own loop (both URLs, own replica
#       first); after the changes the replica half of them watch is killed (-9) and a change
#       made through the other; prints `failover: N cells back on a stream in X s (p99 Y s),
#       missed revisions M` (M: cells of the dead replica that never had that change in 60 s)
#   RESTART=1 ...     then every replica killed (-9) and started again on the same addresses (after
#       FAILOVER=1, the one left: every cell's storm comes to it):
#       `restart: ... N cells back on a stream in X s (p50, p99), missed revisions M`
#   SUSTAIN=30 [INTERVAL_MS=100] ...   a change every 100 ms for 30 s on a timer that does not
#       wait for the cells: `sustained: ... first tenth's median, last tenth's` (falling behind)
#   HANDSHAKES=N ...  each replica's --max-handshakes (default 1024; HANDSHAKES=1000000 is the
#       reference with no handshake budget in effect). After a failover or restart the bench
#       prints what each replica shed (c2c_control_shed_total). Each simulated cell connects
#       from an address of its own (127.1.X.Y), so control's per-address budgets are the defaults.
#   TRIM_PROBE=1 ...  once the streams are parked, each replica calls malloc_trim(0) (gdb attached
#       for a moment) and the RSS per parked watch is printed again (memory glibc keeps freed)
#   PARK_PAUSE=SECS ...  waits that long with every stream parked, the replicas' PIDs printed
#       (heaptrack attached to control since its start then sees what a parked stream holds)
#   With FAILOVER=1 or RESTART=1 the cells run the agent's own watch loop (each merges its
#   view as an agent does, here all on the bench's cores), so their fan-out rows count that too.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
cargo build --release -q -p c2c --bins
cargo build --release -q -p c2c-integration --example scale_bench
ns=("$@"); [ ${#ns[@]} -gt 0 ] || ns=(100 1000)
for n in "${ns[@]}"; do
  "$ROOT/target/release/examples/scale_bench" "$n" "${CHANGES:-10}" "${APPS:-1000}" "${POLICIES:-10000}"
  echo
done
