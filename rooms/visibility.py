"""History visibility: may this user see this event? (The spec's server behaviour rules.)"""

from __future__ import annotations

from dataclasses import dataclass

KNOWN_VISIBILITIES = ("world_readable", "shared", "invited", "joined")


def normalise_visibility(value: object) -> str:
    """Missing or unknown values count as ``shared``."""
    return value if isinstance(value, str) and value in KNOWN_VISIBILITIES else "shared"


@dataclass(frozen=True)
class EventContext:
    """What the room looked like to one user at one event."""

    visibility_before: str
    membership_before: str
    # For m.room.history_visibility events and the user's own member events: the value
    # after the event, since either side may grant access.
    visibility_after: str | None = None
    membership_after: str | None = None
    # Whether the user joined the room at any point after the event was sent.
    joined_later: bool = False


def _allowed(visibility: str, membership: str, joined_later: bool) -> bool:
    if visibility == "world_readable":
        return True
    if membership == "join":
        return True
    if visibility == "shared" and joined_later:
        return True
    return visibility == "invited" and membership == "invite"


def may_see_event(context: EventContext) -> bool:
    visibilities = [context.visibility_before]
    if context.visibility_after is not None:
        visibilities.append(context.visibility_after)
    memberships = [context.membership_before]
    if context.membership_after is not None:
        memberships.append(context.membership_after)
    return any(_allowed(v, m, context.joined_later) for v in visibilities for m in memberships)
