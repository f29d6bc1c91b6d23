#!/usr/bin/env bash
# Start-up time with a large store, and store queries per login (issue 5, measure (e)).
#
# Fills an SQLite store with USERS accounts and USERS x CONTACTS roster items (both
# subscriptions, each contact in a category), plus one account with BIG contacts and one with
# none, all of them in the ENT directory (schools of 1,000, classes of 25); then times `causette serve` from its start to its first accepted connection, and
# counts the SQL statements a login runs (sqlx logs each at debug level under `sqlx::query`)
# for the accounts with 0, CONTACTS and BIG contacts: the count must not grow with the roster.
#
# Usage: bash bench/startup.sh [USERS] [CONTACTS] [BIG]   (default 100000 10 500)
# Prints JSON lines (kept in $OUT, default bench/out/startup-<date>.jsonl). Loopback only.
set -euo pipefail
cd "$(dirname "$0")/.."
USERS=${1:-100000}
CONTACTS=${2:-10}
BIG=${3:-500}
PORT=25262
mkdir -p bench/out
OUT=${OUT:-bench/out/startup-$(date +%Y%m%d-%H%M%S).jsonl}
WORK=$(mktemp -d /tmp/causette-startup.XXXXXX)
SERVER_PID=""
cleanup() {
    if [ -n "$SERVER_PID" ]; then kill "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; fi
    [ -n "${KEEP:-}" ] || rm -rf "$WORK"
}
trap cleanup EXIT
ulimit -n 20000 2>/dev/null || true
cargo build --release --bins -q
CAUSETTE=target/release/causette
LOAD=target/release/causette-load
cat > "$WORK/causette.toml" <<TOML
domain = "localhost"
data_dir = "$WORK/data"
[listen]
c2s = ["127.0.0.1:$PORT"]
c2s_direct_tls = []
[http]
listen = []
[tls]
allow_plaintext_on_loopback = true
[admin]
demo_directory = false
[log]
level = "warn"
TOML

# One real SCRAM credential, copied to every account: hashing 100,000 passwords would time
# the filling, not the server.
"$CAUSETTE" --config "$WORK/causette.toml" migrate >/dev/null
echo load-password | "$CAUSETTE" --config "$WORK/causette.toml" user add seed >/dev/null
fill_started=$(date +%s.%N)
python3 - "$WORK/data/causette.db" "$USERS" "$CONTACTS" "$BIG" <<'PY'
import sqlite3, sys, time
path, users, contacts, big = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
db = sqlite3.connect(path)
creds = db.execute("SELECT mechanism, salt, iterations, stored_key, server_key FROM credentials WHERE username='seed'").fetchall()
now = int(time.time())
names = [f"u{i}" for i in range(users)] + ["big0", "none0"]
db.executemany("INSERT INTO users (username, created_at) VALUES (?, ?)", ((n, now) for n in names))
db.executemany("INSERT INTO credentials (username, mechanism, salt, iterations, stored_key, server_key) VALUES (?, ?, ?, ?, ?, ?)",
               ((n, *c) for n in names for c in creds))
def items():
    for i in range(users):
        for k in range(1, contacts + 1):
            yield (f"u{i}", f"u{(i + k) % users}@localhost")
    for k in range(big):
        yield ("big0", f"u{k}@localhost")
db.executemany("INSERT INTO roster_items (username, contact, subscription) VALUES (?, ?, 'both')", items())
db.execute("INSERT INTO roster_groups (username, contact, name) SELECT username, contact, 'Classe' FROM roster_items")
# The ENT directory, which the server loads at start-up: schools of 1,000 users in classes of
# 25, one teacher for nine students.
schools = max(1, len(names) // 1000)
db.executemany("INSERT INTO structures (id, name) VALUES (?, ?)", ((f"{s:07d}X", f"Lycee {s}") for s in range(schools)))
db.executemany("INSERT INTO directory_users (username, display_name, profile, first_login) VALUES (?, ?, ?, ?)",
               ((n, f"User {n}", "teacher" if i % 10 == 0 else "student", now) for i, n in enumerate(names)))
db.executemany("INSERT INTO structure_members (structure_id, username) VALUES (?, ?)",
               ((f"{(i // 1000) % schools:07d}X", n) for i, n in enumerate(names)))
db.executemany("INSERT INTO classes (id, structure_id, name) VALUES (?, ?, ?)",
               ((f"c{c}", f"{(c * 25 // 1000) % schools:07d}X", f"Classe {c}") for c in range(len(names) // 25 + 1)))
db.executemany("INSERT INTO class_members (class_id, username) VALUES (?, ?)",
               ((f"c{i // 25}", n) for i, n in enumerate(names)))
db.commit()
print(f"filled: {db.execute('SELECT count(*) FROM users').fetchone()[0]} users, "
      f"{db.execute('SELECT count(*) FROM roster_items').fetchone()[0]} roster items, "
      f"{schools} schools in the directory", file=sys.stderr)
PY
fill_seconds=$(python3 -c "import sys; print(round(float(sys.argv[1]) - float(sys.argv[2]), 2))" "$(date +%s.%N)" "$fill_started")
db_mb=$(du -m "$WORK/data/causette.db" | cut -f1)

# Start-up: from exec to the first accepted connection.
started=$(date +%s.%N)
RUST_LOG="warn,sqlx::query=debug" "$CAUSETTE" --config "$WORK/causette.toml" serve >"$WORK/log" 2>&1 &
SERVER_PID=$!
until (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; do
    kill -0 "$SERVER_PID" 2>/dev/null || { echo "server died: $(tail -5 "$WORK/log")" >&2; exit 1; }
    sleep 0.01
done
startup_seconds=$(python3 -c "import sys; print(round(float(sys.argv[1]) - float(sys.argv[2]), 3))" "$(date +%s.%N)" "$started")
rss_kb=$(awk '/VmRSS/ {print $2}' "/proc/$SERVER_PID/status")
echo "{\"scenario\":\"startup\",\"users\":$((USERS + 3)),\"roster_items\":$((USERS * CONTACTS + BIG)),\"db_mb\":$db_mb,\"fill_seconds\":$fill_seconds,\"startup_seconds\":$startup_seconds,\"server_rss_kb\":$rss_kb}" | tee -a "$OUT"

# Queries per login: the statements logged while one account logs in, sends its presence
# (which makes the server probe and broadcast to every contact), and leaves.
# Statements logged so far, less the PRAGMAs that set up a new pooled database connection.
statements() {
    grep 'sqlx::query' "$WORK/log" | grep -vc 'PRAGMA' || true
}
queries_for() {
    local prefix=$1 contacts=$2
    sleep 0.5
    local before after
    before=$(statements)
    "$LOAD" --scenario login --server 127.0.0.1:$PORT --prefix "$prefix" --users 1 \
        --concurrency 1 --hold-secs 1 --mechanism PLAIN >/dev/null
    sleep 1
    after=$(statements)
    echo "{\"scenario\":\"queries_per_login\",\"contacts\":$contacts,\"queries\":$((after - before))}" | tee -a "$OUT"
}
queries_for none 0
queries_for u "$CONTACTS"
queries_for big "$BIG"
