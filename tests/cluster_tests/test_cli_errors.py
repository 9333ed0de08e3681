"""Bad input on the command line: exit code 2, one line on stderr, nothing lost."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

from cli_helpers import run_cli as _cli


REPO = Path(__file__).resolve().parents[2]


def _process(*args: str) -> subprocess.CompletedProcess:
    """``python -m prunesearch ARGS`` in a fresh interpreter (the entry point as shipped)."""
    return subprocess.run([sys.executable, "-m", "prunesearch", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=120)


def _assert_one_line_error(proc, *needles: str) -> None:
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    for needle in needles:
        assert needle in lines[0]


def test_missing_config_file(tmp_path):
    _assert_one_line_error(_process("run", str(tmp_path / "nope.yaml")), "does not exist")


def test_unknown_key_in_config_file(tmp_path):
    cfg = tmp_path / "x.yaml"
    cfg.write_text("method: hamp\nsearch:\n  budjet: 3\n")
    _assert_one_line_error(_cli("run", str(cfg), "--output", str(tmp_path / "r")),
                           "search.budjet", "valid keys")
    assert not (tmp_path / "r").exists(), "a refused run must not create its directory"


def test_bad_override_value(tmp_path):
    _assert_one_line_error(
        _cli("run", "configs/quickstart.yaml", "--set", "hardware.dtype=int3",
             "--output", str(tmp_path / "r")),
        "hardware.dtype", "int3", "float16")


def test_existing_run_directory_is_refused_without_overwrite(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "journal.jsonl").write_text('{"id": 0}\n')
    cfg = tmp_path / "s.yaml"
    cfg.write_text("evaluator:\n  kind: synthetic\n")
    _assert_one_line_error(_cli("run", str(cfg), "--output", str(run_dir)), "already exists",
                           "--overwrite")
    assert (run_dir / "journal.jsonl").read_text() == '{"id": 0}\n', "nothing may be lost"


def test_unwritable_output_directory(tmp_path):
    if os.geteuid() == 0:  # root ignores permission bits; /proc refuses everyone
        target = Path("/proc/prunesearch-test/r")
    else:
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(stat.S_IRUSR | stat.S_IXUSR)
        target = locked / "r"
    cfg = tmp_path / "s.yaml"
    cfg.write_text("evaluator:\n  kind: synthetic\n")
    _assert_one_line_error(_cli("run", str(cfg), "--output", str(target)), "not writable")


def test_output_path_that_is_a_file(tmp_path):
    target = tmp_path / "file.txt"
    target.write_text("keep me")
    cfg = tmp_path / "s.yaml"
    cfg.write_text("evaluator:\n  kind: synthetic\n")
    _assert_one_line_error(_cli("run", str(cfg), "--output", str(target)), "not a directory")
    assert target.read_text() == "keep me"


def test_report_and_resume_of_missing_directory(tmp_path):
    _assert_one_line_error(_cli("report", str(tmp_path / "none")), "does not exist")
    _assert_one_line_error(_cli("resume", str(tmp_path / "none")), "does not exist")
    _assert_one_line_error(_cli("export", str(tmp_path / "none"), "--out", "m.pt"), "does not exist")


def test_unknown_command_and_help():
    proc = _process("frobnicate")
    assert proc.returncode == 2
    helped = _cli("run", "--help")
    assert helped.returncode == 0
    assert "--overwrite" in helped.stdout and "--set" in helped.stdout


def test_resume_refuses_search_changes_but_accepts_cluster_and_paths(tmp_path):
    cfg = tmp_path / "s.yaml"
    cfg.write_text("method: random\nevaluator:\n  kind: synthetic\nsearch:\n  budget: 8\n"
                   "  pop_size: 4\ncluster:\n  num_evaluators: 1\n")
    run_dir = tmp_path / "run"
    done = _cli("run", str(cfg), "--output", str(run_dir))
    assert done.returncode == 0, done.stderr
    # Through the real entry point: a refusal after the config, torch and the run's state are
    # loaded is still one line (no import-time warning or log line beside it).
    _assert_one_line_error(_process("resume", str(run_dir), "--set", "seed=1", "--set",
                                    "search.budget=9"), "search.budget, seed")
    again = _cli("resume", str(run_dir), "--set", "cluster.num_evaluators=2", "--set",
                 f"data.root={tmp_path}")
    assert again.returncode == 0, again.stderr
    assert "already complete" in again.stdout


def test_resume_of_a_run_whose_journal_has_no_checkpoint_is_one_line(tmp_path):
    run_dir = tmp_path / "broken"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text("method: random\nevaluator:\n  kind: synthetic\n")
    (run_dir / "journal.jsonl").write_text("not json\n{\"id\": 1}\n")
    _assert_one_line_error(_cli("resume", str(run_dir)), "corrupt journal")


def _gray_folder(root: Path) -> Path:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        (root / "train" / name).mkdir(parents=True)
        for i in range(6):
            pixels = (rng.random((20, 20)) * 255).astype(np.uint8)
            Image.fromarray(pixels, mode="L").save(root / "train" / name / f"{i}.png")
    return root


def test_grayscale_folder_for_a_three_channel_network_is_refused_naming_the_fix(tmp_path):
    """It used to end in a ValueError traceback from the preflight; now exit 2, one line that
    names data.channels, and no run directory."""
    folder = _gray_folder(tmp_path / "gray")
    cfg = tmp_path / "g.yaml"
    cfg.write_text(f"method: hamp\ndata: {{name: imagefolder, path: {folder}, val_size: 2}}\n"
                   "model: {name: 'torchvision:resnet18'}\n")
    _assert_one_line_error(_cli("run", str(cfg), "--output", str(tmp_path / "r")),
                           "needs 3-channel images", "data.channels: 3")
    assert not (tmp_path / "r").exists()
    _assert_one_line_error(_cli("run", str(cfg), "--output", str(tmp_path / "r"), "--set",
                                "data.channels=2"), "data.channels must be 1")


def test_data_channels_converts_a_grayscale_folder(tmp_path):
    from prunesearch.methods.data import dataset_info, load_dataset
    from prunesearch.methods.settings import DataSettings

    folder = _gray_folder(tmp_path / "gray")
    settings = DataSettings(name="imagefolder", path=str(folder), val_size=2, channels=3)
    assert dataset_info(settings).input_shape == (3, 20, 20)
    images, _ = load_dataset(settings, seed=0).train.batch([0, 1])
    assert images.shape[1] == 3
    assert dataset_info(DataSettings(name="imagefolder", path=str(folder),
                                     val_size=2)).input_shape == (1, 20, 20)
