"""Profiles: display name, avatar, custom fields, validation and the size limit."""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import quote

from tests.harness import Client, ServerProcess, new_user


def profile_path(user_id: str | None, key: str | None = None) -> str:
    assert user_id is not None
    path = f"profile/{quote(user_id, safe='')}"
    return f"{path}/{quote(key, safe='')}" if key else path


def test_displayname_set_and_get_without_token(alice: Client, client: Client) -> None:
    resp = alice.put(profile_path(alice.user_id, "displayname"), {"displayname": "Alice ☃"})
    assert resp.status == 200, resp
    assert resp.body == {}
    resp = client.get(profile_path(alice.user_id, "displayname"), token=False)
    assert resp.status == 200, resp
    assert resp.body == {"displayname": "Alice ☃"}


def test_avatar_url_and_whole_profile(alice: Client, client: Client) -> None:
    avatar = "mxc://example.org/SEsfnsuifSDFSSEF"
    assert (
        alice.put(profile_path(alice.user_id, "displayname"), {"displayname": "Al"}).status == 200
    )
    resp = alice.put(profile_path(alice.user_id, "avatar_url"), {"avatar_url": avatar})
    assert resp.status == 200, resp
    resp = client.get(profile_path(alice.user_id, "avatar_url"), token=False)
    assert resp.status == 200
    assert resp.body == {"avatar_url": avatar}
    resp = client.get(profile_path(alice.user_id), token=False)
    assert resp.status == 200, resp
    assert resp.body["displayname"] == "Al"
    assert resp.body["avatar_url"] == avatar


def test_custom_field_set_get_delete(alice: Client, bob: Client) -> None:
    key = "org.example.pronouns"
    resp = alice.put(profile_path(alice.user_id, key), {key: "they/them"})
    assert resp.status == 200, resp
    resp = bob.get(profile_path(alice.user_id, key))
    assert resp.status == 200
    assert resp.body == {key: "they/them"}
    assert bob.get(profile_path(alice.user_id)).body[key] == "they/them"

    # Custom fields may hold any JSON value.
    assert alice.put(profile_path(alice.user_id, key), {key: {"a": [1, 2]}}).status == 200
    assert alice.get(profile_path(alice.user_id, key)).body == {key: {"a": [1, 2]}}

    resp = alice.delete(profile_path(alice.user_id, key))
    assert resp.status == 200, resp
    resp = alice.get(profile_path(alice.user_id, key))
    assert resp.status == 404
    assert resp.body["errcode"] == "M_NOT_FOUND"
    assert key not in alice.get(profile_path(alice.user_id)).body


def test_invalid_key_is_400(alice: Client) -> None:
    for key in ("pronouns", "Org.Example.Caps", "org..example", "org.example-dash"):
        resp = alice.put(profile_path(alice.user_id, key), {key: "x"})
        assert resp.status == 400, (key, resp)
        assert resp.body["errcode"] == "M_INVALID_PARAM", (key, resp)
    long_key = "org.example." + "a" * 300
    resp = alice.put(profile_path(alice.user_id, long_key), {long_key: "x"})
    assert resp.status == 400
    assert resp.body["errcode"] == "M_KEY_TOO_LARGE"


def test_avatar_url_must_be_mxc(alice: Client) -> None:
    for bad in ("https://example.org/cat.png", 42):
        resp = alice.put(profile_path(alice.user_id, "avatar_url"), {"avatar_url": bad})
        assert resp.status == 400, (bad, resp)
    assert alice.get(profile_path(alice.user_id, "avatar_url")).status == 404


def test_missing_key_in_body_is_400(alice: Client) -> None:
    resp = alice.put(profile_path(alice.user_id, "displayname"), {"avatar_url": "mxc://a/b"})
    assert resp.status == 400
    assert resp.body["errcode"] == "M_MISSING_PARAM"


def test_cannot_set_another_users_profile(alice: Client, bob: Client) -> None:
    resp = alice.put(profile_path(bob.user_id, "displayname"), {"displayname": "pwned"})
    assert resp.status == 403, resp
    assert resp.body["errcode"] == "M_FORBIDDEN"
    resp = alice.delete(profile_path(bob.user_id, "displayname"))
    assert resp.status == 403, resp
    assert bob.get(profile_path(bob.user_id)).body.get("displayname") != "pwned"


def test_unknown_user_is_404(client: Client) -> None:
    nobody = f"@nobody_here:{client.server.server_name}"
    resp = client.get(profile_path(nobody), token=False)
    assert resp.status == 404, resp
    assert resp.body["errcode"] == "M_NOT_FOUND"
    resp = client.get(profile_path(nobody, "displayname"), token=False)
    assert resp.status == 404
    assert resp.body["errcode"] == "M_NOT_FOUND"


def test_profile_size_limit(alice: Client) -> None:
    key = "org.example.blob"
    # A large value still under the limit is accepted...
    resp = alice.put(profile_path(alice.user_id, key), {key: "x" * 60_000})
    assert resp.status == 200, resp
    # ...but another field that takes the whole profile past 64 KiB is not.
    other = "org.example.more"
    resp = alice.put(profile_path(alice.user_id, other), {other: "y" * 8_000})
    assert resp.status == 400, resp
    assert resp.body["errcode"] == "M_PROFILE_TOO_LARGE"
    resp = alice.put(profile_path(alice.user_id, key), {key: "x" * 70_000})
    assert resp.status == 400
    assert resp.body["errcode"] == "M_PROFILE_TOO_LARGE"
    # The rejected writes left the profile as it was.
    profile = alice.get(profile_path(alice.user_id)).body
    assert other not in profile
    assert len(profile[key]) == 60_000


def test_require_auth_for_profile_requests(
    server_factory: Callable[..., ServerProcess],
) -> None:
    srv = server_factory({"require_auth_for_profile_requests": True})
    user = new_user(srv)
    assert user.put(profile_path(user.user_id, "displayname"), {"displayname": "U"}).status == 200
    anonymous = Client(srv)
    for path in (profile_path(user.user_id), profile_path(user.user_id, "displayname")):
        resp = anonymous.get(path, token=False)
        assert resp.status == 401, (path, resp)
        assert resp.body["errcode"] == "M_MISSING_TOKEN"
        resp = user.get(path)
        assert resp.status == 200, (path, resp)
        assert resp.body["displayname"] == "U"
