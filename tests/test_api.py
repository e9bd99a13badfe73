import importlib
import pathlib

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
    if module in ("enlight_data._colour_kernel", "enlight_data._draw_kernel"):
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


def test_py_typed_is_shipped():
    assert (pathlib.Path(ed.__file__).parent / "py.typed").exists()


def test_cli_rejects_unknown_command(capsys):
    from enlight_data.__main__ import main

    with pytest.raises(SystemExit):
        main(["train"])
    assert "invalid choice" in capsys.readouterr().err
