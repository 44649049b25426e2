"""Docker host filter policies: what a host's DOCKER-USER rules must do, judged by walking the
rules file as the kernel would for the packet in question, not by its text.

- a port published on a private address is filtered in DOCKER-USER (Docker DNATs it before UFW
  sees it);
- the bridge guard: no new connection into a container bridge that Docker did not DNAT (a
  neighbour that routes the container subnet would skip the published-port filter);
- no container opens SSH to another host (its traffic leaves as the host's address).
"""

from __future__ import annotations

from policy.rules.base import (CRITICAL, HIGH, MANDATORY, T_COMMAND, T_CONTAINER, T_ONPREM, Case, by_type,
                               integer, items, mapping, network, stack_policy, stdin_of)
from policy.rules.fixtures import container, doc, res, script


def _check_published_ports_filtered(args):
    """Docker DNATs published ports before UFW sees them; only DOCKER-USER can filter them."""
    scripts = "\n".join(stdin_of(c.props) for c in by_type(args, T_COMMAND))
    for item in by_type(args, T_CONTAINER):
        for port in items(item.props.get("ports")):
            port = mapping(port)
            address = port.get("ip") or "0.0.0.0"
            if address in ("0.0.0.0", "::") or str(address).startswith("127."):
                continue
            external = integer(port.get("external"))
            rule = f"--ctorigdst {address} --ctorigdstport {external} -j DROP"
            if rule not in scripts:
                yield (f"container {item.name} publishes {address}:{external}, which "
                       "bypasses UFW, and no DOCKER-USER rule filters it"), item.urn


_FILTERED = container(ports=[{"ip": "10.40.0.12", "external": 4000, "internal": 4000},
                             {"ip": "127.0.0.1", "external": 3300, "internal": 3000}])
stack_policy(
    "docker-container-enable-published-port-filter",
    "A port published on a private address is filtered in DOCKER-USER, which Docker consults before its own rules.",
    level=MANDATORY, severity=HIGH, category="network",
    sources=["Docker docs: packet filtering and firewalls (DOCKER-USER)", "CIS Docker 5.13"],
    fix="Add the port to the node's DOCKER-USER rules with the sources UFW admits.",
    check=_check_published_ports_filtered,
    cases=Case(doc(_FILTERED, script("fw", body="iptables -A DOCKER-USER -p tcp -m conntrack --ctorigdst 10.40.0.12 --ctorigdstport 4000 -j DROP")),
               [(doc(_FILTERED, script("fw", body="iptables -A DOCKER-USER -p tcp -m conntrack --ctorigdst 10.40.0.12 --ctorigdstport 5000 -j DROP")),
                 ["container c publishes 10.40.0.12:4000, which bypasses UFW, and no DOCKER-USER rule filters it"])]))


# --- the bridge guard -----------------------------------------------------------------------------
# Docker's own DOCKER chain accepts every packet addressed to a published container port, from
# any interface, so a neighbour that routes the container subnet via the host skips the filter on
# the published address. The DOCKER-USER rules a host installs must drop every new connection
# into a container bridge that did not come from a bridge and was not DNATed by Docker. Judged
# here by walking the rules file as the kernel would for such a packet, not by its text.
DOCKER_BRIDGES = ("docker0", "br-0123456789ab")
"""The default bridge, and a user-defined network's bridge as Docker names it (br-<id>)."""
_RULES_FILE = "/etc/platform/docker-user.rules"


DOCKER_POOLS = ("172.16.0.0/12", "192.168.0.0/16")
"""Docker's default address pools (docker0 and the networks without a fixed subnet)."""


def _may_be_container(value: str, ranges: list[str]) -> bool:
    target = network(value)
    return target is None or any(target.version == network(r).version and target.overlaps(network(r))
                                 for r in ranges)


def _iface_matches(pattern: str, name: str) -> bool:
    return name.startswith(pattern[:-1]) if pattern.endswith("+") else name == pattern


