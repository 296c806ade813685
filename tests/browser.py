"""Headless Chromium for page tests: Debian's /usr/bin/chromium driven by Playwright.

Tests install nothing: where Chromium or Playwright is absent they are skipped with the
reason (``make test`` installs Chromium, so CI runs them).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest

# The flags the machine notes call for: no sandbox as root, no GPU, and no background
# connections (this machine's closed network refuses them, noisily).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def chromium_path() -> str:
    """The Chromium executable, or skip the test saying why."""
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.skip("Chromium is not installed (`make test` installs Debian's chromium)")
    pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    return path


@dataclass
class BrowserPage:
    """A Playwright page plus every console error and uncaught exception it raised."""

    page: Any
    errors: list[str] = field(default_factory=list)


@contextmanager
def browser_page() -> Iterator[BrowserPage]:
    """A fresh page in headless Chromium that records console errors and page errors."""
    from playwright.sync_api import sync_playwright

    executable = chromium_path()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            out = BrowserPage(page)
            page.on("console", lambda m: out.errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: out.errors.append(str(e)))
            yield out
        finally:
            browser.close()
