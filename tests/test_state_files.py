"""State and results files: written atomically (opdbench.atomic); a resumed run checks that
its metrics log and checkpoint agree, and a damaged checkpoint or fixed-state file gives an
error naming the file (or is recomputed, where that is faithful). Fast: a LocalEngine on
untrained micro models, no workflow."""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import torch

from opdbench.atomic import StateFileError, atomic_dir, atomic_open, atomic_path, atomic_write_text
from opdbench.config import deep_update, load_yaml, resolve_run
from opdbench.train.engines.local import CHECKPOINT, LocalEngine
from opdbench.models import build_tiny_model, load_tokenizer
from opdbench.pipeline import build_tokenizer, load_task
from opdbench.registry import get_method_class
from opdbench.tasks.base import read_jsonl, write_jsonl

from conftest import METHODS_DIR, MICRO_CONFIG, REPO

TIMING = re.compile(r"^seconds_")


def _temporaries(directory: Path) -> list[Path]:
    return [p for p in directory.rglob(".tmp-*")]


# -- the helpers ---------------------------------------------------------------------------
class Boom(Exception):
    pass


def test_atomic_write_text_replaces_whole_file(tmp_path):
    path = tmp_path / "sub" / "run.json"
    atomic_write_text(path, "old\n")
    atomic_write_text(path, "new\n")
    assert path.read_text() == "new\n" and _temporaries(tmp_path) == []


def test_a_writer_that_raises_midway_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 0}\n')
    with pytest.raises(Boom):
        with atomic_open(path) as f:
            f.write('{"step": 0}\n{"st')  # half a row, then the writer dies
            f.flush()
            raise Boom
    assert path.read_text() == '{"step": 0}\n'
    with pytest.raises(Boom):  # a library writing by path (torch.save, to_csv, savefig)
        with atomic_path(path) as tmp:
            Path(tmp).write_text("half")
            raise Boom
    assert path.read_text() == '{"step": 0}\n'

    def rows():
        yield {"step": 0}
        raise Boom

    with pytest.raises(Boom):  # a jsonl writer fed by a generator that fails
        write_jsonl(path, rows())
    assert path.read_text() == '{"step": 0}\n'
    assert _temporaries(tmp_path) == []


def test_atomic_path_keeps_the_suffix_for_libraries_that_infer_the_format(tmp_path):
    with atomic_path(tmp_path / "curves.png") as tmp:
        assert tmp.parent == tmp_path and tmp.name.endswith("curves.png") and tmp.name.startswith(".tmp-")
        torch.save({"a": 1}, tmp)
    assert torch.load(tmp_path / "curves.png")["a"] == 1


def test_atomic_dir_is_whole_or_absent(tmp_path):
    out = tmp_path / "tokenizer"
    with atomic_dir(out) as tmp:
        (tmp / "a.json").write_text("1")
    with pytest.raises(Boom):
        with atomic_dir(out) as tmp:
            (tmp / "a.json").write_text("2")
            raise Boom
    assert (out / "a.json").read_text() == "1"
    with atomic_dir(out) as tmp:
        (tmp / "b.json").write_text("3")
    assert sorted(p.name for p in out.iterdir()) == ["b.json"]
    assert _temporaries(tmp_path) == []


