"""`manage.py import_models`: declarative, idempotent, keys from the environment only."""

from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from routing.models import ModelEndpoint, RegistryVersion, Route

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
