"""Room versions 1 to 12 as data: every behaviour that differs between them is a flag here."""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class RoomVersion:
    identifier: str
    # 1: "$random:server" chosen by the origin; 2: base64 reference hash; 3: URL-safe base64.
    event_id_format: int
    # 1: the original algorithm; 2: state resolution v2; 21: v2.1 (room version 12).
    state_res: int
    # Redaction keeps ``allow`` in join rules (v8), ``join_authorised_via_users_server`` (v9).
    redaction_keeps_join_rule_allow: bool = False
    redaction_keeps_authorised_via: bool = False
    # v11: the updated redaction algorithm (MSC2176, MSC3821, MSC3989).
    updated_redaction_rules: bool = False
    # v1-5: ``m.room.aliases`` has its own auth rule.
    special_case_aliases_auth: bool = True
    # v6+: integers must be in [-(2**53)+1, (2**53)-1]; floats refused.
    strict_canonical_json: bool = False
    # v6+: ``notifications`` in power levels is checked by the auth rules.
    limit_notifications_power_levels: bool = False
    knock_join_rule: bool = False  # v7+
    restricted_join_rule: bool = False  # v8+
    knock_restricted_join_rule: bool = False  # v10+
    enforce_int_power_levels: bool = False  # v10+
    # v11: the creator is the create event's sender (no ``creator`` key).
    implicit_room_creator: bool = False
    # v11: ``redacts`` moves into ``content``.
    redacts_in_content: bool = False
    # v12: the room ID is the create event's reference hash; creators have infinite power.
    room_id_from_create_event: bool = False
    creators_infinite_power: bool = False
    # v5+: signing keys must be valid at the event's timestamp.
    enforce_key_validity: bool = False

    @property
    def uses_state_res_v2(self) -> bool:
        return self.state_res in (2, 21)


_V1 = RoomVersion("1", event_id_format=1, state_res=1)
_V2 = replace(_V1, identifier="2", state_res=2)
_V3 = replace(_V2, identifier="3", event_id_format=2)
_V4 = replace(_V3, identifier="4", event_id_format=3)
_V5 = replace(_V4, identifier="5", enforce_key_validity=True)
_V6 = replace(
    _V5,
    identifier="6",
    special_case_aliases_auth=False,
    strict_canonical_json=True,
    limit_notifications_power_levels=True,
)
_V7 = replace(_V6, identifier="7", knock_join_rule=True)
_V8 = replace(_V7, identifier="8", restricted_join_rule=True, redaction_keeps_join_rule_allow=True)
_V9 = replace(_V8, identifier="9", redaction_keeps_authorised_via=True)
_V10 = replace(_V9, identifier="10", knock_restricted_join_rule=True, enforce_int_power_levels=True)
_V11 = replace(
    _V10,
    identifier="11",
    updated_redaction_rules=True,
    implicit_room_creator=True,
    redacts_in_content=True,
)
_V12 = replace(
    _V11,
    identifier="12",
    state_res=21,
    room_id_from_create_event=True,
    creators_infinite_power=True,
)

KNOWN_ROOM_VERSIONS: dict[str, RoomVersion] = {
    v.identifier: v for v in (_V1, _V2, _V3, _V4, _V5, _V6, _V7, _V8, _V9, _V10, _V11, _V12)
}


def get_room_version(identifier: str) -> RoomVersion | None:
    return KNOWN_ROOM_VERSIONS.get(identifier)
