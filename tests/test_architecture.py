"""docs/architecture.md is the package's one index: every module listed once, in layer order, and no import upward."""
import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / 'yolo_lrm'
DOC = ROOT / 'docs' / 'architecture.md'


def read_index(text: str) -> list[tuple[int, str]]:
    """(layer, path) of each row of the index, in the page's order: a module `yolo_lrm/x.py` or a package `yolo_lrm/p/`."""
    rows, layer = [], 0
    for line in text.splitlines():
        heading = re.match(r'## Layer (\d+)\b', line)
        if heading:
            layer = int(heading.group(1))
        row = re.match(r'\| `(yolo_lrm/[^`]*)` \|', line)
        if row:
            assert layer, f'{DOC.name}: {row.group(1)} is listed before the first "## Layer N" heading'
            rows.append((layer, row.group(1)))
    return rows


def unit_of(path: str) -> str:
    """The unit a module belongs to: its top-level package (`yolo_lrm/data/`) or itself (`yolo_lrm/cfg.py`)."""
    parts = path.split('/')
    return path if len(parts) == 2 else '/'.join(parts[:2]) + '/'


def module_files() -> set[str]:
    """Every module of the package but the packages' faces (`__init__.py`, listed as their folder)."""
    return {p.relative_to(ROOT).as_posix() for p in PACKAGE.rglob('*.py') if p.name != '__init__.py'}


def package_dirs() -> set[str]:
    """Every package under yolo_lrm/, as `yolo_lrm/p/`."""
    return {p.parent.relative_to(ROOT).as_posix() + '/' for p in PACKAGE.glob('*/__init__.py')}


def imported_modules(path: Path) -> set[str]:
    """The modules of the package that `path` imports (at the top, in functions and under TYPE_CHECKING), as paths."""
    module = path.relative_to(ROOT).with_suffix('').parts
    package = module[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom):
            base = list(package[:len(package) - node.level + 1]) if node.level else []
            base += node.module.split('.') if node.module else []
            targets = [resolve(base + [a.name]) or resolve(base) for a in node.names]
        elif isinstance(node, ast.Import):
            targets = [resolve(a.name.split('.')) for a in node.names]
        else:
            continue
        found.update(t for t in targets if t and t != 'yolo_lrm/')   # yolo_lrm/__init__.py imports nothing
    return found


def resolve(name: list[str]) -> str | None:
    """`yolo_lrm.x.y` as the file it names: a module, a package's folder, or None (a name inside a module, or
    another library)."""
    if name[:1] != ['yolo_lrm']:
        return None
    path = ROOT.joinpath(*name)
    if path.with_suffix('.py').is_file():
        return path.with_suffix('.py').relative_to(ROOT).as_posix()
    if (path / '__init__.py').is_file():
        return path.relative_to(ROOT).as_posix() + '/'
    return None


def test_every_module_is_listed_once_and_every_listed_module_exists():
    listed = [path for _, path in read_index(DOC.read_text())]
    twice = sorted({p for p in listed if listed.count(p) > 1})
    assert not twice, f'{DOC.name} lists these more than once: {twice}'
    missing = sorted((module_files() | package_dirs()) - set(listed))
    assert not missing, f'{DOC.name} does not list: {missing}'
    absent = sorted(set(listed) - module_files() - package_dirs())
    assert not absent, f'{DOC.name} lists what does not exist: {absent}'


def test_a_package_is_one_unit_on_one_layer():
    layers: dict[str, set[int]] = {}
    for layer, path in read_index(DOC.read_text()):
        layers.setdefault(unit_of(path), set()).add(layer)
    split = {unit: sorted(found) for unit, found in layers.items() if len(found) > 1}
    assert not split, f'{DOC.name}: packages listed on more than one layer: {split}'


def upward_imports(text: str) -> list[str]:
    """The imports of the listed modules that run against the index `text`: to a unit on the same or a higher layer,
    or inside a package to a module listed after the importer (a package's `__main__` excepted: it is its entry)."""
    index = read_index(text)
    layer = {unit_of(path): n for n, path in index}
    order = {path: i for i, (_, path) in enumerate(index)}
    wrong = []
    for source in (path for _, path in index if path.endswith('.py')):
        for target in sorted(imported_modules(ROOT / source) & set(order)):
            here, there = unit_of(source), unit_of(target)
            if here != there and layer[there] >= layer[here]:
                wrong.append(f'{source} (layer {layer[here]}) imports {target} (layer {layer[there]})')
            elif here == there and target.endswith('/'):
                wrong.append(f'{source} imports its own package {target}')
            elif here == there and order[target] > order[source] and not source.endswith('/__main__.py'):
                wrong.append(f'{source} imports {target}, listed after it')
    return wrong


def test_no_module_imports_a_higher_layer_or_a_later_module_of_its_package():
    wrong = upward_imports(DOC.read_text())
    assert not wrong, f'imports against the layers of {DOC.name}:\n' + '\n'.join(wrong)


def test_an_upward_import_is_seen():
    """The check itself: with the cfg put below the text files it reads, its import of textfile.py runs upward."""
    row = '| `{}` | what it is | public names |'
    swapped = '\n'.join(['## Layer 1', row.format('yolo_lrm/cfg.py'), '## Layer 2', row.format('yolo_lrm/textfile.py')])
    assert upward_imports(swapped) == ['yolo_lrm/cfg.py (layer 1) imports yolo_lrm/textfile.py (layer 2)']
    assert resolve(['yolo_lrm', 'data']) == 'yolo_lrm/data/' and resolve(['yolo_lrm', 'cfg', 'Cfg']) is None
    assert 'yolo_lrm/loss/mining.py' in imported_modules(PACKAGE / 'loss' / 'region.py')   # relative, one level down
