"""Purging a model's cached answers when a change points it to another upstream.

Cache keys hold the model name clients send, not the upstream behind it, so answers
cached from one upstream would be served after the model was pointed to another. An
upstream is what decides the answers: the provider, the base URL (up to a trailing
slash and the case of scheme and host) and the upstream model id. An endpoint's name,
API key, timeouts, retries and prices do not change the answers.

A model is repointed, and its cache purged, when a change
- takes away an upstream that served it (an endpoint removed from its chain, disabled
  or deleted, or its provider, URL or upstream model changed), or
- puts another upstream first (its primary, which gives almost every answer).
Adding a fallback, or a second endpoint for an upstream it already calls, is not a
repoint: every answer cached before still comes from an upstream it calls.
"""

import functools
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from django.db import transaction

from cache import purge
from routing.models import Route, RouteEndpoint
from routing.upstreams import Upstream


@dataclass(frozen=True)
class Repoint:
    model_name: str
    before: tuple[Upstream, ...]  # in chain order, each once
    after: tuple[Upstream, ...]

    @property
    def reason(self) -> str:
        reasons = []
        if gone := [str(upstream) for upstream in self.before if upstream not in self.after]:
            reasons.append(f"it no longer calls {', '.join(gone)}")
        if self.after and self.before[0] != self.after[0]:
            reasons.append(f"its primary upstream is now {self.after[0]}")
        return "; ".join(reasons)


@contextmanager
def purging_repointed_models() -> Iterator[list[Repoint]]:
    """Run the block in a transaction; once it commits, purge the cache of every model the
    block repointed. The list yielded is filled with those models when the block ends.

    After the commit, not before: until then every process routes to the old upstream,
    and what it stores after a purge is new to that purge. (What a process answers from
    the old route until its next registry reload, about a second, is stored after the
    purge, but under the old primary upstream's keys: cache/keys.py, RouteConfig.upstream.)
    """
    repoints: list[Repoint] = []
    with transaction.atomic():
        before = upstreams_by_model()
        yield repoints
        repoints.extend(find_repoints(before, upstreams_by_model()))
        for repoint in repoints:
            transaction.on_commit(functools.partial(purge.purge, model=repoint.model_name))


def upstreams_by_model() -> dict[str, tuple[Upstream, ...]]:
    """Every model's upstreams as the router calls them: enabled endpoints, in chain order
    (each once). A disabled model keeps its upstreams: it serves nothing until enabled."""
    chains: dict[str, list[Upstream]] = {
        name: [] for name in Route.objects.values_list("model_name", flat=True)
    }
    links = (
        RouteEndpoint.objects.filter(endpoint__enabled=True)
        .order_by("route_id", "position", "id")
        .values_list(
            "route__model_name", "endpoint__provider", "endpoint__base_url",
            "endpoint__upstream_model",
        )
    )  # fmt: skip
    for model_name, provider, base_url, upstream_model in links:
        upstream = Upstream.of(provider, base_url, upstream_model)
        if upstream not in chains[model_name]:
            chains[model_name].append(upstream)
    return {name: tuple(chain) for name, chain in chains.items()}


def find_repoints(
    before: dict[str, tuple[Upstream, ...]], after: dict[str, tuple[Upstream, ...]]
) -> list[Repoint]:
    """The models whose cached answers may come from an upstream they no longer call first
    or at all (a model renamed or deleted calls nothing under its old name)."""
    repoints = []
    for model_name, old in sorted(before.items()):
        new = after.get(model_name, ())
        if old and (any(upstream not in new for upstream in old) or (new and new[0] != old[0])):
            repoints.append(Repoint(model_name, before=old, after=new))
    return repoints
