"""The cnnc command line: exit statuses, output lines, and the --json shape."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from cnnc.cli import COMMANDS, main

SPECS = Path(__file__).resolve().parents[1] / "specs"
SEED = str(SPECS / "seed.cnn")


def write(tmp_path: Path, text: str, name: str = "x.cnn") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_check_prints_one_line_per_file(capsys):
    assert main(["check", SEED, str(SPECS / "lenet5.cnn")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"{SEED}: ok: SeedCNN, 1,625,281 params (1,625,281 trainable), " \
                       "output [N, 1]"
    assert lines[1] == f"{SPECS / 'lenet5.cnn'}: ok: LeNet5, 61,706 params (61,706 " \
                       "trainable), output [N, 10]; search spaces: optimizer.lr=0.05 (first " \
                       "of choice(0.05, 0.01))"
    assert len(lines) == 2


def test_check_reports_the_located_error_and_goes_on(tmp_path, capsys):
    bad = write(tmp_path, "network B\ninput x: [1, 8, 8]\nlayers {\n  dense(3)\n}\n")
    assert main(["check", bad, SEED]) == 1
    out, err = capsys.readouterr()
    assert f"{bad}:4:3: dense at line 4 expects a flat input" in err
    assert "      dense(3)\n      ^^^^^" in err
    assert "Traceback" not in err
    assert out.startswith(f"{SEED}: ok:")


def test_usage_errors_exit_2(capsys):
    for argv in ([], ["check"], ["frobnicate", SEED], ["summary", SEED, "--batch", "0"],
                 ["summary", SEED, "--set", "novalue"], ["summary"]):
        with pytest.raises(SystemExit) as info:
            main(argv)
        assert info.value.code == 2, argv
    capsys.readouterr()


def test_missing_file_is_an_error_not_a_crash(tmp_path, capsys):
    assert main(["check", str(tmp_path / "nope.cnn")]) == 1
    assert "no such file" in capsys.readouterr().err


def test_summary_table(capsys):
    assert main(["summary", str(SPECS / "resnet20.cnn"), "--batch", "8"]) == 0
    out = capsys.readouterr().out
    assert 'Model: "ResNet20"' in out and "Connected to" in out
    assert "[8, 64, 8, 8]" in out and "Trainable params: 272,474" in out


def test_summary_json_shape(capsys):
    assert main(["summary", SEED, "--json", "--batch", "4"]) == 0
    data = json.loads(capsys.readouterr().out)  # exactly one JSON object
    assert data["name"] == "SeedCNN"
    assert (data["total_params"], data["trainable_params"], data["non_trainable_params"]) \
        == (1_625_281, 1_625_281, 0)
    assert data["macs"] == sum(layer["macs"] for layer in data["layers"]) > 0
    for layer in data["layers"]:
        assert {"name", "type", "output_shape", "params", "macs"} <= set(layer)
    assert data["layers"][-1]["output_shape"] == [4, 1]


def test_summary_set_and_notes(capsys):
    unet = str(SPECS / "unet.cnn")
    assert main(["summary", unet, "--json", "--set", "width=16"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["search_spaces"]["width"] == 16
    assert "width = 16 from choice(32, 16, 64) (set by --set)" in data["notes"]
    assert main(["summary", unet, "--set", "width=20"]) == 1
    assert "is not one of choice(32, 16, 64)" in capsys.readouterr().err


def test_debug_shows_the_traceback(tmp_path, capsys):
    bad = write(tmp_path, "network B\ninput x: [1, 8, 8]\nlayers { cnov }\n")
    assert main(["check", bad]) == 1
    assert "Traceback" not in capsys.readouterr().err
    assert main(["check", "--debug", bad]) == 1
    assert "Traceback" in capsys.readouterr().err


def test_commands_table_is_the_extension_point():
    assert [c[0] for c in COMMANDS][:2] == ["check", "summary"]


def test_console_script_runs():
    exe = Path(sys.executable).parent / "cnnc"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "cnnc.cli"]
    done = subprocess.run(cmd + ["check", SEED], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "SeedCNN" in done.stdout
    done = subprocess.run(cmd + ["check"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2


def test_summary_batch_adds_memory_plans(capsys):
    lenet = str(SPECS / "lenet5.cnn")
    assert main(["summary", lenet, "--json", "--batch", "8"]) == 0
    memory = json.loads(capsys.readouterr().out)["memory"]
    for mode in ("infer", "train"):
        r = memory[mode]
        assert r["lower_bound_bytes"] <= r["arena_bytes"] <= r["naive_bytes"]
        assert 61_706 * 4 <= r["param_bytes"] < 61_706 * 4 + 64 * 10  # 10 aligned tensors
    assert memory["infer"]["optimizer_bytes"] == 0 < memory["train"]["optimizer_bytes"]
    assert main(["summary", lenet, "--batch", "8"]) == 0
    out = capsys.readouterr().out
    assert "train plan, batch 8: arena" in out and "infer plan, batch 8: arena" in out


def test_graph_writes_dot(tmp_path, capsys):
    assert main(["graph", SEED]) == 0
    text = capsys.readouterr().out
    assert text.startswith('digraph "SeedCNN"') and "dense" in text
    out = tmp_path / "seed.dot"
    assert main(["graph", SEED, "-o", str(out)]) == 0
    assert out.read_text().strip() == text.strip()
    assert main(["graph", SEED, "-o", str(tmp_path / "no" / "such" / "dir.dot")]) == 1
    assert "cannot write" in capsys.readouterr().err
