"""Catching up with registry changes: a changed service key costs one row, not all of them;
a snapshot the key log cannot bring up to date is read again whole (routing/registry.py)."""

import pytest
from django.db.models.signals import post_save
from django.utils import timezone

from beastmode.lib.errors import GatewayError
from cache.models import CacheNamespace
from routing import models, registry
from routing.models import RegistryVersion, ServiceKey, ServiceKeyChange
from routing.service_keys import assign_new_key, create_service_key
from tests.personas import make_endpoint, make_model

pytestmark = [pytest.mark.django_db, pytest.mark.embedded]  # also on SQLite: the default


def add_key(name: str, **fields: object) -> tuple[ServiceKey, str]:
    key, raw = create_service_key(name)
    for field, value in fields.items():
        setattr(key, field, value)
    if fields:
        key.save()
    return key, raw


def refusal(snapshot: registry.Snapshot, raw_key: str) -> str:
    with pytest.raises(GatewayError) as refused:
        snapshot.authenticate(f"Bearer {raw_key}")
    return refused.value.error_class


@pytest.fixture
def loaded() -> registry.Snapshot:
    """Three keys read whole, as a process that has just started."""
    for name in ("alpha", "beta", "gamma"):
        add_key(name)
    return registry.load_snapshot()


def test_a_changed_key_is_read_again_alone(loaded: registry.Snapshot) -> None:
    beta = ServiceKey.objects.get(name="beta")
    beta.allowed_models = ["demo"]
    beta.save()

    snapshot = registry.catch_up(loaded)

    assert snapshot.keys_read == 1
    assert snapshot.keys_by_hash[beta.key_hash].allowed_models == {"demo"}
    alpha = ServiceKey.objects.get(name="alpha").key_hash
    assert snapshot.keys_by_hash[alpha] is loaded.keys_by_hash[alpha]
    assert loaded.keys_by_hash[beta.key_hash].allowed_models == set()  # the old one unchanged


def test_a_new_key_is_added(loaded: registry.Snapshot) -> None:
    delta, raw = add_key("delta")

    snapshot = registry.catch_up(loaded)

    assert snapshot.keys_read == 1
    assert snapshot.authenticate(f"Bearer {raw}").id == delta.id
    assert snapshot.key_by_id(delta.id) == snapshot.keys_by_hash[delta.key_hash]
    assert len(snapshot.keys_by_hash) == len(loaded.keys_by_hash) + 1


def test_a_revoked_key_is_refused(loaded: registry.Snapshot) -> None:
    delta, raw = add_key("delta")
    snapshot = registry.catch_up(loaded)

    delta.revoke()
    snapshot = registry.catch_up(snapshot)

    assert snapshot.keys_read == 1
    assert refusal(snapshot, raw) == "revoked_api_key"
    assert snapshot.key_by_id(delta.id) is None


def test_a_deleted_key_is_dropped(loaded: registry.Snapshot) -> None:
    delta, raw = add_key("delta")
    snapshot = registry.catch_up(loaded)

    ServiceKey.objects.filter(pk=delta.pk).delete()
    snapshot = registry.catch_up(snapshot)

    assert snapshot.keys_read == 1
    assert refusal(snapshot, raw) == "invalid_api_key"
    assert delta.id not in snapshot.key_hashes_by_id
    assert len(snapshot.keys_by_hash) == len(loaded.keys_by_hash)


def test_a_key_given_a_new_secret_drops_the_old_one(loaded: registry.Snapshot) -> None:
    delta, old_raw = add_key("delta")
    snapshot = registry.catch_up(loaded)

    new_raw = assign_new_key(delta)
    delta.save()
    snapshot = registry.catch_up(snapshot)

    assert refusal(snapshot, old_raw) == "invalid_api_key"
    assert snapshot.authenticate(f"Bearer {new_raw}").id == delta.id


def test_a_key_change_whose_log_fails_is_not_saved(db: None) -> None:
    # Else the row would say revoked while no process hears of it.
    key, _ = add_key("leaky")

    def log_fails(sender: type, **kwargs: object) -> None:
        raise RuntimeError("the log could not be written")

    post_save.connect(log_fails, sender=ServiceKey, dispatch_uid="test-log-fails")
    try:
        with pytest.raises(RuntimeError):
            key.revoke()
    finally:
        post_save.disconnect(dispatch_uid="test-log-fails", sender=ServiceKey)

    assert ServiceKey.objects.get(pk=key.pk).revoked_at is None


def test_a_bulk_update_without_signals_is_logged_too(loaded: registry.Snapshot) -> None:
    ServiceKey.objects.filter(name__in=["alpha", "beta"]).update(revoked_at=timezone.now())

    snapshot = registry.catch_up(loaded)

    assert snapshot.keys_read == 2
    revoked = {key.name for key in snapshot.keys_by_hash.values() if key.revoked}
    assert revoked == {"alpha", "beta"}


