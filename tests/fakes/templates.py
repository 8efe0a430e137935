"""An in-memory fake of the template store (store.Templates), for the unit tests; it counts
reads (`reads`), as DynamoDB would bill them."""

from __future__ import annotations

import threading
from collections.abc import Callable

from outpost.records import LayoutUsers, TemplateHead, TemplateVersion
from outpost.store import Page


class FakeTemplates:
    def __init__(self) -> None:
        self.heads: dict[str, TemplateHead] = {}
        self.versions: dict[tuple[str, int], TemplateVersion] = {}
        self.reads = 0
        self._lock = threading.Lock()

    def head(self, alias: str) -> TemplateHead | None:
        self.reads += 1
        return self.heads.get(alias)

    def version(self, alias: str, version: int) -> TemplateVersion | None:
        self.reads += 1
        return self.versions.get((alias, version))

    def create_template(self, first: TemplateVersion) -> bool:
        with self._lock:
            if first.alias in self.heads:
                return False
            self.heads[first.alias] = TemplateHead(first.alias, 1, first.name, first.kind, first.layout,
                                                   first.created_at, first.created_at)
            self.versions[(first.alias, 1)] = first
            return True

    def add_version(self, alias: str, make: Callable[[int], TemplateVersion]) -> TemplateVersion | None:
        with self._lock:
            head = self.heads.get(alias)
            if head is None:
                return None
            v = make(head.latest + 1)
            self.versions[(alias, v.version)] = v
            self.heads[alias] = head.replace(latest=v.version, name=v.name, kind=v.kind, layout=v.layout,
                                             updated_at=v.created_at)
            return v

    def templates(self, *, limit: int, after: str | None = None) -> Page[TemplateHead]:
        aliases = sorted(a for a in self.heads if after is None or a > after)
        page = [self.heads[a] for a in aliases[:limit]]
        more = len(aliases) > limit
        return Page(page, {"alias": page[-1].alias} if more else None, cursor=page[-1].alias if more else None)

    def delete_template(self, alias: str) -> bool:
        with self._lock:
            head = self.heads.pop(alias, None)
            if head is None:
                return False
            for n in range(1, head.latest + 1):
                self.versions.pop((alias, n), None)
            return True

    def layout_users(self, layout: str, *, limit: int = 5) -> LayoutUsers:
        self.reads += 1
        users = sorted(a for a, h in self.heads.items() if h.layout == layout)
        return LayoutUsers(layout, len(users), tuple(users[:limit]))