def _rule_match(words: list[str], bridge: str, bridges: list[str], ranges: list[str]) -> str:
    """How a DOCKER-USER rule's match meets a new, not DNATed packet from the segment into
    ``bridge``: ``all``, ``none`` or ``some`` of them (a source or port match)."""
    verdict, index, negate = "all", 0, False
    while index < len(words):
        word = words[index]
        if word == "!":
            negate, index = True, index + 1
            continue
        value = words[index + 1] if index + 1 < len(words) else ""
        if word == "-o":
            hit = _iface_matches(value, bridge)
            if hit == negate:
                return "none"
        elif word == "-i":
            # The packet comes from the segment: an interface that is no container bridge.
            if any(_iface_matches(value, b) or _iface_matches(b, value) for b in bridges):
                if not negate:
                    return "none"
            elif not negate:
                verdict = "some"
        elif word == "--ctstate":
            # The states listed are alternatives; the packet is NEW and carries no DNAT.
            if ("NEW" in value.split(",")) == negate:
                return "none"
        elif word in ("-d", "--ctorigdst"):
            # Not DNATed: the packet's destination, original and current, is a container's address.
            overlaps = _may_be_container(value, ranges)
            if not negate and not overlaps:
                return "none"
            if not (negate and not overlaps):
                verdict = "some"
        elif word in ("-s", "--dport", "--sport", "--ctorigdstport", "-p"):
            verdict = "some"
        elif word in ("-m", "-j", "-A"):
            pass
        else:
            index += 1
            negate = False
            continue
        negate = False
        index += 2
    return verdict


def _chains(rules_text: str) -> dict[str, list[list[str]]]:
    chains: dict[str, list[list[str]]] = {}
    for line in rules_text.splitlines():
        words = line.split()
        if len(words) > 2 and words[0] == "-A":
            chains.setdefault(words[1], []).append(words[2:])
    return chains


def _leak(chains, chain: str, match, depth: int = 0):
    """The first rule through which a packet may leave ``chain`` towards Docker's accept
    (``None`` when every such packet is dropped, ``"fall"`` when some reach the chain's end);
    ``match(words)`` says how a rule's match meets the packet: ``all``, ``none`` or ``some``."""
    for words in chains.get(chain, []):
        verdict = match(words)
        if verdict == "none":
            continue
        target = words[words.index("-j") + 1] if "-j" in words else ""
        if target in ("DROP", "REJECT"):
            if verdict == "all":
                return None
            continue
        if target in chains and depth < 8:
            inner = _leak(chains, target, match, depth + 1)
            if inner not in (None, "fall"):
                return inner
            if inner is None and verdict == "all":
                return None
            continue
        if target in ("RETURN", "ACCEPT"):
            return " ".join(["-A", chain, *words])
    return "fall"


def _host_networks(args, host_urn: str) -> tuple[list[str], list[str]]:
    """The host's container bridges (Docker's own and the fixed names) and container subnets."""
    networks = [n for n in by_type(args, "docker:index/network:Network")
                if n.parent is not None and n.parent.urn == host_urn]
    named = [str(mapping(n.props.get("options")).get("com.docker.network.bridge.name")) for n in networks
             if mapping(n.props.get("options")).get("com.docker.network.bridge.name")]
    subnets = [str(mapping(c).get("subnet")) for n in networks for c in items(n.props.get("ipamConfigs"))
               if network(mapping(c).get("subnet")) is not None]
    return [*DOCKER_BRIDGES, *named], [*DOCKER_POOLS, *subnets]