def test_keys_made_in_bulk_are_logged(loaded: registry.Snapshot) -> None:
    rows = [ServiceKey(name=f"bulk-{n}") for n in range(3)]
    for row in rows:
        assign_new_key(row)
    ServiceKey.objects.bulk_create(rows)

    snapshot = registry.catch_up(loaded)

    assert snapshot.keys_read == 3
    assert {row.key_hash for row in rows} <= snapshot.keys_by_hash.keys()


def test_deleting_a_namespace_reads_its_keys_again(db: None) -> None:
    team = CacheNamespace.objects.create(name="team")
    carol, _ = add_key("carol", cache_namespace=team)
    add_key("dave")
    loaded = registry.load_snapshot()
    assert loaded.keys_by_hash[carol.key_hash].cache_namespace_id == team.id

    team.delete()
    snapshot = registry.catch_up(loaded)

    assert snapshot.keys_read == 1
    assert snapshot.keys_by_hash[carol.key_hash].cache_namespace_id is None


def test_a_route_change_reads_no_key(loaded: registry.Snapshot) -> None:
    make_model("demo", [make_endpoint("demo-ep", "http://127.0.0.1:9/v1")])

    snapshot = registry.catch_up(loaded)

    assert snapshot.keys_read == 0
    assert snapshot.keys_by_hash is loaded.keys_by_hash
    assert list(snapshot.routes) == ["demo"]


def test_nothing_changed_keeps_the_same_snapshot(loaded: registry.Snapshot) -> None:
    add_key("delta")
    snapshot = registry.catch_up(loaded)

    assert registry.catch_up(snapshot) is snapshot


def test_a_snapshot_older_than_the_log_is_read_whole(loaded: registry.Snapshot) -> None:
    add_key("delta")
    snapshot = registry.catch_up(loaded)
    add_key("epsilon")
    # As if the log had been pruned past the process's version (it was away an hour).
    RegistryVersion.objects.filter(pk=1).update(log_since=snapshot.version + 1)
    add_key("zeta")

    caught_up = registry.catch_up(snapshot)

    assert caught_up.keys_read == ServiceKey.objects.count() == 6


def test_an_emptied_registry_is_read_whole(loaded: registry.Snapshot) -> None:
    add_key("delta")
    snapshot = registry.catch_up(loaded)
    ServiceKey.objects.filter(name="alpha").delete()
    # What the tests' TRUNCATE does: the version and its log gone.
    RegistryVersion.objects.all().delete()
    ServiceKeyChange.objects.all().delete()

    caught_up = registry.catch_up(snapshot)

    assert caught_up.keys_read == 3
    assert {key.name for key in caught_up.keys_by_hash.values()} == {"beta", "gamma", "delta"}


def test_more_changed_keys_than_the_log_holds_are_read_whole(
    loaded: registry.Snapshot, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(models, "KEY_LOG_MAX_KEYS", 1)
    ServiceKey.objects.filter(name__in=["alpha", "beta"]).update(name="renamed")

    snapshot = registry.catch_up(loaded)

    assert snapshot.keys_read == 3
    version = RegistryVersion.objects.get(pk=1).version
    assert not ServiceKeyChange.objects.filter(version=version).exists()  # no row per key


def test_a_process_behind_by_more_changes_than_it_applies_reads_whole(
    loaded: registry.Snapshot, monkeypatch: pytest.MonkeyPatch
) -> None:
    add_key("delta")
    add_key("epsilon")
    monkeypatch.setattr(registry, "KEY_LOG_MAX_KEYS", 1)

    snapshot = registry.catch_up(loaded)

    assert snapshot.keys_read == 5


def test_the_log_keeps_an_hour_and_then_asks_for_full_reloads(
    loaded: registry.Snapshot,
) -> None:
    version = RegistryVersion.objects.get(pk=1).version
    two_hours_ago = version - 2 * models.KEY_LOG_RETENTION_NS - 1
    ServiceKeyChange.objects.update(version=two_hours_ago)
    RegistryVersion.objects.filter(pk=1).update(log_since=two_hours_ago - 1)
    stale = registry.Snapshot(two_hours_ago, loaded.keys_by_hash, {}, {})

    add_key("delta")

    row = RegistryVersion.objects.get(pk=1)
    assert row.log_since == row.version - models.KEY_LOG_RETENTION_NS
    assert list(ServiceKeyChange.objects.values_list("version", flat=True)) == [row.version]
    assert registry.catch_up(stale).keys_read == 4
