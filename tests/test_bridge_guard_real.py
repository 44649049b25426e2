"""The bridge guard (issue #16), proven with a real dockerd for every host the program manages.

Docker's own ``DOCKER`` chain accepts any packet addressed to a published container port, so a
neighbour on the host's segment that routes the container subnet via the host reaches
``172.x.y.z:5432`` directly, whatever the published address admits. For each Docker host of the
staging and prod stacks this test:

- starts Debian's dockerd in a network namespace of its own (the "host"), with the address the
  program gives the host, and a second namespace on the same segment (the "neighbour") holding
  one source the host's rules admit and one they do not, with a route to every container subnet;
- creates the host's container network as the program does (its bridge name and subnet), runs a
  container there that publishes the ports the program publishes (one private-address, one
  loopback and one all-addresses publish, where the host has them), and one on ``docker0``;
- checks first that the hole is there (the neighbour reaches both containers' own addresses),
  then applies the host's rendered ``DOCKER-USER`` rules with ``iptables-restore`` as the host
  script does, and checks that direct access is refused on both bridges while the published
  address still answers the admitted source and refuses the other one.

Nothing leaves the namespaces: they have no uplink, and the machine's own firewall is never
touched. The image is an imported tarball that borrows the build machine's ``/usr`` (read-only),
so nothing is pulled.
"""

from __future__ import annotations

import ipaddress
import os
import re
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from functools import lru_cache
from pathlib import Path

import pytest

from tests.conftest import require_root, require_tool, synth_once
from tests.isolation import borrowed_usr_image

STACKS = ("staging", "prod")
_PRODUCT_HOSTS = {"kro": ["kro-{stack}"], "giv": ["giv-{stack}-ops"], "vedfinance": ["vedfinance-{stack}"],
                  "pencom": [f"pencom-{{stack}}-{node}" for node in ("edge", "app", "data", "storage")]}


def _hosts(stack: str) -> list[str]:
    """The Docker hosts of a stack, from its product list (checked against the synth below)."""
    import yaml

    from synth.engine import PROJECT_ROOT

    products = yaml.safe_load((PROJECT_ROOT / f"Pulumi.{stack}.yaml").read_text())["config"]["platform:products"]
    return [h.format(stack=stack) for p in products for h in _PRODUCT_HOSTS[p]]


HOSTS = {stack: _hosts(stack) for stack in STACKS}
IMAGE = "platform-test/listener:1"
LISTENER = (
    "import socket, sys, threading\n"
    "def serve(port):\n"
    "    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
    "    s.bind(('0.0.0.0', port)); s.listen(16)\n"
    "    while True:\n"
    "        c, _ = s.accept(); c.sendall(b'ok'); c.close()\n"
    "for p in sys.argv[1:]:\n"
    "    threading.Thread(target=serve, args=(int(p),), daemon=True).start()\n"
    "threading.Event().wait()\n"
)
FALLBACK_HOST = "192.0.2.10"
"""The host's address in the replay when its rules name no private address (a documentation
address: the stack's public addresses are real machines and are never used, even in a namespace)."""


@lru_cache(maxsize=None)
def _state(stack: str) -> dict:
    return synth_once(stack)


def _resources(stack: str) -> list[dict]:
    return _state(stack)["resources"]


def rendered_rules(stack: str, host: str) -> str:
    """The ``DOCKER-USER`` rules file the host script installs for ``host``."""
    [firewall] = [r for r in _resources(stack) if r["name"] == f"{host}-docker-firewall"
                  and r["type"] == "command:remote:Command"]
    script = firewall["inputs"]["stdin"]
    body = script.split("put_file /etc/platform/docker-user.rules 0600 root:root <<'", 1)[1]
    marker, body = body.split("'", 1)[0], body.split("\n", 1)[1]
    return body.split(f"\n{marker}\n", 1)[0] + "\n"


def _host_publishes(stack: str, host: str) -> list[dict]:
    suffix = f"::{host}-docker"
    return [port for r in _resources(stack)
            if r["type"] == "docker:index/container:Container" and r["provider"].endswith(suffix)
            for port in r["inputs"].get("ports") or []]


def _pick_publishes(stack: str, host: str) -> list[dict]:
    """One publish of each kind the host has: private address, loopback, all addresses."""
    chosen: dict[str, dict] = {}
    for port in _host_publishes(stack, host):
        kind = ("loopback" if port["ip"].startswith("127.") else
                "all" if port["ip"] == "0.0.0.0" else "private")
        chosen.setdefault(kind, port)
    return list(chosen.values())


