"""Checkpoints: what is saved, what is skipped cheaply, what comes back."""
from __future__ import annotations

import json
import os
import types

import pytest

from rlmcore.checkpoint import BIG_BYTES, Checkpointer
from rlmcore.errors import CheckpointError

PICKLES = []


class CountingList(list):
    """A list that records every time it is pickled."""

    def __reduce_ex__(self, protocol):
        PICKLES.append(len(self))
        return (CountingList, (list(self),))


def big_list():
    return CountingList(f"line {i} with some text" for i in range(BIG_BYTES // 10))


def run(ns, code, cp):
    """What the worker does around one exec."""
    exec(code, ns)
    cp.record_definitions(code, ns)
    return cp.save(ns, {"__builtins__"}, code)


@pytest.fixture
def cp(tmp_path):
    folder = tmp_path / "sess" / "checkpoint"
    folder.parent.mkdir(mode=0o700)
    return Checkpointer(str(folder))


@pytest.fixture
def ns():
    module = types.ModuleType("__main__")
    return module.__dict__


def test_a_big_value_the_code_does_not_touch_is_not_pickled_again(cp, ns):
    ns["lines"] = big_list()
    cp.save(ns, set(), "lines = ...")
    PICKLES.clear()
    run(ns, "x = 1", cp)
    run(ns, "y = x + 1", cp)
    assert PICKLES == []


def test_a_big_value_named_by_the_code_is_checked_and_its_change_saved(cp, ns, tmp_path):
    ns["lines"] = big_list()
    cp.save(ns, set(), None)
    PICKLES.clear()
    run(ns, "lines.append('new')", cp)
    assert PICKLES and PICKLES[-1] == BIG_BYTES // 10 + 1
    fresh = {}
    Checkpointer(cp.folder).restore(fresh)
    assert fresh["lines"][-1] == "new"


def test_a_change_through_an_alias_is_saved(cp, ns):
    ns["lines"] = big_list()
    ns["alias"] = ns["lines"]
    cp.save(ns, set(), None)
    run(ns, "alias[0] = 'changed'", cp)
    fresh = {}
    Checkpointer(cp.folder).restore(fresh)
    assert fresh["lines"][0] == "changed"


def test_a_change_through_an_alias_of_an_inner_object_is_saved(cp, ns):
    ns["data"] = {"k": big_list()}
    cp.save(ns, set(), None)
    run(ns, "inner = data['k']", cp)
    run(ns, "inner.append('new')", cp)
    fresh = {}
    Checkpointer(cp.folder).restore(fresh)
    assert fresh["data"]["k"][-1] == "new"


def test_many_medium_values_the_code_does_not_touch_are_not_pickled_again(cp, ns):
    for i in range(50):
        ns[f"part{i}"] = CountingList(f"line {j} with some text" for j in range(4000))  # ~100 KB each
    cp.save(ns, set(), None)
    PICKLES.clear()
    run(ns, "x = 1", cp)
    assert PICKLES == []


def test_a_change_made_by_a_function_defined_in_the_repl_is_saved(cp, ns):
    ns["lines"] = big_list()
    run(ns, "def clobber():\n    lines[5] = 'changed'", cp)
    run(ns, "clobber()", cp)
    fresh = {}
    Checkpointer(cp.folder).restore(fresh)
    assert fresh["lines"][5] == "changed"


def test_definitions_are_replayed_and_instances_of_repl_classes_restored(cp, ns, monkeypatch):
    import sys
    module = types.ModuleType("__main__")
    monkeypatch.setitem(sys.modules, "__main__", module)
    ns = module.__dict__
    run(ns, "import json as j\nclass P:\n    def __init__(self, v): self.v = v\np = P(3)\n"
            "def twice(x): return 2 * x", cp)
    fresh_module = types.ModuleType("__main__")
    monkeypatch.setitem(sys.modules, "__main__", fresh_module)
    info = Checkpointer(cp.folder).restore(fresh_module.__dict__)
    assert info["not_restored"] == []
    exec("result = (twice(p.v), j.dumps(1))", fresh_module.__dict__)
    assert fresh_module.__dict__["result"] == (6, "1")


def test_values_that_cannot_be_kept_are_named_with_a_reason(cp, ns):
    dropped = run(ns, "f = lambda: 1\nimport threading\nlock = threading.Lock()\nok = [1]", cp)
    reasons = {d["name"]: d["reason"] for d in dropped}
    assert "def" in reasons["f"] and "pickled" in reasons["lock"] and "ok" not in reasons


def test_a_corrupt_manifest_is_a_clear_error_naming_the_file(cp, ns):
    run(ns, "a = 1", cp)
    with open(cp.manifest_path, "w") as f:
        f.write("{not json")
    with pytest.raises(CheckpointError) as err:
        Checkpointer(cp.folder).restore({})
    assert cp.manifest_path in err.value.message and "move" in err.value.hint


def test_removed_variables_leave_the_checkpoint(cp, ns):
    run(ns, "a = [1]\nb = [2]", cp)
    run(ns, "del a", cp)
    with open(cp.manifest_path) as f:
        assert set(json.load(f)["vars"]) == {"b"}
    assert len([n for n in os.listdir(cp.folder) if n.endswith(".pkl")]) == 1
