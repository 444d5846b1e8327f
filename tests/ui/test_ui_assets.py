"""The page's static files: every file the page loads is served, and nothing from elsewhere."""

from __future__ import annotations

import re

from server.ui_routes import ASSETS, UI_DIR


def _referenced() -> set[str]:
    """Asset names the HTML links and the JS modules import."""
    html = (UI_DIR / "index.html").read_text()
    names = set(re.findall(r'(?:src|href)="/ui/assets/([^"]+)"', html))
    for js in UI_DIR.glob("*.js"):
        names |= set(re.findall(r'from "\./([^"]+)"', js.read_text()))
    return names


def test_every_referenced_asset_is_served_and_every_served_asset_exists():
    assert _referenced() == set(ASSETS)
    assert {p.name for p in UI_DIR.iterdir()} == set(ASSETS) | {"index.html"}


def test_nothing_is_loaded_from_another_host():
    for path in UI_DIR.iterdir():
        text = path.read_text()
        assert not re.search(r"(?:src|href)=\"(?:https?:)?//|@import|url\(\s*['\"]?(?:https?:)?//", text), path.name
        assert "fetch(\"http" not in text and "fetch('http" not in text, path.name
