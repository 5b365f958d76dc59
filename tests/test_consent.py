"""Terms, age and consent over real HTTP: registration asks for the policy (and the age
rule) through m.login.terms, the accepted version is stored, users who have not accepted
the current version cannot send until they do on the consent page, and a new version
reaches every user as a server notice with their own link."""

from __future__ import annotations

import copy
import re
import time
from typing import Any
from urllib.parse import parse_qs, urlparse

import requests

from tests.harness import Client, ServerProcess, create_room, db_rows, q
from tests.test_rooms_basic import send
from tests.test_shared_secret_registration import shared_secret_register

CONSENT = {
    "consent": {"enabled": True, "version": "1.0", "minimum_age": 16},
    "server_notices": {"system_mxid_localpart": "notices"},
}


def consent_server(server_factory: Any) -> ServerProcess:
    server: ServerProcess = server_factory(copy.deepcopy(CONSENT))
    return server


def accepted(server: ServerProcess, user_id: str) -> str | None:
    rows = db_rows(server, "SELECT consent_version FROM users WHERE user_id = ?", (user_id,))
    return rows[0][0] if rows else None


def accept_form(server: ServerProcess, link: str, age: bool = True) -> requests.Response:
    """Submit the consent page's form as a browser without JavaScript would."""
    page = requests.get(link, timeout=10)
    assert page.status_code == 200 and "<form" in page.text, page.text[:200]
    fields = dict(re.findall(r'<input type="hidden" name="(\w)" value="([^"]*)"', page.text))
    if age:
        fields["age"] = "yes"
    return requests.post(server.base_url + "/_matrix/consent", data=fields, timeout=10)


def test_registration_asks_for_the_policy_and_the_age_rule(server_factory: Any) -> None:
    server = consent_server(server_factory)
    client = Client(server)
    flows = client.get("register", token=False).body
    assert flows["flows"] == [{"stages": ["m.login.terms"]}]
    policies = flows["params"]["m.login.terms"]["policies"]
    assert policies["privacy_policy"]["version"] == "1.0"
    assert policies["privacy_policy"]["en"]["url"].endswith("/_matrix/consent")
    assert policies["minimum_age"]["en"]["name"] == "I am at least 16 years old"
    body = {"username": "newcomer", "password": "a long enough password"}
    first = client.post("register", body, token=False)
    assert first.status == 401 and "m.login.terms" in first.body["params"]
    # A client that skips the terms gets nowhere.
    skipped = client.post("register", {**body, "auth": {"type": "m.login.dummy",
                          "session": first.body["session"]}}, token=False)  # fmt: skip
    assert skipped.status == 401
    done = client.post("register", {**body, "auth": {"type": "m.login.terms",
                       "session": first.body["session"]}}, token=False)  # fmt: skip
    assert done.status == 200, done
    client.adopt(done.body)
    assert accepted(server, done.body["user_id"]) == "1.0"
    room_id = create_room(client)
    send(client, room_id, "allowed: the policy is accepted")
    # The page is public, without the form when the link names nobody.
    page = requests.get(server.base_url + "/_matrix/consent", timeout=10)
    assert page.status_code == 200 and "at least 16" in page.text and "<form" not in page.text
    assert "default-src 'none'" in page.headers["Content-Security-Policy"]


def test_sending_is_refused_until_the_policy_is_accepted(server_factory: Any) -> None:
    server = consent_server(server_factory)
    user = shared_secret_register(server)  # made by an admin: never saw the policy
    refused = user.post("createRoom", {})
    assert refused.status == 403 and refused.body["errcode"] == "M_CONSENT_NOT_GIVEN", refused
    link = refused.body["consent_uri"]
    assert link.startswith(server.base_url) and "/_matrix/consent?" in link
    forged = dict(parse_qs(urlparse(link).query))
    forged_link = link.replace(forged["h"][0], "0" * 64)
    assert "<form" not in requests.get(forged_link, timeout=10).text
    no_age = accept_form(server, link, age=False)
    assert no_age.status_code == 400 and accepted(server, user.user_id or "") is None
    ok = accept_form(server, link)
    assert ok.status_code == 200 and "Thank you" in ok.text
    assert accepted(server, user.user_id or "") == "1.0"
    room_id = create_room(user)
    send(user, room_id, "now allowed")


def test_a_new_version_is_announced_and_must_be_accepted(server_factory: Any) -> None:
    server = consent_server(server_factory)
    user = shared_secret_register(server)
    assert accept_form(server, user.post("createRoom", {}).body["consent_uri"]).status_code == 200
    room_id = create_room(user)
    server.config["consent"]["version"] = "2.0"
    server.restart()
    user.token = user.login(user.user_id or "").body["access_token"]
    blocked = user.put(f"rooms/{q(room_id)}/send/m.room.message/t1", {"msgtype": "m.text",
                       "body": "not yet"})  # fmt: skip
    assert blocked.status == 403 and blocked.body["errcode"] == "M_CONSENT_NOT_GIVEN"
    # The notice: an invite to the notices room, holding the user's own link.
    deadline = time.monotonic() + 15
    link = None
    while link is None and time.monotonic() < deadline:
        invites = user.get("sync").body["rooms"]["invite"]
        for notices_room in invites:
            assert user.post(f"join/{q(notices_room)}", {}).status == 200
        for room in user.get("sync").body["rooms"]["join"].values():
            for event in room["timeline"]["events"]:
                found = re.search(
                    r"https?://\S+/_matrix/consent\?\S+", event["content"].get("body", "")
                )
                if found:
                    link = found.group(0)
        time.sleep(0.2)
    assert link == blocked.body["consent_uri"]
    assert accept_form(server, link).status_code == 200
    assert accepted(server, user.user_id or "") == "2.0"
    send(user, room_id, "allowed again")
