"""Shared test helpers: where the Darknet fixtures live, and the small cfgs the tests build."""
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / 'shared'
FIXTURES = SHARED / 'fixtures' / 'darknet'


def need_fixtures() -> Path:
    """The Darknet fixture folder, or skip the test with the reason."""
    if not FIXTURES.is_dir():
        pytest.skip('Darknet fixtures not found at ../shared/fixtures/darknet (absent in this checkout)')
    return FIXTURES
