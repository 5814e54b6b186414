"""`manage.py import_models`: declarative, idempotent, keys from the environment only."""

import re
import subprocess
import sys
from decimal import Decimal
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from routing.models import ModelEndpoint, RegistryVersion, Route, ServiceKey
from routing.service_keys import hash_key
from tests.processes import ROOT, server_env

CONFIG = """
models:
  - name: demo
    endpoints:
      - name: local-a
        provider: openai
        base_url: http://127.0.0.1:9001/v1
        model: gpt-4o-mini
        api_key_env: DEMO_KEY
        timeout_s: 30
        input_cost_per_1m: 0.15
        output_cost_per_1m: 0.60
      - name: local-b
        base_url: http://127.0.0.1:9002/v1
        model: llama-3
"""


def run(tmp_path: Path, text: str) -> str:
    path = tmp_path / "models.yaml"
    path.write_text(text)
    out = StringIO()
    call_command("import_models", str(path), stdout=out)
    return out.getvalue()


@pytest.fixture
def demo_key(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("DEMO_KEY", "sk-demo-123")
    return "sk-demo-123"


def test_import_creates_endpoints_and_an_ordered_route(
    db: None, tmp_path: Path, demo_key: str
) -> None:
    output = run(tmp_path, CONFIG)

    assert "3 created" in output
    route = Route.objects.get(model_name="demo")
    chain = [link.endpoint.name for link in route.chain.order_by("position")]
    assert chain == ["local-a", "local-b"]
    local_a = ModelEndpoint.objects.get(name="local-a")
    assert local_a.get_api_key() == demo_key
    assert (local_a.total_timeout_s, local_a.first_byte_timeout_s) == (30, 30)
    assert str(local_a.input_cost_per_1m) == "0.150000"
    assert ModelEndpoint.objects.get(name="local-b").has_api_key is False


def test_importing_the_same_file_twice_changes_nothing(
    db: None, tmp_path: Path, demo_key: str
) -> None:
    run(tmp_path, CONFIG)
    version = RegistryVersion.objects.get().version

    output = run(tmp_path, CONFIG)

    assert "0 created, 0 updated, 3 unchanged" in output
    assert RegistryVersion.objects.get().version == version, "no reload for a no-op"


def test_reimport_applies_changes_including_chain_order(
    db: None, tmp_path: Path, demo_key: str
) -> None:
    run(tmp_path, CONFIG)
    swapped = (
        CONFIG.replace("local-a", "TMP").replace("local-b", "local-a").replace("TMP", "local-b")
    )

    output = run(tmp_path, swapped)

    assert "updated model demo" in output
    chain = [link.endpoint.name for link in Route.objects.get().chain.order_by("position")]
    assert chain == ["local-b", "local-a"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("models: 3", "top-level 'models:' list"),
        ("models:\n  - name: x\n    endpoints: []", "non-empty 'endpoints'"),
        ("models:\n  - name: x\n    endpoints:\n      - name: a\n        base_url: http://h/v1\n"
         "        model: m\n        api_key: sk-inline", "api_key_env"),
        ("models:\n  - name: x\n    endpoints:\n      - name: a\n        base_url: http://h/v1\n"
         "        model: m\n        api_key_env: SURELY_UNSET_VAR", "SURELY_UNSET_VAR is not set"),
        ("models:\n  - name: x\n    endpoints:\n      - name: a\n        base_url: http://h/v1\n"
         "        model: m\n        provider: carrier-pigeon", "unknown provider"),
        ("models:\n  - name: x\n    endpoints:\n      - name: a\n        model: m", "'base_url'"),
        ("models: !!python/object/apply:os.system ['echo pwned']", "could not determine"),
    ],
)  # fmt: skip
def test_invalid_files_are_refused_with_a_pointed_message(
    db: None, tmp_path: Path, text: str, message: str
) -> None:
    with pytest.raises(CommandError, match=message):
        run(tmp_path, text)
    assert not Route.objects.exists(), "nothing half-imported"


def test_the_cache_block_sets_the_models_cache_policy(
    db: None, tmp_path: Path, demo_key: str
) -> None:
    policy = "    cache: {semantic: on, threshold: 0.9, ttl_s: 600}\n"
    run(tmp_path, CONFIG.replace("  - name: demo\n", "  - name: demo\n" + policy))
    route = Route.objects.get()
    assert (route.semantic_mode, route.semantic_threshold, route.cache_ttl_s) == ("on", 0.9, 600)
    assert route.cache_enabled

    run(
        tmp_path,
        CONFIG.replace("  - name: demo\n", '  - name: demo\n    cache: {semantic: "shadow"}\n'),
    )
    route.refresh_from_db()
    assert (route.semantic_mode, route.cache_ttl_s) == ("shadow", None)

    with pytest.raises(CommandError, match="one of off, shadow, on"):
        run(
            tmp_path,
            CONFIG.replace("  - name: demo\n", "  - name: demo\n    cache: {semantic: maybe}\n"),
        )


