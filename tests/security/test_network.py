"""No network: no egress of any kind, no metadata service, no host or Docker API, loopback only."""

from tests.security.battery import MARKER, attack, released

CONNECT = """
    import socket, evalgate
    print("{marker}")
    def tries(family, kind, addr):
        try:
            s = socket.socket(family, kind)
            s.settimeout(2)
            if kind == socket.SOCK_DGRAM:
                s.sendto(b"x", addr)
                s.recvfrom(1)  # a reply would prove a path out
            else:
                s.connect(addr)
            return 1
        except OSError:
            return 0
    evalgate.report({{"reached": sum(tries(*t) for t in {targets})}})
"""


def reached(stack, targets: str) -> float:
    return released(attack(stack, CONNECT.format(marker=MARKER, targets=targets), ["reached"]))["reached"]


def test_tcp_egress_ipv4(stack):
    assert (
        reached(
            stack,
            '[(socket.AF_INET, socket.SOCK_STREAM, ("1.1.1.1", 443)), '
            '(socket.AF_INET, socket.SOCK_STREAM, ("8.8.8.8", 53))]',
        )
        == 0
    )


def test_udp_egress_ipv4(stack):
    assert (
        reached(
            stack,
            '[(socket.AF_INET, socket.SOCK_DGRAM, ("8.8.8.8", 53)), '
            '(socket.AF_INET, socket.SOCK_DGRAM, ("1.1.1.1", 123))]',
        )
        == 0
    )


def test_tcp_egress_ipv6(stack):
    assert reached(stack, '[(socket.AF_INET6, socket.SOCK_STREAM, ("2606:4700:4700::1111", 443))]') == 0


def test_udp_egress_ipv6(stack):
    assert reached(stack, '[(socket.AF_INET6, socket.SOCK_DGRAM, ("2001:4860:4860::8888", 53))]') == 0


def test_cloud_metadata_addresses(stack):
    assert (
        reached(
            stack,
            '[(socket.AF_INET, socket.SOCK_STREAM, ("169.254.169.254", 80)), '
            '(socket.AF_INET6, socket.SOCK_STREAM, ("fd00:ec2::254", 80))]',
        )
        == 0
    )


def test_host_and_bridge_gateway(stack):
    assert (
        reached(
            stack,
            '[(socket.AF_INET, socket.SOCK_STREAM, ("172.17.0.1", 22)), '
            '(socket.AF_INET, socket.SOCK_STREAM, ("10.0.2.2", 22)), '
            '(socket.AF_INET, socket.SOCK_STREAM, ("192.168.0.1", 80))]',
        )
        == 0
    )


def test_docker_api_ports(stack):
    assert (
        reached(
            stack,
            '[(socket.AF_INET, socket.SOCK_STREAM, (h, p)) for h in ("172.17.0.1", "127.0.0.1") for p in (2375, 2376)]',
        )
        == 0
    )


def test_dns_lookups(stack):
    m = released(
        attack(
            stack,
            f"""
        import socket, evalgate
        print("{MARKER}")
        resolved = 0
        for name in ("pypi.org", "example.com", "metadata.google.internal", "host.docker.internal", "localhost."):
            try:
                infos = socket.getaddrinfo(name, 80)
                resolved += any(not i[4][0].startswith(("127.", "::1")) for i in infos)
            except OSError:
                pass
        evalgate.report({{"resolved": resolved}})
    """,
            ["resolved"],
        )
    )
    assert m["resolved"] == 0


def test_only_loopback_and_no_raw_or_netlink_sockets(stack):
    m = released(
        attack(
            stack,
            f"""
        import os, socket, evalgate
        print("{MARKER}")
        opened = 0
        for family, kind in ((socket.AF_PACKET, socket.SOCK_RAW), (socket.AF_INET, socket.SOCK_RAW),
                             (socket.AF_NETLINK, socket.SOCK_RAW), (40, socket.SOCK_STREAM),
                             (38, socket.SOCK_SEQPACKET)):
            try:
                socket.socket(family, kind).close(); opened += 1
            except OSError:
                pass
        evalgate.report({{"interfaces": len(os.listdir("/sys/class/net")), "special_sockets": opened}})
    """,
            ["interfaces", "special_sockets"],
        )
    )
    assert m["interfaces"] <= 1  # lo only (gVisor with --network=none shows none at all)
    assert m["special_sockets"] == 0