def _admitted(rules: str, address: str, port: int) -> list[str]:
    pattern = re.compile(rf"--ctorigdst {re.escape(address)} --ctorigdstport {port} -s (\S+) -j RETURN")
    return pattern.findall(rules)


def _addresses(cidr: str):
    network = ipaddress.ip_network(cidr)
    return iter(network.hosts()) if network.num_addresses > 2 else iter(network)


def _network_inputs(stack: str, host: str) -> dict:
    [network] = [r for r in _resources(stack) if r["name"] == f"{host}-network"
                 and r["type"] == "docker:index/network:Network"]
    return network["inputs"]


# --- the replay -------------------------------------------------------------------------------

def _run(argv, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, **kwargs)


def _ok(argv) -> str:
    result = _run(argv)
    assert result.returncode == 0, f"{' '.join(map(str, argv))}: {result.stderr}"
    return result.stdout



def connects(ns_path: str, target: str, port: int, source: str | None = None,
             timeout: float = 0.8) -> bool:
    """A TCP connection from ``source`` in the namespace completes and the peer answers."""
    bind = f"s.bind(({source!r}, 0)); " if source else ""
    probe = (f"import socket; s = socket.socket(); s.settimeout({timeout}); {bind}"
             f"s.connect(({target!r}, {port})); assert s.recv(2) == b'ok'")
    return _run(["nsenter", f"--net={ns_path}", sys.executable, "-c", probe]).returncode == 0


def _sweep_killed_replays() -> None:
    """Tears down what a replay left behind when its pytest process was killed (SIGKILL skips
    the fixture's ``finally``): its dockerd, both namespaces and its directories, for every
    ``/run/bg-*`` whose owner process is gone."""
    for run_dir in Path("/run").glob("bg-*-*"):
        owner = run_dir / "owner"
        try:
            os.kill(int(owner.read_text()), 0)
            continue  # a replay of a live process
        except ProcessLookupError:
            pass
        except (OSError, ValueError):
            continue  # no owner recorded: not ours to judge
        tag = run_dir.name.split("-")[1]
        pidfile = run_dir / "d" / "docker.pid"
        try:
            pid = int(pidfile.read_text())
            os.kill(pid, signal.SIGTERM)
            for _ in range(100):
                os.kill(pid, 0)
                time.sleep(0.1)
            os.kill(pid, signal.SIGKILL)
        except (OSError, ValueError):
            pass
        for ns in (f"bgn-{tag}", f"bgh-{tag}"):
            subprocess.run(["ip", "netns", "delete", ns], capture_output=True, check=False)
        from rehearsal.netns import unmount_under

        for data_dir in Path("/var/tmp").glob(f"bridge-guard-{tag}-*"):
            unmount_under(data_dir)
            subprocess.run(["rm", "-rf", str(data_dir)], check=False)
        unmount_under(run_dir)  # the daemon's netns bind mounts
        subprocess.run(["rm", "-rf", str(run_dir)], check=False)


@pytest.mark.realtool
def test_a_killed_replays_namespaces_and_directories_are_swept(tmp_path):
    require_root("network namespaces")
    require_tool("ip", "Debian package iproute2")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True).stdout.strip()
    tag = secrets.token_hex(3)
    run_dir = Path(tempfile.mkdtemp(prefix=f"bg-{tag}-", dir="/run"))
    (run_dir / "owner").write_text(dead)
    data_dir = Path(tempfile.mkdtemp(prefix=f"bridge-guard-{tag}-", dir="/var/tmp"))
    _ok(["ip", "netns", "add", f"bgh-{tag}"])
    try:
        _sweep_killed_replays()
        assert f"bgh-{tag}" not in _ok(["ip", "netns", "list"]).split()
        assert not run_dir.exists() and not data_dir.exists()
    finally:
        subprocess.run(["ip", "netns", "delete", f"bgh-{tag}"], capture_output=True, check=False)
        subprocess.run(["rm", "-rf", str(run_dir), str(data_dir)], check=False)


