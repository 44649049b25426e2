#!/bin/bash
# ubuntu/squid's entrypoint contract: with no arguments, prepare the log and cache directories,
# initialise the cache once, then run squid in the foreground on /etc/squid/squid.conf.
set -e
mkdir -p /var/log/squid /var/spool/squid
chown -R proxy:proxy /var/log/squid /var/spool/squid
if [ -z "${1:-}" ]; then
	if [ ! -d /var/spool/squid/00 ]; then
		/usr/sbin/squid -N -f /etc/squid/squid.conf -z
	fi
	exec /usr/sbin/squid -f /etc/squid/squid.conf -NYC ${EXTRA_ARGS:-}
fi
exec "$@"
