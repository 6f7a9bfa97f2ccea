#!/usr/bin/env bash
# `make bench`: start `otel-cost serve` on a fresh embedded store (a temp dir), wait for GET /readyz,
# run bench/ingest.py against it, print its JSON on stdout (and keep a copy in bench/results/),
# stop the server (SIGTERM, wait) and remove the store.
#
#   bench/run.sh [ingest.py options...]        e.g. bench/run.sh --spans 100000 --concurrency 8
#
# Ports: OTEL_COST_BENCH_GRPC_PORT, OTEL_COST_BENCH_HTTP_PORT, OTEL_COST_BENCH_API_PORT; each unset one
# is a free port picked at start. Progress and the server's log go to stderr.
set -euo pipefail

cd "$(dirname "$0")/.."
BIN=.venv/bin
if [[ ! -x $BIN/python || ! -x $BIN/otel-cost ]]; then
    echo "bench: $BIN/otel-cost not found; run 'make install' first" >&2
    exit 2
fi

free_port() {
    $BIN/python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
GRPC_PORT=${OTEL_COST_BENCH_GRPC_PORT:-$(free_port)}
HTTP_PORT=${OTEL_COST_BENCH_HTTP_PORT:-$(free_port)}
API_PORT=${OTEL_COST_BENCH_API_PORT:-$(free_port)}
API=http://127.0.0.1:$API_PORT

WORK=$(mktemp -d "${TMPDIR:-/tmp}/otel-cost-bench.XXXXXX")
SERVER_PID=""

stop_server() {
    if [[ -n $SERVER_PID ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
        echo "bench: stopping the server (pid $SERVER_PID)" >&2
        kill -TERM "$SERVER_PID" 2>/dev/null || true
        for _ in $(seq 1 300); do
            kill -0 "$SERVER_PID" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$SERVER_PID" 2>/dev/null; then
            echo "bench: the server did not stop within 30s; killing it" >&2
            kill -KILL "$SERVER_PID" 2>/dev/null || true
        fi
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    SERVER_PID=""
}
cleanup() {
    stop_server
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "bench: starting otel-cost serve (store chdb:$WORK/store, gRPC :$GRPC_PORT, API :$API_PORT)" >&2
$BIN/otel-cost serve --store "chdb:$WORK/store" \
    --grpc-endpoint "127.0.0.1:$GRPC_PORT" \
    --http-endpoint "127.0.0.1:$HTTP_PORT" \
    --api-endpoint "127.0.0.1:$API_PORT" \
    >"$WORK/server.log" 2>&1 &
SERVER_PID=$!

ready=""
for _ in $(seq 1 1200); do  # up to 120 s: the first start creates the store
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
        break
    fi
    if $BIN/python -c 'import sys, urllib.request; sys.exit(urllib.request.urlopen(sys.argv[1], timeout=2).status != 200)' \
        "$API/readyz" 2>/dev/null; then
        ready=1
        break
    fi
    sleep 0.1
done
if [[ -z $ready ]]; then
    echo "bench: the server did not become ready; its log:" >&2
    cat "$WORK/server.log" >&2
    exit 1
fi
echo "bench: server ready" >&2

status=0
$BIN/python bench/ingest.py --endpoint "127.0.0.1:$GRPC_PORT" --api "$API" --server-pid "$SERVER_PID" "$@" \
    >"$WORK/result.json" || status=$?

stop_server
if [[ -s $WORK/server.log ]]; then
    echo "bench: server log:" >&2
    sed 's/^/  | /' "$WORK/server.log" >&2
fi
if [[ -s $WORK/result.json ]]; then
    mkdir -p bench/results
    cp "$WORK/result.json" "bench/results/ingest-$(date -u +%Y%m%dT%H%M%SZ).json"
    cat "$WORK/result.json"
fi
if [[ $status -ne 0 ]]; then
    echo "bench: FAILED (exit $status)" >&2
fi
exit "$status"
