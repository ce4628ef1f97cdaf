"""The core stays pure: no Kafka, faust or Prometheus anywhere under it, nor in replay."""

import ast
from pathlib import Path

SERVICE = Path(__file__).resolve().parents[2] / "service" / "segstream"
FORBIDDEN = {"faust", "aiokafka", "prometheus_client", "mode", "kafka"}


def imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
            if node.module.startswith("segstream.runtime"):
                roots.add("segstream.runtime")
    return roots


def test_core_and_replay_import_no_streaming_library() -> None:
    files = [*sorted((SERVICE / "core").rglob("*.py")), SERVICE / "replay.py", SERVICE / "synth.py"]
    for path in files:
        bad = imported_roots(path) & (FORBIDDEN | {"segstream.runtime"})
        assert not bad, f"{path.relative_to(SERVICE)} imports {bad}"


def engine_attributes_read(path: Path) -> set[str]:
    """Attributes of an ``engine`` (a name or ``self.engine``) read other than by a call."""
    tree = ast.parse(path.read_text())
    called = {id(node.func) for node in ast.walk(tree) if isinstance(node, ast.Call)}
    found = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute) or id(node) in called:
            continue
        owner = node.value
        name = owner.id if isinstance(owner, ast.Name) else getattr(owner, "attr", None)
        if name == "engine":
            found.add(node.attr)
    return found


def test_the_runtime_reads_the_engine_through_its_methods_and_running_rules_only() -> None:
    for path in sorted((SERVICE / "runtime").glob("*.py")):
        read = engine_attributes_read(path) - {"rules", "shadow_rules"}
        assert not read, f"{path.relative_to(SERVICE)} reads engine attributes {read}"


def test_the_batch_handler_is_faust_free() -> None:
    roots = imported_roots(SERVICE / "runtime" / "handler.py")
    assert not roots & {"faust", "aiokafka", "mode"}, roots


def test_one_place_computes_did_you_mean_suggestions() -> None:
    """Every suggestion goes through ``core.rulelang.errors.did_you_mean``: rule files, settings
    and config keys suggest the same way."""
    computing = sorted(
        str(path.relative_to(SERVICE))
        for path in SERVICE.rglob("*.py")
        if "difflib" in imported_roots(path) or "get_close_matches" in path.read_text()
    )
    assert computing == ["core/rulelang/errors.py"]
