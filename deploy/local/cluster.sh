#!/usr/bin/env bash
# The deploy/compose topology as plain processes on one machine, everything on 127.0.0.1:
#   - a 3-node NATS cluster with JetStream (routes between the nodes, own store dir each),
#   - 3 natsedge gateways (node bin/natsedge.js) sharing apiKey and sessionSecret, streams
#     replicated on every NATS node,
#   - HAProxy in front: round robin, no sticky sessions, WebSocket/long-poll/SSE timeouts,
#     health checks on each gateway's /readyz,
#   - Prometheus, when a `prometheus` binary is installed (Debian package `prometheus`).
# Every process runs detached with a pid file and a log under STATE_DIR.
#
# Needs: node (with `npm ci` done, so dist/ is built), nats-server 2.9+, haproxy 2.4+, curl
# (optional: node is used without it), setsid (util-linux, optional).
set -euo pipefail
shopt -u patsub_replacement 2>/dev/null || true # bash 5.2: '&' in ${x//p/r} means the match

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)

usage() {
  cat <<EOF
usage: deploy/local/cluster.sh COMMAND

commands:
  start              start NATS, the gateways, HAProxy (and Prometheus); wait until all are ready
  stop               stop everything (gateways drain first); the state (JetStream data) is kept
  status             one line per process: pid, ports, ready or not; exit 0 when all are ready, 3 otherwise
  config             render the configs into STATE_DIR and check them, start nothing
  restart            stop, then start
  rolling-restart    restart the gateways one at a time (each drained, restarted, ready and back
                     in the load balancer before the next)
  stop-gateway N     SIGTERM gateway N (1-based) and wait until it has drained and exited
  start-gateway N    start gateway N and wait until it is ready and back in the load balancer
  restart-gateway N  stop-gateway N, then start-gateway N
  clean              stop, then delete STATE_DIR
  help               this text

settings (environment; 'start' and 'config' read them and save them in STATE_DIR/cluster.env,
the other commands use the saved ones):
  STATE_DIR           configs, logs, pid files, JetStream stores  [\${TMPDIR:-/tmp}/natsedge-local]
  LB_PORT             load balancer: clients and the HTTP API     [8080]
  LB_STATS_PORT       HAProxy stats page /stats and /metrics      [8404]
  GATEWAY_PORTS       gateway client ports, one per gateway       ["8001 8002 8003"]
  ADMIN_PORTS         gateway admin ports (/metrics, /healthz, /readyz)  ["9101 9102 9103"]
  NATS_PORTS          NATS client ports, one per NATS node        ["4231 4232 4233"]
  NATS_CLUSTER_PORTS  NATS route ports                            ["6231 6232 6233"]
  NATS_MONITOR_PORTS  NATS monitoring ports (/varz, /healthz)     ["8231 8232 8233"]
  PROMETHEUS          auto (start it if installed), on or off     [auto]
  PROMETHEUS_PORT     Prometheus web UI and API                   [9090]
  DRAIN_PERIOD        gateways' drainPeriod                       [5s]
  READY_TIMEOUT       seconds to wait for each process to be ready [90]
  API_KEY             server API key (generated and kept in STATE_DIR/secrets.env when unset)
  SESSION_SECRET      long-poll/SSE session secret, 32+ characters (generated when unset)
  GATEWAY_TEMPLATE    gateway config template  [deploy/local/natsedge.yaml.tmpl]
  NODE, NATS_SERVER, HAPROXY, PROMETHEUS_BIN   programs to run  [found on PATH]
EOF
}

log() { printf '%s cluster.sh: %s\n' "$(date +%H:%M:%S)" "$*"; }
warn() { printf '%s cluster.sh: %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() {
  warn "error: $*"
  exit 1
}

# --- settings -------------------------------------------------------------------------------

