"""How each lab service is started (a mixin of ``rehearsal.services.running.LabServices``):
its config, its certificate and the probe that says it answers."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from rehearsal.services.plan import ACME_HOST, CERTIFICATE_VALIDITY_S, PEBBLE_MANAGEMENT_PORT, PEBBLE_PORT, ServicesError
from rehearsal.services.tools import PYTHONPATH, nginx_binary, tool


class ServiceStarts:
    """``_start_<service>`` for each service; needs the host class's ``plan``, ``workdir``,
    ``ca_file``, ``timings``, ``_spawn``, ``_wait``, ``_issue``."""

    def _start_dns(self) -> None:
        lines = ["no-resolv", "no-hosts", "no-poll", "bind-interfaces", "port=53",
                 "log-facility=-", "log-queries",
                 # Every name not listed below is NXDOMAIN: nothing is forwarded anywhere.
                 "address=/#/"]
        lines += [f"listen-address={a}" for a in self.plan.resolvers]
        lines += [f"host-record={name},{address}" for name, address in sorted(self.plan.zone.items())]
        conf = self.workdir / "dnsmasq.conf"
        conf.write_text("\n".join(lines) + "\n")
        log = self._spawn("dns", [tool("dnsmasq", "dnsmasq-base"), "--keep-in-foreground",
                                  f"--conf-file={conf}", "--pid-file=", "--user=nobody"])
        name, address = next(iter(sorted(self.plan.zone.items())))
        self._wait("dns", log, ["dns", self.plan.resolvers[0], name, address])

    def _start_acme(self) -> None:
        address = self.plan.addresses["acme"]
        crt, key = self._issue("acme", [ACME_HOST, address])
        config = {"pebble": {
            "listenAddress": f"127.0.0.1:{PEBBLE_PORT}",
            "managementListenAddress": f"127.0.0.1:{PEBBLE_MANAGEMENT_PORT}",
            "certificate": str(crt), "privateKey": str(key),
            "httpPort": 80, "tlsPort": 443, "ocspResponderURL": "",
            "externalAccountBindingRequired": False,
            "certificateValidityPeriod": CERTIFICATE_VALIDITY_S,
        }}
        (self.workdir / "pebble.json").write_text(json.dumps(config))
        # NOSLEEP: pebble otherwise waits up to 15 s before each validation. NONCEREJECT=0: it
        # otherwise rejects 5% of good nonces on purpose. Validation itself stays real.
        log = self._spawn("acme", [tool("pebble", "pebble"), "-config", str(self.workdir / "pebble.json"),
                                   "-dnsserver", f"{self.plan.resolvers[0]}:53"],
                          env={"PEBBLE_VA_NOSLEEP": "1", "PEBBLE_WFE_NONCEREJECT": "0"})
        self._wait("acme", log, ["https", "127.0.0.1", str(PEBBLE_PORT), ACME_HOST, str(self.ca_file), "/dir"])
        front = self.workdir / "acme-front"
        (front / "tmp").mkdir(parents=True, exist_ok=True)
        (front / "nginx.conf").write_text(f"""daemon off;
