"""The HTTP layer over real HTTP: routing errors, JSON errors, size limits, auth, CORS."""

from __future__ import annotations

from tests.harness import Client


def test_versions_and_well_known(client: Client) -> None:
    resp = client.get("/_matrix/client/versions", token=False)
    assert resp.status == 200
    assert "v1.1" in resp.body["versions"]
    resp = client.get("/.well-known/matrix/client", token=False)
    assert resp.status == 200
    assert resp.body["m.homeserver"]["base_url"] == client.server.base_url + "/"
    resp = client.get("/.well-known/matrix/server", token=False)
    assert resp.body == {"m.server": f"{client.server.server_name}:443"}


def test_unknown_path_is_404_unrecognized(client: Client) -> None:
    resp = client.get("/_matrix/client/v3/no/such/thing")
    assert resp.status == 404
    assert resp.body["errcode"] == "M_UNRECOGNIZED"


def test_wrong_method_is_405_unrecognized(client: Client) -> None:
    resp = client.request("DELETE", "/_matrix/client/versions")
    assert resp.status == 405
    assert resp.body["errcode"] == "M_UNRECOGNIZED"
    assert "GET" in resp.headers["Allow"]


def test_invalid_json_is_400_not_json(client: Client) -> None:
    for raw in (b"{not json", b"\xff\xfe", b"NaN", b""):
        resp = client.request("POST", "login", raw=raw)
        assert resp.status == 400, raw
        assert resp.body["errcode"] == "M_NOT_JSON", raw


def test_non_object_json_is_400_bad_json(client: Client) -> None:
    resp = client.request("POST", "login", raw=b"[1, 2]")
    assert resp.status == 400
    assert resp.body["errcode"] == "M_BAD_JSON"


def test_oversized_body_is_413(client: Client) -> None:
    resp = client.request("POST", "login", raw=b'{"a": "' + b"x" * (2 * 1024 * 1024) + b'"}')
    assert resp.status == 413
    assert resp.body["errcode"] == "M_TOO_LARGE"


def test_missing_and_unknown_tokens(client: Client) -> None:
    resp = client.get("account/whoami")
    assert resp.status == 401
    assert resp.body["errcode"] == "M_MISSING_TOKEN"
    resp = client.get("account/whoami", token="syt_not_a_real_token")
    assert resp.status == 401
    assert resp.body["errcode"] == "M_UNKNOWN_TOKEN"
    resp = client.get("account/whoami", headers={"Authorization": "Basic Zm9vOmJhcg=="})
    assert resp.status == 401
    assert resp.body["errcode"] == "M_MISSING_TOKEN"


def test_token_in_query_string(alice: Client) -> None:
    resp = alice.get("account/whoami", token=False, params={"access_token": alice.token or ""})
    assert resp.status == 200
    assert resp.body["user_id"] == alice.user_id


def test_cors_and_options(client: Client) -> None:
    resp = client.request("OPTIONS", "/_matrix/client/v3/any/path/at/all")
    assert resp.status == 200
    assert resp.headers["Access-Control-Allow-Origin"] == "*"
    assert "Authorization" in resp.headers["Access-Control-Allow-Headers"]
    resp = client.get("/_matrix/client/versions")
    assert resp.headers["Access-Control-Allow-Origin"] == "*"


def test_capabilities_need_auth(client: Client, alice: Client) -> None:
    assert client.get("capabilities").status == 401
    resp = alice.get("capabilities")
    assert resp.status == 200
    assert resp.body["capabilities"]["m.change_password"] == {"enabled": True}


def test_form_content_types_are_not_parsed_as_forms(client: Client) -> None:
    """A JSON API: the body is read as JSON whatever Content-Type says, and a malformed
    multipart body is a Matrix error, not the web framework's own 400 page."""
    for content_type in ("multipart/form-data", "multipart/form-data; boundary=x"):
        resp = client.request(
            "POST", "login", raw=b"--x\r\nnot a part", headers={"Content-Type": content_type}
        )
        assert resp.status == 400
        assert resp.body["errcode"] == "M_NOT_JSON", content_type
    resp = client.request(
        "POST", "login", raw=b'{"type": "m.login.password"}',
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )  # fmt: skip
    assert resp.status in (400, 403)
    assert resp.body["errcode"] in ("M_BAD_JSON", "M_MISSING_PARAM", "M_FORBIDDEN")
