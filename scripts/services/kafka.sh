#!/usr/bin/env bash
# One Apache Kafka broker (KRaft mode, combined broker + controller) on 127.0.0.1, for the upstream
# tests and the demo. Runs from Maven Central jars: no Kafka tarball, no Docker image.
#
#   scripts/services/kafka.sh start    # idempotent; prints the bootstrap address (127.0.0.1:PORT)
#   scripts/services/kafka.sh stop     # idempotent; keeps the data dir (a later start resumes it)
#   scripts/services/kafka.sh status   # prints the bootstrap address; exit 3 when not running
#   scripts/services/kafka.sh jars     # only fetch the jars (prints the jar dir)
#
# start: checks Java 17+ and Maven, fetches org.apache.kafka:kafka_2.13 and its dependencies with
# `mvn dependency:copy-dependencies` from scripts/services/kafka/pom.xml into the jar cache (reused
# when complete; Maven Central is the only network access), formats the KRaft storage dir with a
# random cluster id the first time, starts `kafka.Kafka` with -Xmx512m and waits (bounded) until the
# broker logs that it started and its port accepts connections.
#
# Environment:
#   KAFKA_PORT             broker port (default: the port this state dir used before, else a free one)
#   KAFKA_CONTROLLER_PORT  controller port (same default rule)
#   OUTPOST_KAFKA_DIR      state dir: config, data/, kafka.log, kafka.pid (default /tmp/outpost-kafka)
#   OUTPOST_KAFKA_JARS     jar cache root (default /var/cache/outpost/kafka-jars, or
#                          ~/.cache/outpost/kafka-jars when that is not writable)
#   KAFKA_VERSION          Kafka version to fetch (default: the pom's, 4.1.1)
#   KAFKA_HEAP_OPTS        JVM heap (default -Xmx512m -Xms128m)
#   OUTPOST_KAFKA_TIMEOUT  seconds to wait for the broker (default 90)
#   OUTPOST_KAFKA_PROPS    extra server.properties lines (newline separated), applied on every start
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
POM=$HERE/kafka/pom.xml
LOG4J_CONF=$HERE/kafka/log4j2.properties
DIR=${OUTPOST_KAFKA_DIR:-/tmp/outpost-kafka}
VERSION=${KAFKA_VERSION:-$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$POM")}
TIMEOUT=${OUTPOST_KAFKA_TIMEOUT:-90}
HEAP=${KAFKA_HEAP_OPTS:--Xmx512m -Xms128m}
if [ -n "${OUTPOST_KAFKA_JARS:-}" ]; then
    JAR_ROOT=$OUTPOST_KAFKA_JARS
elif mkdir -p /var/cache/outpost/kafka-jars 2>/dev/null && [ -w /var/cache/outpost/kafka-jars ]; then
    JAR_ROOT=/var/cache/outpost/kafka-jars
else
    JAR_ROOT=${XDG_CACHE_HOME:-$HOME/.cache}/outpost/kafka-jars
fi
JARS=$JAR_ROOT/$VERSION
PIDFILE=$DIR/kafka.pid
LOG=$DIR/kafka.log
CONF=$DIR/server.properties
DATA=$DIR/data

say() { echo "kafka.sh: $*" >&2; }
die() { say "ERROR: $*"; exit 1; }

running_pid() {
    local pid
    [ -s "$PIDFILE" ] || return 1
    pid=$(cat "$PIDFILE")
    kill -0 "$pid" 2>/dev/null || return 1
    # A recycled pid is not our broker: check its command line names our config.
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "kafka.Kafka $CONF" || return 1
    echo "$pid"
}

port_of() { [ -f "$CONF" ] && sed -n "s/^# outpost-$1-port=//p" "$CONF" | head -n1 || true; }

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

port_open() { timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null; }

check_tools() {
    command -v java >/dev/null || die "java not found: apt-get install -y openjdk-17-jre-headless"
    local major
    major=$(java -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -n1)
    [ "${major:-0}" -ge 17 ] || die "Kafka $VERSION needs Java 17 or newer; found: $(java -version 2>&1 | head -n1)"
    command -v mvn >/dev/null || die "mvn not found: apt-get install -y maven"
}

fetch_jars() {
    if [ -f "$JARS/.complete" ]; then
        return 0
    fi
    check_tools
    mkdir -p "$JAR_ROOT"
    local tmp t0=$SECONDS
    tmp=$(mktemp -d "$JAR_ROOT/.fetch-XXXXXX")
    say "fetching Kafka $VERSION jars from Maven Central into $JARS ..."
    if ! mvn -q -B -f "$POM" -Dkafka.version="$VERSION" dependency:copy-dependencies \
        -DincludeScope=runtime -DoutputDirectory="$tmp" >"$tmp.mvn.log" 2>&1; then
        cat "$tmp.mvn.log" >&2
        rm -rf "$tmp" "$tmp.mvn.log"
        die "mvn dependency:copy-dependencies failed"
    fi
    rm -f "$tmp.mvn.log"
    ls "$tmp"/kafka_2.13-"$VERSION".jar >/dev/null 2>&1 || die "kafka_2.13-$VERSION.jar missing after the fetch"
    touch "$tmp/.complete"
    rm -rf "$JARS"
    mv "$tmp" "$JARS"
    say "fetched $(find "$JARS" -name '*.jar' | wc -l) jars in $((SECONDS - t0)) s"
}

write_config() {
    local port=$1 cport=$2
    mkdir -p "$DATA"
    cat >"$CONF" <<EOF
# Written by scripts/services/kafka.sh on every start.
# outpost-broker-port=$port
# outpost-controller-port=$cport
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$cport
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport
advertised.listeners=PLAINTEXT://127.0.0.1:$port
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs=$DATA
num.partitions=1
default.replication.factor=1
min.insync.replicas=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=true
log.retention.hours=24
log.segment.bytes=67108864
EOF
    if [ -n "${OUTPOST_KAFKA_PROPS:-}" ]; then
        printf '%s\n' "$OUTPOST_KAFKA_PROPS" >>"$CONF"
    fi
}

java_cmd() {
    # shellcheck disable=SC2206  # HEAP is a list of JVM options
    JAVA=(java $HEAP -server -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -Djava.awt.headless=true
        -Dlog4j2.configurationFile="$LOG4J_CONF" -cp "$JARS/*")
}

start() {
    mkdir -p "$DIR"
    exec 9>"$DIR/.lock"
    flock -w 300 9 || die "timed out waiting for another kafka.sh on $DIR"
    local pid port cport
    if pid=$(running_pid); then
        port=$(port_of broker)
        say "already running (pid $pid)"
        echo "127.0.0.1:$port"
        return 0
    fi
    fetch_jars
    check_tools
    port=${KAFKA_PORT:-$(port_of broker)}
    port=${port:-$(free_port)}
    cport=${KAFKA_CONTROLLER_PORT:-$(port_of controller)}
    cport=${cport:-$(free_port)}
    [ "$port" != "$cport" ] || die "broker and controller port are both $port"
    for p in "$port" "$cport"; do
        if port_open "$p"; then die "port $p on 127.0.0.1 is already in use"; fi
    done
    write_config "$port" "$cport"
    java_cmd
    if [ ! -f "$DATA/meta.properties" ]; then
        local cluster_id
        # Not starting with "-" (1 in 64 would): the storage tool would take it for an option (Kafka's
        # own Uuid.randomUuid() avoids those too).
        cluster_id=$(python3 -c 'import base64, uuid
while (cid := base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")).startswith("-"): pass
print(cid)')
        say "formatting $DATA (cluster id $cluster_id)"
        "${JAVA[@]}" kafka.tools.StorageTool format --ignore-formatted -t "$cluster_id" -c "$CONF" \
            >>"$LOG" 2>&1 || { tail -n 30 "$LOG" >&2; die "kafka-storage format failed"; }
    fi
    local t0=$SECONDS mark
    mark=$(wc -l <"$LOG" 2>/dev/null || echo 0)
    echo "=== $(date -Is) kafka.sh start (port $port, controller $cport)" >>"$LOG"
    # setsid + nohup: the broker outlives this script and the shell or test session that ran it.
    setsid nohup "${JAVA[@]}" kafka.Kafka "$CONF" >>"$LOG" 2>&1 </dev/null 9>&- &
    pid=$!
    echo "$pid" >"$PIDFILE"
    local deadline=$((SECONDS + TIMEOUT))
    until tail -n +"$((mark + 1))" "$LOG" | grep -q 'Kafka Server started' && port_open "$port"; do
        if ! kill -0 "$pid" 2>/dev/null; then
            say "the broker exited during startup; last lines of $LOG:"
            tail -n 40 "$LOG" >&2
            rm -f "$PIDFILE"
            exit 1
        fi
        if [ $SECONDS -ge $deadline ]; then
            say "the broker did not start within $TIMEOUT s; last lines of $LOG:"
            tail -n 40 "$LOG" >&2
            stop >/dev/null
            exit 1
        fi
        sleep 0.2
    done
    say "Kafka $VERSION up in $((SECONDS - t0)) s (pid $pid, log $LOG)"
    echo "127.0.0.1:$port"
}

stop() {
    local pid
    if ! pid=$(running_pid); then
        rm -f "$PIDFILE"
        say "not running"
        return 0
    fi
    kill -TERM "$pid" 2>/dev/null || true
    local deadline=$((SECONDS + 30))
    while kill -0 "$pid" 2>/dev/null; do
        if [ $SECONDS -ge $deadline ]; then
            say "broker (pid $pid) ignored SIGTERM for 30 s: killing it"
            kill -KILL "$pid" 2>/dev/null || true
            break
        fi
        sleep 0.2
    done
    # A killed process may linger a moment as a zombie of nobody; wait until it is really gone.
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    rm -f "$PIDFILE"
    say "stopped (pid $pid)"
}

status() {
    local pid
    if pid=$(running_pid); then
        say "running (pid $pid, log $LOG)"
        echo "127.0.0.1:$(port_of broker)"
        return 0
    fi
    say "not running"
    return 3
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) status ;;
    jars) fetch_jars && echo "$JARS" ;;
    *) echo "usage: $0 start|stop|status|jars" >&2; exit 2 ;;
esac
