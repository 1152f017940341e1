"""nasflow.registries / nasflow.registries: lazy name -> class registries with helpful errors."""

from __future__ import annotations

import sys
import types

import pytest

from nasflow.errors import NasflowError, RegistryError, SpaceError
from nasflow.registries import ALL, DERIVE_RULES, OPS, RELAXATIONS, SPACES
from nasflow.registries import Registry, import_path
from nasflow.core.space import build_space
from nasflow.spaces.darts_cell import DARTS_OPS, DartsCellSpace
from nasflow.spaces.distill_cell import RUAS_OPS, DistillCellSpace


class Alpha:
    """First alpha class."""


class Beta:
    """Second class, different object."""


def make_registry() -> Registry:
    reg: Registry = Registry("widget")
    reg.add("conv_3x3", Alpha)
    reg.add("conv_1x1", Beta)
    reg.add("sep_conv_3x3", Alpha)
    return reg


# -- unknown names -------------------------------------------------------------------------------
def test_unknown_name_lists_known_names_and_suggests_close_typo() -> None:
    reg = make_registry()
    with pytest.raises(RegistryError) as info:
        reg.get("conv3x3")
    msg = str(info.value)
    assert "unknown widget 'conv3x3'" in msg
    assert "did you mean 'conv_3x3'?" in msg
    assert "conv_1x1, conv_3x3, sep_conv_3x3" in msg  # every known name, sorted


def test_unknown_name_far_from_everything_has_no_suggestion() -> None:
    reg = make_registry()
    with pytest.raises(RegistryError) as info:
        reg.get("qqqqqqqqqq")
    assert "did you mean" not in str(info.value)
    assert "conv_1x1" in str(info.value)


def test_unknown_name_in_empty_registry_says_none_registered() -> None:
    with pytest.raises(RegistryError, match="none registered"):
        Registry("gizmo").get("x")


def test_registry_error_is_a_nasflow_error_and_a_lookup_error() -> None:
    with pytest.raises(NasflowError):
        make_registry().get("nope")
    with pytest.raises(LookupError):
        make_registry().get("nope")


@pytest.mark.parametrize("bad", ["", None, 3, ["conv_3x3"]])
def test_non_string_or_empty_names_are_rejected(bad: object) -> None:
    with pytest.raises(RegistryError, match="non-empty string"):
        make_registry().get(bad)  # type: ignore[arg-type]


def test_space_typo_suggests_the_real_space() -> None:
    with pytest.raises(RegistryError) as info:
        SPACES.get("distil")
    assert "did you mean 'distill'?" in str(info.value)
    assert "darts" in str(info.value)


# -- registration --------------------------------------------------------------------------------
def test_register_decorator_defaults_to_name_and_first_doc_line() -> None:
    reg: Registry = Registry("widget")

    @reg.register()
    class Gadget:
        """Does gadget things.

        More text that is not the description.
        """

    @reg.register("named", description="explicit")
    def factory() -> int:
        return 1

    assert reg.get("Gadget") is Gadget
    assert reg.get("named") is factory
    assert dict(reg.describe()) == {"Gadget": "Does gadget things.", "named": "explicit"}
    assert reg.names() == ["Gadget", "named"]
    assert list(reg) == ["Gadget", "named"] and len(reg) == 2
    assert "Gadget" in reg and "gadget" not in reg


def test_duplicate_registration_of_a_different_object_errors() -> None:
    reg = make_registry()
    reg.add("conv_3x3", Alpha)  # the same object again: harmless
    assert reg.get("conv_3x3") is Alpha
    with pytest.raises(RegistryError, match="'conv_3x3' is already registered"):
        reg.add("conv_3x3", Beta)
    with pytest.raises(RegistryError, match="already registered"):
        reg.register("conv_1x1")(Alpha)
    assert reg.get("conv_3x3") is Alpha and reg.get("conv_1x1") is Beta  # unchanged


def test_builtin_ops_cannot_be_silently_replaced() -> None:
    with pytest.raises(RegistryError):
        OPS.add("conv_3x3", object())
    assert OPS.get("conv_3x3").name == "conv_3x3"


# -- laziness ------------------------------------------------------------------------------------
def test_add_lazy_imports_only_on_first_use() -> None:
    reg: Registry = Registry("widget")
    reg.add_lazy("later", "nasflow_no_such_module_xyz:Thing")  # not imported yet: no error
    assert "later" in reg
    with pytest.raises(RegistryError, match="cannot import module 'nasflow_no_such_module_xyz'"):
        reg.get("later")


def test_lazy_entry_resolves_and_takes_description_from_docstring() -> None:
    reg: Registry = Registry("widget")
    reg.add_lazy("distill", "nasflow.spaces.distill_cell:DistillCellSpace")
    assert reg.get("distill") is DistillCellSpace
    assert dict(reg.describe())["distill"].startswith("RUAS distillation cell")