# -- the engine ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Micro math data, tokenizer and untrained student/teacher; a uniopd run (difficulty and
    retention state beside the checkpoint) trained once for 4 steps, checkpoint at step 2."""
    root = tmp_path_factory.mktemp("state")
    config = deep_update(load_yaml(REPO / "config" / "config.yaml"), load_yaml(MICRO_CONFIG))
    task = load_task(config, "math")
    task.write_data(root / "data", 0)
    build_tokenizer(config, "math", root / "data", root / "tok")
    tok = load_tokenizer(root / "tok")
    for role in ("student", "teacher"):
        model = build_tiny_model(config["task_settings"]["math"][role]["arch"], tok, seed=0)
        model.save_pretrained(root / role)
        tok.save_pretrained(root / role)
    run = resolve_run(config, "math", "uniopd", 0, METHODS_DIR)
    assert run["train"]["steps"] == 4 and run["train"]["checkpoint_every"] == 2
    rows = read_jsonl(root / "data" / "train.jsonl")

    def engine(out_dir: Path) -> LocalEngine:
        method = get_method_class(run["method"], METHODS_DIR)(run["hparams"], run["train"], run["seed"])
        return LocalEngine(run, task, rows, str(root / "student"), str(root / "teacher"), method, out_dir)

    reference = root / "reference"
    history = engine(reference).train()
    assert [r["step"] for r in history] == [0, 1, 2, 3]
    ckpt = reference / "checkpoints"
    assert torch.load(ckpt / CHECKPOINT, weights_only=False)["next_step"] == 2
    assert (ckpt / "difficulty.json").exists() and (ckpt / "retention_samples.json").exists()
    assert _temporaries(reference) == []
    return engine, reference, history


@pytest.fixture
def run_dir(setup, tmp_path):
    """A copy of the reference run as a kill after step 3 leaves it: checkpoint at step 2,
    metrics rows 0..3."""
    _, reference, _ = setup
    out = tmp_path / "run"
    shutil.copytree(reference, out)
    return out


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _comparable(rows):
    return [{k: v for k, v in r.items() if not TIMING.match(k)} for r in rows]


def test_resume_drops_rows_after_the_checkpoint_and_retraces_them(setup, run_dir):
    engine, _, history = setup
    resumed = engine(run_dir).train()
    assert _comparable(resumed) == _comparable(history)
    assert _comparable(_rows(run_dir / "metrics.jsonl")) == _comparable(history)


def test_half_written_last_row_after_the_checkpoint_is_dropped(setup, run_dir):
    engine, _, history = setup
    metrics = run_dir / "metrics.jsonl"
    lines = metrics.read_text().splitlines(keepends=True)
    metrics.write_text("".join(lines[:3]) + lines[3][:len(lines[3]) // 2])  # a kill mid-append of step 3
    step, rows = engine(run_dir).load_checkpoint()
    assert step == 2 and [r["step"] for r in rows] == [0, 1]
    assert [r["step"] for r in _rows(metrics)] == [0, 1]


def test_half_written_row_the_checkpoint_needs_is_refused(setup, run_dir):
    engine, _, _ = setup
    metrics = run_dir / "metrics.jsonl"
    lines = metrics.read_text().splitlines(keepends=True)
    metrics.write_text(lines[0] + lines[1][:10])  # row of step 1 cut: the checkpoint at 2 needs it
    with pytest.raises(StateFileError) as e:
        engine(run_dir).train()
    msg = str(e.value)
    assert "metrics.jsonl" in msg and "line 2" in msg and CHECKPOINT in msg and "delete" in msg


def test_emptied_metrics_beside_a_good_checkpoint_is_refused_naming_both_files(setup, run_dir):
    engine, _, _ = setup
    metrics = run_dir / "metrics.jsonl"
    metrics.write_text("")
    before = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    with pytest.raises(StateFileError) as e:
        engine(run_dir).train()
    msg = str(e.value)
    assert str(metrics) in msg and str(run_dir / "checkpoints" / CHECKPOINT) in msg
    assert "steps 0-1 are missing" in msg and f"delete {run_dir / 'checkpoints'}" in msg
    assert {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()} == before  # nothing touched
    metrics.unlink()  # a missing log is refused the same way
    with pytest.raises(StateFileError, match="is missing"):
        engine(run_dir).load_checkpoint()


def test_a_gap_in_the_metrics_is_refused(setup, run_dir):
    engine, _, _ = setup
    metrics = run_dir / "metrics.jsonl"
    lines = metrics.read_text().splitlines(keepends=True)
    metrics.write_text(lines[1] + lines[2])  # step 0 lost
    with pytest.raises(StateFileError, match="steps 0 are missing"):
        engine(run_dir).load_checkpoint()


def test_truncated_checkpoint_gives_an_error_naming_the_file(setup, run_dir):
    engine, _, _ = setup
    ckpt = run_dir / "checkpoints" / CHECKPOINT
    data = ckpt.read_bytes()
    ckpt.write_bytes(data[:len(data) // 2])
    with pytest.raises(StateFileError) as e:
        engine(run_dir).train()
    msg = str(e.value)
    assert str(ckpt) in msg and "truncated or corrupted" in msg and f"delete {run_dir / 'checkpoints'}" in msg
    ckpt.write_bytes(b"")
    with pytest.raises(StateFileError, match="unreadable"):
        engine(run_dir).load_checkpoint()


@pytest.mark.parametrize("name", ["retention_samples", "difficulty"])
def test_half_written_fixed_state_is_recomputed_from_the_initial_student(setup, run_dir, name, capsys):
    """Recomputed after a resume from the checkpoint (the student then holds trained weights):
    the same value as the uninterrupted run's, and the same training."""
    engine, reference, history = setup
    path = run_dir / "checkpoints" / f"{name}.json"
    good = path.read_text()
    path.write_text(good[:len(good) // 2])
    resumed = engine(run_dir).train()
    assert "unreadable" in capsys.readouterr().out
    assert json.loads(path.read_text()) == json.loads(good)
    assert _comparable(resumed) == _comparable(history)


def test_a_run_never_ends_with_steps_missing_from_its_log(setup, tmp_path, monkeypatch):
    """The end-of-training check: a log that lost a row while training stops the run before
    a run record could count the rows."""
    engine, _, _ = setup
    eng = engine(tmp_path / "run")
    write = eng.write_metrics
    monkeypatch.setattr(eng, "write_metrics", lambda rows: write([r for r in rows if r["step"] != 1]))
    with pytest.raises(StateFileError, match="steps 1 are missing"):
        eng.train()


# -- every writer goes through opdbench.atomic --------------------------------------------
WRITERS = re.compile(r"\.write_text\(|\.write_bytes\(|json\.dump\(|\.to_csv\(|savefig\(|torch\.save\("
                     r"|open\([^)]*[\"'][wax]b?[\"']|save_pretrained\(")
# Writers that are not results or state files, or write their own way (explained).
EXEMPT = {
    "opdbench/atomic.py": "the helpers themselves",
    "opdbench/logs.py": "a job's log, appended line by line",
    "opdbench/data/resources.py": "downloads to <dest>.part and renames (os.replace)",
    "opdbench/tasks/code_exec.py": "the sandbox's pipes",
}


def test_every_results_writer_is_atomic():
    offenders = []
    for path in sorted([*(REPO / "opdbench").rglob("*.py"), *(REPO / "workflow" / "scripts").glob("*.py")]):
        rel = str(path.relative_to(REPO))
        if rel in EXEMPT:
            continue
        lines = path.read_text().splitlines()
        for n, line in enumerate(lines, 1):
            statement = " ".join(lines[n - 1:n + 2])  # a call may continue on the next lines
            if WRITERS.search(line) and not re.search(r"[(,]\s*tmp\b", statement):
                offenders.append(f"{rel}:{n}: {line.strip()}")
    # Model weights: written before model.json, the rule's output, which is written last and
    # atomically (write_manifest), so a half-written model directory is never taken as done.
    allowed = {"self.student.save_pretrained(model_dir)", "self.tokenizer.save_pretrained(model_dir)",
               "model.save_pretrained(out_dir)", "tokenizer.save_pretrained(out_dir)"}
    assert [o for o in offenders if o.split(": ", 1)[1] not in allowed] == []


def test_a_run_is_bound_to_its_base_models_and_data(tmp_path):
    """After a base model is rebuilt (another recipe), Snakemake reruns the training job; its
    finished record and checkpoints are then another run's and must not be reused."""
    from opdbench.pipeline import FINISHED, _bound_to_inputs, _finished_before, _model_files_hash

    def model(name: str, weights: bytes) -> Path:
        d = tmp_path / name
        d.mkdir()
        (d / "model.safetensors").write_bytes(weights)
        (d / "model.json").write_text(json.dumps({"weights": "."}))
        return d

    data = tmp_path / "data"
    data.mkdir()
    (data / "manifest.json").write_text(json.dumps({"sha256": {"train.jsonl": "ab"}}))
    student, teacher = model("student", b"s1"), model("teacher", b"t")
    settings = {"train": {"steps": 2}, "config_hash": "settings only"}
    run = _bound_to_inputs(settings, student, teacher, data)
    assert run["inputs"]["student"] == _model_files_hash(student)
    assert _bound_to_inputs(settings, student, teacher, data)["config_hash"] == run["config_hash"]

    out, model_dir = tmp_path / "run", tmp_path / "run" / "model"
    model_dir.mkdir(parents=True)
    (model_dir / "model.safetensors").write_bytes(b"trained")
    (out / "metrics.jsonl").write_text('{"step": 0}\n{"step": 1}\n')
    (out / FINISHED).write_text(json.dumps({"config_hash": run["config_hash"], "steps": 2, "train_seconds": 1.0,
                                            "model_files": _model_files_hash(model_dir)}))
    assert _finished_before(out, model_dir, run) is not None

    (student / "model.safetensors").write_bytes(b"s2")  # the student was rebuilt
    rebuilt = _bound_to_inputs(settings, student, teacher, data)
    assert rebuilt["config_hash"] != run["config_hash"]
    assert _finished_before(out, model_dir, rebuilt) is None
    (data / "manifest.json").write_text(json.dumps({"sha256": {"train.jsonl": "cd"}}))
    assert _bound_to_inputs(settings, student, teacher, data)["config_hash"] != rebuilt["config_hash"]

    # A paper-scale pointer is identified by the model it names.
    (teacher / "model.json").write_text(json.dumps({"weights": "org/teacher-7b"}))
    assert _bound_to_inputs(settings, student, teacher, data)["inputs"]["teacher"] == "org/teacher-7b"
