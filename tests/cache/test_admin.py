"""Cache admin pages: entries name their namespace by what is never reused, and show its name."""

from django.test import Client as BrowserClient
from django.utils import timezone

from cache.models import CacheEntry, CacheNamespace
from routing.keys import create_service_key


def test_entries_show_the_name_of_their_shared_or_own_namespace(
    admin_browser: BrowserClient,
) -> None:
    team = CacheNamespace.objects.create(name="search-team")
    key, _ = create_service_key("carol-indexer")
    now = timezone.now()
    for entry_key, namespace in (("a", f"ns:{team.pk}"), ("b", f"key:{key.key_hash[:16]}")):
        CacheEntry.objects.create(
            key=entry_key, namespace=namespace, model="m", partition="p", prompt_text="x",
            response={}, created_at=now, expires_at=now,
        )  # fmt: skip

    entries = admin_browser.get("/admin/cache/cacheentry/").content.decode()
    namespaces = admin_browser.get("/admin/cache/cachenamespace/").content.decode()

    assert f"ns:{team.pk} (search-team)" in entries
    assert f"key:{key.key_hash[:16]} (carol-indexer)" in entries
    assert f"ns:{team.pk}" in namespaces