@pytest.fixture
def replay():
    """A host namespace running dockerd and a neighbour namespace on its segment; yields a
    dict with both namespaces and the daemon, and tears everything down (also on failure)."""
    for tool, why in [("dockerd", "Debian package docker.io"), ("ip", "Debian package iproute2"),
                      ("iptables-restore", "Debian package iptables"), ("nsenter", "util-linux")]:
        require_tool(tool, why)

    require_root("needs root")
    from rehearsal.netns import DockerDaemon, Namespace

    _sweep_killed_replays()
    tag = secrets.token_hex(3)
    host, neighbour = Namespace(f"bgh-{tag}"), Namespace(f"bgn-{tag}")
    run_dir = Path(tempfile.mkdtemp(prefix=f"bg-{tag}-", dir="/run"))
    (run_dir / "owner").write_text(str(os.getpid()))
    data_dir = Path(tempfile.mkdtemp(prefix=f"bridge-guard-{tag}-", dir="/var/tmp"))
    daemon = DockerDaemon(host, data_dir / "docker", run_dir / "d", "10.213.99.1/24")
    try:
        host.create()
        neighbour.create()
        _ok(["ip", "link", "add", f"bgx{tag}", "type", "veth", "peer", "name", f"bgy{tag}"])
        _ok(["ip", "link", "set", f"bgx{tag}", "netns", host.name])
        _ok(["ip", "link", "set", f"bgy{tag}", "netns", neighbour.name])
        _ok(["ip", "-n", host.name, "link", "set", f"bgx{tag}", "name", "eth0"])
        _ok(["ip", "-n", neighbour.name, "link", "set", f"bgy{tag}", "name", "eth0"])
        for ns in (host, neighbour):
            _ok(["ip", "-n", ns.name, "link", "set", "eth0", "up"])
        daemon.start()
        imported = subprocess.run(daemon.cli("import", "-", IMAGE), input=borrowed_usr_image(),
                                  capture_output=True, timeout=120)
        assert imported.returncode == 0, imported.stderr
        yield {"host": host, "neighbour": neighbour, "daemon": daemon}
    finally:
        daemon.remove_all_containers()
        daemon.stop()
        for ns in (neighbour, host):
            ns.delete()
        from rehearsal.netns import unmount_under

        unmount_under(data_dir)
        subprocess.run(["rm", "-rf", str(data_dir), str(run_dir)], check=False)


@pytest.mark.fast
@pytest.mark.parametrize("stack", STACKS)
def test_the_replay_covers_every_docker_host_of_the_stack(stack):
    providers = {r["name"].removesuffix("-docker") for r in _resources(stack)
                 if r["type"] == "pulumi:providers:docker"}
    assert providers == set(HOSTS[stack])
    for host in HOSTS[stack]:
        assert "PLATFORM-BRIDGE-IN" in rendered_rules(stack, host)


def _setup_segment(replay, host_address: str, sources: list[str], subnets: list[str]) -> None:
    host, neighbour = replay["host"], replay["neighbour"]
    _ok(["ip", "-n", host.name, "addr", "add", f"{host_address}/24", "dev", "eth0"])
    segment = ipaddress.ip_network(f"{host_address}/24", strict=False)
    for source in sources:
        _ok(["ip", "-n", neighbour.name, "addr", "add", f"{source}/32", "dev", "eth0"])
        if ipaddress.ip_address(source) not in segment:
            _ok(["ip", "-n", host.name, "route", "add", f"{source}/32", "dev", "eth0"])
    _ok(["ip", "-n", neighbour.name, "route", "add", f"{host_address}/32", "dev", "eth0"])
    for subnet in subnets:  # the neighbour routes the container subnets via the host
        _ok(["ip", "-n", neighbour.name, "route", "add", subnet, "via", host_address])


def _create_network(daemon, inputs: dict) -> str:
    argv = ["network", "create", "--driver", inputs.get("driver", "bridge")]
    for key, value in (inputs.get("options") or {}).items():
        argv += ["-o", f"{key}={value}"]
    for ipam in inputs.get("ipamConfigs") or []:
        argv += ["--subnet", ipam["subnet"]] + (["--ip-range", ipam["ipRange"]] if ipam.get("ipRange") else [])
    _ok(daemon.cli(*argv, inputs["name"]))
    return inputs["name"]


def _run_listener(daemon, name: str, network: str, ports: list[int], publishes: list[dict],
                  alias: str | None = None) -> str:
    argv = ["run", "-d", "--name", name, "--network", network, "-v", "/usr:/usr:ro", "--read-only",
            "--cap-drop", "ALL", "--security-opt", "no-new-privileges", *(["--network-alias", alias] if alias else [])]
    for publish in publishes:
        argv += ["-p", f"{publish['ip']}:{publish['external']}:{publish['internal']}"]
    _ok(daemon.cli(*argv, IMAGE, "python3", "-c", LISTENER, *map(str, ports)))
    return _ok(daemon.cli("inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
                          name)).strip()


