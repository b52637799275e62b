"""The installed wheel, exercised from a fresh virtual environment (.ci/run: scripts/test_wheel.sh).

Runs with the repository root as the working folder (the configs' paths are relative to it) and checks
that what runs is the wheel's `host` and the wheel's plugins, never the build tree's.
"""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

import sft_plugins as sft

REPO = Path(__file__).resolve().parents[3]
INSTALLED = Path(sys.prefix) / "share" / "sft-plugins"


@pytest.fixture(autouse=True)
def in_repo(monkeypatch):
    monkeypatch.chdir(REPO)
    # Only the wheel's plugins: no HOST_PLUGIN_PATH leaking in from the caller.
    monkeypatch.delenv("HOST_PLUGIN_PATH", raising=False)
    monkeypatch.delenv("SFT_PLUGINS_HOST", raising=False)


def test_the_host_is_the_wheels_and_finds_its_plugins():
    host = Path(sft.host_path())
    assert host.parent == Path(sys.prefix) / "bin", host
    listing = subprocess.run([str(host), "plugins", "list"], capture_output=True, text=True, check=True).stdout
    names = {line.split()[1]: line.split()[-1] for line in listing.splitlines()[1:] if line.strip()}
    for name in ["nll", "neg_p", "general_family", "neg_p_threshold", "math", "proportional"]:
        assert name in names, listing
        assert Path(names[name]).resolve().parent == (INSTALLED / "plugins").resolve(), names[name]
    assert "--summary" in subprocess.run([str(host), "train", "--help"], capture_output=True, text=True).stdout


def test_diagnose_returns_the_hosts_diagnosis(tmp_path):
    data = "datasets/continuum/arithmetic/eval.jsonl"
    result = sft.diagnose("models/continuum-base", data, out=tmp_path / "d", batch_size=16, quiet=True)
    on_disk = json.loads((tmp_path / "d.json").read_text())
    assert result == on_disk
    assert (tmp_path / "d.svg").is_file()
    diagnosis = result["diagnosis"]
    assert diagnosis["region"] == "model-strong"  # the shipped base model knows arithmetic (docs/continuum.md)
    assert 0.7 <= diagnosis["mean_p"] <= 1.0
    assert diagnosis["examples"] == sum(1 for line in open(data) if line.strip())


def test_diagnose_without_out_leaves_nothing_behind(tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)
    result = sft.diagnose("models/tiny-default", "datasets/default/eval.jsonl", quiet=True)
    assert result["diagnosis"]["examples"] == 50
    assert list(tmp_path.iterdir()) == []


def test_train_reports_the_run_and_its_metrics(tmp_path):
    run = sft.train("configs/default.toml", train__max_steps=6, train__out_dir=str(tmp_path / "run"),
                    overrides={"eval.every": 0, "optim.lr": 1e-3}, quiet=True)
    assert Path(run["run_dir"]) == tmp_path / "run"
    assert run["steps"] == 6
    assert (Path(run["checkpoint"]) / "model.safetensors").is_file()
    metrics = sft.load_metrics(run["run_dir"], as_frame=False)
    assert [m["step"] for m in metrics] == list(range(1, 7))
    assert metrics[0]["loss"] == run["first_loss"] and metrics[-1]["loss"] == run["last_loss"]
    assert metrics[-1]["loss"] < metrics[0]["loss"]
    # The override reached the config: the cosine schedule peaks at the given learning rate.
    assert max(m["lr"] for m in metrics) == pytest.approx(1e-3)


def test_a_python_objective_from_the_wheel_trains_as_the_native_one(tmp_path):
    common = dict(train__max_steps=10, eval__every=0, quiet=True)
    native = sft.train("configs/default.toml", plugin="neg_p", train__out_dir=str(tmp_path / "native"), **common)
    python_file = INSTALLED / "examples" / "objectives" / "neg_p.py"
    python = sft.train("configs/default.toml", plugin=str(python_file), train__out_dir=str(tmp_path / "py"), **common)
    a = sft.load_metrics(native["run_dir"], as_frame=False)
    b = sft.load_metrics(python["run_dir"], as_frame=False)
    assert len(a) == len(b) == 10
    for x, y in zip(a, b):
        assert math.isclose(x["loss"], y["loss"], rel_tol=1e-6), (x, y)
        assert math.isclose(x["grad_norm"], y["grad_norm"], rel_tol=1e-6), (x, y)


def test_python_objectives_run_in_this_environments_python(tmp_path):
    # The objective reports the interpreter it runs in and a package only this environment has.
    (tmp_path / "which_python.py").write_text(
        "import sys, sft_plugins\n"
        "NAME = 'which_python'\n"
        "DESCRIPTION = 'python %d.%d at %s' % (sys.version_info[0], sys.version_info[1], sft_plugins.__file__)\n"
        "def loss(p, params):\n    return -p\n"
        "def weight(p, params):\n    return p\n"
    )
    shown = sft.run_host(["plugins", "inspect", str(tmp_path / "which_python.py")], quiet=True)
    expected = "python %d.%d at %s" % (sys.version_info[0], sys.version_info[1], sft.__file__)
    assert expected in shown, shown


