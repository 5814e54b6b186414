"""`make run`'s first step: stop, in one line, when a port it needs is taken.

    python3 scripts/check_ports.py HOST PORT VARIABLE [HOST PORT VARIABLE ...]

Exits 1 with "port 9001 is in use: set DEMO_UPSTREAM_PORT=… to use another" on stderr for
the first port that cannot be bound; 0 when all can. Runs on the machine's python3, before
.venv exists.
"""

import errno
import socket
import sys


def problem(host: str, port_text: str, variable: str) -> str | None:
    """Why `host:port` cannot be served (one line naming `variable`), or None."""
    change = f"set {variable}=… to use another"
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        return f"{variable}={port_text} is not a port number (1-65535)"
    port = int(port_text)
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers do
            sock.bind((host, port))
    except socket.gaierror as error:
        return f"cannot serve on host '{host}' ({error.strerror}): set HOST=… to another"
    except PermissionError:
        return f"port {port} needs root: {change}"
    except OSError as error:
        if error.errno == errno.EADDRINUSE:
            return f"port {port} is in use: {change}"
        return f"port {port} on {host} is not available ({error.strerror}): {change}"
    return None


def main(args: list[str]) -> int:
    triples = [args[i : i + 3] for i in range(0, len(args), 3)]
    ports = [port for _, port, _ in triples]
    for host, port, variable in triples:
        if ports.count(port) > 1:
            names = " and ".join(v for _, p, v in triples if p == port)
            print(f"{names} are both {port}: set one to another port", file=sys.stderr)
            return 1
        if message := problem(host, port, variable):
            print(message, file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
