"""The periodic Celery health probe: same upstream code and diagnosis as live traffic."""

from routing import breaker, tasks
from routing.models import EndpointProbe
from tests.conftest import Process, free_port, make_endpoint


def test_probe_task_records_each_endpoints_health_and_feeds_its_breaker(
    transactional_db: None, fake_upstream: Process
) -> None:
    healthy = make_endpoint("healthy", f"{fake_upstream.url}/v1")
    down = make_endpoint("down", f"http://127.0.0.1:{free_port()}/v1")
    make_endpoint("disabled", f"{fake_upstream.url}/v1", enabled=False)

    result = tasks.probe_endpoints.apply().get()

    assert result == {"healthy": True, "down": False}
    assert EndpointProbe.objects.get(endpoint=healthy).ok
    probe = EndpointProbe.objects.get(endpoint=down)
    assert (probe.ok, probe.error_class) == (False, "connection_refused")
    assert "'down'" in probe.message
    assert breaker.for_endpoint(down.id).consecutive_failures == 1
