"""The read-only mapping that get_mapping() returns, and its metadata."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal, NoReturn

from .exceptions import ReadOnlyMappingError

Tier = Literal["l1", "l2", "origin"]


@dataclass(frozen=True, slots=True)
class MappingMeta:
    """Where a mapping came from and what it holds.

    ``tier`` is the tier that served the latest ``get_mapping()`` of this copy (``l1`` once it is
    held in memory); ``source`` is where this copy was loaded from. ``loaded_at`` is when
    its data was read (the start of the query that produced it), in epoch
    seconds; ``validated_at``, when its tables were last found unchanged by a revalidation
    (None: never revalidated). ``nbytes`` is an estimate of the memory the copy uses.
    """

    name: str
    tier: Tier
    source: Tier
    generation: int
    loaded_at: float
    rows: int
    fingerprint: str
    null_keys_skipped: int = 0
    nbytes: int = 0
    query_id: str | None = None
    reused_previous_result: bool | None = None
    validated_at: float | None = None  # when its tables were last found unchanged (epoch s)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class MappingView(dict):  # type: ignore[type-arg]
    """A read-only dict: lookups, ``in``, ``len`` and iteration run at dict speed.

    Every method that would change it raises ReadOnlyMappingError. ``meta`` carries the
    metadata; ``dict(view)`` or ``view.copy()`` gives a mutable copy.
    """

    __slots__ = ("meta",)
    meta: MappingMeta

    def _readonly(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise ReadOnlyMappingError(
            f"mapping {self.meta.name!r} is read-only: it is shared by every caller in this "
            "container. Copy it first (dict(m)) if you need to change it."
        )

    __setitem__ = __delitem__ = clear = pop = popitem = setdefault = update = _readonly
    __ior__ = _readonly

    def __repr__(self) -> str:
        m = self.meta
        return (
            f"<MappingView {m.name!r} rows={len(self)} tier={m.tier} generation={m.generation} "
            f"fingerprint={m.fingerprint}>"
        )

    def __reduce__(self) -> Any:
        raise TypeError("MappingView is not picklable; pickle dict(m) instead")