def _wait_listening(daemon, name: str, port: int) -> None:
    deadline = time.monotonic() + 30
    probe = f"import socket; socket.create_connection(('127.0.0.1', {port}), 1).close()"
    while time.monotonic() < deadline:
        if _run(daemon.cli("exec", name, "python3", "-c", probe)).returncode == 0:
            return
        time.sleep(0.3)
    raise AssertionError(_run(daemon.cli("logs", name)).stderr)


def _choose(stack: str, host: str, rules: str) -> list[dict]:
    """The host's publishes to replay: each all-addresses and loopback one, and the private
    ones with distinct admitted sources (at most three), deduplicated by container port."""
    chosen, seen_ports, seen_sets, private = [], set(), set(), 0
    for publish in _host_publishes(stack, host):
        if publish["internal"] in seen_ports:
            continue
        if publish["ip"] != "0.0.0.0" and not publish["ip"].startswith("127."):
            admitted = frozenset(_admitted(rules, publish["ip"], publish["external"]))
            if admitted in seen_sets or private == 3:
                continue
            seen_sets.add(admitted)
            private += 1
        seen_ports.add(publish["internal"])
        chosen.append(publish)
    return chosen


@pytest.mark.realtool
@pytest.mark.parametrize("stack,host", [(s, h) for s in STACKS for h in HOSTS[s]])
def test_nothing_enters_a_container_bridge_but_through_an_admitted_published_address(replay, stack, host, tmp_path):
    rules = rendered_rules(stack, host)
    publishes = _choose(stack, host, rules)
    assert publishes, f"{host} publishes nothing: the replay would prove nothing"
    private = [p for p in publishes if p["ip"] != "0.0.0.0" and not p["ip"].startswith("127.")]
    host_address = private[0]["ip"] if private else FALLBACK_HOST
    segment = ipaddress.ip_network(f"{host_address}/24", strict=False)
    admitted = {p["external"]: [str(a) for c in _admitted(rules, host_address, p["external"])
                                for a in [next(_addresses(c))] if str(a) != host_address]
                for p in private}
    covered = [ipaddress.ip_network(c) for p in private for c in _admitted(rules, host_address, p["external"])]
    stranger = next(str(a) for a in segment.hosts()
                    if str(a) != host_address and not any(a in net for net in covered))
    sources = [stranger, *sorted({a for found in admitted.values() for a in found})]
    network = _network_inputs(stack, host)
    subnets = [c["subnet"] for c in network.get("ipamConfigs") or []] or ["172.16.0.0/12"]
    daemon, host_ns, neighbour = replay["daemon"], replay["host"], replay["neighbour"]
    _setup_segment(replay, host_address, sources, [*subnets, "10.213.99.0/24"])

    net_name = _create_network(daemon, network)
    ports = [p["internal"] for p in publishes]
    container_ip = _run_listener(daemon, "workload", net_name, ports, publishes)
    # On docker0, a container publishing on loopback only (as V-EdFinance's datastores do).
    default_ip = _run_listener(daemon, "on-docker0", "bridge", ports[:1],
                               [{"ip": "127.0.0.1", "external": 40000, "internal": ports[0]}])
    _wait_listening(daemon, "workload", ports[0])
    _wait_listening(daemon, "on-docker0", ports[0])
    n, h = str(neighbour.path), str(host_ns.path)

    # The hole, before the rules: the neighbour reaches both containers' own addresses.
    assert connects(n, container_ip, ports[0], source=stranger), "control: the direct path is open before the rules"
    assert connects(n, default_ip, ports[0], source=stranger), "control: docker0 is open before the rules"

    rules_file = tmp_path / "docker-user.rules"
    rules_file.write_text(rules)
    ns = ["nsenter", f"--net={h}"]
    _ok([*ns, "iptables-restore", "--test", "--noflush", str(rules_file)])
    for _ in range(2):  # applied on every Docker start: the chains are rebuilt, not appended to
        _ok([*ns, "iptables-restore", "--noflush", str(rules_file)])
    listing = _ok([*ns, "iptables", "-S", "DOCKER-USER"])
    assert listing.count("-j PLATFORM-BRIDGE-IN") == len(re.findall(r"^-A DOCKER-USER -o ", rules, re.M)), listing

    for port in ports:
        assert not connects(n, container_ip, port, source=stranger), \
            f"{host}: {stranger} reaches the container {container_ip}:{port} directly"
    for source in sources[1:]:
        assert not connects(n, container_ip, ports[0], source=source), \
            f"{host}: even the admitted {source} must not reach {container_ip}:{ports[0]} directly"
    assert not connects(n, default_ip, ports[0], source=stranger), \
        f"{host}: {stranger} reaches a docker0 container {default_ip}:{ports[0]} directly"
    assert connects(h, "127.0.0.1", 40000), "the host keeps its loopback publish on docker0"
    for publish in publishes:
        external = publish["external"]
        if publish["ip"].startswith("127."):
            # Loopback publishes answer the host itself (Docker DNATs them in OUTPUT).
            assert connects(h, publish["ip"], external), \
                f"{host}: the host lost its own loopback publish {publish['ip']}:{external}"
        elif publish["ip"] == "0.0.0.0":
            assert connects(n, host_address, external, source=stranger), \
                f"{host}: the all-addresses publish :{external} must stay open"
        else:
            assert admitted[external], f"{host}: {host_address}:{external} admits no neighbour to probe from"
            for source in sources[1:]:
                assert connects(n, host_address, external, source=source) == (source in admitted[external]), \
                    f"{host}: {source} -> {host_address}:{external}, admitted: {admitted[external]}"
            assert not connects(n, host_address, external, source=stranger), \
                f"{host}: the non-admitted {stranger} reaches {host_address}:{external}"