def test_a_models_timeout_bounds_the_whole_request(db: None, tmp_path: Path, demo_key: str) -> None:
    run(tmp_path, CONFIG.replace("  - name: demo\n", "  - name: demo\n    timeout_s: 45\n"))
    assert Route.objects.get().timeout_s == 45.0

    with pytest.raises(CommandError, match=r"\(demo\)\.timeout_s: a number of seconds"):
        run(tmp_path, CONFIG.replace("  - name: demo\n", "  - name: demo\n    timeout_s: soon\n"))


@pytest.mark.parametrize(
    ("cache", "message"),
    [
        ("{ttl_s: -5}", r"models\[0\] \(demo\)\.cache\.ttl_s: a whole number of seconds"),
        ("{ttl_s: 0}", r"\(demo\)\.cache\.ttl_s: .* from 1 to 31536000"),
        ("{ttl_s: 31536001}", r"\(demo\)\.cache\.ttl_s: .* from 1 to 31536000"),
        ("{ttl_s: 1.7}", r"\(demo\)\.cache\.ttl_s: .*got 1\.7"),
        ("{ttl_s: abc}", r"\(demo\)\.cache\.ttl_s: .*got 'abc'"),
        ("{threshold: abc}", r"\(demo\)\.cache\.threshold: a similarity from 0\.8 to 1\.0"),
        ("{threshold: true}", r"\(demo\)\.cache\.threshold: .*got True"),
        ("{threshold: 0}", r"\(demo\)\.cache\.threshold: .*got 0"),
        ("{threshold: 0.5}", r"\(demo\)\.cache\.threshold: .*got 0\.5"),
        ("{threshold: 1.5}", r"\(demo\)\.cache\.threshold: .*got 1\.5"),
        ("{threshold: .nan}", r"\(demo\)\.cache\.threshold: .*got nan"),
        ('{enabled: "false"}', r"\(demo\)\.cache\.enabled: true or false; got 'false'"),
    ],
)
def test_bad_cache_values_name_the_model_and_field_and_import_nothing(
    db: None, tmp_path: Path, demo_key: str, cache: str, message: str
) -> None:
    text = CONFIG.replace("  - name: demo\n", f"  - name: demo\n    cache: {cache}\n")

    with pytest.raises(CommandError, match=message):
        run(tmp_path, text)

    assert not Route.objects.exists() and not ModelEndpoint.objects.exists(), "all or nothing"


def test_a_model_or_endpoint_enabled_flag_must_be_a_boolean(
    db: None, tmp_path: Path, demo_key: str
) -> None:
    with pytest.raises(CommandError, match=r"\(demo\)\.enabled: true or false; got 'no'"):
        run(tmp_path, CONFIG.replace("  - name: demo\n", '  - name: demo\n    enabled: "no"\n'))
    with pytest.raises(CommandError, match=r"endpoints\[1\] \(local-b\)\.enabled: true or false"):
        run(tmp_path, CONFIG.replace("model: llama-3", "model: llama-3\n        enabled: off!"))


A = r"models\[0\] \(demo\)\.endpoints\[0\] \(local-a\)"  # how messages name local-a


