"""sft-plugins from Python: a thin layer over the packaged ``host`` command.

Every function runs the ``host`` that was installed with this package (the same binary as on the command
line, with its shipped plugins), streams its progress to ``sys.stderr`` and reads back the JSON files it
writes; nothing is reimplemented here. A failing command raises :class:`HostError` carrying the host's
one-line ``error:`` message and its exit code.

    import sft_plugins as sft
    d = sft.diagnose("models/continuum-base", "datasets/continuum/arithmetic/train.jsonl")
    run = sft.train("configs/continuum/arithmetic.toml", objective__plugin="neg_p", train__max_steps=20)
    frame = sft.load_metrics(run["run_dir"])

Options are keyword arguments spelled as the command's flags (``batch_size=4`` is ``--batch-size 4``,
``chat_template=True`` is ``--chat-template``); config overrides are ``overrides={"optim.lr": 1e-4}`` or
keywords with ``__`` for the dots (``optim__lr=1e-4``).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import threading
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Union

try:
    from importlib.metadata import version as _version

    __version__ = _version("sft-plugins")
except Exception:  # run from the source folder, not installed
    __version__ = "0+source"

__all__ = ["HostError", "host_path", "run_host", "diagnose", "train", "sweep", "load_metrics", "records_or_frame"]

PathLike = Union[str, os.PathLike]

# The run folder's metrics file (host/src/run_dir.rs names it; it is part of the run folder's public layout).
METRICS_FILE = "metrics.jsonl"


class HostError(RuntimeError):
    """A ``host`` command failed: ``message`` is its ``error:`` line, ``returncode`` its exit code."""

    def __init__(self, message: str, returncode: int, command: Sequence[str]):
        super().__init__(message)
        self.message = message
        self.returncode = returncode
        self.command = list(command)
        # What a sweep finished before it failed (`sweep` sets it).
        self.results: Any = None


def host_path() -> str:
    """The ``host`` binary: ``$SFT_PLUGINS_HOST`` if set, else the one installed beside this package's
    interpreter (the wheel puts it in the environment's scripts folder), else ``host`` on ``PATH``."""
    explicit = os.environ.get("SFT_PLUGINS_HOST")
    if explicit:
        return explicit
    candidates = [sysconfig.get_path("scripts")]
    user_scheme = f"{os.name}_user"
    if user_scheme in sysconfig.get_scheme_names():
        candidates.append(sysconfig.get_path("scripts", user_scheme))
    for folder in candidates:
        path = os.path.join(folder, "host")
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    found = shutil.which("host")
    if found is None:
        raise HostError("the `host` command is not installed (pip install the sft-plugins wheel)", 127, ["host"])
    return found


def _flags(options: Mapping[str, Any]) -> List[str]:
    """Keyword options as the host's flags: ``True`` is a bare flag, ``False``/``None`` are left out, a
    list or tuple repeats the flag."""
    args: List[str] = []
    for name, value in options.items():
        flag = "--" + name.replace("_", "-")
        if value is None or value is False:
            continue
        if value is True:
            args.append(flag)
        elif isinstance(value, (list, tuple)):
            for item in value:
                args += [flag, str(item)]
        else:
            args += [flag, str(value)]
    return args


def _toml_literal(value: Any) -> str:
    """A Python value as the TOML literal ``--set key=VALUE`` parses."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, (str, os.PathLike)):
        # A JSON string is a valid TOML basic string (same escapes).
        return json.dumps(os.fspath(value))
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_literal(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{json.dumps(str(k))} = {_toml_literal(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"override value {value!r}: expected bool, int, float, str, a list or a dict")


def _set_args(overrides: Optional[Mapping[str, Any]], keyword_overrides: Mapping[str, Any]) -> List[str]:
    merged: Dict[str, Any] = dict(overrides or {})
    merged.update({key.replace("__", "."): value for key, value in keyword_overrides.items()})
    args: List[str] = []
    for key, value in merged.items():
        args += ["--set", f"{key}={_toml_literal(value)}"]
    return args


def run_host(args: Sequence[str], *, plugin_dirs: Iterable[PathLike] = (), quiet: bool = False) -> str:
    """Runs ``host ARGS``; returns its standard output. Standard error (progress, warnings) is passed
    through to ``sys.stderr`` unless ``quiet``; a non-zero exit raises :class:`HostError`."""
    command = [host_path()]
    for folder in plugin_dirs:
        command += ["--plugin-dir", os.fspath(folder)]
    command += [os.fspath(a) for a in args]
    try:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, errors="replace")
    except OSError as e:
        raise HostError(f"cannot run {command[0]}: {e}", 127, command) from e
    last_error: Optional[str] = None
    assert process.stderr is not None and process.stdout is not None
    # Stdout is small (tables, paths); read it on a thread so neither pipe can fill and block the host.
    out_chunks: List[str] = []
    reader = threading.Thread(target=lambda: out_chunks.append(process.stdout.read()), daemon=True)
    reader.start()
    try:
        for line in process.stderr:
            if line.startswith("error:"):
                last_error = line[len("error:"):].strip()
            if not quiet:
                sys.stderr.write(line)
        returncode = process.wait()
    except BaseException:
        # Interrupted (Ctrl-C, a timeout in the caller): stop the host the way a scheduler would, with
        # SIGTERM (a training run saves a checkpoint and exits), rather than leave it running unseen.
        process.terminate()
        process.wait()
        raise
    reader.join()
    stdout = "".join(out_chunks)
    if returncode != 0:
        raise HostError(last_error or f"host exited with code {returncode}", returncode, command)
    return stdout


def _read_json(path: Path) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def records_or_frame(records: List[Dict[str, Any]], as_frame: Optional[bool] = None):
    """``records`` as a pandas DataFrame when pandas is installed (or ``as_frame=True``), else the list."""
    if as_frame is False:
        return records
    try:
        import pandas  # optional
    except ImportError:
        if as_frame:
            raise
        return records
    return pandas.DataFrame.from_records(records)


def diagnose(model: PathLike, data: PathLike, *, out: Optional[PathLike] = None, quiet: bool = False,
             plugin_dirs: Iterable[PathLike] = (), **options: Any) -> Dict[str, Any]:
    """Where ``data`` sits on the capability continuum for ``model`` (``host diagnose``): the diagnosis
    JSON as a dict (mean and quantiles of the base model's token probabilities, the region, …).
    ``out`` is the output stem (STEM.json and STEM.svg are kept); without it they go to a temporary folder."""
    with tempfile.TemporaryDirectory(prefix="sft-diagnose-") as scratch:
        stem = Path(out) if out is not None else Path(scratch) / "diagnose"
        args = ["diagnose", "--model", model, "--data", data, "--out", stem] + _flags(options)
        run_host(args, plugin_dirs=plugin_dirs, quiet=quiet)
        return _read_json(stem.with_suffix(".json"))


def train(config_path: PathLike, *, overrides: Optional[Mapping[str, Any]] = None, plugin: Optional[str] = None,
          device: Optional[str] = None, resume: bool = False, overwrite: bool = False, quiet: bool = False,
          plugin_dirs: Iterable[PathLike] = (), **keyword_overrides: Any) -> Dict[str, Any]:
    """Fine-tunes as ``host train --config CONFIG_PATH`` does, with config overrides; returns what the run
    produced: ``run_dir``, ``checkpoint``, ``metrics`` (paths), ``steps``, ``first_loss``, ``last_loss``,
    ``tokens_per_second``, ``peak_memory``."""
    with tempfile.TemporaryDirectory(prefix="sft-train-") as scratch:
        summary = Path(scratch) / "summary.json"
        args = ["train", "--config", config_path, "--summary", summary]
        args += _flags({"plugin": plugin, "device": device, "resume": resume, "overwrite": overwrite})
        args += _set_args(overrides, keyword_overrides)
        run_host(args, plugin_dirs=plugin_dirs, quiet=quiet)
        return _read_json(summary)


def _flatten_run(run: Mapping[str, Any]) -> Dict[str, Any]:
    """A sweep run's record as one flat row: identity, ``<protocol>.<score>`` columns, training figures."""
    row: Dict[str, Any] = {key: run.get(key) for key in ("name", "objective", "plugin", "params", "label", "seed", "model")}
    for key, value in (run.get("param_values") or {}).items():
        row[f"param.{key}"] = value
    for protocol, scores in (run.get("scores") or {}).items():
        for key, value in scores.items():
            row[f"{protocol}.{key}"] = value
    for key, value in (run.get("train") or {}).items():
        row[f"train.{key}"] = value
    row["wall_seconds"] = run.get("wall_seconds")
    row["run_dir"] = run.get("run_dir")
    row["checkpoint"] = run.get("checkpoint")
    return row


def sweep(config_path: PathLike, *, overrides: Optional[Mapping[str, Any]] = None, jobs: int = 1,
          devices: Optional[Sequence[str]] = None, collect: bool = False, as_frame: Optional[bool] = None,
          quiet: bool = False, plugin_dirs: Iterable[PathLike] = (), **keyword_overrides: Any):
    """Trains and evaluates a grid as ``host sweep --config CONFIG_PATH`` does (``collect=True`` only
    summarises runs already done); returns one record per finished run (a DataFrame when pandas is
    present). If some runs failed, :class:`HostError` is raised with ``.results`` holding the others."""
    with tempfile.TemporaryDirectory(prefix="sft-sweep-") as scratch:
        summary = Path(scratch) / "summary.json"
        args = ["sweep", "--config", config_path, "--summary", summary]
        if devices:
            args += ["--devices", ",".join(devices)]
        args += _flags({"jobs": jobs if jobs != 1 else None, "collect": collect})
        args += _set_args(overrides, keyword_overrides)
        results = lambda: records_or_frame([_flatten_run(r) for r in _read_json(summary)["runs"]], as_frame)  # noqa: E731
        try:
            run_host(args, plugin_dirs=plugin_dirs, quiet=quiet)
        except HostError as error:
            if summary.is_file():
                error.results = results()
            raise
        return results()


def load_metrics(run_dir: PathLike, *, as_frame: Optional[bool] = None):
    """A run folder's training metrics, one record per logged step (a DataFrame when pandas is present).
    A line cut short by a killed run (the last one) is skipped; any other bad line raises ValueError."""
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no metrics (is {run_dir} a run folder?)")
    records: List[Dict[str, Any]] = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as e:
                if not line.endswith("\n") and f.readline() == "":
                    break  # the unterminated tail of a run killed mid-write
                raise ValueError(f"{path}:{number}: not a JSON line ({e.msg})") from None
    return records_or_frame(records, as_frame)
