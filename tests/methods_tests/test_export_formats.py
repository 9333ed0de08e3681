"""Export formats: each file reloads in its own runtime and reproduces the pruned network; the
TorchScript and ONNX files load where prunesearch is not importable; a file that does not
match is refused and leaves nothing behind."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from prunesearch.methods import export_formats
from prunesearch.methods.errors import PrunesearchError, UsageError
from prunesearch.methods.export_formats import (
    FORMATS,
    ONNX_OPSET,
    ExportCheckError,
    Tolerance,
    export_network,
)
from prunesearch.methods.models import build_model
from prunesearch.methods.pruning import apply_genome, genome_space

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
torch.set_num_threads(1)
INPUT_SHAPE = (3, 32, 32)


@pytest.fixture(scope="module")
def pruned() -> torch.nn.Module:
    """A physically pruned CIFAR ResNet-20 (option-A shortcuts: slicing and padding, the
    hardest graph the exporters see here), inner and stage widths cut."""
    torch.manual_seed(0)
    base = build_model("resnet20").eval()
    space = genome_space(base, "resnet20", granularity=4)
    genome = [max(1, (hi + 1) // 2) for hi in space.upper()]
    module = apply_genome(base, space, genome).module.eval()
    assert sum(p.numel() for p in module.parameters()) < sum(p.numel() for p in base.parameters())
    return module


@pytest.fixture(scope="module")
def exported(pruned, tmp_path_factory) -> dict[str, tuple[Path, export_formats.ExportCheck]]:
    folder = tmp_path_factory.mktemp("export")
    files = {}
    for fmt in ("torchscript", "onnx"):
        path = folder / f"net.{fmt}"
        files[fmt] = (path, export_network(pruned, path, format=fmt, input_shape=INPUT_SHAPE,
                                           batch_size=256, seed=3))
    return files


def _reference(module: torch.nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return module(torch.from_numpy(x)).numpy()


def test_every_format_is_listed_and_the_default_is_pt() -> None:
    assert FORMATS[0] == "pt" and set(FORMATS) == {"pt", "torchscript", "onnx"}


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_export_reloads_and_matches_pytorch(exported, pruned, fmt) -> None:
    path, check = exported[fmt]
    assert path.exists() and not list(path.parent.glob(".*.tmp")), "temp file left behind"
    assert check.batch_sizes == (64, 1), "run batch capped at 64, plus a batch of one"
    assert check.max_abs_diff <= 1e-4
    assert "atol 0.0001" in check.describe() and "rtol 0.001" in check.describe()
    # Reload independently, at a batch size the check did not use (the batch axis is dynamic).
    x = np.random.default_rng(1).standard_normal((5, *INPUT_SHAPE)).astype(np.float32)
    if fmt == "torchscript":
        loaded = torch.jit.load(str(path))
        with torch.no_grad():
            got = loaded(torch.from_numpy(x)).numpy()
    else:
        import onnx
        import onnxruntime

        model = onnx.load(str(path))
        assert check.opset == ONNX_OPSET
        assert [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")] == [18]
        dims = model.graph.input[0].type.tensor_type.shape.dim
        assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == list(INPUT_SHAPE), \
            "only the batch axis may be dynamic"
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        got = session.run(None, {session.get_inputs()[0].name: x})[0]
    np.testing.assert_allclose(got, _reference(pruned, x), atol=1e-4, rtol=1e-3)


def test_pt_export_reloads_as_the_same_module(pruned, tmp_path) -> None:
    path = tmp_path / "net.pt"
    check = export_network(pruned, path, format="pt", input_shape=INPUT_SHAPE, batch_size=4)
    assert check.max_abs_diff == 0.0 and check.batch_sizes == (4, 1)
    loaded = torch.load(path, weights_only=False)
    x = np.zeros((2, *INPUT_SHAPE), dtype=np.float32)
    np.testing.assert_array_equal(_reference(loaded, x), _reference(pruned, x))


def test_files_load_without_prunesearch(exported, tmp_path) -> None:
    """A clean interpreter (-I -S: no site-packages processing, so the editable install's
    finder is not there) with only the dependencies' folder on sys.path."""
    import onnxruntime

    deps = {str(Path(onnxruntime.__file__).resolve().parents[1]),
            str(Path(torch.__file__).resolve().parents[1])}
    script = textwrap.dedent(f"""
        import importlib.util, sys
        sys.path[:0] = {sorted(deps)!r}
        assert importlib.util.find_spec("prunesearch") is None, "prunesearch is importable"
        import numpy as np, onnxruntime, torch
        x = np.ones((3, 3, 32, 32), dtype=np.float32)
        session = onnxruntime.InferenceSession({str(exported["onnx"][0])!r},
                                               providers=["CPUExecutionProvider"])
        onnx_out = session.run(None, {{session.get_inputs()[0].name: x}})[0]
        ts_out = torch.jit.load({str(exported["torchscript"][0])!r})(torch.from_numpy(x))
        assert onnx_out.shape == (3, 10) and tuple(ts_out.shape) == (3, 10)
        assert np.allclose(onnx_out, ts_out.detach().numpy(), atol=1e-4, rtol=1e-3)
        print("loaded without prunesearch")
    """)
    base_python = getattr(sys, "_base_executable", sys.executable)
    proc = subprocess.run([base_python, "-I", "-S", "-c", script], cwd=tmp_path, check=False,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "loaded without prunesearch" in proc.stdout


def test_a_mismatching_file_is_refused_and_leaves_nothing(pruned, tmp_path, monkeypatch) -> None:
    out = tmp_path / "net.pt"
    out.write_bytes(b"previous export")
    writer, loader = export_formats._FORMATS["pt"]

    def off_by_a_little(path: Path):
        runtime, run, opset = loader(path)
        return runtime, (lambda x: run(x) + 1e-2), opset

    monkeypatch.setitem(export_formats._FORMATS, "pt", (writer, off_by_a_little))
    with pytest.raises(ExportCheckError, match=r"differ .* by up to 0\.01.*atol 0\.0001"):
        export_network(pruned, out, format="pt", input_shape=INPUT_SHAPE, batch_size=2)
    assert out.read_bytes() == b"previous export", "the old file must be left as it was"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["net.pt"], "temp file left behind"
    # A looser tolerance accepts the same difference: the check compares against it.
    check = export_network(pruned, out, format="pt", input_shape=INPUT_SHAPE, batch_size=2,
                           tolerance=Tolerance(atol=0.02, rtol=0.0))
    assert 0.009 < check.max_abs_diff < 0.011


def test_bad_arguments_are_refused_with_their_reason(pruned, tmp_path) -> None:
    with pytest.raises(UsageError, match=r"--format 'tflite': use one of pt, torchscript, onnx"):
        export_network(pruned, tmp_path / "x", format="tflite", input_shape=INPUT_SHAPE)
    with pytest.raises(ValueError, match=r"Tolerance.atol must be a number >= 0"):
        Tolerance(atol=-1.0)
    assert issubclass(ExportCheckError, PrunesearchError)
    assert not list(tmp_path.iterdir())


def test_the_module_imports_without_loading_onnx_or_torch() -> None:
    """methods/ runs on machines without ONNX (and the CLI lists FORMATS without torch)."""
    code = ("import sys, prunesearch.methods.export_formats\n"
            "print(sorted(m for m in ('onnx', 'onnxruntime', 'onnxscript', 'torch') "
            "if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True, timeout=60)
    assert proc.stdout.strip() == "[]"