def _check_bridge_guard(args):
    from policy.parsers.heredoc import written_files

    hosts: dict[str, object] = {}
    for item in by_type(args, T_CONTAINER):
        if item.parent is not None:
            hosts.setdefault(item.parent.urn, item.parent)
    for urn_, host in sorted(hosts.items()):
        files = [body for c in by_type(args, T_COMMAND) if c.parent is not None and c.parent.urn == urn_
                 for path, body in written_files(stdin_of(c.props)) if path == _RULES_FILE]
        if not files:
            yield (f"host {host.name} runs containers but installs no DOCKER-USER rules "
                   f"({_RULES_FILE}); a neighbour that routes its container subnet reaches "
                   "every container directly"), urn_
            continue
        chains = _chains(files[-1])
        bridges, ranges = _host_networks(args, urn_)
        for bridge in bridges:
            leak = _leak(chains, "DOCKER-USER",
                         lambda words: _rule_match(words, bridge, bridges, ranges))
            if leak is None:
                continue
            shown = "br-<id>" if bridge == DOCKER_BRIDGES[1] else bridge
            how = "nothing drops it" if leak == "fall" else f"`{leak}` lets it through"
            yield (f"host {host.name}: a new connection into container bridge {shown} that Docker "
                   f"did not DNAT passes DOCKER-USER ({how}); a neighbour that routes the "
                   "container subnet reaches the containers directly"), urn_


def _guarded_host(rules_text: str, bridge: str | None = "pencom-data") -> list[dict]:
    host = res(T_ONPREM, "p-data", {"tier": "data", "address": "10.0.0.3", "privateAddress": "10.0.0.3"}, custom=False)
    pg = container("p-data-postgres", ports=[{"ip": "10.0.0.3", "external": 5432, "internal": 5432}])
    fw_ = script("p-data-docker-firewall", files={_RULES_FILE: rules_text})
    net = res("docker:index/network:Network", "p-data-network",
              {"name": "p-data", "driver": "bridge", **({"options": {"com.docker.network.bridge.name": bridge}} if bridge else {})})
    for child in (pg, fw_, net):
        child["parent"] = host["urn"]
    return [host, pg, fw_, net]