STATE_DIR=${STATE_DIR:-${TMPDIR:-/tmp}/natsedge-local}
case $STATE_DIR in /*) ;; *) STATE_DIR=$PWD/$STATE_DIR ;; esac
STATE_DIR=${STATE_DIR%/}
ENV_FILE=$STATE_DIR/cluster.env
SECRETS_FILE=$STATE_DIR/secrets.env
SAVED=(LB_PORT LB_STATS_PORT GATEWAY_PORTS ADMIN_PORTS NATS_PORTS NATS_CLUSTER_PORTS NATS_MONITOR_PORTS
  PROMETHEUS PROMETHEUS_PORT DRAIN_PERIOD READY_TIMEOUT GATEWAY_TEMPLATE NODE NATS_SERVER HAPROXY PROMETHEUS_BIN)

find_program() { # name fallback...: first one found on PATH (or as a path), else the name
  local p
  for p in "$@"; do
    if command -v "$p" >/dev/null 2>&1; then
      command -v "$p"
      return
    fi
  done
  echo "$1"
}

settings_from_env() {
  LB_PORT=${LB_PORT:-8080}
  LB_STATS_PORT=${LB_STATS_PORT:-8404}
  GATEWAY_PORTS=${GATEWAY_PORTS:-8001 8002 8003}
  ADMIN_PORTS=${ADMIN_PORTS:-9101 9102 9103}
  NATS_PORTS=${NATS_PORTS:-4231 4232 4233}
  NATS_CLUSTER_PORTS=${NATS_CLUSTER_PORTS:-6231 6232 6233}
  NATS_MONITOR_PORTS=${NATS_MONITOR_PORTS:-8231 8232 8233}
  PROMETHEUS=${PROMETHEUS:-auto}
  PROMETHEUS_PORT=${PROMETHEUS_PORT:-9090}
  DRAIN_PERIOD=${DRAIN_PERIOD:-5s}
  READY_TIMEOUT=${READY_TIMEOUT:-90}
  GATEWAY_TEMPLATE=${GATEWAY_TEMPLATE:-$HERE/natsedge.yaml.tmpl}
  NODE=${NODE:-$(find_program node)}
  NATS_SERVER=${NATS_SERVER:-$(find_program nats-server /usr/sbin/nats-server)}
  HAPROXY=${HAPROXY:-$(find_program haproxy /usr/sbin/haproxy)}
  PROMETHEUS_BIN=${PROMETHEUS_BIN:-$(find_program prometheus)}
  case $PROMETHEUS in
  auto) if command -v "$PROMETHEUS_BIN" >/dev/null 2>&1; then PROMETHEUS=on; else PROMETHEUS=off; fi ;;
  on | off) ;;
  *) die "PROMETHEUS must be auto, on or off (got '$PROMETHEUS')" ;;
  esac
  validate_settings
}

validate_settings() {
  local v p
  read -ra GW_PORTS <<<"$GATEWAY_PORTS"
  read -ra GW_ADMIN <<<"$ADMIN_PORTS"
  read -ra N_PORTS <<<"$NATS_PORTS"
  read -ra N_CLUSTER <<<"$NATS_CLUSTER_PORTS"
  read -ra N_MONITOR <<<"$NATS_MONITOR_PORTS"
  ((${#GW_PORTS[@]} >= 1)) || die "GATEWAY_PORTS is empty"
  ((${#GW_PORTS[@]} == ${#GW_ADMIN[@]})) || die "GATEWAY_PORTS and ADMIN_PORTS need one port per gateway each"
  ((${#N_PORTS[@]} >= 1)) || die "NATS_PORTS is empty"
  ((${#N_PORTS[@]} == ${#N_CLUSTER[@]} && ${#N_PORTS[@]} == ${#N_MONITOR[@]})) ||
    die "NATS_PORTS, NATS_CLUSTER_PORTS and NATS_MONITOR_PORTS need one port per NATS node each"
  for v in LB_PORT LB_STATS_PORT PROMETHEUS_PORT; do
    if ! [[ ${!v} =~ ^[0-9]+$ ]] || ((${!v} < 1 || ${!v} > 65535)); then die "$v must be a port number (got '${!v}')"; fi
  done
  for p in "${GW_PORTS[@]}" "${GW_ADMIN[@]}" "${N_PORTS[@]}" "${N_CLUSTER[@]}" "${N_MONITOR[@]}"; do
    if ! [[ $p =~ ^[0-9]+$ ]] || ((p < 1 || p > 65535)); then die "'$p' is not a port number"; fi
  done
  [[ $READY_TIMEOUT =~ ^[0-9]+$ ]] || die "READY_TIMEOUT must be a number of seconds (got '$READY_TIMEOUT')"
  GATEWAYS=${#GW_PORTS[@]}
  NATS_NODES=${#N_PORTS[@]}
  STREAM_REPLICAS=$((NATS_NODES < 3 ? NATS_NODES : 3))
}

save_settings() {
  mkdir -p "$STATE_DIR"
  local v
  {
    echo "# written by deploy/local/cluster.sh start; the other commands read it"
    for v in "${SAVED[@]}"; do printf '%s=%q\n' "$v" "${!v}"; done
  } >"$ENV_FILE"
}

load_settings() { # the saved settings of an existing STATE_DIR, else the environment's
  if [[ -f $ENV_FILE ]]; then
    # shellcheck disable=SC1090
    source "$ENV_FILE"
    validate_settings
  else
    settings_from_env
  fi
}

random_hex() { od -An -tx1 -N"$1" /dev/urandom | tr -d ' \n'; }

load_secrets() { # API_KEY / SESSION_SECRET: the environment's, else the saved ones, else new
  local env_key=${API_KEY:-} env_secret=${SESSION_SECRET:-}
  API_KEY='' SESSION_SECRET=''
  if [[ -f $SECRETS_FILE ]]; then
    # shellcheck disable=SC1090
    source "$SECRETS_FILE"
  fi
  API_KEY=${env_key:-${API_KEY:-$(random_hex 16)}}
  SESSION_SECRET=${env_secret:-${SESSION_SECRET:-$(random_hex 24)}}
  ((${#API_KEY} >= 32)) || die "API_KEY must have at least 32 characters"
  ((${#SESSION_SECRET} >= 32)) || die "SESSION_SECRET must have at least 32 characters"
  mkdir -p "$STATE_DIR"
  (
    umask 077
    printf 'API_KEY=%q\nSESSION_SECRET=%q\n' "$API_KEY" "$SESSION_SECRET" >"$SECRETS_FILE"
  )
}

# --- processes --------------------------------------------------------------------------------

pidfile() { echo "$STATE_DIR/run/$1.pid"; }
logfile() { echo "$STATE_DIR/logs/$1.log"; }

pid_of() { # name: the recorded pid (nothing when there is none)
  local f
  f=$(pidfile "$1")
  if [[ -s $f ]]; then head -n1 "$f"; fi
}

# A pid is ours while it runs (not a zombie) and its command line names STATE_DIR: a pid file
# left behind never makes us signal an unrelated process that reused the pid.
alive() {
  local pid=$1 state cmdline
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  if [[ -d /proc/$pid ]]; then
    state=$(sed 's/^.*) //' "/proc/$pid/stat" 2>/dev/null | cut -d' ' -f1) || return 1
    cmdline=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || return 1
  elif [[ ! -d /proc/self ]]; then # no procfs (not Linux)
    state=$(ps -o stat= -p "$pid" 2>/dev/null) || return 1
    cmdline=$(ps -o args= -p "$pid" 2>/dev/null) || return 1
  else
    return 1
  fi
  [[ $state != Z* && $state != X* ]] || return 1
  [[ $cmdline == *"$STATE_DIR"* ]]
}

running() {
  local pid
  pid=$(pid_of "$1")
  [[ -n $pid ]] && alive "$pid"
}

# Runs a command detached: its own session (a Ctrl-C in the terminal that ran `start` does not
# reach it), stdin from /dev/null, output appended to its log, pid in its pid file.
launch() {
  local name=$1
  shift
  local log
  log=$(logfile "$name")
  mkdir -p "$STATE_DIR/run" "$STATE_DIR/logs"
  printf '=== %s: %s\n' "$(date '+%Y-%m-%d %H:%M:%S')" "$*" >>"$log"
  if command -v setsid >/dev/null 2>&1; then
    setsid "$@" </dev/null >>"$log" 2>&1 &
  else
    "$@" </dev/null >>"$log" 2>&1 &
  fi
  echo $! >"$(pidfile "$name")"
}

# SIGTERM (or the given signal) to a component if it runs.
signal() {
  local pid
  pid=$(pid_of "$1")
  if [[ -n $pid ]] && alive "$pid"; then kill "-${2:-TERM}" "$pid" 2>/dev/null || true; fi
}

# Waits until a component has exited, at most `timeout` seconds, then SIGKILLs it.
wait_gone() {
  local name=$1 timeout=$2 pid deadline
  pid=$(pid_of "$name")
  deadline=$((SECONDS + timeout))
  if [[ -n $pid ]]; then
    while alive "$pid"; do
      if ((SECONDS >= deadline)); then
        warn "$name (pid $pid) still running after ${timeout}s: SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        sleep 0.5
        break
      fi
      sleep 0.1
    done
  fi
  rm -f "$(pidfile "$name")"
}

seconds_of() { # a natsedge duration (500ms, 5s, 2m, 30) in whole seconds, rounded up
  local d=$1
  case $d in
  *ms) echo $(((${d%ms} + 999) / 1000)) ;;
  *s) echo "${d%s}" ;;
  *m) echo $((${d%m} * 60)) ;;
  *h) echo $((${d%h} * 3600)) ;;
  *) echo "$d" ;;
  esac
}

# --- HTTP -------------------------------------------------------------------------------------

http_get() { # url: the body (nothing on failure)
  if command -v curl >/dev/null 2>&1; then
    curl -fsS --max-time 2 "$1" 2>/dev/null || true
  else
    "$NODE" -e 'fetch(process.argv[1],{signal:AbortSignal.timeout(2000)}).then(async r=>{if(r.ok)process.stdout.write(await r.text())},()=>{})' "$1"
  fi
}

http_code() { # url: the status code, 000 when nothing answered
  local code
  if command -v curl >/dev/null 2>&1; then
    code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$1" 2>/dev/null) || true
  else
    code=$("$NODE" -e 'fetch(process.argv[1],{signal:AbortSignal.timeout(2000)}).then(r=>console.log(r.status),()=>console.log("000"))' "$1")
  fi
  echo "${code:-000}"
}

# Waits (bounded) until `url` answers 200, failing early when the component exits.
wait_http() {
  local name=$1 url=$2 deadline=$((SECONDS + READY_TIMEOUT)) pid
  pid=$(pid_of "$name")
  until [[ $(http_code "$url") == 200 ]]; do
    if ! alive "$pid"; then
      warn "$name exited while starting; the end of $(logfile "$name"):"
      tail -n 25 "$(logfile "$name")" >&2 || true
      return 1
    fi
    if ((SECONDS >= deadline)); then
      warn "$name not ready after ${READY_TIMEOUT}s ($url); the end of $(logfile "$name"):"
      tail -n 25 "$(logfile "$name")" >&2 || true
      return 1
    fi
    sleep 0.2
  done
}

lb_state() { # gateway number: its state in HAProxy (UP, DOWN, MAINT, "UP 1/2", ...; - if unknown)
  local state
  state=$(http_get "http://127.0.0.1:$LB_STATS_PORT/stats;csv" |
    awk -F, -v s="gw$1" '$1 == "gateways" && $2 == s { print $18 }')
  echo "${state:--}"
}

wait_lb_down() { # after a gateway stopped: HAProxy has taken it out of the rotation
  local i=$1 deadline=$((SECONDS + 15))
  while [[ $(lb_state "$i") == UP* ]]; do
    if ((SECONDS >= deadline)); then
      warn "HAProxy still has gateway $i UP 15s after it stopped"
      return 1
    fi
    sleep 0.2
  done
}

wait_lb_up() {
  local i=$1 deadline=$((SECONDS + READY_TIMEOUT))
  until [[ $(lb_state "$i") == UP ]]; do
    if ((SECONDS >= deadline)); then
      warn "HAProxy did not mark gateway $i UP within ${READY_TIMEOUT}s (state: $(lb_state "$i"))"
      return 1
    fi
    sleep 0.2
  done
}

# --- configs ----------------------------------------------------------------------------------

render() { # template output KEY=VALUE...: replaces @KEY@ in the template
  local template=$1 out=$2 text kv
  shift 2
  [[ -r $template ]] || die "cannot read template $template"
  text=$(<"$template")
  for kv in "$@"; do text=${text//@${kv%%=*}@/${kv#*=}}; done
  if [[ $text =~ @[A-Z_]+@ ]]; then die "$template: no value for ${BASH_REMATCH[0]}"; fi
  mkdir -p "$(dirname "$out")"
  printf '%s\n' "$text" >"$out"
}

render_configs() {
  local i routes='' servers='' nats_servers='' targets='' sep=''
  for ((i = 0; i < NATS_NODES; i++)); do
    routes+="    nats-route://127.0.0.1:${N_CLUSTER[i]}"$'\n'
    nats_servers+="${sep}nats://127.0.0.1:${N_PORTS[i]}"
    sep=', '
  done
  routes=${routes%$'\n'}
  for ((i = 0; i < NATS_NODES; i++)); do
    render "$HERE/nats.conf.tmpl" "$STATE_DIR/nats/n$((i + 1))/nats.conf" \
      NAME="n$((i + 1))" PORT="${N_PORTS[i]}" MONITOR_PORT="${N_MONITOR[i]}" \
      CLUSTER_PORT="${N_CLUSTER[i]}" STORE_DIR="$STATE_DIR/nats/n$((i + 1))/store" ROUTES="$routes"
  done

  render "$GATEWAY_TEMPLATE" "$STATE_DIR/gateway/natsedge.yaml" \
    NATS_SERVERS="$nats_servers" STREAM_REPLICAS="$STREAM_REPLICAS" DRAIN_PERIOD="$DRAIN_PERIOD" LB_PORT="$LB_PORT"

  sep=''
  for ((i = 0; i < GATEWAYS; i++)); do
    servers+="    server gw$((i + 1)) 127.0.0.1:${GW_PORTS[i]} check port ${GW_ADMIN[i]}"$'\n'
    targets+="${sep}\"127.0.0.1:${GW_ADMIN[i]}\""
    sep=', '
  done
  servers=${servers%$'\n'}
  render "$HERE/haproxy.cfg.tmpl" "$STATE_DIR/haproxy/haproxy.cfg" \
    LB_PORT="$LB_PORT" LB_STATS_PORT="$LB_STATS_PORT" GATEWAY_SERVERS="$servers"

  render "$HERE/prometheus.yml.tmpl" "$STATE_DIR/prometheus/prometheus.yml" \
    GATEWAY_TARGETS="$targets" LB_STATS_PORT="$LB_STATS_PORT" RULES_FILE="$ROOT/deploy/prometheus/natsedge.rules.yml"
}

check_configs() {
  local i out
  for ((i = 1; i <= NATS_NODES; i++)); do
    out=$("$NATS_SERVER" -t -c "$STATE_DIR/nats/n$i/nats.conf" 2>&1) || die "nats.conf of n$i: $out"
  done
  out=$("$HAPROXY" -c -f "$STATE_DIR/haproxy/haproxy.cfg" 2>&1) || die "haproxy.cfg: $out"
  if [[ $PROMETHEUS == on ]] && command -v promtool >/dev/null 2>&1; then
    out=$(promtool check config "$STATE_DIR/prometheus/prometheus.yml" 2>&1) || die "prometheus.yml: $out"
  fi
}

preflight() {
  command -v "$NODE" >/dev/null 2>&1 || die "node not found (set NODE)"
  [[ -f $ROOT/dist/cli.js ]] || die "$ROOT/dist/cli.js is missing: run 'npm ci' (or 'npm run build') first"
  command -v "$NATS_SERVER" >/dev/null 2>&1 || die "nats-server not found (apt-get install nats-server, or set NATS_SERVER)"
  command -v "$HAPROXY" >/dev/null 2>&1 || die "haproxy not found (apt-get install haproxy, or set HAPROXY)"
  if [[ $PROMETHEUS == on ]]; then
    command -v "$PROMETHEUS_BIN" >/dev/null 2>&1 || die "prometheus not found (apt-get install prometheus, set PROMETHEUS_BIN or PROMETHEUS=off)"
  fi
}

# --- components -------------------------------------------------------------------------------

components() { # every component name, in start order
  local i
  for ((i = 1; i <= NATS_NODES; i++)); do echo "nats-$i"; done
  for ((i = 1; i <= GATEWAYS; i++)); do echo "gateway-$i"; done
  echo haproxy
  if [[ $PROMETHEUS == on ]]; then echo prometheus; fi
}

gateway_index() { # validates N of the *-gateway commands
  if ! [[ ${1:-} =~ ^[0-9]+$ ]] || (($1 < 1 || $1 > GATEWAYS)); then die "give a gateway number from 1 to $GATEWAYS"; fi
}

start_nats() {
  local i
  for ((i = 1; i <= NATS_NODES; i++)); do
    running "nats-$i" && continue
    mkdir -p "$STATE_DIR/nats/n$i/store"
    launch "nats-$i" "$NATS_SERVER" -c "$STATE_DIR/nats/n$i/nats.conf"
  done
  # /healthz answers 200 once the node's JetStream is up (after the cluster elected its leader).
  for ((i = 1; i <= NATS_NODES; i++)); do
    wait_http "nats-$i" "http://127.0.0.1:${N_MONITOR[i - 1]}/healthz" || return 1
  done
  log "NATS: $NATS_NODES nodes ready (client ports ${N_PORTS[*]})"
}

launch_gateway() {
  local i=$1
  launch "gateway-$i" env NATSEDGE_API_KEY="$API_KEY" NATSEDGE_SESSION_SECRET="$SESSION_SECRET" \
    "$NODE" "$ROOT/bin/natsedge.js" --config "$STATE_DIR/gateway/natsedge.yaml" \
    --host 127.0.0.1 --port "${GW_PORTS[i - 1]}" --admin-host 127.0.0.1 --admin-port "${GW_ADMIN[i - 1]}"
}

wait_gateway() {
  wait_http "gateway-$1" "http://127.0.0.1:${GW_ADMIN[$1 - 1]}/readyz"
}

start_gateways() {
  local i
  # The first one creates (or updates) the JetStream streams; the others then only look them up.
  if ! running gateway-1; then launch_gateway 1; fi
  wait_gateway 1 || return 1
  for ((i = 2; i <= GATEWAYS; i++)); do if ! running "gateway-$i"; then launch_gateway "$i"; fi; done
  for ((i = 2; i <= GATEWAYS; i++)); do wait_gateway "$i" || return 1; done
  log "gateways: $GATEWAYS ready (client ports ${GW_PORTS[*]}, admin ports ${GW_ADMIN[*]})"
}

start_haproxy() {
  local i
  if ! running haproxy; then launch haproxy "$HAPROXY" -db -f "$STATE_DIR/haproxy/haproxy.cfg"; fi
  wait_http haproxy "http://127.0.0.1:$LB_STATS_PORT/stats" || return 1
  for ((i = 1; i <= GATEWAYS; i++)); do wait_lb_up "$i" || return 1; done
  log "HAProxy: http://127.0.0.1:$LB_PORT (stats http://127.0.0.1:$LB_STATS_PORT/stats)"
}

start_prometheus() {
  [[ $PROMETHEUS == on ]] || return 0
  if ! running prometheus; then
    mkdir -p "$STATE_DIR/prometheus/data"
    launch prometheus "$PROMETHEUS_BIN" --config.file="$STATE_DIR/prometheus/prometheus.yml" \
      --storage.tsdb.path="$STATE_DIR/prometheus/data" --storage.tsdb.retention.time=2d \
      --web.listen-address="127.0.0.1:$PROMETHEUS_PORT"
  fi
  wait_http prometheus "http://127.0.0.1:$PROMETHEUS_PORT/-/ready" || return 1
  log "Prometheus: http://127.0.0.1:$PROMETHEUS_PORT"
}

stop_gateways() { # numbers...: SIGTERM all, then wait for each to drain and exit
  local i timeout
  timeout=$(($(seconds_of "$DRAIN_PERIOD") + 20))
  for i in "$@"; do signal "gateway-$i"; done
  for i in "$@"; do wait_gone "gateway-$i" "$timeout"; done
}

stop_all() {
  local i all=()
  [[ -d $STATE_DIR/run ]] || return 0
  for ((i = 1; i <= GATEWAYS; i++)); do all+=("$i"); done
  # Gateways first: they drain (clients are told to reconnect) while NATS is still there.
  stop_gateways "${all[@]}"
  signal haproxy
  signal prometheus
  for ((i = 1; i <= NATS_NODES; i++)); do signal "nats-$i"; done
  wait_gone haproxy 10
  wait_gone prometheus 20
  for ((i = 1; i <= NATS_NODES; i++)); do wait_gone "nats-$i" 20; done
}

# --- commands ---------------------------------------------------------------------------------

cmd_config() {
  settings_from_env
  preflight
  save_settings
  load_secrets
  render_configs
  check_configs
  log "configs rendered into $STATE_DIR"
}

cmd_start() {
  if [[ -f $ENV_FILE ]]; then
    # In a subshell: the saved settings name what may still run; the environment's are the new ones.
    (
      load_settings
      for c in $(components); do
        if running "$c"; then die "$c is already running in $STATE_DIR: run 'stop' first (or 'status')"; fi
      done
    ) || exit 1
  fi
  settings_from_env
  preflight
  save_settings
  load_secrets
  render_configs
  check_configs
  log "starting in $STATE_DIR"
  # Anything that fails on the way stops what was started, so nothing is left running.
  if ! { start_nats && start_gateways && start_haproxy && start_prometheus; }; then
    warn "start failed: stopping what was started"
    stop_all
    exit 1
  fi
  log "ready: ws://127.0.0.1:$LB_PORT/ws  http://127.0.0.1:$LB_PORT/api/*  (API key in $SECRETS_FILE)"
}

cmd_stop() {
  if [[ ! -f $ENV_FILE ]]; then
    log "nothing to stop in $STATE_DIR"
    return 0
  fi
  load_settings
  log "stopping (gateways drain for up to $DRAIN_PERIOD)"
  stop_all
  log "stopped"
}

cmd_status() {
  [[ -f $ENV_FILE ]] || {
    echo "no cluster in $STATE_DIR"
    return 3
  }
  load_settings
  local c pid state ready ok=0 i
  printf '%-12s %-8s %-8s %s\n' COMPONENT PID STATE DETAIL
  for c in $(components); do
    pid=$(pid_of "$c")
    if [[ -n $pid ]] && alive "$pid"; then state=running; else
      state=stopped
      pid=-
    fi
    case $c in
    nats-*)
      i=${c#nats-}
      ready="client 127.0.0.1:${N_PORTS[i - 1]}, monitor /healthz $(http_code "http://127.0.0.1:${N_MONITOR[i - 1]}/healthz")"
      [[ $ready == *200 ]] || ok=3
      ;;
    gateway-*)
      i=${c#gateway-}
      ready="client 127.0.0.1:${GW_PORTS[i - 1]}, admin /readyz $(http_code "http://127.0.0.1:${GW_ADMIN[i - 1]}/readyz"), load balancer: $(lb_state "$i")"
      [[ $ready == *"/readyz 200"*"balancer: UP" ]] || ok=3
      ;;
    haproxy) ready="http://127.0.0.1:$LB_PORT, stats http://127.0.0.1:$LB_STATS_PORT/stats" ;;
    prometheus)
      ready="http://127.0.0.1:$PROMETHEUS_PORT, /-/ready $(http_code "http://127.0.0.1:$PROMETHEUS_PORT/-/ready")"
      [[ $ready == *200 ]] || ok=3
      ;;
    esac
    [[ $state == running ]] || ok=3
    printf '%-12s %-8s %-8s %s\n' "$c" "$pid" "$state" "$ready"
  done
  return $ok
}

cmd_stop_gateway() {
  load_settings
  gateway_index "${1:-}"
  log "gateway $1: SIGTERM, draining for up to $DRAIN_PERIOD"
  stop_gateways "$1"
  # Seen down by the load balancer before it comes back: a rolling restart then never has two
  # replicas out of the rotation at once, even when one restarts faster than the health checks.
  if running haproxy; then wait_lb_down "$1" || true; fi
  log "gateway $1: stopped"
}

cmd_start_gateway() {
  load_settings
  gateway_index "${1:-}"
  load_secrets
  running "gateway-$1" && die "gateway $1 is already running"
  launch_gateway "$1"
  wait_gateway "$1" || die "gateway $1 did not become ready"
  if running haproxy; then wait_lb_up "$1" || die "gateway $1 is not back in the load balancer"; fi
  log "gateway $1: ready"
}

cmd_rolling_restart() {
  load_settings
  local i
  for ((i = 1; i <= GATEWAYS; i++)); do
    cmd_stop_gateway "$i"
    cmd_start_gateway "$i"
  done
  log "rolling restart done"
}

cmd_clean() {
  cmd_stop
  if [[ -d $STATE_DIR ]]; then
    [[ -f $ENV_FILE || -z $(ls -A "$STATE_DIR") ]] || die "$STATE_DIR does not look like a cluster state dir; not deleting it"
    rm -rf "$STATE_DIR"
    log "deleted $STATE_DIR"
  fi
}

case ${1:-help} in
start) cmd_start ;;
stop) cmd_stop ;;
status) cmd_status ;;
config) cmd_config ;;
restart)
  cmd_stop
  cmd_start
  ;;
rolling-restart) cmd_rolling_restart ;;
stop-gateway) cmd_stop_gateway "${2:-}" ;;
start-gateway) cmd_start_gateway "${2:-}" ;;
restart-gateway)
  cmd_stop_gateway "${2:-}"
  cmd_start_gateway "${2:-}"
  ;;
clean) cmd_clean ;;
help | -h | --help) usage ;;
*)
  usage >&2
  exit 2
  ;;
esac