@pytest.mark.parametrize(
    ("line", "message"),
    [
        # durations
        ("timeout_s: soon", rf"{A}\.timeout_s: a number of seconds greater than 0.*got 'soon'"),
        ('timeout_s: "30"', rf"{A}\.timeout_s: .*\(write it without quotes\); got '30'"),
        ("timeout_s: 0", rf"{A}\.timeout_s: a number of seconds greater than 0"),
        ("timeout_s: .inf", rf"{A}\.timeout_s: .*got inf"),
        ("connect_timeout_s: -1", rf"{A}\.connect_timeout_s: .*greater than 0.*got -1"),
        ("first_byte_timeout_s: true", rf"{A}\.first_byte_timeout_s: .*not numbers\); got True"),
        ("total_timeout_s: null", rf"{A}\.total_timeout_s: .*got None"),
        # counts
        ("max_retries: 1.5", rf"{A}\.max_retries: a whole number from 0 to 32767; got 1\.5"),
        ("max_retries: -1", rf"{A}\.max_retries: a whole number .*got -1"),
        ("max_retries: yes", rf"{A}\.max_retries: .*got True"),
        # prices
        ("input_cost_per_1m: -1", rf"{A}\.input_cost_per_1m: a price in USD from 0 .*got -1"),
        ("output_cost_per_1m: cheap", rf"{A}\.output_cost_per_1m: a price .*got 'cheap'"),
        ("input_cost_per_1m: true", rf"{A}\.input_cost_per_1m: .*got True"),
        ("input_cost_per_1m: 0.0000001", rf"{A}\.input_cost_per_1m: .*at most 6 decimal places"),
        ("input_cost_per_1m: 1000000", rf"{A}\.input_cost_per_1m: .*under 1,000,000"),
        ("input_cost_per_1m: .nan", rf"{A}\.input_cost_per_1m: .*got nan"),
        # names and URLs
        ("base_url: not a url", rf"{A}\.base_url: an http:// or https:// URL .*'not a url'"),
        ("base_url: ftp://h/v1", rf"{A}\.base_url: an http:// or https:// URL"),
        ("base_url: http://h:port/v1", rf"{A}\.base_url: .*got 'http://h:port/v1'"),
        ("model: 3.5", rf"{A}\.model: the model id sent upstream.*\(put it in quotes"),
        ('model: ""', rf"{A}\.model: the model id sent upstream, a string of 1 to 200"),
        ("api_key_env: 42", rf"{A}\.api_key_env: the name of the environment variable"),
        ("enabled: 1", rf"{A}\.enabled: true or false; got 1"),
        ("provider: 7", rf"{A}\.provider: unknown provider 7; one of openai"),
    ],
)
def test_bad_endpoint_values_name_the_model_endpoint_and_field_and_import_nothing(
    db: None, tmp_path: Path, demo_key: str, line: str, message: str
) -> None:
    field = line.split(":")[0]  # replaces what CONFIG sets it to (in either endpoint)
    lines = [kept for kept in CONFIG.splitlines() if not kept.startswith(f"        {field}:")]
    text = "\n".join(lines).replace("- name: local-a", f"- name: local-a\n        {line}")

    with pytest.raises(CommandError, match=message):
        run(tmp_path, text)

    assert not Route.objects.exists() and not ModelEndpoint.objects.exists(), "all or nothing"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("models:\n  - name: 2024\n    endpoints: []",
         r"models\[0\]\.name: the model name clients send, a string .*\(put it in quotes"),
        ("models:\n  - endpoints: []", r"models\[0\]: 'name' is required \(the model name"),
        ("models:\n  - name: x\n    description: [a]\n    endpoints:\n      - name: a\n"
         "        base_url: http://h/v1\n        model: m",
         r"models\[0\] \(x\)\.description: a string of at most 300 characters"),
        ("models:\n  - name: x\n    endpoints:\n      - base_url: http://h/v1\n        model: m",
         r"models\[0\] \(x\)\.endpoints\[0\]: 'name' is required"),
        ("models:\n  - name: x\n    endpoints:\n      - name: my endpoint\n"
         "        base_url: http://h/v1\n        model: m",
         r"endpoints\[0\]\.name: letters, digits, '-' and '_' only .*got 'my endpoint'"),
        ("models:\n  - name: x\n    endpoints:\n      - name: a\n        base_url: http://h/v1",
         r"models\[0\] \(x\)\.endpoints\[0\] \(a\): 'model' is required \(the model id"),
    ],
)  # fmt: skip
def test_bad_or_missing_model_fields_name_the_model_and_field(
    db: None, tmp_path: Path, text: str, message: str
) -> None:
    with pytest.raises(CommandError, match=message):
        run(tmp_path, text)
    assert not Route.objects.exists() and not ModelEndpoint.objects.exists()


ENDPOINT_A = "      - name: a\n        base_url: http://h/v1\n        model: m\n"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (f"models:\n  - name: x\n    endpoints:\n{ENDPOINT_A}{ENDPOINT_A}",
         r"models\[0\] \(x\)\.endpoints: lists an endpoint twice"),
        (f"models:\n  - name: x\n    endpoints:\n{ENDPOINT_A}"
         f"  - name: y\n    endpoints:\n{ENDPOINT_A.replace('model: m', 'model: n')}",
         r"models\[1\] \(y\)\.endpoints\[0\] \(a\): endpoint a is defined differently at "
         r"models\[0\] \(x\)\.endpoints\[0\] \(a\) already"),
        (f"models:\n  - name: x\n    endpoints:\n{ENDPOINT_A}"
         f"  - name: x\n    endpoints:\n{ENDPOINT_A}",
         r"models\[1\] \(x\): model x is defined at models\[0\] \(x\) already"),
    ],
)  # fmt: skip
def test_a_name_defined_twice_is_refused_instead_of_silently_replaced(
    db: None, tmp_path: Path, text: str, message: str
) -> None:
    with pytest.raises(CommandError, match=message):
        run(tmp_path, text)
    assert not Route.objects.exists() and not ModelEndpoint.objects.exists()


