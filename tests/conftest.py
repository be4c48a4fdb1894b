"""Shared test helpers: where the Darknet fixtures live, and the small cfgs the tests build."""
import importlib
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / 'shared'
FIXTURES = SHARED / 'fixtures' / 'darknet'


@pytest.fixture(scope='session', autouse=True)
def conversion_cache(tmp_path_factory):
    """Models converted by the tests (engines.cached_export: detect.py's auto on a CPU) go to a folder of the test
    session's own, never to the user's ~/.cache."""
    with pytest.MonkeyPatch.context() as patch:
        folder = tmp_path_factory.mktemp('yolo_lrm_cache')
        patch.setenv('YOLO_LRM_CACHE', str(folder))
        yield folder


def need_fixtures() -> Path:
    """The Darknet fixture folder, or skip the test with the reason."""
    if not FIXTURES.is_dir():
        pytest.skip('Darknet fixtures not found at ../shared/fixtures/darknet (absent in this checkout)')
    return FIXTURES


def bench_module(name: str) -> ModuleType:
    """A script of bench/ imported as a module (bench/ is not a package; its scripts import each other by name)."""
    sys.path.insert(0, str(ROOT / 'bench'))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(ROOT / 'bench'))
