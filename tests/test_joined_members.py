"""A room's joined members keep their servers counted as they join and leave."""

from __future__ import annotations

from homeserver.services.room_events import JoinedMembers


def test_servers_follow_joins_and_leaves() -> None:
    joined = JoinedMembers(["@a:one", "@b:one", "@c:two"])
    assert joined.servers() == {"one", "two"}
    joined.add("@a:one")  # already joined: counted once
    joined.discard("@a:one")
    assert joined.servers() == {"one", "two"}  # @b is still on one
    joined.discard("@b:one")
    joined.discard("@nobody:three")
    assert joined.servers() == {"two"}
    joined.add("@d:three")
    assert joined.servers() == {"two", "three"} and joined == {"@c:two", "@d:three"}
    # Set operations give plain sets, so a caller's result never claims to be the room's.
    assert type(joined - {"@c:two"}) is set
