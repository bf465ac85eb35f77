#!/usr/bin/env bash
# strata vs PostgreSQL with the original design's schema (issue #8).
#
#   benches/compare/run.sh            # full run: 1M events over 10k streams; writes the
#                                     # "strata vs PostgreSQL" section of benches/RESULTS.md
#                                     # and benches/compare/ratios.png
#   benches/compare/run.sh --smoke    # CI: 20k events over 500 streams, dev build, checks the
#                                     # row-by-row equality only (writes nothing)
#
# Any other flag goes to the harness (benches/src/bin/compare.rs): --events N, --streams N,
# --clients N, --concurrent-events N, --read-streams N, --batch N.
#
# Installs PostgreSQL from Debian's packages when no server binaries are found, starts a
# throwaway server on 127.0.0.1 (a free port, a temporary directory, as the `postgres` user when
# run as root) and stops it on exit, whatever happens. Exits non-zero when the user_statistics
# of the two sides differ.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)

smoke=0
harness_args=()
while [ $# -gt 0 ]; do
    case "$1" in
    --smoke) smoke=1 ;;
    *) harness_args+=("$1") ;;
    esac
    shift
done

log() { echo "run.sh: $*" >&2; }
load_at_start=$(cut -d' ' -f1-3 /proc/loadavg)

# --- PostgreSQL server binaries -------------------------------------------------------------
find_pg_bin() {
    local dir
    dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
    if [ -n "$dir" ] && [ -x "$dir/initdb" ] && [ -x "$dir/pg_ctl" ]; then
        echo "$dir"
    fi
}
pg_bin=$(find_pg_bin)
if [ -z "$pg_bin" ]; then
    log "PostgreSQL server not found: installing Debian's postgresql package"
    # Do not let the package create and start its own cluster: we run a throwaway one.
    mkdir -p /etc/postgresql-common
    [ -f /etc/postgresql-common/createcluster.conf ] ||
        echo "create_main_cluster = false" >/etc/postgresql-common/createcluster.conf
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -o Dpkg::Options::=--force-confold postgresql >&2 ||
        { apt-get update >&2 && apt-get install -y -o Dpkg::Options::=--force-confold postgresql >&2; }
    pg_bin=$(find_pg_bin)
    [ -n "$pg_bin" ] || { log "no PostgreSQL server binaries after installing"; exit 1; }
fi
log "PostgreSQL: $("$pg_bin/postgres" --version)"

# --- a throwaway server on 127.0.0.1 ---------------------------------------------------------
tmp=$(mktemp -d /tmp/strata-compare-pg.XXXXXX)
as_pg=()
if [ "$(id -u)" = 0 ]; then
    # PostgreSQL refuses to run as root.
    id -u postgres >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin postgres
    chown postgres "$tmp"
    as_pg=(runuser -u postgres --)