def test_sweep_returns_one_record_per_run(tmp_path):
    sweep_file = tmp_path / "sweep.toml"
    sweep_file.write_text(
        f'base = "{REPO / "configs/default.toml"}"\n'
        f'out_dir = "{tmp_path / "sweep"}"\n'
        "seeds = [0, 1]\n"
        'rank_by = "greedy.accuracy"\n'
        '[[objective]]\nplugin = "nll"\n'
        '[[objective]]\nplugin = "general_family"\nparams = { alpha = [1.0, 3.0] }\n'
        '[[eval]]\nname = "greedy"\nevaluator = "math"\nmax_new_tokens = 8\n'
    )
    records = sft.sweep(sweep_file, train__max_steps=4, as_frame=False, quiet=True)
    assert len(records) == 3 * 2
    assert {(r["objective"], r.get("param.alpha"), r["seed"]) for r in records} == {
        (o, a, s) for o, a in [("nll", None), ("general_family", 1.0), ("general_family", 3.0)] for s in (0, 1)
    }
    for record in records:
        assert 0.0 <= record["greedy.accuracy"] <= 1.0
        assert record["train.steps"] == 4
        assert (Path(record["run_dir"]) / "result.json").is_file()
    # Run again: every run is reused, the same records come back.
    again = sft.sweep(sweep_file, train__max_steps=4, as_frame=False, quiet=True)
    key = lambda r: r["name"]  # noqa: E731
    strip = lambda r: {k: v for k, v in r.items() if k != "wall_seconds"}  # noqa: E731
    assert [strip(r) for r in sorted(again, key=key)] == [strip(r) for r in sorted(records, key=key)]


def test_host_errors_come_back_as_one_line_and_the_exit_code(tmp_path):
    with pytest.raises(sft.HostError) as error:
        sft.train("configs/default.toml", train__max_steps="many", train__out_dir=str(tmp_path / "r"), quiet=True)
    assert error.value.returncode == 2
    assert "max_steps" in error.value.message and "\n" not in error.value.message
    assert not (tmp_path / "r" / "final").exists()

    with pytest.raises(sft.HostError) as error:
        sft.diagnose("models/tiny-default", tmp_path / "missing.jsonl", quiet=True)
    assert "missing.jsonl" in error.value.message and error.value.returncode == 2

    with pytest.raises(sft.HostError) as error:
        sft.train("configs/default.toml", plugin=str(tmp_path / "nope.py"), quiet=True)
    assert "nope.py" in error.value.message


def test_an_interrupted_call_stops_the_host_which_saves_its_run(tmp_path, monkeypatch):
    class Interrupt(Exception):
        pass

    class InterruptAtFirstStep:
        """Stands in for sys.stderr and raises, as Ctrl-C would, once training has begun."""

        def write(self, text):
            if text.startswith("step "):
                raise Interrupt()

        def flush(self):
            pass

    monkeypatch.setattr(sys, "stderr", InterruptAtFirstStep())
    run_dir = tmp_path / "run"
    with pytest.raises(Interrupt):
        sft.train("configs/default.toml", train__max_steps=1_000_000, train__out_dir=str(run_dir), eval__every=0)
    monkeypatch.undo()
    # The host got SIGTERM, saved a checkpoint and exited: its lock on the run folder is free again.
    import fcntl

    with open(run_dir / ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    assert any(p.name.startswith("checkpoint-") for p in run_dir.iterdir()), list(run_dir.iterdir())


def test_load_metrics_skips_only_a_cut_off_last_line(tmp_path):
    good = {"step": 1, "loss": 2.0}
    (tmp_path / "metrics.jsonl").write_text(json.dumps(good) + "\n" + '{"step": 2, "lo')
    assert sft.load_metrics(tmp_path, as_frame=False) == [good]
    (tmp_path / "metrics.jsonl").write_text('{"step": 1, "lo\n' + json.dumps(good) + "\n")
    with pytest.raises(ValueError, match=r"metrics.jsonl:1"):
        sft.load_metrics(tmp_path, as_frame=False)
    with pytest.raises(FileNotFoundError):
        sft.load_metrics(tmp_path / "nowhere")


def test_overrides_become_toml_literals_the_host_reads_back():
    assert sft._set_args({"data.train": 'a "b".jsonl', "x.flag": True}, {"optim__betas": [0.9, 0.95]}) == [
        "--set", 'data.train="a \\"b\\".jsonl"', "--set", "x.flag=true", "--set", "optim.betas=[0.9, 0.95]",
    ]
    assert sft._toml_literal(float("inf")) == "inf" and sft._toml_literal(1e-4) == "0.0001"
    with pytest.raises(TypeError):
        sft._toml_literal(object())


def test_records_are_a_frame_only_when_pandas_is_there():
    records = [{"a": 1}, {"a": 2}]
    try:
        import pandas  # noqa: F401
    except ImportError:
        assert sft.records_or_frame(records) == records
        with pytest.raises(ImportError):
            sft.records_or_frame(records, as_frame=True)
    else:
        frame = sft.records_or_frame(records)
        assert list(frame["a"]) == [1, 2]
    assert sft.records_or_frame(records, as_frame=False) == records


def test_the_python_version_is_one_the_wheel_claims():
    assert sys.version_info >= (3, 9)
    assert sft.__version__ == subprocess.run([sft.host_path(), "--version"], capture_output=True, text=True).stdout.split()[-1]
    assert os.access(sft.host_path(), os.X_OK)
