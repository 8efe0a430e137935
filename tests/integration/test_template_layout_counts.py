"""Attacks on a layout's use counts (TemplateStore, s17d) on DynamoDB Local: a template moving from
one layout to another, deleted before its layout, versions of one template racing between layouts
from threads with their own clients, and a layout made before the count (the heads' fallback)
gaining and losing counted users. After each, the count and the named users are exactly the
templates whose latest version names the layout, and a layout is deleted only when none does."""

from __future__ import annotations

import random
import secrets
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from outpost.errors import LayoutInUseError
from outpost.records import TemplateVersion
from outpost.store import TemplateStore, codec
from outpost.templates.service import TemplateService


def _store(local_stack: Any) -> TemplateStore:
    import boto3

    keys = {"aws_access_key_id": local_stack.env["AWS_ACCESS_KEY_ID"],
            "aws_secret_access_key": local_stack.env["AWS_SECRET_ACCESS_KEY"]}
    ddb = boto3.client("dynamodb", endpoint_url=local_stack.dynamodb_endpoint,
                       region_name=local_stack.env.get("AWS_DEFAULT_REGION", "us-east-1"), **keys)
    return TemplateStore(ddb, local_stack.stack.physical["TemplatesTable"], sleep=lambda s: None)


def _name(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


def _users(store: TemplateStore, layout: str) -> tuple[int, list[str]]:
    u = store.layout_users(layout, limit=50)
    return u.count, sorted(u.aliases)


def _expected(store: TemplateStore, aliases: list[str], layout: str) -> list[str]:
    return sorted(a for a in aliases if (h := store.head(a)) is not None and h.layout == layout)


def test_counts_follow_a_template_between_layouts_and_its_delete(local_stack: Any) -> None:
    store = _store(local_stack)
    s = TemplateService(store)
    a, b = _name("lay-a"), _name("lay-b")
    for layout in (a, b):
        s.create(layout, {"name": "l", "kind": "layout", "html": "<div>{{{@content}}}</div>"})
    t, u = _name("tpl"), _name("tpl")
    s.create(t, {"name": "t", "subject": "s", "html": "x", "layout": a})
    s.create(u, {"name": "u", "subject": "s", "html": "x", "layout": a})
    assert _users(store, a) == (2, sorted([t, u])) and _users(store, b) == (0, [])
    s.update(t, {"layout": b})  # A -> B: the counts move
    assert _users(store, a) == (1, [u]) and _users(store, b) == (1, [t])
    s.update(t, {"html": "y"})  # a version that keeps its layout moves nothing
    assert _users(store, b) == (1, [t])
    s.update(t, {"layout": None})
    s.update(u, {"layout": b})
    assert _users(store, a) == (0, []) and _users(store, b) == (1, [u])
    s.delete(a)  # no user left: deleted
    with pytest.raises(LayoutInUseError):
        s.delete(b)
    s.delete(u)  # the template first, then its layout
    assert _users(store, b) == (0, [])
    s.delete(b)
    s.delete(t)
    assert store.head(a) is None and store.head(b) is None


def test_versions_racing_between_layouts_from_threads_leave_exact_counts(local_stack: Any) -> None:
    """8 threads with their own clients, behind a barrier, each write 6 versions of the same 3
    templates, each version naming layout A, B or none at random."""
    setup = _store(local_stack)
    s = TemplateService(setup)
    a, b = _name("lay-a"), _name("lay-b")
    for layout in (a, b):
        s.create(layout, {"name": "l", "kind": "layout", "html": "{{{@content}}}"})
    aliases = [_name("tpl") for _ in range(3)]
    for alias in aliases:
        s.create(alias, {"name": "t", "subject": "s", "html": "x", "layout": a})
    gate = threading.Barrier(8)

    def writer(seed: int) -> int:
        store, rng = _store(local_stack), random.Random(seed)
        gate.wait()
        for _ in range(6):
            alias, layout = rng.choice(aliases), rng.choice([a, b, None])
            store.add_version(alias, lambda n, al=alias, la=layout: TemplateVersion(
                al, n, "t", subject="s", html=f"v{n}", layout=la))
        return 6

    with ThreadPoolExecutor(max_workers=8) as pool:
        assert sum(pool.map(writer, range(8))) == 48
    assert sum(setup.head(x).latest for x in aliases) == 3 + 48  # type: ignore[union-attr]
    for layout in (a, b):
        want = _expected(setup, aliases, layout)
        assert _users(setup, layout) == (len(want), want), layout
    for alias in aliases:
        s.delete(alias)
    for layout in (a, b):
        assert _users(setup, layout) == (0, [])
        s.delete(layout)


def test_a_layout_made_before_the_count_keeps_its_old_users_when_counted_ones_come_and_go(
        local_stack: Any) -> None:
    """A layout without its count item (made before s17d) used by an old template: a new user,
    then the old one moving away, then the new one deleted; the delete is refused while any
    template's latest version names it, and the count never goes below what the heads say."""
    store = _store(local_stack)
    s = TemplateService(store)
    frame, other = _name("old-lay"), _name("lay")
    s.create(frame, {"name": "l", "kind": "layout", "html": "{{{@content}}}"})
    s.create(other, {"name": "l", "kind": "layout", "html": "{{{@content}}}"})
    store.ddb.delete_item(TableName=store.table, Key=store._count_key(frame))  # noqa: SLF001 - as before the count
    old = _name("old-user")
    store.ddb.put_item(TableName=store.table, Item=codec().item(
        {"pk": "TEMPLATES", "sk": old, "alias": old, "latest": 1, "name": "n", "kind": "standard", "layout": frame}))
    store.ddb.put_item(TableName=store.table, Item=store._version_item(  # noqa: SLF001
        TemplateVersion(old, 1, "n", subject="s", html="x", layout=frame)))
    new = _name("tpl")
    s.create(new, {"name": "t", "subject": "s", "html": "x", "layout": frame})
    assert _users(store, frame) == (2, sorted([old, new]))
    with pytest.raises(LayoutInUseError):
        s.delete(frame)
    s.update(old, {"layout": other})  # the old user leaves: the counted -1 does not hide the new one
    assert _users(store, frame) == (1, [new]) and _users(store, other) == (1, [old])
    with pytest.raises(LayoutInUseError):
        s.delete(frame)
    s.delete(new)
    assert _users(store, frame) == (0, [])
    s.delete(frame)
    s.delete(old)
    s.delete(other)