@pytest.mark.fast
def test_docker_runs_without_ipv6_so_the_ipv4_guard_is_the_whole_guard():
    """The guard is rendered for iptables only. Containers get IPv6 addresses (and the host
    forwards IPv6 to them) only when daemon.json enables ``ipv6``; turning it on needs the same
    guard in ip6tables first."""
    from components import hostsetup

    assert not hostsetup.DOCKER_DAEMON.get("ipv6"), "IPv6 on: render the bridge guard for ip6tables too"
    assert "fixed-cidr-v6" not in hostsetup.DOCKER_DAEMON
    for stack in STACKS:
        scripts = "\n".join(r["inputs"].get("stdin") or "" for r in _resources(stack)
                            if r["type"] == "command:remote:Command")
        assert "net.ipv6.conf.all.forwarding=1" not in scripts
        assert '"ipv6": true' not in scripts


# --- KRO's api on a network of its own (issue #22: create-first replacement) ----------------

PROBE = ("import socket, sys; s = socket.socket(); s.settimeout(1.0)\n"
         "if len(sys.argv) > 3: s.bind((sys.argv[3], 0))\n"
         "s.connect((sys.argv[1], int(sys.argv[2]))); assert s.recv(2) == b'ok'\n")
WEB = "198.51.100.7"
ADDRESS_LISTENER = (
    "import socket, sys, threading\n"
    "def serve(address, port):\n"
    "    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
    "    s.bind((address, port)); s.listen(16)\n"
    "    while True:\n"
    "        c, _ = s.accept(); c.sendall(b'ok'); c.close()\n"
    "for a in sys.argv[1:]:\n"
    "    threading.Thread(target=serve, args=(a.split(':')[0], int(a.split(':')[1])), daemon=True).start()\n"
    "threading.Event().wait()\n"
)


def _from(daemon, container: str, target: str, port: int, source: str | None = None) -> bool:
    """A TCP connection from inside ``container`` (bound to ``source``) completes and answers."""
    return _run(daemon.cli("exec", container, "python3", "-c", PROBE, target, str(port),
                           *([source] if source else []))).returncode == 0


def _address_on(daemon, container: str, network: str) -> str:
    return _ok(daemon.cli("inspect", "-f", f'{{{{(index .NetworkSettings.Networks "{network}").IPAddress}}}}',
                          container)).strip()


