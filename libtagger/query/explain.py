"""Why a track's file holds the genre it holds: one sentence for ``libtagger show``.

Read from what the database knows (the last scan's reading of the file's tags, the decision,
every tag write), so that ``show`` answers without opening the file.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from libtagger.config import TagConfig


def tag_state(row: dict[str, Any], writes: Sequence[dict[str, Any]], tags: TagConfig) -> str:
    """What libtagger did to the file's genre, or why it wrote nothing.

    ``row`` is a ``listing.track_rows`` record with its ``decision``; ``writes`` its tag
    writes, oldest first (``kind``, ``state``, ``after``, ``error``, ``at``); ``tags`` the
    current ``[tags]`` settings (the policy a write would follow now).
    """
    decision = row.get("decision")
    if row["status"] != "done" or decision is None:
        return "nothing written: not classified" + (
            f" ({row['last_error']})" if row.get("last_error") else "")
    ours = [w for w in writes if w["kind"] == "write"]
    last = ours[-1] if ours else None
    if last is not None and last["state"] in _PENDING:
        return _PENDING[last["state"]].format(error=last["error"] or "no reason recorded")
    if last is not None and last["state"] == "undone":
        return ("not written again: you undid libtagger's genre on this file "
                "(`libtagger write --rewrite-undone` writes it)")
    if row.get("written"):
        return f"libtagger wrote {row['written']} on {last['at'][:10] if last else '?'}"
    decided = decision.get("genres") or []
    if not decided:
        return f"nothing to write: {decision.get('reason')}"
    if not tags.write:
        return "not written: writing is disabled ([tags] write = false)"
    carried = row.get("tag")
    wanted = "; ".join(decided[: tags.max_genres])
    if carried and carried.casefold() == wanted.casefold():
        return f"nothing to write: the file already carries {carried}"
    if carried and tags.policy == "fill_empty":
        return (f"not written: the file has its own genre ({carried}) and the policy is "
                "fill_empty (`libtagger write --policy replace` or `append` changes that)")
    return f"not written yet (a --no-write or dry run?): `libtagger write` writes {wanted}"


_PENDING = {
    "deferred": "not written yet, left for the next scan: {error}",
    "failed": "the write failed: {error}",
    "planned": "a write was interrupted; the next scan or reconcile settles it",
}
