"""The lab's network services: the outside world the stack talks to, as real servers running as
processes inside the lab's network namespace (which has no uplink: nothing leaves it).

- **DNS**: Debian's ``dnsmasq`` answers the stack's public hostnames (certbot's ``-d`` domains and
  nginx's ``server_name`` s) with the lab address of the box serving them, the outside services'
  names (R2 endpoints, Let's Encrypt's ACME host, the SMTP smarthost, the hosts of the egress
  proxy's allow-lists, and the lab's own apt/registry/database names) with lab stand-in addresses,
  and NXDOMAIN for every other name. It listens on the lab forms of the resolvers the stack
  declares (Pencom's ``egress.resolvers`` 1.1.1.1/1.0.0.1 become 10.203.0.2/.3 through the
  overlay, which is where the internal nodes' UFW lets DNS go), so the stack's firewall rules
  work unchanged. Boxes are given these addresses as their resolvers by the hoster
  (``BoxSpec.dns``: the box's /etc/resolv.conf, as a VPS's DHCP would write it), never through
  the stack's files: the box's own dockerd then forwards its embedded DNS (127.0.0.11, what squid
  and nginx in the stack's containers use) to them, with daemon.json as captured.
- **ACME**: Debian's ``pebble`` (Let's Encrypt's test CA) with real HTTP-01 validation (no
  ``PEBBLE_VA_ALWAYS_VALID``) resolving through the dnsmasq above (``-dnsserver``). The stack's
  certbot uses Let's Encrypt's default URL ``https://acme-v02.api.letsencrypt.org/directory``;
  pebble serves its directory at ``/dir`` and has no option to move it, so nginx fronts it on
  ``acme-v02.api.letsencrypt.org:443`` (a lab-CA certificate), maps ``/directory`` to ``/dir`` and
  passes everything else with the Host header kept (pebble builds its URLs from it). Pebble's
  own issuing root and intermediate (new at every start) come from its management endpoint:
  :attr:`LabServices.acme_roots_pem`.
- **S3**: ``moto[server]`` (requirements-dev.txt) over HTTPS with a lab-CA certificate for every
  R2 endpoint ``<account>.r2.cloudflarestorage.com`` of the capture. Debian has no MinIO; moto is
  maintained, pip-installable, speaks the S3 API restic uses (path-style buckets, multipart,
  ranged GETs; proven with a real restic in tests/rehearsal/test_services_real.py). It keeps
  objects in memory and does not check SigV4 signatures against any key list, so a bucket-scoped
  token is NOT proven by it (see "Not proven" in the README).
- **SMTP sink**: ``aiosmtpd`` (pinned) on every port of the captured smarthosts (587: STARTTLS
  required, as Alertmanager's ``smtp_require_tls``; 465: TLS from the start), AUTH accepted for
  any credentials after TLS; each message lands in a Maildir with aiosmtpd's own ``X-MailFrom``,
  ``X-RcptTo``, ``X-Peer`` headers and ``X-Lab-Auth-Login`` (the login name, never the password).
- **Webhook receiver** (stand-in for Slack's incoming webhooks) on ``hooks.slack.com:443``: every
  POST is stored as JSON (the SHA-256 of the URL path, which carries Slack's secret, the
  content type and the body).

- **Managed databases** (``rehearsal.services.managed``): PostgreSQL and Valkey stand-ins for the
  DigitalOcean clusters the capture declares, TLS only, at ``SERVICE_ADDRESS`` (25060, 25061),
  holding the clusters' users and databases (``ServicePlan.with_managed``). No MongoDB.

Every TLS service uses a certificate of the lab's :class:`rehearsal.images.TestCA` (by default
the registry's, which the boxes already trust through ``update-ca-certificates``).

Use::

    plan = plan_services(lab_capture, extra_names={"deb.debian.org": SERVICE_ADDRESS, ...})
    specs = [BoxSpec(..., dns=plan.resolvers)]          # the hoster's resolvers
    with Lab(...) as lab, LabServices(plan, lab.netns) as services:
        services.messages(); services.webhook_posts(); services.acme_roots_pem

Addresses: the services sit on ``/32`` addresses of the namespace's loopback in the ``internet``
lab network (10.203.0.0/24), at its top end (the overlay hands out addresses from its bottom):
see :data:`ADDRESSES`. An overlap with an address the overlay gave a stack address raises
:class:`ServicesError` before anything starts.
"""

from rehearsal.services.plan import (  # noqa: F401 -- the package's front
    ACME_DIRECTORY_URL, ACME_HOST, ADDRESSES, CERTIFICATE_VALIDITY_S, OUTSIDE_TOP, PEBBLE_MANAGEMENT_PORT,
    PEBBLE_PORT, WEBHOOK_HOSTS, ServicePlan, ServicesError, locked_buckets, plan_services)
from rehearsal.services.running import LabServices  # noqa: F401
from rehearsal.services.tools import nginx_binary  # noqa: F401