_GUARD = """*filter
:DOCKER-USER - [0:0]
:PLATFORM-BRIDGE-IN - [0:0]
-F DOCKER-USER
-F PLATFORM-BRIDGE-IN
-A DOCKER-USER -m conntrack --ctstate ESTABLISHED,RELATED -j RETURN
-A DOCKER-USER -p tcp -m conntrack --ctorigdst 10.0.0.3 --ctorigdstport 5432 -s 10.0.0.2/32 -j RETURN
-A DOCKER-USER -p tcp -m conntrack --ctorigdst 10.0.0.3 --ctorigdstport 5432 -j DROP
-A DOCKER-USER -o docker0 -m conntrack --ctstate NEW -j PLATFORM-BRIDGE-IN
-A DOCKER-USER -o br-+ -m conntrack --ctstate NEW -j PLATFORM-BRIDGE-IN
-A DOCKER-USER -o pencom-data -m conntrack --ctstate NEW -j PLATFORM-BRIDGE-IN
-A PLATFORM-BRIDGE-IN -i docker0 -j RETURN
-A PLATFORM-BRIDGE-IN -i br-+ -j RETURN
-A PLATFORM-BRIDGE-IN -i pencom-data -j RETURN
-A PLATFORM-BRIDGE-IN -m conntrack --ctstate DNAT ! --ctorigdst 127.0.0.0/8 -j RETURN
-A PLATFORM-BRIDGE-IN -j DROP
-A DOCKER-USER -j RETURN
COMMIT
"""
_UNGUARDED = "\n".join(l for l in _GUARD.splitlines() if "BRIDGE-IN" not in l) + "\n"
stack_policy(
    "docker-host-enable-bridge-guard",
    "A Docker host's DOCKER-USER rules drop every new connection into a container bridge that Docker did not DNAT for a published port.",
    level=MANDATORY, severity=CRITICAL, category="network",
    sources=["Docker docs: packet filtering and firewalls (direct routing to containers)",
             "Docker 28.0 release notes (raw-table rules against direct access to container addresses)",
             "CIS Controls v8 12.2 (segmentation)"],
    fix="Install the host's DOCKER-USER rules from components/egress.render_docker_user_rules, which carry the bridge guard.",
    check=_check_bridge_guard,
    cases=Case(doc(*_guarded_host(_GUARD)),
               [(doc(*_guarded_host(_UNGUARDED)),
                 ["host p-data: a new connection into container bridge docker0 that Docker did not DNAT passes DOCKER-USER (`-A DOCKER-USER -j RETURN` lets it through); a neighbour that routes the container subnet reaches the containers directly",
                  "host p-data: a new connection into container bridge br-<id> that Docker did not DNAT passes DOCKER-USER (`-A DOCKER-USER -j RETURN` lets it through); a neighbour that routes the container subnet reaches the containers directly",
                  "host p-data: a new connection into container bridge pencom-data that Docker did not DNAT passes DOCKER-USER (`-A DOCKER-USER -j RETURN` lets it through); a neighbour that routes the container subnet reaches the containers directly"]),
                (doc(*_guarded_host(_GUARD.replace("-A DOCKER-USER -o pencom-data -m conntrack --ctstate NEW -j PLATFORM-BRIDGE-IN\n", "")
                                    .replace("-A PLATFORM-BRIDGE-IN -m conntrack --ctstate DNAT ! --ctorigdst 127.0.0.0/8 -j RETURN",
                                             "-A PLATFORM-BRIDGE-IN -s 10.0.0.0/8 -j RETURN"))),
                 ["host p-data: a new connection into container bridge docker0 that Docker did not DNAT passes DOCKER-USER (`-A PLATFORM-BRIDGE-IN -s 10.0.0.0/8 -j RETURN` lets it through); a neighbour that routes the container subnet reaches the containers directly",
                  "host p-data: a new connection into container bridge br-<id> that Docker did not DNAT passes DOCKER-USER (`-A PLATFORM-BRIDGE-IN -s 10.0.0.0/8 -j RETURN` lets it through); a neighbour that routes the container subnet reaches the containers directly",
                  "host p-data: a new connection into container bridge pencom-data that Docker did not DNAT passes DOCKER-USER (`-A DOCKER-USER -j RETURN` lets it through); a neighbour that routes the container subnet reaches the containers directly"]),
                (doc(*[r for r in _guarded_host(_GUARD) if r["type"] != T_COMMAND]),
                 ["host p-data runs containers but installs no DOCKER-USER rules (/etc/platform/docker-user.rules); a neighbour that routes its container subnet reaches every container directly"])]))


# --- no container opens SSH ---------------------------------------------------------------------
# A container's traffic leaves masqueraded to its host's address. On the bastion that address is
# the one every internal node admits for SSH, so a compromised container there reached every
# node's sshd (found by the staging rehearsal's reachability matrix). Judged, as the bridge guard
# is, by walking the rules file for a new TCP packet from each container bridge to port 22.
def _ssh_match(words: list[str], bridge: str, bridges: list[str], ssh_port: int) -> str:
    """How a DOCKER-USER rule's match meets a new TCP packet from ``bridge`` to ``ssh_port`` on
    an address outside the host: ``all``, ``none`` or ``some`` of them."""
    verdict, index, negate = "all", 0, False
    while index < len(words):
        word = words[index]
        if word == "!":
            negate, index = True, index + 1
            continue
        value = words[index + 1] if index + 1 < len(words) else ""
        if word == "-i":
            if _iface_matches(value, bridge) == negate:
                return "none"
        elif word == "-o":
            # It leaves through the uplink, not a container bridge.
            if any(_iface_matches(value, b) or _iface_matches(b, value) for b in bridges):
                if not negate:
                    return "none"
            elif not negate:
                verdict = "some"
        elif word == "-p":
            if (value in ("tcp", "6")) == negate:
                return "none"
        elif word in ("--dport", "--destination-port", "--dports", "--destination-ports", "--ctorigdstport"):
            # Not DNATed: its original destination port is the SSH port too.
            ports = set()
            for part in value.split(","):
                first, _, last = part.partition(":")
                if first.isdigit() and (last or first).isdigit() and int(first) <= ssh_port <= int(last or first):
                    ports.add(ssh_port)
            if bool(ports) == negate:
                return "none"
        elif word == "--ctstate":
            if ("NEW" in value.split(",")) == negate:
                return "none"
        elif word in ("-s", "-d", "--sport", "--ctorigdst", "--ctorigsrc"):
            verdict = "some"
        elif word in ("-m", "-j", "-A"):
            pass
        else:
            index += 1
            negate = False
            continue
        negate = False
        index += 2
    return verdict


