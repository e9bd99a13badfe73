import importlib
import pathlib
import subprocess
import sys

import pytest

import enlight_data as ed

MODULES = sorted(
    f"enlight_data.{p.stem}" for p in pathlib.Path(ed.__file__).parent.glob("*.py") if p.stem not in ("__init__", "__main__")
)


def test_public_names_sorted_and_importable():
    assert ed.__all__ == sorted(ed.__all__)
    for name in ed.__all__:
        assert getattr(ed, name) is not None


@pytest.mark.parametrize("module", MODULES)
def test_every_module_has_a_sorted_all(module):
    if module.endswith("_kernel"):
        pytest.importorskip("triton", reason="the fused kernels need Triton (PyTorch's CUDA wheels ship it)")
    mod = importlib.import_module(module)
    assert hasattr(mod, "__all__"), module
    assert list(mod.__all__) == sorted(mod.__all__)
    for name in mod.__all__:
        assert hasattr(mod, name), f"{module}.{name}"


def test_contract_names_exist():
    for name in ("Period", "Phase", "Schedule", "mixup_pause", "alpha_boost", "high_loss_removal", "enlighten",
                 "EnlightLoader", "current_epoch", "current_phase"):
        assert name in ed.__all__


def test_the_readme_api_table_names_every_public_name_and_no_other():
    readme = pathlib.Path(__file__).resolve().parent.parent / "README.md"
    if not readme.exists():  # an installed package without its sources
        pytest.skip("no README.md beside the tests")
    text = readme.read_text(encoding="utf-8").split("## The public API at a glance", 1)[1].split("\n## ", 1)[0]
    rows = [line.split("|")[1] for line in text.splitlines() if line.startswith("| `")]
    named = {word.split("(")[0] for row in rows for word in row.replace(",", " ").split("`")[1::2]}
    assert named == set(ed.__all__)


def test_py_typed_is_shipped():
    assert (pathlib.Path(ed.__file__).parent / "py.typed").exists()


def test_cli_rejects_unknown_command(capsys):
    from enlight_data.__main__ import main

    with pytest.raises(SystemExit):
        main(["train"])
    assert "invalid choice" in capsys.readouterr().err


def test_the_oldest_versions_file_pins_each_lower_bound_of_pyproject():
    # .ci/oldest.txt is what the suite was run on at the floors (README): a bound raised or lowered in one file
    # and not the other would claim a floor that no run checked.
    tomllib = pytest.importorskip("tomllib", reason="tomllib is new in Python 3.11")
    from packaging.requirements import Requirement
    from packaging.version import Version

    root = pathlib.Path(__file__).resolve().parents[1]
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    requirements = [Requirement(r) for r in project["dependencies"]]
    requirements += [Requirement(r) for extra in project["optional-dependencies"].values() for r in extra]
    pins = {}
    for line in (root / ".ci" / "oldest.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, version = line.split("==")
            pins[name.strip().lower()] = Version(version.strip())
    floors = {}
    for req in requirements:
        for spec in req.specifier:
            if spec.operator == ">=":
                floors[req.name.lower()] = Version(spec.version)
    assert floors and set(floors) == set(pins), (sorted(floors), sorted(pins))
    for name, floor in floors.items():
        assert pins[name] == floor, f"{name}: pyproject's floor is {floor}, .ci/oldest.txt pins {pins[name]}"


def test_importing_the_package_loads_neither_dynamo_nor_the_optional_libraries():
    # torch._dynamo costs about 1.5 s to import, and spawned DataLoader workers import the package again each epoch.
    code = ("import sys, torch; before = set(sys.modules); import enlight_data; "
            "print(sorted(m for m in set(sys.modules) - before if m.split('.')[0] in "
            "('kornia', 'webdataset', 'timm', 'matplotlib') or m.startswith('torch._dynamo')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
