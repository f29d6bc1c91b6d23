#!/usr/bin/env bash
# Tries the ENT window on this machine in one command: builds Causette, starts it with
# deploy/ent-embed/causette.toml (demo directory, tokens, the page's origin allowed), starts
# the ENT stand-in, and opens nothing: point a browser at the address it prints. Ctrl-C stops
# both. NOT FOR PRODUCTION.
set -euo pipefail
cd "$(dirname "$0")/../.."
[ -d deploy/ent-embed/node_modules/converse.js ] \
    || npm ci --prefix deploy/ent-embed --no-audit --no-fund --loglevel=error
cargo build --release --quiet
./target/release/causette --config deploy/ent-embed/causette.toml serve &
server=$!
PORT=8080 node deploy/ent-embed/ent-standin.mjs &
standin=$!
trap 'kill "$server" "$standin" 2>/dev/null; wait' EXIT INT TERM
echo "ENT page: http://127.0.0.1:8080/ (signed in as lea.martin; /login?user=prof.durand to change)"
wait -n "$server" "$standin"