def test_builtin_modules_are_imported_on_first_read(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    holder = types.ModuleType("nasflow_regtest_holder")
    reg: Registry = Registry("widget", builtin_modules=("nasflow_regtest_plugin",))
    holder.REG = reg  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "nasflow_regtest_holder", holder)
    (tmp_path / "nasflow_regtest_plugin.py").write_text(
        "import nasflow_regtest_holder as h\n\n"
        "@h.REG.register('late')\n"
        "class Late:\n"
        "    '''Registered at import time.'''\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "nasflow_regtest_plugin", raising=False)
    assert "nasflow_regtest_plugin" not in sys.modules
    assert reg.names() == ["late"]  # reading triggers the import
    assert "nasflow_regtest_plugin" in sys.modules
    assert reg.get("late").__name__ == "Late"
    assert dict(reg.describe()) == {"late": "Registered at import time."}


def test_describe_reports_unloadable_entries_instead_of_crashing() -> None:
    reg = make_registry()
    reg.add_lazy("broken", "nasflow_no_such_module_xyz:Thing")
    rows = dict(reg.describe())
    assert rows["broken"].startswith("(unloadable:")
    assert rows["conv_3x3"] == "First alpha class."


# -- module:attr paths ---------------------------------------------------------------------------
def test_module_attr_strings_resolve_in_any_registry() -> None:
    assert SPACES.get("nasflow.spaces.darts_cell:DartsCellSpace") is DartsCellSpace
    assert make_registry().get("nasflow.spaces.distill_cell:DistillCellSpace") is DistillCellSpace
    from nasflow.core.ops import OpSpec

    assert import_path("nasflow.core.ops:OpSpec.build") is OpSpec.build  # dotted attribute


@pytest.mark.parametrize(
    "path, fragment",
    [
        ("nasflow_no_such_module_xyz:Thing", "cannot import module"),
        ("nasflow.core.ops:NoSuchThing", "has no attribute 'NoSuchThing'"),
        ("nasflow.core.ops:OpSpec.nope", "has no attribute 'OpSpec.nope'"),
        ("nasflow.core.ops:", "is not of the form"),
        (":OpSpec", "is not of the form"),
        ("nasflow.core.ops", "is not of the form"),
    ],
)
def test_bad_import_paths_raise_registry_error_naming_the_path(path: str, fragment: str) -> None:
    with pytest.raises(RegistryError) as info:
        import_path(path)
    assert fragment in str(info.value)


def test_bad_module_attr_string_through_get_is_a_registry_error() -> None:
    with pytest.raises(RegistryError, match="has no attribute"):
        SPACES.get("nasflow.spaces.darts_cell:NoSpace")


# -- the engine's registries ---------------------------------------------------------------------
def test_entry_point_plugins_are_listed() -> None:
    assert {"darts", "distill"} <= set(SPACES.names())
    assert SPACES.get("darts") is DartsCellSpace
    assert SPACES.get("distill") is DistillCellSpace
    # A fresh registry on the same group finds them too (entry points, not import side effects).
    fresh: Registry = Registry("search space", group="nasflow.spaces")
    assert {"darts", "distill"} <= set(fresh.names())
    assert fresh.get("distill") is DistillCellSpace


def test_builtin_engine_registries_are_filled() -> None:
    assert set(DARTS_OPS) | set(RUAS_OPS) <= set(OPS.names())
    assert {"softmax", "gumbel", "hard"} <= set(RELAXATIONS.names())
    assert {"argmax_per_edge", "topk_per_node"} <= set(DERIVE_RULES.names())
    assert set(ALL) == {
        "ops", "relaxations", "derive_rules", "spaces", "strategies",
        "hypergradients", "tasks", "losses", "datasets", "models", "commands",
    }  # fmt: skip


def test_build_space_by_name_and_path_with_options() -> None:
    space = build_space("distill", {"negative_slope": 0.2})
    assert isinstance(space, DistillCellSpace) and space.negative_slope == 0.2
    assert isinstance(build_space("nasflow.spaces.darts_cell:DartsCellSpace", {"steps": 2}), DartsCellSpace)
    with pytest.raises(SpaceError, match="bad options for space 'distill'"):
        build_space("distill", {"no_such_option": 1})
    with pytest.raises(RegistryError, match="did you mean 'darts'"):
        build_space("dart")


def test_space_with_unknown_candidate_op_is_a_space_error() -> None:
    with pytest.raises(SpaceError, match="did you mean 'conv_3x3'"):
        DistillCellSpace(candidates=["skip_connect", "conv3x3"])
