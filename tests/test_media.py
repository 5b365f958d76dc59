"""The media repository over real HTTP: uploads, authenticated downloads, thumbnails, safe
serving of active content, the legacy endpoints and their freeze, limits, asynchronous
uploads, and erasure with the account."""

from __future__ import annotations

import io
import os
import re
import secrets
import threading
import time
from typing import Any
from urllib.parse import quote, unquote

from PIL import Image

from tests.harness import PASSWORD, Client, Response, ServerProcess, new_user

AUTHED = "/_matrix/client/v1/media"
LEGACY = "/_matrix/media/v3"


def q(value: str) -> str:
    return quote(value, safe="")


# Making images


def image_bytes(
    fmt: str, size: tuple[int, int], mode: str = "RGB", color: Any = (200, 30, 40)
) -> bytes:
    image = Image.new(mode, size, color)
    # Some structure, so encoders cannot collapse the picture to nothing.
    for x in range(0, size[0], 7):
        for y in range(0, size[1], 5):
            image.putpixel((x, y), (x * 3 % 256, y * 5 % 256, 90) if mode == "RGB" else 1)
    out = io.BytesIO()
    image.save(out, fmt)
    return out.getvalue()


def png(size: tuple[int, int]) -> bytes:
    return image_bytes("PNG", size)


def jpeg(size: tuple[int, int]) -> bytes:
    return image_bytes("JPEG", size)


def gif(size: tuple[int, int]) -> bytes:
    return image_bytes("GIF", size, mode="P", color=3)


def webp(size: tuple[int, int]) -> bytes:
    return image_bytes("WEBP", size)


