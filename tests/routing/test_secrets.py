"""Upstream API keys: encrypted at rest, sent upstream, and nowhere else."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from django.db import connection
from django.test import Client as BrowserClient

from routing.models import ModelEndpoint
from tests.personas import Client, ModelFactory, record_for
from tests.processes import Process, http

UPSTREAM_KEY = "sk-proj-TOPSECRET0123456789abcdef"


def test_the_key_is_encrypted_at_rest_and_still_sent_upstream(
    gateway: Process, alice: Client, model_with: ModelFactory
) -> None:
    model = model_with(f"needkey/{UPSTREAM_KEY}", api_key=UPSTREAM_KEY)
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
    reply = http(f"{gateway.url}/v1/chat/completions", method="POST", key=alice.key, body=body)
    assert reply.status == 200, "the upstream received the decrypted key"

    with connection.cursor() as cursor:
        cursor.execute("SELECT api_key_encrypted FROM routing_modelendpoint")
        stored = [row[0] for row in cursor.fetchall()]
    assert stored and all(UPSTREAM_KEY not in value and value for value in stored)


def test_the_key_appears_in_no_error_record_log_or_metrics(
    gateway: Process, alice: Client, model_with: ModelFactory
) -> None:
    # The upstream refuses the key and quotes it back, as some providers do.
    model = model_with("needkey/another-key", api_key=UPSTREAM_KEY)
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
    reply = http(f"{gateway.url}/v1/chat/completions", method="POST", key=alice.key, body=body)

    assert reply.status == 502
    assert UPSTREAM_KEY not in reply.body.decode()
    record = record_for(reply.headers["x-request-id"])
    assert UPSTREAM_KEY not in f"{record.error_message} {record.error_tips} {record.attempt_log}"
    assert UPSTREAM_KEY not in http(f"{gateway.url}/metrics").body.decode()
    assert UPSTREAM_KEY not in gateway.log()


def test_admin_never_shows_the_key(admin_browser: BrowserClient, fake_upstream: Process) -> None:
    response = admin_browser.post("/admin/routing/modelendpoint/add/", {
        "name": "openai-main", "provider": "openai", "base_url": f"{fake_upstream.url}/v1",
        "upstream_model": "gpt-4o-mini", "api_key": UPSTREAM_KEY, "connect_timeout_s": 5,
        "first_byte_timeout_s": 30, "total_timeout_s": 60, "max_retries": 2,
        "input_cost_per_1m": "0.15", "output_cost_per_1m": "0.60", "enabled": "on",
    })  # fmt: skip
    assert response.status_code == 302, response.content.decode()[:2000]
    endpoint = ModelEndpoint.objects.get(name="openai-main")
    assert endpoint.get_api_key() == UPSTREAM_KEY

    listing = admin_browser.get("/admin/routing/modelendpoint/").content.decode()
    change = admin_browser.get(f"/admin/routing/modelendpoint/{endpoint.id}/change/")
    assert "openai-main" in listing
    assert UPSTREAM_KEY not in listing and UPSTREAM_KEY not in change.content.decode()
    assert endpoint.api_key_encrypted not in change.content.decode()


def test_saving_the_form_without_a_key_keeps_the_stored_one(
    admin_browser: BrowserClient, fake_upstream: Process
) -> None:
    endpoint = ModelEndpoint(name="keep", base_url=f"{fake_upstream.url}/v1", upstream_model="x")
    endpoint.set_api_key(UPSTREAM_KEY)
    endpoint.save()
    response = admin_browser.post(f"/admin/routing/modelendpoint/{endpoint.id}/change/", {
        "name": "keep", "provider": "openai", "base_url": f"{fake_upstream.url}/v1",
        "upstream_model": "y", "api_key": "", "connect_timeout_s": 5, "first_byte_timeout_s": 30,
        "total_timeout_s": 60, "max_retries": 2, "input_cost_per_1m": "0",
        "output_cost_per_1m": "0", "enabled": "on",
    })  # fmt: skip
    assert response.status_code == 302
    endpoint.refresh_from_db()
    assert (endpoint.upstream_model, endpoint.get_api_key()) == ("y", UPSTREAM_KEY)


def manage_check(var_dir: Path, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("BEASTMODE_")}
    clean.update(DJANGO_SETTINGS_MODULE="beastmode.settings", BEASTMODE_VAR_DIR=str(var_dir))
    clean.pop("DATABASE_URL", None)
    return subprocess.run(
        [sys.executable, "manage.py", "check"], env={**clean, **env},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


@pytest.mark.embedded
def test_without_secrets_manage_py_uses_make_runs_files_or_says_what_is_missing(
    tmp_path: Path,
) -> None:
    missing = manage_check(tmp_path)
    assert missing.returncode != 0 and "BEASTMODE_ENCRYPTION_KEY" in missing.stderr

    (tmp_path / "secret_key").write_text("local-secret-key-" + "x" * 40)
    (tmp_path / "encryption.key").write_text(Fernet.generate_key().decode())
    assert manage_check(tmp_path).returncode == 0, "the files make run generated are used"