fi
started=0
cleanup() {
    local status=$?
    if [ "$started" = 1 ]; then
        "${as_pg[@]}" "$pg_bin/pg_ctl" -D "$tmp/data" -m fast -w -t 60 stop >/dev/null 2>&1 ||
            "${as_pg[@]}" "$pg_bin/pg_ctl" -D "$tmp/data" -m immediate -w -t 30 stop >/dev/null 2>&1 || true
    fi
    rm -rf "$tmp"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

port=""
for _ in $(seq 1 50); do
    candidate=$((20000 + RANDOM % 40000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$candidate") 2>/dev/null; then
        port=$candidate
        break
    fi
done
[ -n "$port" ] || { log "no free port found"; exit 1; }

"${as_pg[@]}" "$pg_bin/initdb" -D "$tmp/data" -U postgres --auth=trust -E UTF8 --locale=C >"$tmp/initdb.log" 2>&1 ||
    { cat "$tmp/initdb.log" >&2; exit 1; }
pg_settings="-c listen_addresses=127.0.0.1 -p $port -c unix_socket_directories=$tmp \
-c fsync=on -c synchronous_commit=on -c full_page_writes=on \
-c shared_buffers=512MB -c max_wal_size=4GB -c max_connections=50"
started=1
"${as_pg[@]}" "$pg_bin/pg_ctl" -D "$tmp/data" -l "$tmp/server.log" -w -t 60 -o "$pg_settings" start >/dev/null ||
    { cat "$tmp/server.log" >&2; exit 1; }
log "PostgreSQL listening on 127.0.0.1:$port (data in $tmp)"

# --- the harness -----------------------------------------------------------------------------
cd "$root"
if [ "$smoke" = 1 ]; then
    profile=()
    defaults=(--events 20000 --streams 500 --concurrent-events 1600 --read-streams 1000)
else
    profile=(--release)
    defaults=(--events 1000000 --streams 10000 --concurrent-events 16000 --read-streams 1000)
fi
out="$tmp/out"
cargo build -q "${profile[@]}" -p strata-benches --bin compare
cargo run -q "${profile[@]}" -p strata-benches --bin compare -- \
    --pg-port "$port" --out "$out" "${defaults[@]}" "${harness_args[@]}"

if [ "$smoke" = 1 ]; then
    log "smoke run passed: user_statistics equal row by row"
    exit 0
fi

# --- chart and RESULTS.md (full runs only) ---------------------------------------------------
python3 -c "import matplotlib" 2>/dev/null || pip install --quiet matplotlib >&2
python3 - "$out/ratios.csv" "$here/ratios.png" <<'EOF'
import csv, sys
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
rows = list(csv.DictReader(open(sys.argv[1])))
names = [r["case"].replace(" (", "\n(").replace(": ", ":\n") for r in rows]
ratios = [float(r["ratio"]) for r in rows]
fig, ax = plt.subplots(figsize=(10, 5))
bars = ax.barh(names, ratios, color=["#2a7" if x >= 1 else "#c44" for x in ratios])
ax.axvline(1, color="black", linewidth=1)
ax.axvline(3, color="gray", linestyle="--", linewidth=1, label="3x goal")
for bar, x in zip(bars, ratios):
    ax.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, f" {x:.3g}x", va="center")
ax.set_xscale("log")
ax.set_xlabel("strata speed / PostgreSQL speed (log scale; > 1: strata faster)")
ax.set_title("strata vs PostgreSQL (original design's schema)")
ax.invert_yaxis()
ax.legend(loc="lower right")
fig.tight_layout()
fig.savefig(sys.argv[2], dpi=100)
EOF
log "chart: $here/ratios.png"

model=$(lscpu | sed -n 's/^Model name:[[:space:]]*//p' | head -n 1)
section="$tmp/section.md"
{
    echo "<!-- compare:begin (written by benches/compare/run.sh) -->"
    echo "## strata vs PostgreSQL (issue #8)"
    echo
    echo "Command: \`benches/compare/run.sh\` (smoke in CI: \`benches/compare/run.sh --smoke\`)."
    echo "Run on $(date -u +%Y-%m-%d). Machine: \`lscpu\` model name \"$model\", $(nproc) cores, shared"
    echo "with other engineers' builds (load average at the start of the run: $load_at_start)."
    echo "strata \`Durability::Durable\` (fsync per commit), release build; the store file and the"
    echo "PostgreSQL data directory are on the same disk."
    echo
    cat "$out/figures.md"
    echo
    echo "![ratios](compare/ratios.png)"
    echo
    cat "$here/NOTES.md"
    echo "<!-- compare:end -->"
} >"$section"
python3 - "$root/benches/RESULTS.md" "$section" <<'EOF'
import re, sys
path, section = sys.argv[1], open(sys.argv[2]).read()
text = open(path).read()
pattern = re.compile(r"<!-- compare:begin.*?<!-- compare:end -->\n", re.S)
if pattern.search(text):
    text = pattern.sub(lambda _: section, text)
else:
    text = text.rstrip("\n") + "\n\n" + section
open(path, "w").write(text)
EOF
log "results: benches/RESULTS.md, section \"strata vs PostgreSQL\""
