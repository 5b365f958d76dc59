"""The consent page in a real browser (Debian's Chromium driven by Playwright; no browser
download): a user follows their link, reads the policy, confirms their age and accepts,
with JavaScript on and off; sending is allowed afterwards."""

from __future__ import annotations

import os
import shutil
from typing import Any

import pytest

from tests.harness import ServerProcess, create_room
from tests.test_consent import CONSENT, accepted
from tests.test_shared_secret_registration import shared_secret_register

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip


@pytest.fixture(scope="module")
def browser() -> Any:
    if not os.path.exists(CHROMIUM):
        if os.environ.get("CI") == "true":
            pytest.fail("CI needs Debian's chromium (scripts/run-tests installs it)")
        pytest.skip("the browser test needs Debian's chromium package (apt install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        yield browser
        browser.close()


@pytest.mark.parametrize("javascript", [True, False], ids=["js", "no-js"])
def test_accepting_the_policy_in_a_browser(
    server_factory: Any, browser: Any, javascript: bool
) -> None:
    import copy

    server: ServerProcess = server_factory(copy.deepcopy(CONSENT))
    user = shared_secret_register(server)
    refused = user.post("createRoom", {})
    assert refused.body["errcode"] == "M_CONSENT_NOT_GIVEN"
    context = browser.new_context(java_script_enabled=javascript)
    page = context.new_page()
    try:
        page.goto(refused.body["consent_uri"])
        assert page.locator("h1").inner_text() == "Privacy policy and terms of use"
        assert "at least 16" in page.content()
        accept = page.get_by_role("button", name="I accept version 1.0")
        # The age box is required: submitting without it is stopped (by the browser's own
        # form validation, which needs no script), and nothing is recorded.
        accept.click()
        assert accepted(server, user.user_id or "") is None
        page.get_by_label("I am at least 16 years old").check()
        accept.click()
        page.wait_for_selector("text=Thank you")
        assert "accepted version 1.0" in page.content()
    finally:
        context.close()
    assert accepted(server, user.user_id or "") == "1.0"
    create_room(user)
