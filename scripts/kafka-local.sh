#!/usr/bin/env bash
# Run a real single-node Apache Kafka broker (KRaft: broker and controller in one JVM)
# on 127.0.0.1 for tests, benchmarks and local use. No Docker, no mocks.
#
#   scripts/kafka-local.sh start           fetch jars (first time), format a fresh log dir, start, wait until ready
#   scripts/kafka-local.sh stop            stop the broker this script started (only that process)
#   scripts/kafka-local.sh restart [--kill] stop it (SIGTERM, or SIGKILL with --kill) and start it
#                                          again on the same log dir: topics, records and offsets stay
#   scripts/kafka-local.sh status          exit 0 and print the address when running, exit 1 otherwise
#   scripts/kafka-local.sh topic NAME [P]  create topic NAME with P partitions (default 2) if missing
#   scripts/kafka-local.sh tool CLASS ARGS run a Kafka CLI class (e.g. org.apache.kafka.tools.TopicCommand)
#
# Environment: KAFKA_PORT (default 9092; the controller listens on KAFKA_PORT+1),
# SLUICE_KAFKA_HOME (default ~/.cache/sluice-kafka: jars and per-port run dirs),
# KAFKA_HEAP (default 1g).
#
# Besides PLAINTEXT on KAFKA_PORT the broker has a SASL_SSL listener on KAFKA_PORT+2:
# TLS with a self-signed certificate for 127.0.0.1 (CA file: RUN_DIR/tls/ca.pem, printed
# by `status`) and SCRAM-SHA-256 with the user `sluice`, password in
# RUN_DIR/tls/scram-password (made at each start), for the security tests.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
port="${KAFKA_PORT:-9092}"
ctl_port=$((port + 1))
sasl_port=$((port + 2))
home="${SLUICE_KAFKA_HOME:-$HOME/.cache/sluice-kafka}"
jars="$home/jars"
run="$home/run-$port"
pidfile="$run/broker.pid"
logfile="$run/broker.log"
heap="${KAFKA_HEAP:-1g}"

