#!/usr/bin/env bash
# Make sure PostgreSQL and Redis answer on 127.0.0.1: start them if installed but stopped,
# install them with apt where we can.
set -euo pipefail

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo -n "$@"; fi; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() {
  for _ in $(seq 1 50); do port_open "$1" && return 0; sleep 0.2; done
  echo "nothing answers on 127.0.0.1:$1" >&2; return 1
}

if ! port_open 5432; then
  if ! ls /etc/postgresql/*/main >/dev/null 2>&1; then
    echo "installing PostgreSQL with apt ..." >&2
    as_root apt-get update -qq && as_root apt-get install -y -qq postgresql >/dev/null
    # Tests connect over TCP as 'postgres' without a password, as on our CI machines.
    for hba in /etc/postgresql/*/main/pg_hba.conf; do
      as_root sed -i '1i host all postgres 127.0.0.1/32 trust' "$hba"
    done
  fi
  echo "starting PostgreSQL ..." >&2
  as_root pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | tail -1)" main start
  wait_port 5432
fi

if ! port_open 6379; then
  if ! command -v redis-server >/dev/null; then
    echo "installing Redis with apt ..." >&2
    as_root apt-get update -qq && as_root apt-get install -y -qq redis-server >/dev/null
  fi
  echo "starting Redis ..." >&2
  as_root mkdir -p /var/lib/redis /var/log/redis
  as_root redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" \
    --appendonly no --dir /var/lib/redis --logfile /var/log/redis/beastmode-test.log
  wait_port 6379
fi
