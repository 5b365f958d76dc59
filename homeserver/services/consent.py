"""Consent to the privacy policy and terms: the page users read and accept them on, the
m.login.terms stage of registration, the version each user accepted, a server notice when
the version changes, and sending refused until the current version is accepted."""

from __future__ import annotations

import hashlib
import hmac
import html
import logging
from string import Template
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from cachetools import LRUCache

from homeserver.caches import MeasuredLRU
from homeserver.errors import MatrixError

if TYPE_CHECKING:
    from homeserver.server import HomeServer

logger = logging.getLogger(__name__)
CONSENT_NOT_GIVEN = "M_CONSENT_NOT_GIVEN"
PATH = "_matrix/consent"

DEFAULT_TEMPLATE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>$name</title>
<style>body{font-family:sans-serif;max-width:42em;margin:2em auto;padding:0 1em;line-height:1.5}
.note{background:#eef;padding:.5em 1em}</style></head>
<body>
<h1>$name</h1>
<p>Version $version of the policy of $server.</p>
<h2>What we keep, and for how long</h2>
<ul>
<li>Your account, profile and settings, until you delete your account.</li>
<li>The last address (IP) and program each of your sessions used, for at most 12 months,
shown to you in your session list, and deleted with the session.</li>
<li>Messages in encrypted rooms only as ciphertext: we cannot read them.</li>
</ul>
<h2>Your rights</h2>
<ul>
<li>Export your data at any time, from your client or by asking us.</li>
<li>Delete your account and data, irreversibly, at any time.</li>
<li>Have your old messages deleted on a schedule you choose.</li>
</ul>
<h2>Who may use this service</h2>
<p>You must be at least 16 years old (13 in the United States), as the GDPR and COPPA
require.</p>
<p>When this policy changes, we tell every user with a message from the server and post
the new version here.</p>
$form
</body></html>
"""


class ConsentService:
    def __init__(self, hs: HomeServer) -> None:
        self.hs = hs
        self.config = hs.config.consent
        secret = self.config.form_secret
        self._secret = (
            secret.encode()
            if secret
            else hmac.new(hs.signing_key.encode(), b"consent form", hashlib.sha256).digest()
        )
        self._accepted: LRUCache[str, str | None] = MeasuredLRU("consent")
        template = DEFAULT_TEMPLATE
        if self.config.template_path:
            with open(self.config.template_path, encoding="utf-8") as f:
                template = f.read()
        self._template = Template(template)

    @property
    def enabled(self) -> bool:
        return self.config.enabled

    def _base(self) -> str:
        base = self.hs.config.public_baseurl or f"https://{self.hs.config.server_name}/"
        return base if base.endswith("/") else base + "/"

    def policy_url(self) -> str:
        return self._base() + PATH

    def signature(self, user_id: str) -> str:
        return hmac.new(self._secret, user_id.encode(), hashlib.sha256).hexdigest()

    def url_for(self, user_id: str) -> str:
        """The user's own link: the page with a form that records their acceptance."""
        return f"{self.policy_url()}?{urlencode({'u': user_id, 'h': self.signature(user_id)})}"

    def terms_params(self) -> dict[str, Any]:
        """The m.login.terms stage's policies: the policy, and (when an age is set) the
        age rule as a second one, so that clients show it as its own checkbox."""
        url = self.policy_url()
        policies: dict[str, Any] = {
            "privacy_policy": {"version": self.config.version,
                               "en": {"name": self.config.policy_name, "url": url}},
        }  # fmt: skip
        if self.config.minimum_age:
            policies["minimum_age"] = {
                "version": self.config.version,
                "en": {"name": f"I am at least {self.config.minimum_age} years old", "url": url},
            }
        return {"policies": policies}

    # Accepting

    async def accepted_version(self, user_id: str) -> str | None:
        if user_id in self._accepted:
            return self._accepted[user_id]
        version = await self.hs.stores.users.get_consent_version(user_id)
        self._accepted[user_id] = version
        return version

    async def record(self, user_id: str, version: str | None = None) -> None:
        version = version or self.config.version
        await self.hs.stores.users.set_consent(user_id, version, self.hs.clock.time_msec())
        self._accepted[user_id] = version

    async def require(self, user_id: str) -> None:
        """Refuse an action of a user who has not accepted the current version."""
        if not (self.config.enabled and self.config.block_until_consent):
            return
        if not self.hs.accounts.is_local(user_id) or user_id == self.hs.server_notices.system_user:
            return
        if await self.accepted_version(user_id) != self.config.version:
            raise MatrixError(
                403, CONSENT_NOT_GIVEN,
                f"Please read and accept our {self.config.policy_name}: {self.url_for(user_id)}",
                consent_uri=self.url_for(user_id),
            )  # fmt: skip

    # Telling users of a new version

    async def notify_new_version(self) -> int:
        """Tell every user who has not accepted the current version, once per version."""
        if not self.config.enabled:
            return 0
        notices = self.hs.server_notices
        if notices.system_user is None:
            logger.warning("consent.version changed but server notices are off: nobody told")
            return 0
        users = await self.hs.stores.users.users_to_notify_of_consent(
            self.config.version, notices.system_user
        )
        sent = 0
        for user_id in users:
            text = Template(self.config.notice).safe_substitute(url=self.url_for(user_id))
            try:
                await notices.send(user_id, {"msgtype": "m.text", "body": text})
                sent += 1
            except MatrixError as e:
                logger.warning("Could not tell %s of the new policy: %s", user_id, e.msg)
        await self.hs.stores.users.mark_consent_notice_sent(
            self.config.version, self.hs.clock.time_msec()
        )
        return sent

    # The page

    def page(self, user_id: str | None, signature: str | None, message: str = "") -> str:
        """The policy, with the accept form when the link names a user and is genuine."""
        form = f'<p class="note" role="status">{html.escape(message)}</p>' if message else ""
        if user_id and signature and self.valid(user_id, signature):
            age = self.config.minimum_age
            age_box = (
                f'<p><label><input type="checkbox" name="age" value="yes" required> '
                f"I am at least {age} years old</label></p>"
                if age else ""
            )  # fmt: skip
            form += (
                f'<form method="post" action="/{PATH}">'
                f'<input type="hidden" name="u" value="{html.escape(user_id)}">'
                f'<input type="hidden" name="h" value="{html.escape(signature)}">'
                f'<input type="hidden" name="v" value="{html.escape(self.config.version)}">'
                f"{age_box}"
                f'<p><button type="submit">I accept version '
                f"{html.escape(self.config.version)}</button></p></form>"
            )
        return self._template.safe_substitute(
            name=html.escape(self.config.policy_name), version=html.escape(self.config.version),
            server=html.escape(self.hs.config.server_name), form=form,
        )  # fmt: skip

    def valid(self, user_id: str, signature: str) -> bool:
        return hmac.compare_digest(self.signature(user_id), signature)

    async def accept(self, form: dict[str, str]) -> tuple[int, str]:
        """Record a submitted form; (HTTP status, page)."""
        user_id, signature = form.get("u", ""), form.get("h", "")
        if not self.valid(user_id, signature):
            return 403, self.page(None, None, "This link is not valid. Use the one we sent you.")
        if form.get("v") != self.config.version:
            return 409, self.page(user_id, signature, "The policy changed since you opened "
                                  "this page: please read the current version.")  # fmt: skip
        if self.config.minimum_age and form.get("age") != "yes":
            return 400, self.page(user_id, signature, "Please confirm your age.")
        if await self.hs.stores.users.get_user(user_id) is None:
            return 404, self.page(None, None, "No such account.")
        await self.record(user_id)
        return 200, self.page(None, None, f"Thank you: you accepted version "
                              f"{self.config.version}. You can close this page.")  # fmt: skip
