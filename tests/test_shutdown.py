"""SIGTERM drains a node: it refuses new connections, lets the requests and streams in
flight finish, writes their records and exits 0, under daphne and under uvicorn."""

import signal
import socket
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.cache.test_flights import answer_of, ask, records_of
from tests.personas import Client, ModelFactory, wait_for_key, wait_for_model
from tests.processes import Process, start_gateway, stop_process, upstream_hits, wait_until

pytestmark = pytest.mark.embedded


def refuses_connections(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
    except ConnectionRefusedError:
        return True
    return False


@pytest.mark.parametrize("server", ["daphne", "uvicorn"])
def test_sigterm_lets_the_requests_in_flight_finish_and_exits_0(
    server: str, fake_upstream: Process, alice: Client, model_with: ModelFactory
) -> None:
    model = model_with("delay/400")  # 0.4 s before the answer; per chunk when streamed
    path = "/delay/400/v1/chat/completions"
    node = start_gateway(f"drain-{server}", server=server)
    try:
        wait_for_model(node, wait_for_key(node, alice), model)
        before = upstream_hits(fake_upstream, path)
        with ThreadPoolExecutor(max_workers=6) as pool:
            sent = [pool.submit(ask, node, alice, model, f"drain {i}", stream=i % 2 == 0)
                    for i in range(6)]  # fmt: skip
            wait_until(lambda: upstream_hits(fake_upstream, path) - before == 6)

            node.popen.send_signal(signal.SIGTERM)

            wait_until(lambda: refuses_connections(node.port), timeout_s=2)
            replies = [reply.result() for reply in sent]
        # uvicorn ends by raising the signal again once it shut down: status 143 (-15 here),
        # which systemd and Kubernetes take for a clean stop.
        assert node.popen.wait(timeout=25) == (0 if server == "daphne" else -signal.SIGTERM)
    finally:
        stop_process(node)

    assert [reply.status for reply in replies] == [200] * 6
    assert [answer_of(reply)[0] for reply in replies] == [
        f"Echo from {model}-ep0-model: drain {i}" for i in range(6)
    ]  # whole answers; the streams ended with [DONE] (answer_of checks)
    assert all(record.outcome == "success" for record in records_of(replies))
