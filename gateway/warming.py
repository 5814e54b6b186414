"""Cache warming: answer prompts before clients ask, through the same router.

Two sources: the admin-managed warm-up prompts, and the most requested answers
(counted from request records) that are about to expire. Warming calls are recorded
with `is_warming` set, never as client traffic.
"""

from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db.models import Count
from django.utils import timezone

from beastmode.lib import redaction
from beastmode.lib.chat_request import ChatRequest
from beastmode.lib.errors import GatewayError
from cache.models import CacheEntry
from gateway import answer
from gateway.exchange import Exchange, new_request_id
from gateway.models import WarmupPrompt
from monitoring import recorder
from monitoring.models import RequestRecord
from routing import registry

_STREAMING_FIELDS = frozenset({"stream", "stream_options"})


def warm_prompt(prompt_id: int) -> str:
    """Answer one warm-up prompt and store it; returns what happened."""
    prompt = WarmupPrompt.objects.filter(pk=prompt_id, enabled=True).first()
    if prompt is None:
        return "skipped"
    snapshot = registry.reload()
    key = snapshot.key_by_id(prompt.service_key_id)
    try:  # again here: a prompt saved before the checks, or not through admin
        body = prompt.chat_request().body
    except GatewayError as error:
        result = f"invalid, not sent: {error.message}"
    else:
        result = _answer_and_store(snapshot, key, body) if key else "the service key is gone"
    prompt.last_warmed_at = timezone.now()
    prompt.last_result = redaction.redact(result)[:200]
    prompt.save(update_fields=["last_warmed_at", "last_result"])
    return result


def refresh_expiring() -> dict[str, str]:
    """Re-answer the most requested cached answers that expire within the horizon."""
    now = timezone.now()
    popular = (
        RequestRecord.objects.filter(created_at__gte=now - timedelta(days=1), is_warming=False)
        .exclude(cache_entry_key="")
        .values("cache_entry_key")
        .annotate(requests=Count("id"))
        .order_by("-requests")
        .values_list("cache_entry_key", flat=True)[: settings.CACHE_REFRESH_LIMIT * 4]
    )
    expiring = CacheEntry.objects.filter(
        key__in=list(popular),
        expires_at__gt=now,
        expires_at__lte=now + timedelta(seconds=settings.CACHE_REFRESH_HORIZON_S),
    )[: settings.CACHE_REFRESH_LIMIT]
    snapshot = registry.reload()
    results = {}
    for entry in expiring:
        key = snapshot.key_for_namespace(entry.namespace, entry.model)
        lifetime_s = round((entry.expires_at - entry.created_at).total_seconds())
        results[entry.key] = (
            _answer_and_store(snapshot, key, entry.request, lifetime_s)
            if key
            else "no usable key for the namespace and model"
        )
    return results


def _answer_and_store(
    snapshot: registry.Snapshot,
    key: registry.KeyConfig,
    body: dict[str, Any],
    ttl_s: int | None = None,
) -> str:
    """Answer ``body`` upstream, without streaming (the answer serves streaming requests
    too; the cache key ignores ``stream``), and store it for ``ttl_s`` (else the model's)."""
    exchange = Exchange(
        request_id=new_request_id(None), method="WARM", path="/warming", is_warming=True
    )
    exchange.key, exchange.model = key, str(body.get("model", ""))
    body = {k: v for k, v in body.items() if k not in _STREAMING_FIELDS}
    chat = ChatRequest(
        model=exchange.model,
        stream=False,
        include_usage=False,
        body=body,
        cache_field={"ttl": ttl_s} if ttl_s else None,
    )
    try:
        question = answer.Question(
            key=key,
            route=snapshot.resolve(key, chat.model),
            chat=chat,
            cache_control="no-cache",  # always a fresh answer
            store_durably=True,
        )
        reply = answer.answer_blocking(exchange, question)
    except GatewayError as error:
        exchange.finish(status=error.status, error=error)
        return f"failed: {error.error_class}"
    finally:
        recorder.flush_or_leave_to_writer()
    return "stored" if reply.stored else "answered, not storable"
