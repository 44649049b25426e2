#!/bin/sh
# The official redis image's entrypoint contract: a first argument that is a flag or a .conf file
# means redis-server; redis-server started as root fixes /data's owner and steps down to the
# redis user (uid 999, gid 1000, as in redis:*-alpine). Anything else (the stack's `sh -c`) runs
# as given, as root, exactly as it does in the official image.
set -e
if [ "${1#-}" != "$1" ] || [ "${1%.conf}" != "$1" ]; then
	set -- redis-server "$@"
fi
if [ "$1" = 'redis-server' ] && [ "$(id -u)" = '0' ]; then
	find . \! -user redis -exec chown redis '{}' +
	exec setpriv --reuid=redis --regid=redis --init-groups "$0" "$@"
fi
umask 0077
exec "$@"