master_process off;
worker_processes 1;
error_log {front}/error.log warn;
pid {front}/nginx.pid;
events {{ worker_connections 256; }}
http {{
  access_log {front}/access.log;
  client_body_temp_path {front}/tmp; proxy_temp_path {front}/tmp;
  fastcgi_temp_path {front}/tmp; uwsgi_temp_path {front}/tmp; scgi_temp_path {front}/tmp;
  server {{
    listen {address}:443 ssl;
    server_name {ACME_HOST};
    ssl_certificate {crt};
    ssl_certificate_key {key};
    proxy_ssl_trusted_certificate {self.ca_file};
    proxy_ssl_verify on;
    proxy_ssl_name {ACME_HOST};
    proxy_ssl_server_name on;
    proxy_set_header Host $host;
    location = /directory {{ proxy_pass https://127.0.0.1:{PEBBLE_PORT}/dir; }}
    location / {{ proxy_pass https://127.0.0.1:{PEBBLE_PORT}; }}
  }}
}}
""")
        front_log = self._spawn("acme-front", [nginx_binary(), "-p", str(front), "-c", str(front / "nginx.conf")])
        self._wait("acme-front", front_log, ["https", address, "443", ACME_HOST, str(self.ca_file), "/directory"])
        self.timings["acme"] += self.timings.pop("acme-front")
        fetch = subprocess.run(
            ["nsenter", f"--net={self._ns_path}", sys.executable, "-m", "rehearsal.services",
             "probe", "roots", str(PEBBLE_MANAGEMENT_PORT), str(self.ca_file)],
            capture_output=True, env={**os.environ, "PYTHONPATH": PYTHONPATH},
            timeout=30)
        if fetch.returncode != 0 or b"BEGIN CERTIFICATE" not in fetch.stdout:
            raise ServicesError("pebble's management endpoint gave no root: "
                                + fetch.stderr.decode(errors="replace")[-500:])
        self.acme_roots_pem = fetch.stdout
        (self.workdir / "acme-roots.pem").write_bytes(fetch.stdout)

    def _start_s3(self) -> None:
        if not self.plan.s3_hosts:
            return
        address = self.plan.addresses["s3"]
        crt, key = self._issue("s3", [*self.plan.s3_hosts, address])
        log = self._spawn("s3", [tool("moto_server", "pip: moto[server]"), "-H", address, "-p", "443",
                                 "-c", str(crt), "-k", str(key)],
                          env={"MOTO_S3_CUSTOM_ENDPOINTS": ",".join(f"https://{h}" for h in self.plan.s3_hosts)})
        self._wait("s3", log, ["https", address, "443", self.plan.s3_hosts[0], str(self.ca_file), "/"])
        # moto keeps buckets in memory: a restarted stand-in locks them again.
        for bucket, days in self.plan.locked_buckets:
            locked = subprocess.run(
                ["nsenter", f"--net={self._ns_path}", sys.executable, "-m", "rehearsal.services", "probe",
                 "lock-bucket", address, str(self.ca_file), bucket, str(days)],
                capture_output=True, env={**os.environ, "PYTHONPATH": PYTHONPATH}, timeout=60)
            if locked.returncode != 0:
                raise ServicesError(f"s3: bucket {bucket} could not be created locked: "
                                    + locked.stderr.decode(errors="replace")[-500:])

    def _start_smtp(self) -> None:
        if not self.plan.smtp:
            return
        address = self.plan.addresses["smtp"]
        crt, key = self._issue("smtp", sorted({h for h, _ in self.plan.smtp} | {address}))
        ports = sorted({p for _, p in self.plan.smtp})
        log = self._spawn("smtp", [sys.executable, "-m", "rehearsal.services", "smtp", "--address", address,
                                   *[a for p in ports for a in ("--port", str(p))], "--cert", str(crt),
                                   "--key", str(key), "--maildir", str(self.maildir)],
                          env={"PYTHONPATH": PYTHONPATH})
        self._wait("smtp", log, ["smtp", address, str(ports[0]), self.plan.smtp[0][0], str(self.ca_file)])

    def _start_webhook(self) -> None:
        address = self.plan.addresses["webhook"]
        crt, key = self._issue("webhook", [*self.plan.webhook_hosts, address])
        log = self._spawn("webhook", [sys.executable, "-m", "rehearsal.services", "webhook", "--address",
                                      address, "--cert", str(crt), "--key", str(key),
                                      "--directory", str(self.webhook_dir)],
                          env={"PYTHONPATH": PYTHONPATH})
        self._wait("webhook", log, ["https", address, "443", self.plan.webhook_hosts[0], str(self.ca_file), "/"])

    def _start_managed(self) -> None:
        """The managed databases' stand-ins (``rehearsal.services.managed``) at the lab's service
        address, with certificates of the services' CA (the one ``getDatabaseCa`` answered)."""
        if not self.plan.managed:
            return
        import time

        from rehearsal.netns import SERVICE_ADDRESS
        from rehearsal.services.managed import ManagedStandIns

        started = time.monotonic()
        stand_ins = ManagedStandIns(self.plan.managed, ca=self.ca, address=SERVICE_ADDRESS,
                                    prefix=("nsenter", f"--net={self._ns_path}"), timeout=self.timeout)

        def stop() -> None:
            left = stand_ins.close()
            if left:
                raise ServicesError("; ".join(left))

        self._cleanup.push("stop the managed-database stand-ins", stop)
        stand_ins.start()
        self.timings["managed"] = round(time.monotonic() - started, 3)