def size_of(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as image:
        return image.size


# Talking to the media repository


def upload(
    client: Client, data: bytes, content_type: str | None, filename: str | None = None
) -> str:
    resp = upload_raw(client, data, content_type, filename)
    assert resp.status == 200, resp
    mxc = str(resp.body["content_uri"])
    assert mxc.startswith(f"mxc://{client.server.server_name}/"), mxc
    assert re.fullmatch(r"[A-Za-z0-9_-]+", mxc.rsplit("/", 1)[1]), mxc
    return mxc


def upload_raw(
    client: Client, data: bytes, content_type: str | None, filename: str | None = None
) -> Response:
    headers = {"Content-Type": content_type} if content_type else {}
    params = {"filename": filename} if filename else None
    return client.request("POST", LEGACY + "/upload", raw=data, headers=headers, params=params)


def parts(mxc: str) -> tuple[str, str]:
    server_name, media_id = mxc[len("mxc://") :].split("/", 1)
    return server_name, media_id


def download(
    client: Client, mxc: str, *, legacy: bool = False, token: Any = True, name: str | None = None
) -> Response:
    server_name, media_id = parts(mxc)
    path = f"{LEGACY if legacy else AUTHED}/download/{q(server_name)}/{q(media_id)}"
    if name is not None:
        path += "/" + q(name)
    return client.request("GET", path, token=token)


def thumbnail(
    client: Client,
    mxc: str,
    width: int,
    height: int,
    method: str = "scale",
    *,
    legacy: bool = False,
    token: Any = True,
) -> Response:
    server_name, media_id = parts(mxc)
    path = f"{LEGACY if legacy else AUTHED}/thumbnail/{q(server_name)}/{q(media_id)}"
    params = {"width": str(width), "height": str(height), "method": method}
    return client.request("GET", path, token=token, params=params)


def disposition(resp: Response) -> tuple[str, str | None]:
    """(inline or attachment, file name) from Content-Disposition (plain or RFC 5987 form)."""
    header = resp.headers.get("Content-Disposition", "")
    kind = header.split(";")[0].strip().lower()
    extended = re.search(r"filename\*\s*=\s*(?i:utf-8)''([^;]+)", header)
    if extended:
        return kind, unquote(extended.group(1).strip())
    plain = re.search(r'filename\s*=\s*("([^"]*)"|[^;]+)', header)
    if plain:
        return kind, plain.group(2) if plain.group(2) is not None else plain.group(1).strip()
    return kind, None


def assert_error(resp: Response, status: int, errcode: str | None = None) -> None:
    assert resp.status == status, resp
    assert isinstance(resp.body, dict) and "errcode" in resp.body, resp
    if errcode is not None:
        assert resp.body["errcode"] == errcode, resp


def store_files(server: ServerProcess) -> dict[str, bytes]:
    """Every file under the media store, path -> bytes."""
    root = os.path.join(
        server.directory, server.config.get("media", {}).get("store_path", "media_store")
    )
    found: dict[str, bytes] = {}
    for directory, _, names in os.walk(root):
        for name in names:
            path = os.path.join(directory, name)
            with open(path, "rb") as f:
                found[path] = f.read()
    return found


def deactivate(client: Client, erase: bool) -> None:
    first = client.post("account/deactivate", {"erase": erase})
    assert first.status == 401, first
    resp = client.post(
        "account/deactivate",
        {"erase": erase, "auth": client.password_auth(PASSWORD, first.body["session"])},
    )
    assert resp.status == 200, resp


# Uploading, avatars and downloading


def test_avatar_and_picture_round_trip(alice: Client, bob: Client) -> None:
    avatar = png((64, 64))
    picture = jpeg((400, 300))
    avatar_mxc = upload(alice, avatar, "image/png", "avatar.png")
    picture_mxc = upload(alice, picture, "image/jpeg", "holiday photo.jpg")
    assert avatar_mxc != picture_mxc

    resp = alice.put(f"profile/{q(alice.user_id or '')}/avatar_url", {"avatar_url": avatar_mxc})
    assert resp.status == 200, resp
    resp = bob.get(f"profile/{q(alice.user_id or '')}/avatar_url")
    assert resp.status == 200, resp
    assert resp.body["avatar_url"] == avatar_mxc

    for mxc, data, content_type, filename in (
        (avatar_mxc, avatar, "image/png", "avatar.png"),
        (picture_mxc, picture, "image/jpeg", "holiday photo.jpg"),
    ):
        resp = download(bob, mxc)
        assert resp.status == 200, resp
        assert resp.body == data
        assert resp.headers["Content-Type"] == content_type
        assert disposition(resp) == ("inline", filename)
        assert "sandbox" in resp.headers["Content-Security-Policy"]
        assert resp.headers["X-Content-Type-Options"] == "nosniff"
        assert resp.headers.get("Cross-Origin-Resource-Policy") == "cross-origin"

    # The file-name form replaces the name in Content-Disposition, not the content.
    resp = download(bob, picture_mxc, name="renamed.jpg")
    assert resp.status == 200, resp
    assert resp.body == picture
    assert disposition(resp) == ("inline", "renamed.jpg")


def test_upload_names_and_types(alice: Client, bob: Client) -> None:
    data = secrets.token_bytes(100)
    mxc = upload(alice, data, None)
    resp = download(bob, mxc)
    assert resp.status == 200, resp
    assert resp.body == data
    assert resp.headers["Content-Type"] == "application/octet-stream"
    kind, name = disposition(resp)
    assert kind in ("inline", "attachment")
    assert name is None
    # Names with spaces, quotes, semicolons and non-ASCII letters come back unchanged.
    for filename in ('café ☕ "menu"; v2.txt', "naïve.txt"):
        mxc = upload(alice, b"plain text", "text/plain", filename)
        resp = download(bob, mxc)
        assert resp.status == 200, resp
        assert resp.headers["Content-Type"].startswith("text/plain")
        assert disposition(resp) == ("inline", filename)


# Thumbnails


def test_thumbnail_crop_and_scale(alice: Client, bob: Client) -> None:
    # 1000x500: wide, larger than every configured size.
    mxc = upload(alice, jpeg((1000, 500)), "image/jpeg", "wide.jpg")
    # crop: exactly the smallest configured size at least as large as requested.
    for requested, expected in (((20, 20), (32, 32)), ((32, 32), (32, 32)), ((64, 50), (96, 96))):
        resp = thumbnail(bob, mxc, *requested, method="crop")
        assert resp.status == 200, resp
        assert resp.headers["Content-Type"] in ("image/jpeg", "image/png")
        assert size_of(resp.body) == expected, requested
        assert disposition(resp)[0] == "inline"
    # scale: keeps the 2:1 aspect ratio, inside the chosen configured size and covering the
    # requested width.
    for requested, box in (((300, 100), (320, 240)), ((600, 300), (640, 480))):
        resp = thumbnail(bob, mxc, *requested, method="scale")
        assert resp.status == 200, resp
        width, height = size_of(resp.body)
        assert width <= box[0] and height <= box[1], (requested, width, height)
        assert width >= requested[0] and height >= requested[1], (requested, width, height)
        assert abs(width / height - 2.0) < 0.05, (width, height)
        assert (width, height) == (box[0], box[0] // 2)


def test_thumbnail_formats(alice: Client, bob: Client) -> None:
    sources = {
        "image/png": png((300, 300)),
        "image/gif": gif((300, 150)),
        "image/webp": webp((150, 300)),
    }
    for content_type, data in sources.items():
        mxc = upload(alice, data, content_type)
        original = size_of(data)
        resp = thumbnail(bob, mxc, 90, 90, method="crop")
        assert resp.status == 200, (content_type, resp)
        assert resp.headers["Content-Type"] in ("image/jpeg", "image/png", "image/webp")
        assert size_of(resp.body) == (96, 96), content_type
        resp = thumbnail(bob, mxc, 100, 100, method="scale")
        assert resp.status == 200, (content_type, resp)
        width, height = size_of(resp.body)
        assert width <= 320 and height <= 240
        assert max(width, height) >= 100
        assert abs(width / height - original[0] / original[1]) < 0.05, (content_type, width)


def test_transparent_png_thumbnail_stays_png(alice: Client, bob: Client) -> None:
    image = Image.new("RGBA", (200, 200), (0, 0, 0, 0))
    image.putpixel((100, 100), (255, 0, 0, 255))
    out = io.BytesIO()
    image.save(out, "PNG")
    mxc = upload(alice, out.getvalue(), "image/png")
    resp = thumbnail(bob, mxc, 32, 32, method="crop")
    assert resp.status == 200, resp
    assert resp.headers["Content-Type"] == "image/png"
    with Image.open(io.BytesIO(resp.body)) as thumb:
        assert thumb.mode in ("RGBA", "LA", "P")
        assert thumb.convert("RGBA").getpixel((0, 0))[3] == 0


def test_thumbnail_never_upscales(alice: Client, bob: Client) -> None:
    mxc = upload(alice, png((20, 10)), "image/png")
    for method in ("scale", "crop"):
        resp = thumbnail(bob, mxc, 320, 240, method=method)
        assert resp.status == 200, resp
        width, height = size_of(resp.body)
        assert width <= 20 and height <= 10, (method, width, height)


def test_thumbnails_are_cached(server: ServerProcess, alice: Client, bob: Client) -> None:
    mxc = upload(alice, jpeg((500, 400)), "image/jpeg")
    first = thumbnail(bob, mxc, 96, 96, method="crop")
    assert first.status == 200, first
    second = thumbnail(alice, mxc, 96, 96, method="crop")
    assert second.status == 200, second
    assert first.body == second.body
    # The generated thumbnail is kept in the media store.
    assert first.body in store_files(server).values()


def test_thumbnail_errors(alice: Client, bob: Client) -> None:
    for content_type, data in (
        ("text/html", b"<html><body>hi</body></html>"),
        ("application/pdf", b"%PDF-1.4\n%%EOF\n"),
    ):
        mxc = upload(alice, data, content_type)
        assert_error(thumbnail(bob, mxc, 32, 32), 400)
    # Claimed to be an image but is not one.
    mxc = upload(alice, b"not really a png", "image/png")
    assert_error(thumbnail(bob, mxc, 32, 32), 400)
    # Missing or nonsensical dimensions.
    mxc = upload(alice, png((50, 50)), "image/png")
    server_name, media_id = parts(mxc)
    path = f"{AUTHED}/thumbnail/{q(server_name)}/{q(media_id)}"
    for params in ({"width": "32"}, {"width": "-1", "height": "32"}, {"width": "a", "height": "3"}):
        assert_error(bob.request("GET", path, params=params), 400)
    assert_error(
        bob.request("GET", path, params={"width": "32", "height": "32", "method": "x"}), 400
    )


# Serving active content safely


def test_active_content_is_never_inline(alice: Client, bob: Client) -> None:
    svg = b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>'
    html = b"<html><script>alert(document.cookie)</script></html>"
    for content_type, data, filename in (
        ("text/html", html, "page.html"),
        ("text/html; charset=utf-8", html, "page2.html"),
        ("image/svg+xml", svg, "drawing.svg"),
        ("application/javascript", b"alert(1)", "x.js"),
    ):
        mxc = upload(alice, data, content_type, filename)
        resp = download(bob, mxc)
        assert resp.status == 200, resp
        assert resp.body == data
        assert resp.headers["Content-Type"] == "application/octet-stream", content_type
        assert disposition(resp) == ("attachment", filename)
        csp = resp.headers["Content-Security-Policy"]
        assert "sandbox" in csp and "script-src 'none'" in csp
        assert resp.headers["X-Content-Type-Options"] == "nosniff"


# Authentication and the legacy endpoints


def test_authenticated_endpoints_need_a_token(alice: Client) -> None:
    mxc = upload(alice, png((40, 40)), "image/png")
    resp = download(alice, mxc, token=False)
    assert_error(resp, 401, "M_MISSING_TOKEN")
    assert_error(thumbnail(alice, mxc, 32, 32, token=False), 401, "M_MISSING_TOKEN")
    assert_error(download(alice, mxc, token="not_a_token"), 401, "M_UNKNOWN_TOKEN")
    resp = alice.request("GET", AUTHED + "/config", token=False)
    assert_error(resp, 401, "M_MISSING_TOKEN")
    assert_error(upload_raw(Client(alice.server), b"x", "text/plain"), 401, "M_MISSING_TOKEN")


def test_legacy_endpoints_frozen_by_default(alice: Client) -> None:
    mxc = upload(alice, png((40, 40)), "image/png")
    assert_error(download(alice, mxc, legacy=True, token=False), 404, "M_NOT_FOUND")
    assert_error(download(alice, mxc, legacy=True), 404, "M_NOT_FOUND")
    assert_error(thumbnail(alice, mxc, 32, 32, legacy=True, token=False), 404, "M_NOT_FOUND")
    assert download(alice, mxc).status == 200


def test_legacy_endpoints_when_enabled(server_factory: Any) -> None:
    server = server_factory({"media": {"legacy_unauthenticated": True}})
    alice = new_user(server)
    data = png((100, 80))
    mxc = upload(alice, data, "image/png", "a.png")
    resp = download(alice, mxc, legacy=True, token=False)
    assert resp.status == 200, resp
    assert resp.body == data
    assert resp.headers["Content-Type"] == "image/png"
    assert disposition(resp) == ("inline", "a.png")
    resp = thumbnail(alice, mxc, 32, 32, method="crop", legacy=True, token=False)
    assert resp.status == 200, resp
    assert size_of(resp.body) == (32, 32)
    # The authenticated endpoint still wants a token.
    assert_error(download(alice, mxc, token=False), 401)


def test_legacy_freeze_by_upload_time(server_factory: Any) -> None:
    server = server_factory({"media": {"legacy_unauthenticated_before": 1}})
    alice = new_user(server)
    old = upload(alice, png((40, 40)), "image/png")
    # Nothing was uploaded before 1970: the legacy endpoints serve nothing yet.
    assert_error(download(alice, old, legacy=True, token=False), 404, "M_NOT_FOUND")
    # Freeze from now on: what exists now stays reachable, what comes later does not.
    server.config["media"]["legacy_unauthenticated_before"] = int(time.time() * 1000) + 1
    server.restart()
    time.sleep(0.01)
    new = upload(alice, png((40, 40)), "image/png")
    resp = download(alice, old, legacy=True, token=False)
    assert resp.status == 200, resp
    assert thumbnail(alice, old, 32, 32, legacy=True, token=False).status == 200
    assert_error(download(alice, new, legacy=True, token=False), 404, "M_NOT_FOUND")
    assert_error(thumbnail(alice, new, 32, 32, legacy=True, token=False), 404, "M_NOT_FOUND")
    assert download(alice, new).status == 200


# Limits


def test_upload_size_limit_and_quota(server_factory: Any) -> None:
    server = server_factory({"media": {"max_upload_size": "1K", "max_user_quota": "3K"}})
    alice, bob = new_user(server), new_user(server)
    resp = alice.request("GET", AUTHED + "/config")
    assert resp.status == 200, resp
    assert resp.body["m.upload.size"] == 1024

    assert_error(upload_raw(alice, b"x" * 1025, "text/plain"), 413, "M_TOO_LARGE")
    assert upload_raw(alice, b"x" * 1024, "text/plain").status == 200
    assert upload_raw(alice, b"x" * 1000, "text/plain").status == 200
    assert upload_raw(alice, b"x" * 1000, "text/plain").status == 200
    # 3024 bytes stored; 100 more would pass 3072. The spec's answer for a quota is 403.
    assert_error(upload_raw(alice, b"x" * 100, "text/plain"), 403, "M_FORBIDDEN")
    assert upload_raw(alice, b"x" * 48, "text/plain").status == 200
    # Asynchronous uploads count against the quota too.
    created = alice.post("/_matrix/media/v1/create", {})
    assert created.status == 200, created
    server_name, media_id = parts(created.body["content_uri"])
    resp = alice.request(
        "PUT",
        f"{LEGACY}/upload/{q(server_name)}/{q(media_id)}",
        raw=b"y" * 10,
        headers={"Content-Type": "text/plain"},
    )
    assert_error(resp, 403, "M_FORBIDDEN")
    # The quota is per user.
    assert upload_raw(bob, b"x" * 1000, "text/plain").status == 200


def test_media_config(alice: Client) -> None:
    resp = alice.request("GET", AUTHED + "/config")
    assert resp.status == 200, resp
    assert resp.body["m.upload.size"] == 50 * 1024 * 1024


def test_preview_url_refused_while_disabled(alice: Client) -> None:
    resp = alice.request("GET", AUTHED + "/preview_url", params={"url": "https://example.org/"})
    assert resp.status in (403, 404), resp
    assert "errcode" in resp.body
    assert "og:title" not in resp.body


# Asynchronous uploads


def test_create_then_upload(alice: Client, bob: Client) -> None:
    before = int(time.time() * 1000)
    created = alice.post("/_matrix/media/v1/create", {})
    assert created.status == 200, created
    mxc = created.body["content_uri"]
    assert mxc.startswith(f"mxc://{alice.server.server_name}/")
    assert created.body["unused_expires_at"] > before
    server_name, media_id = parts(mxc)
    path = f"{LEGACY}/upload/{q(server_name)}/{q(media_id)}"

    # Not uploaded yet.
    server_part, media_part = q(server_name), q(media_id)
    resp = bob.request(
        "GET", f"{AUTHED}/download/{server_part}/{media_part}", params={"timeout_ms": "100"}
    )
    assert_error(resp, 504, "M_NOT_YET_UPLOADED")

    data = jpeg((64, 48))
    headers = {"Content-Type": "image/jpeg"}
    resp = bob.request("PUT", path, raw=data, headers=headers)
    assert_error(resp, 403, "M_FORBIDDEN")
    resp = alice.request("PUT", path, raw=data, headers=headers, params={"filename": "p.jpg"})
    assert resp.status == 200, resp
    resp = download(bob, mxc)
    assert resp.status == 200, resp
    assert resp.body == data
    assert resp.headers["Content-Type"] == "image/jpeg"
    assert disposition(resp) == ("inline", "p.jpg")

    resp = alice.request("PUT", path, raw=b"other", headers={"Content-Type": "text/plain"})
    assert_error(resp, 409, "M_CANNOT_OVERWRITE_MEDIA")
    assert download(bob, mxc).body == data
    # A media ID that was never created, or belongs to another server.
    resp = alice.request("PUT", f"{LEGACY}/upload/{q(server_name)}/nosuchmedia", raw=b"x")
    assert_error(resp, 404, "M_NOT_FOUND")
    resp = alice.request("PUT", f"{LEGACY}/upload/other.example/{q(media_id)}", raw=b"x")
    assert_error(resp, 404, "M_NOT_FOUND")


# Erasure and unknown media


def test_erased_account_loses_its_media(server: ServerProcess, bob: Client) -> None:
    carol = new_user(server)
    first, second = png((120, 90)), secrets.token_bytes(3000)
    mxcs = [upload(carol, first, "image/png"), upload(carol, second, "application/pdf")]
    thumb = thumbnail(bob, mxcs[0], 32, 32, method="crop")
    assert thumb.status == 200, thumb
    kept = secrets.token_bytes(500)
    kept_mxc = upload(bob, kept, "application/octet-stream")
    files = store_files(server).values()
    assert first in files and second in files and thumb.body in files

    deactivate(carol, erase=True)

    files = store_files(server).values()
    assert first not in files and second not in files and thumb.body not in files
    for mxc in mxcs:
        assert_error(download(bob, mxc), 404, "M_NOT_FOUND")
    assert_error(thumbnail(bob, mxcs[0], 32, 32, method="crop"), 404, "M_NOT_FOUND")
    assert kept in files
    assert download(bob, kept_mxc).body == kept


def test_deactivation_without_erase_keeps_media(server: ServerProcess, bob: Client) -> None:
    carol = new_user(server)
    data = secrets.token_bytes(700)
    mxc = upload(carol, data, "application/octet-stream")
    deactivate(carol, erase=False)
    assert download(bob, mxc).body == data


def test_unknown_and_remote_media(alice: Client) -> None:
    name = alice.server.server_name
    assert_error(download(alice, f"mxc://{name}/doesNotExist123"), 404, "M_NOT_FOUND")
    assert_error(thumbnail(alice, f"mxc://{name}/doesNotExist123", 32, 32), 404, "M_NOT_FOUND")
    mxc = upload(alice, png((40, 40)), "image/png")
    _, media_id = parts(mxc)
    # Another server's media: asked of it, and a server that cannot be reached is a 502
    # (as Synapse answers), never a local file of the same ID.
    assert_error(download(alice, f"mxc://remote.invalid/{media_id}"), 502, "M_UNKNOWN")
    assert_error(thumbnail(alice, f"mxc://remote.invalid/{media_id}", 32, 32), 502, "M_UNKNOWN")
    # Directory traversal attempts are just unknown media.
    for bad in ("..", "../../homeserver.yaml", "%2e%2e", "a/../../signing.key"):
        resp = alice.request("GET", f"{AUTHED}/download/{q(name)}/{q(bad)}")
        assert resp.status == 404, (bad, resp)
        assert b"signing" not in (resp.body if isinstance(resp.body, bytes) else b"")


def test_concurrent_uploads_to_one_id(alice: Client, bob: Client) -> None:
    created = alice.post("/_matrix/media/v1/create", {})
    assert created.status == 200, created
    mxc = created.body["content_uri"]
    server_name, media_id = parts(mxc)
    path = f"{LEGACY}/upload/{q(server_name)}/{q(media_id)}"
    bodies = [secrets.token_bytes(200_000) for _ in range(6)]
    results: dict[int, Response] = {}

    def put(i: int) -> None:
        session = Client(alice.server, alice.token)
        results[i] = session.request(
            "PUT", path, raw=bodies[i], headers={"Content-Type": "application/octet-stream"}
        )

    threads = [threading.Thread(target=put, args=(i,)) for i in range(len(bodies))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [i for i, r in results.items() if r.status == 200]
    assert len(winners) == 1, results
    for i, resp in results.items():
        if i not in winners:
            assert_error(resp, 409, "M_CANNOT_OVERWRITE_MEDIA")
    assert download(bob, mxc).body == bodies[winners[0]]


def test_admin_deletes_media_and_its_files(
    server: ServerProcess, alice: Client, bob: Client
) -> None:
    from tests.test_shared_secret_registration import shared_secret_register

    admin = shared_secret_register(server, admin=True)
    mxc = upload(alice, png((64, 64)), "image/png", "a.png")
    server_name, media_id = parts(mxc)
    assert download(bob, mxc).status == 200
    before = store_files(server)
    assert any(media_id[4:] in path for path in before)
    # Not an admin: refused, nothing removed.
    resp = bob.delete(f"/_synapse/admin/v1/media/{server_name}/{media_id}")
    assert resp.status == 403
    assert download(bob, mxc).status == 200
    resp = admin.delete(f"/_synapse/admin/v1/media/{server_name}/{media_id}")
    assert resp.status == 200, resp
    assert resp.body["deleted_media"] == [media_id]
    assert download(bob, mxc).status == 404
    assert not any(media_id[4:] in path for path in store_files(server))
    assert admin.delete(f"/_synapse/admin/v1/media/{server_name}/{media_id}").status == 404
