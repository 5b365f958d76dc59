"""E-mail addresses on accounts, through a real SMTP server (aiosmtpd) run by the test:
validation links, adding and removing an address, signing in with it, resetting a
forgotten password, an optional address at registration."""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests
from aiosmtpd.controller import Controller

from tests.harness import PASSWORD, Client, ServerProcess, db_rows, free_port, new_user


class Inbox:
    def __init__(self) -> None:
        self.messages: list[tuple[list[str], str]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append((list(envelope.rcpt_tos), envelope.content.decode("utf-8")))
        return "250 OK"

    def wait_for(self, address: str, count: int = 1, timeout: float = 10) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [text for to, text in self.messages if address in to]
            if len(found) >= count:
                return found[count - 1]
            time.sleep(0.05)
        raise AssertionError(f"no mail for {address}: {self.messages}")


@pytest.fixture(scope="module")
def inbox() -> Iterator[tuple[Inbox, int]]:
    handler = Inbox()
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    yield handler, port
    controller.stop()


@pytest.fixture
def mail_server(
    server_factory: Callable[..., ServerProcess], inbox: tuple[Inbox, int]
) -> ServerProcess:
    return server_factory({"email": {
        "smtp_host": "127.0.0.1", "smtp_port": inbox[1],
        "require_transport_security": False, "notif_from": "Homeserver <hs@test.local>",
    }})  # fmt: skip


def address() -> str:
    return f"person{secrets.token_hex(4)}@Example.org"


def open_link(mail: str) -> requests.Response:
    import email
    import email.policy

    text = email.message_from_string(mail, policy=email.policy.default).get_content()
    links = re.findall(r"https?://\S+", text)
    assert links, mail
    return requests.get(links[0], timeout=10)


def validated_session(
    client: Client, inbox: Inbox, email: str, endpoint: str, attempt: int = 1
) -> dict[str, str]:
    secret = secrets.token_hex(8)
    before = len([1 for to, _ in inbox.messages if email.lower() in to])
    resp = client.post(endpoint, {"client_secret": secret, "email": email,
                                  "send_attempt": attempt}, token=False)  # fmt: skip
    assert resp.status == 200, resp
    page = open_link(inbox.wait_for(email.lower(), before + 1))
    assert page.status_code == 200, page.text
    assert "confirmed" in page.text
    return {"sid": resp.body["sid"], "client_secret": secret}


def test_add_sign_in_with_and_remove_an_address(
    mail_server: ServerProcess, inbox: tuple[Inbox, int]
) -> None:
    mails = inbox[0]
    alice = new_user(mail_server)
    email = address()
    creds = validated_session(alice, mails, email, "account/3pid/email/requestToken")
    challenge = alice.post("account/3pid/add", creds)
    assert challenge.status == 401
    added = alice.post("account/3pid/add", {**creds, "auth": alice.password_auth(
        session=challenge.body["session"])})  # fmt: skip
    assert added.status == 200, added
    listed = alice.get("account/3pid").body["threepids"]
    assert [(t["medium"], t["address"]) for t in listed] == [("email", email.lower())]
    assert alice.get("capabilities").body["capabilities"]["m.3pid_changes"] == {"enabled": True}

    login = Client(mail_server).post("login", {"type": "m.login.password", "password": PASSWORD,
        "identifier": {"type": "m.id.thirdparty", "medium": "email",
                       "address": email.upper()}}, token=False)  # fmt: skip
    assert login.status == 200, login
    assert login.body["user_id"] == alice.user_id

    bob = new_user(mail_server)
    taken = bob.post("account/3pid/email/requestToken", {"client_secret": "abc",
                     "email": email, "send_attempt": 1})  # fmt: skip
    assert taken.status == 400 and taken.body["errcode"] == "M_THREEPID_IN_USE"
    assert alice.post("account/3pid/unbind", {"medium": "email", "address": email}).body == {
        "id_server_unbind_result": "no-support"
    }
    assert alice.post("account/3pid/bind", {}).status == 400
    # Addresses compare as stored: case-folded and trimmed.
    removed = alice.post(
        "account/3pid/delete", {"medium": "email", "address": f" {email.upper()} "}
    )
    assert removed.status == 200 and removed.body["id_server_unbind_result"] == "no-support"
    assert alice.get("account/3pid").body["threepids"] == []


def test_forgotten_password_reset_by_mail(
    mail_server: ServerProcess, inbox: tuple[Inbox, int]
) -> None:
    mails = inbox[0]
    alice = new_user(mail_server)
    email = address()
    creds = validated_session(alice, mails, email, "account/3pid/email/requestToken")
    first = alice.post("account/3pid/add", creds)
    alice.post("account/3pid/add", {**creds, "auth": alice.password_auth(
        session=first.body["session"])})  # fmt: skip
    stranger = Client(mail_server)
    unknown = stranger.post("account/password/email/requestToken",
                            {"client_secret": "x1", "email": address(), "send_attempt": 1},
                            token=False)  # fmt: skip
    assert unknown.status == 400 and unknown.body["errcode"] == "M_THREEPID_NOT_FOUND"
    reset = validated_session(stranger, mails, email, "account/password/email/requestToken")
    body = {"new_password": "a brand new password", "logout_devices": True}
    challenge = stranger.post("account/password", body, token=False)
    assert challenge.status == 401
    done = stranger.post("account/password", {**body, "auth": {
        "type": "m.login.email.identity", "threepid_creds": reset,
        "session": challenge.body["session"]}}, token=False)  # fmt: skip
    assert done.status == 200, done
    assert alice.get("account/whoami").status == 401  # logged out everywhere
    assert stranger.login(alice.user_id or "", "a brand new password").status == 200
    # The validation is spent.
    again = stranger.post("account/password", {**body, "auth": {
        "type": "m.login.email.identity", "threepid_creds": reset}}, token=False)  # fmt: skip
    assert again.status == 401


def test_optional_address_at_registration(
    mail_server: ServerProcess, inbox: tuple[Inbox, int]
) -> None:
    mails = inbox[0]
    client = Client(mail_server)
    flows = client.get("register", token=False)
    email = address()
    creds = validated_session(client, mails, email, "register/email/requestToken")
    body: dict[str, Any] = {"username": "mailed" + secrets.token_hex(3), "password": PASSWORD}
    first = client.post("register", body, token=False)
    stages = [f["stages"] for f in first.body["flows"]]
    assert ["m.login.dummy"] in stages and ["m.login.email.identity"] in stages, flows
    body["auth"] = {"type": "m.login.email.identity", "threepid_creds": creds,
                    "session": first.body["session"]}  # fmt: skip
    resp = client.post("register", body, token=False)
    assert resp.status == 200, resp
    client.adopt(resp.body)
    assert [t["address"] for t in client.get("account/3pid").body["threepids"]] == [email.lower()]
    # Deactivation with erasure leaves no trace of the address.
    deactivate = client.post("account/deactivate", {"erase": True})
    client.post("account/deactivate", {"erase": True, "auth": client.password_auth(
        session=deactivate.body["session"])})  # fmt: skip
    rows = db_rows(mail_server, "SELECT address FROM user_threepids")
    assert email.lower() not in [r[0] for r in rows]


def test_links_and_unconfigured_servers(
    mail_server: ServerProcess, inbox: tuple[Inbox, int], client: Client
) -> None:
    bad = requests.get(
        mail_server.base_url + "/_matrix/client/unstable/homeserver/email/validate",
        params={"sid": "nope", "client_secret": "x", "token": "y"}, timeout=10,
    )  # fmt: skip
    assert bad.status_code == 400 and "not valid" in bad.text
    off = client.post("register/email/requestToken", {"client_secret": "abc",
                      "email": address(), "send_attempt": 1}, token=False)  # fmt: skip
    assert off.status == 400 and off.body["errcode"] == "M_THREEPID_MEDIUM_NOT_SUPPORTED"
    # Same client secret and send_attempt: no second mail.
    mails = inbox[0]
    email = address()
    user = Client(mail_server)
    for _ in range(2):
        resp = user.post("register/email/requestToken", {"client_secret": "same1",
                         "email": email, "send_attempt": 1}, token=False)  # fmt: skip
        assert resp.status == 200, resp
    mails.wait_for(email.lower())
    time.sleep(0.3)
    assert len([1 for to, _ in mails.messages if email.lower() in to]) == 1