def _check_container_ssh(args):
    from policy.parsers.heredoc import written_files

    hosts: dict[str, object] = {}
    for item in by_type(args, T_CONTAINER):
        if item.parent is not None:
            hosts.setdefault(item.parent.urn, item.parent)
    for urn_, host in sorted(hosts.items()):
        files = [body for c in by_type(args, T_COMMAND) if c.parent is not None and c.parent.urn == urn_
                 for path, body in written_files(stdin_of(c.props)) if path == _RULES_FILE]
        if not files:
            continue  # docker-host-enable-bridge-guard reports the missing file
        chains = _chains(files[-1])
        bridges, _ = _host_networks(args, urn_)
        for bridge in bridges:
            leak = _leak(chains, "DOCKER-USER", lambda words: _ssh_match(words, bridge, bridges, 22))
            if leak is None:
                continue
            shown = "br-<id>" if bridge == DOCKER_BRIDGES[1] else bridge
            how = "nothing drops it" if leak == "fall" else f"`{leak}` lets it through"
            yield (f"host {host.name}: a container on bridge {shown} may open SSH (22) to another host "
                   f"({how}); its traffic leaves as the host's address, which the bastion's peers "
                   "admit for SSH"), urn_


_SSH_DROPS = "".join(f"-A DOCKER-USER -i {b} -p tcp --dport 22 -j DROP\n" for b in ("docker0", "br-+", "pencom-data"))
_NO_SSH = _GUARD.replace("-A DOCKER-USER -m conntrack --ctstate ESTABLISHED,RELATED -j RETURN\n",
                         "-A DOCKER-USER -m conntrack --ctstate ESTABLISHED,RELATED -j RETURN\n" + _SSH_DROPS)
stack_policy(
    "docker-host-disallow-container-ssh",
    "A Docker host's DOCKER-USER rules drop every new connection from a container to an SSH port.",
    level=MANDATORY, severity=CRITICAL, category="network",
    sources=["CIS Controls v8 12.2 (segmentation) and 4.4 (firewalls on servers)",
             "Kredete reference architecture: SSH only through the bastion, from the admin network"],
    fix="Install the host's DOCKER-USER rules from components/egress.render_docker_user_rules, which drop SSH from every container bridge first.",
    check=_check_container_ssh,
    cases=Case(doc(*_guarded_host(_NO_SSH)),
               [(doc(*_guarded_host(_GUARD)),
                 [f"host p-data: a container on bridge {b} may open SSH (22) to another host (`-A DOCKER-USER -j RETURN` "
                  "lets it through); its traffic leaves as the host's address, which the bastion's peers admit for SSH"
                  for b in ("docker0", "br-<id>", "pencom-data")]),
                (doc(*_guarded_host(_NO_SSH.replace("-A DOCKER-USER -i pencom-data -p tcp --dport 22 -j DROP\n",
                                                    "-A DOCKER-USER -i pencom-data -p tcp --dport 2222 -j DROP\n"
                                                    "-A DOCKER-USER -i pencom-data -d 10.0.0.0/24 -j RETURN\n"))),
                 ["host p-data: a container on bridge pencom-data may open SSH (22) to another host (`-A DOCKER-USER "
                  "-i pencom-data -d 10.0.0.0/24 -j RETURN` lets it through); its traffic leaves as the host's "
                  "address, which the bastion's peers admit for SSH"])]))