def test_models_may_share_an_endpoint_spelled_out_the_same_way(db: None, tmp_path: Path) -> None:
    run(tmp_path, f"models:\n  - name: x\n    endpoints:\n{ENDPOINT_A}"
                  f"  - name: y\n    endpoints:\n{ENDPOINT_A}")  # fmt: skip
    assert ModelEndpoint.objects.count() == 1 and Route.objects.count() == 2


def test_a_bad_value_late_in_the_file_leaves_earlier_changes_undone(
    db: None, tmp_path: Path, demo_key: str
) -> None:
    run(tmp_path, CONFIG)
    before = list(ModelEndpoint.objects.order_by("name").values())
    changed_a = CONFIG.replace("model: gpt-4o-mini", "model: gpt-4o")
    bad_b = changed_a.replace("model: llama-3", "model: llama-3\n        max_retries: many")

    with pytest.raises(CommandError, match=r"endpoints\[1\] \(local-b\)\.max_retries"):
        run(tmp_path, bad_b)

    assert list(ModelEndpoint.objects.order_by("name").values()) == before


def test_the_command_exits_non_zero_with_one_line_and_no_traceback(
    transactional_db: None, tmp_path: Path
) -> None:
    path = tmp_path / "models.yaml"
    path.write_text(CONFIG.replace("timeout_s: 30", "timeout_s: soon").replace(
        "        api_key_env: DEMO_KEY\n", ""))  # fmt: skip

    done = subprocess.run(
        [sys.executable, "manage.py", "import_models", str(path)],
        cwd=ROOT, env=server_env(), capture_output=True, text=True, timeout=60,
    )  # fmt: skip

    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    assert done.stderr.strip() == (
        "CommandError: models[0] (demo).endpoints[0] (local-a).timeout_s: a number of "
        "seconds greater than 0, like 30 or 2.5; got 'soon'"
    )
    assert not ModelEndpoint.objects.exists()


KEYS = """
keys:
  - name: billing
    models: [demo]
    rpm: 60
    tpm: 100000
    max_parallel: 4
    budget_usd: 0.1
    budget_period: weekly
    model_limits:
      demo: {rpm: 10}
"""


def test_the_keys_section_creates_a_key_once_and_sets_its_limits(db: None, tmp_path: Path) -> None:
    output = run(tmp_path, KEYS)
    raw_key = output.split("service key 'billing', shown once: ")[1].split()[0]
    key = ServiceKey.objects.get(name="billing")
    assert key.key_hash == hash_key(raw_key)
    assert (key.rpm, key.tpm, key.max_parallel, key.budget_usd, key.budget_period) == (
        60, 100000, 4, Decimal("0.1"), "weekly"
    )  # fmt: skip
    assert key.allowed_models == ["demo"] and key.model_limits == {"demo": {"rpm": 10}}

    again = run(tmp_path, KEYS)
    assert "shown once" not in again and "0 created, 0 updated, 1 unchanged" in again
    run(tmp_path, KEYS.replace("rpm: 60", "rpm: 120"))
    assert ServiceKey.objects.get(name="billing").rpm == 120


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("rpm: 60", "rpm: 0"), "keys[0] (billing): rpm: Ensure this value is greater than"),
        (("budget_period: weekly", "budget_period: hourly"), "keys[0] (billing): budget_period:"),
        (("{rpm: 10}", "{rpm: -1}"), "'demo': rpm must be a whole number of 1 or more"),
        (("{rpm: 10}", "{rps: 1}"), "'demo': unknown limit 'rps'"),
    ],
)
def test_bad_key_limits_name_the_key_and_field_and_import_nothing(
    db: None, tmp_path: Path, change: tuple[str, str], message: str
) -> None:
    with pytest.raises(CommandError, match=re.escape(message)):
        run(tmp_path, KEYS.replace(*change))
    assert not ServiceKey.objects.exists()


def test_create_service_key_takes_the_limits(db: None) -> None:
    out = StringIO()
    flags = ["--rpm", "5", "--max-parallel", "2", "--budget", "12.5", "--budget-period", "daily"]
    call_command("create_service_key", "ops", *flags, stdout=out, stderr=StringIO())
    key = ServiceKey.objects.get(key_hash=hash_key(out.getvalue().strip()))
    assert (key.rpm, key.tpm, key.max_parallel, key.budget_usd, key.budget_period) == (
        5, None, 2, Decimal("12.5"), "daily"
    )  # fmt: skip
    with pytest.raises(CommandError, match="rpm: Ensure this value is greater than"):
        call_command("create_service_key", "bad", "--rpm", "0", stderr=StringIO())