@pytest.mark.realtool
@pytest.mark.parametrize("stack", STACKS)
def test_kros_api_reaches_its_database_from_any_address_of_its_own_network_and_nothing_else_does(
        replay, stack, tmp_path):
    """KRO's backend is no longer pinned: its database flows match the subnet of a network of
    its own, so the old container and its replacement (two dynamic addresses there, both
    running, as in a create-first deploy) reach the managed Postgres ports in the VPC, while a
    container on the host's network, and the ingress nginx that joins both networks (even
    binding its address on the backend's network), do not; nginx reaches both backends."""
    host = f"kro-{stack}"
    rules = rendered_rules(stack, host)
    flows = re.findall(r"^-A DOCKER-USER -i kro-db-ctr -p tcp -s (\S+) -d (\S+) --dport (\d+) -j RETURN$", rules, re.M)
    assert {port for _, _, port in flows} == {"25060", "25061"}, rules
    [(subnet, vpc)] = {(s, d) for s, d, _ in flows}
    main, own = _network_inputs(stack, host), _network_inputs(stack, f"{host}-backend")
    assert own["ipamConfigs"] == [{"subnet": subnet}], own
    database = str(next(ipaddress.ip_network(vpc).hosts()) + 4)
    daemon, host_ns, neighbour = replay["daemon"], replay["host"], replay["neighbour"]
    _setup_segment(replay, FALLBACK_HOST, [database, WEB], [])
    _ok(["ip", "-n", host_ns.name, "route", "add", vpc, "dev", "eth0"])
    listener = subprocess.Popen(["nsenter", f"--net={neighbour.path}", sys.executable, "-c", ADDRESS_LISTENER,
                                 *(f"{a}:{p}" for a, p in ((database, 25060), (database, 25061),
                                                           (database, 5432), (WEB, 443)))])
    try:
        main_net, own_net = _create_network(daemon, main), _create_network(daemon, own)
        for name in ("backend-old", "backend-new"):  # both carry the alias, as in a create-first deploy
            _run_listener(daemon, name, own_net, [3000], [], alias="backend")
        _run_listener(daemon, "frontend", main_net, [8080], [])
        _run_listener(daemon, "nginx", main_net, [8443], [])
        _ok(daemon.cli("network", "connect", own_net, "nginx"))  # as the provider joins a second network
        backends = {n: _address_on(daemon, n, own_net) for n in ("backend-old", "backend-new")}
        assert len(set(backends.values())) == 2 and all(ipaddress.ip_address(a) in ipaddress.ip_network(subnet)
                                                        for a in backends.values()), backends
        nginx_own = _address_on(daemon, "nginx", own_net)
        for name in backends:
            _wait_listening(daemon, name, 3000)
        # nginx's way out is its first network by name (the host's), not the backend's.
        route = _ok(daemon.cli("exec", "nginx", "python3", "-c", "print(open('/proc/net/route').read())"))
        gateway_dev = next(line.split()[0] for line in route.splitlines()[1:] if line.split()[1:2] == ["00000000"])
        addresses = _ok(daemon.cli("exec", "nginx", "ip", "-4", "-o", "addr", "show", "dev", gateway_dev))
        assert nginx_own not in addresses, (gateway_dev, addresses)
        # nginx finds both copies by the alias its config names (Docker's DNS on the joined network).
        resolved = _ok(daemon.cli("exec", "nginx", "python3", "-c",
                                  "import socket; print(' '.join(sorted({a[4][0] for a in socket.getaddrinfo('backend', 3000)})))"))
        assert resolved.split() == sorted(backends.values()), (resolved, backends)
        assert _from(daemon, "frontend", database, 25060), "control: open before the rules"

        rules_file = tmp_path / "docker-user.rules"
        rules_file.write_text(rules)
        ns = ["nsenter", f"--net={host_ns.path}"]
        _ok([*ns, "iptables-restore", "--test", "--noflush", str(rules_file)])
        _ok([*ns, "iptables-restore", "--noflush", str(rules_file)])

        for name in backends:
            assert _from(daemon, name, database, 25060), f"{name} must reach the managed Postgres"
            assert _from(daemon, name, database, 25061), f"{name} must reach the connection pool"
            assert not _from(daemon, name, database, 5432), f"{name}: the database ports only"
            assert not _from(daemon, name, WEB, 443), f"{name} reaches the web"
            assert _from(daemon, "nginx", backends[name], 3000), f"nginx must reach {name}"
        assert not _from(daemon, "frontend", database, 25060), "a container on the host's network reaches the database"
        assert not _from(daemon, "frontend", backends["backend-old"], 3000), "across the host's bridges"
        assert not _from(daemon, "nginx", database, 25060), "the ingress reaches the database"
        assert not _from(daemon, "nginx", database, 25060, source=nginx_own), \
            "the ingress reaches the database from its address on the backend's network"
    finally:
        listener.kill()
        listener.wait()
