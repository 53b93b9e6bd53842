# Sourced by the serving benchmarks: start `intaglio serve` on loopback and wait until healthy.
#   start_server PORT [serve flags...]   sets $server (its pid); the caller's EXIT trap stops it
start_server() {
  local port=$1
  shift
  intaglio serve "$@" --port "$port" --log-level warning &
  server=$!
  for _ in $(seq 120); do
    curl -sf "http://127.0.0.1:$port/health" >/dev/null && return 0
    sleep 1
  done
  echo "intaglio serve did not become healthy on port $port" >&2
  return 1
}