say() { printf 'kafka-local: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

running_pid() {
  [ -f "$pidfile" ] || return 1
  local pid
  pid="$(cat "$pidfile")"
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && grep -q 'kafka.Kafka' "/proc/$pid/cmdline" 2>/dev/null || return 1
  echo "$pid"
}

fetch_jars() {
  local stamp="$jars/.pom.sha256" want
  want="$(sha256sum "$here/kafka/pom.xml" | cut -d' ' -f1)"
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then return 0; fi
  command -v mvn >/dev/null || die "mvn not found: install Maven (Debian: apt-get install maven)"
  command -v java >/dev/null || die "java not found: install a JDK 17+ (Debian: apt-get install openjdk-17-jre-headless)"
  say "fetching the Kafka broker jars from Maven Central (first time only)"
  rm -rf "$jars.tmp"
  mvn -q -B -f "$here/kafka/pom.xml" dependency:copy-dependencies \
    -DoutputDirectory="$jars.tmp" -DincludeScope=runtime \
    || die "mvn could not fetch the Kafka jars (is Maven Central reachable?)"
  rm -rf "$jars"
  mv "$jars.tmp" "$jars"
  echo "$want" >"$stamp"
}

write_config() {
  mkdir -p "$run"
  cat >"$run/server.properties" <<EOF
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$ctl_port
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$ctl_port,SASL_SSL://127.0.0.1:$sasl_port
advertised.listeners=PLAINTEXT://127.0.0.1:$port,SASL_SSL://127.0.0.1:$sasl_port
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,SASL_SSL:SASL_SSL
sasl.enabled.mechanisms=SCRAM-SHA-256
listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
ssl.keystore.type=PKCS12
ssl.keystore.location=$run/tls/broker.p12
ssl.keystore.password=$(cat "$run/tls/store-password")
ssl.key.password=$(cat "$run/tls/store-password")
log.dirs=$run/data
num.partitions=2
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
group.initial.rebalance.delay.ms=0
# Topics with a retention.bytes (the soak benchmark's) are trimmed every 30 s, not 5 min.
log.retention.check.interval.ms=30000
# A missing topic must be an error the engine reports, not silently created.
auto.create.topics.enable=false
EOF
  cat >"$run/log4j2.yaml" <<EOF
Configuration:
  Appenders:
    File:
      name: file
      fileName: "$logfile"
      PatternLayout:
        pattern: "[%d] %p %m (%c)%n"
  Loggers:
    Root:
      level: INFO
      AppenderRef:
        - ref: file
    Logger:
      - name: kafka.log
        level: WARN
      - name: org.apache.kafka.storage
        level: WARN
EOF
}

java_cp() { java -cp "$jars/*" "$@"; }

# A fresh self-signed certificate for 127.0.0.1 (and localhost), its PEM for clients,
# and fresh random passwords for the keystore and the SCRAM user.
make_tls() {
  local tls="$run/tls"
  command -v keytool >/dev/null || die "keytool not found: it comes with the JDK/JRE (Debian: apt-get install openjdk-17-jre-headless)"
  rm -rf "$tls"
  mkdir -p "$tls"
  head -c 18 /dev/urandom | base64 | tr -d '/+=' >"$tls/store-password"
  head -c 18 /dev/urandom | base64 | tr -d '/+=' >"$tls/scram-password"
  local pw
  pw="$(cat "$tls/store-password")"
  keytool -genkeypair -alias broker -keyalg RSA -keysize 2048 -validity 3650 \
    -dname "CN=127.0.0.1" -ext "SAN=ip:127.0.0.1,dns:localhost" \
    -storetype PKCS12 -keystore "$tls/broker.p12" -storepass "$pw" -keypass "$pw" >/dev/null 2>&1 \
    || die "keytool could not make the broker's certificate"
  keytool -exportcert -rfc -alias broker -keystore "$tls/broker.p12" -storepass "$pw" \
    >"$tls/ca.pem" 2>/dev/null || die "keytool could not export the certificate"
}

start() {
  if pid="$(running_pid)"; then
    say "already running (pid $pid) on 127.0.0.1:$port"
    return 0
  fi
  if port_open "$port"; then
    die "port $port is taken by another process: stop it or set KAFKA_PORT"
  fi
  fetch_jars
  mkdir -p "$run"
  make_tls
  write_config
  rm -rf "$run/data"
  : >"$logfile"
  local cluster
  cluster="$(java_cp kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n1)"
  java_cp -Dlog4j2.configurationFile="$run/log4j2.yaml" kafka.tools.StorageTool format \
    -t "$cluster" -c "$run/server.properties" \
    --add-scram "SCRAM-SHA-256=[name=sluice,password=$(cat "$run/tls/scram-password")]" \
    >"$run/format.log" 2>&1 \
    || die "formatting the log dir failed: see $run/format.log"
  launch
}

# Starts the JVM on the configured, formatted log dir and waits until it serves. A JVM
# that dies during start-up is started once more (a CI run once saw one exit with
# nothing in its log); a second death is the error, with its exit status.
launch() {
  local tries="${1:-2}"
  say "starting broker on 127.0.0.1:$port (log: $logfile)"
  nohup java -Xmx"$heap" -Xms"$heap" -XX:+UseG1GC \
    -Dlog4j2.configurationFile="$run/log4j2.yaml" \
    -cp "$jars/*" kafka.Kafka "$run/server.properties" >"$run/stdout.log" 2>&1 </dev/null &
  local pid=$!
  echo "$pid" >"$pidfile"
  local waited=0
  # Ready means: the JVM logged that the server started and the listener accepts connections.
  until grep -q 'Kafka Server started' "$logfile" 2>/dev/null && port_open "$port"; do
    if ! kill -0 "$pid" 2>/dev/null; then
      local status=0
      wait "$pid" || status=$?
      tail -n 30 "$run/stdout.log" "$logfile" >&2 || true
      if [ "$tries" -gt 1 ]; then
        say "the broker exited during start-up (status $status); starting it once more"
        launch $((tries - 1))
        return
      fi
      die "the broker exited during start-up (status $status; see $logfile)"
    fi
    if [ "$waited" -ge 120 ]; then
      stop
      die "the broker did not become ready within 60 s (see $logfile)"
    fi
    sleep 0.5
    waited=$((waited + 1))
  done
  say "ready on 127.0.0.1:$port"
}

stop() {
  local pid signal="${1:-TERM}"
  if ! pid="$(running_pid)"; then
    say "not running on port $port"
    rm -f "$pidfile"
    return 0
  fi
  kill -s "$signal" "$pid"
  for _ in $(seq 1 60); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.5
  done
  if kill -0 "$pid" 2>/dev/null; then
    say "broker did not stop within 30 s; killing it"
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$pidfile"
  say "stopped"
}

# The same broker again: same config, certificate, SCRAM user and log dir.
restart() {
  local signal=TERM
  case "${1:-}" in
    --kill) signal=KILL ;;
    "") ;;
    *) die "restart takes only --kill" ;;
  esac
  [ -f "$run/server.properties" ] && [ -d "$run/data" ] \
    || die "no broker to restart on port $port: scripts/kafka-local.sh start"
  stop "$signal"
  # The JVM's port may linger a moment after it exits.
  for _ in $(seq 1 40); do port_open "$port" || break; sleep 0.25; done
  [ -f "$logfile" ] && mv "$logfile" "$logfile.prev"
  launch
}

status() {
  if pid="$(running_pid)" && port_open "$port"; then
    echo "running pid=$pid bootstrap=127.0.0.1:$port sasl_ssl=127.0.0.1:$sasl_port ca=$run/tls/ca.pem user=sluice password_file=$run/tls/scram-password"
  else
    echo "not running (port $port)"
    return 1
  fi
}

topic() {
  local name="${1:?topic name}" parts="${2:-2}"
  status >/dev/null || die "the broker is not running: scripts/kafka-local.sh start"
  java_cp org.apache.kafka.tools.TopicCommand --bootstrap-server "127.0.0.1:$port" \
    --create --if-not-exists --topic "$name" --partitions "$parts" --replication-factor 1
}

cmd="${1:-}"
shift || true
case "$cmd" in
  start) start ;;
  stop) stop ;;
  restart) restart "$@" ;;
  status) status ;;
  topic) topic "$@" ;;
  tool) fetch_jars; java_cp "$@" ;;
  *) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
