#!/bin/bash
# ubuntu/squid's entrypoint contract (Ubuntu's OCI image): squid's log files followed to stdout,
# missing cache directories created (`squid -Nz`), then squid run with the container's command
# as its arguments (default `-f /etc/squid/squid.conf -NYC`). squid runs as a child of this
# script, not as PID 1: `squid -k check` (the stack's health check) refuses a PID file that
# holds 1.
mkdir -p /var/log/squid /var/spool/squid
chown proxy:proxy /var/log/squid /var/spool/squid
for log in access error store cache; do
	tail -F "/var/log/squid/$log.log" 2>/dev/null &
done
/usr/sbin/squid -Nz
/usr/sbin/squid "$@"
