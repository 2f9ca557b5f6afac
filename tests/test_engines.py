"""The engine interface: the registry, the start-up check of methods' needs against an
engine's capabilities, and loss terms that aggregate to the same loss and gradient however
a batch is split (into micro-batches, over ranks)."""
from __future__ import annotations

import pytest
import torch

from opdbench.blocks import AGG_MODES
from opdbench.config import deep_update, load_yaml, validate_config
from opdbench.train.engines import ENGINES, get_engine, load_engines, register_engine
from opdbench.train.engines.local import LocalEngine
from opdbench.train.losses import LossTerm, aggregate_terms, batch_loss, normalisers
from opdbench.errors import ConfigError
from opdbench.method import SCORING_NEEDS, Progress, StudentOutput
from opdbench.registry import get_method_class, load_methods

from conftest import BASE_TRAIN, METHODS_DIR, MICRO_CONFIG, REPO, scored_batch, snakemake_cmd

CONFIG = load_yaml(REPO / "config" / "config.yaml")


# -- the registry ----------------------------------------------------------------------------
def test_local_is_registered_with_every_capability():
    assert get_engine("local") is LocalEngine and LocalEngine.name == "local"
    assert LocalEngine.capabilities == frozenset(SCORING_NEEDS)
    with pytest.raises(ConfigError, match="unknown engine 'locl'. Did you mean 'local'\\? Valid engines: local"):
        get_engine("locl")


@pytest.fixture
def partial_engine():
    """A test-only engine that scores neither the teacher's entropy nor its top-k."""
    load_engines()

    @register_engine("partial")
    class Partial(LocalEngine):
        capabilities = frozenset(SCORING_NEEDS) - {"teacher_entropy", "teacher_topk"}

    yield Partial
    del ENGINES["partial"]


def test_register_engine_checks_capabilities_and_duplicates(partial_engine):
    with pytest.raises(ConfigError, match="unknown capability 'teacher_logits'"):
        register_engine("bad")(type("Bad", (LocalEngine,), {"capabilities": frozenset({"teacher_logits"})}))
    with pytest.raises(ConfigError, match="needs a class attribute 'capabilities'"):
        register_engine("bad")(type("Bad", (), {"capabilities": ["outcome"], "train": None, "save_model": None}))
    with pytest.raises(ConfigError, match="engine name 'partial' is registered twice"):
        register_engine("partial")(type("Other", (LocalEngine,), {}))
    assert "bad" not in ENGINES


def test_a_need_the_engine_lacks_stops_the_workflow_at_start_up(partial_engine):
    config = deep_update(CONFIG, {"base": {"engine": "partial"}, "methods": ["opd", "reopold", "eopd"]})
    with pytest.raises(ConfigError) as err:
        validate_config(config, METHODS_DIR)
    assert str(err.value) == ("method 'eopd' needs 'teacher_entropy', which engine 'partial' does not provide "
                              "(engines that provide it: local); or set method_settings.eopd.entropy: topk (the gate on "
                              "a lower bound of H_T from the teacher's top-k); config key 'base.engine'")
    # A variant names itself and its method.
    config["methods"] = ["opd", "topk_fkl"]
    with pytest.raises(ConfigError, match="run 'topk_fkl': method 'tropd' needs 'teacher_topk'"):
        validate_config(config, METHODS_DIR)
    config["methods"] = ["opd", "reopold", "exopd", "uniopd"]  # needs it has
    validate_config(config, METHODS_DIR)
    config["base"]["engine"] = "verll"
    with pytest.raises(ConfigError, match="config key 'base.engine': unknown engine 'verll'"):
        validate_config(config, METHODS_DIR)


def test_pipeline_train_refuses_a_run_its_engine_cannot_score(partial_engine, tmp_path):
    from opdbench.pipeline import train

    config = deep_update(CONFIG, {"base": {"engine": "partial"}})
    with pytest.raises(ConfigError, match="method 'eopd' needs 'teacher_entropy'"):
        train(config, "math", "eopd", 0, tmp_path, tmp_path, tmp_path, tmp_path / "out", METHODS_DIR)


ENGINE_PLUGIN = '''
from opdbench.train.engines import register_engine
from opdbench.train.engines.local import LocalEngine
from opdbench.method import SCORING_NEEDS


@register_engine("no_entropy")
class NoEntropy(LocalEngine):
    """A test-only engine without the teacher's entropy."""
    capabilities = frozenset(SCORING_NEEDS) - {"teacher_entropy"}
'''


def test_snakemake_stops_at_start_up_when_the_engine_lacks_a_need(tmp_path):
    """Through the workflow: the engine registers from a file the workflow imports at start-up."""
    import shutil
    import subprocess

    repo = tmp_path / "repo"
    repo.mkdir()
    shutil.copy(REPO / "Snakefile", repo / "Snakefile")
    for folder in ("workflow", "config", "methods", "envs", "profiles", "paper_tables"):
        shutil.copytree(REPO / folder, repo / folder, ignore=shutil.ignore_patterns("__pycache__"))
    (repo / "methods" / "no_entropy_engine.py").write_text(ENGINE_PLUGIN)
    overlay = tmp_path / "engine.yaml"
    overlay.write_text("base: {engine: no_entropy}\nmethods: [opd, eopd]\n")
    proc = subprocess.run(snakemake_cmd(tmp_path / "work", "-n", snakefile=repo / "Snakefile",
                                        configfiles=(MICRO_CONFIG, overlay)), capture_output=True, text=True,
                          timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out
    assert ("method 'eopd' needs 'teacher_entropy', which engine 'no_entropy' does not provide "
            "(engines that provide it: local)") in out, out[-3000:]


# -- loss terms aggregated over the global batch -------------------------------------------
K = 3


def full_batch(B: int = 8, T: int = 5, seed: int = 0):
    """A scored batch with every extra a method can need; rollout 5 has no response token."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([5, 3, 1, 4, 2, 0, 5, 3])[:B]
    mask = (torch.arange(T)[None, :] < lengths[:, None]).float()
    logOld = -torch.rand(B, T, generator=g) * 3
    logT = -torch.rand(B, T, generator=g) * 3
    topk = torch.log_softmax(torch.randn(B, T, K + 2, generator=g), -1)[..., :K]
    prefix = torch.tensor([0, 2, 0, 1, 0, 0, 3, 0])[:B]
    batch = scored_batch(
        logOld, logT, mask, entropy=torch.rand(B, T, generator=g) * 2, group=torch.arange(B) // 2,
        topk_ids=torch.zeros(B, T, K, dtype=torch.long), topk_logT=topk,
        teacher_entropy=torch.rand(B, T, generator=g) * 1.6, logRef=-torch.rand(B, T, generator=g) * 3,
        outcome=torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0, 1.0, 0.0, 0.0])[:B],
        teacher_token=(torch.arange(T)[None, :] < prefix[:, None]).float() * mask,
        sq_norm=torch.rand(B, T, generator=g))
    student = (logOld + 0.1 * torch.randn(B, T, generator=g)).requires_grad_(True)
    topk_student = torch.log_softmax(torch.randn(B, T, K + 2, generator=g), -1)[..., :K].requires_grad_(True)
    return batch, student, topk_student


def runs():
    """Every method and every variant of the default config: (run name, method name, hparams)."""
    methods = load_methods(METHODS_DIR)
    out = [(name, name, {}) for name in sorted(methods)]
    out += [(name, spec["method"], {k: v for k, v in spec.items() if k != "method"})
            for name, spec in CONFIG["variants"].items()]
    return out


def _loss_and_grads(method, batch, logS, topk_logS, progress, pieces):
    """The batch's loss and gradients when it is taken in ``pieces`` (lists of rollout
    indices): each piece's terms over the global normalisers, summed, as an engine that
    accumulates micro-batch gradients (or all-reduces ranks') does."""
    logS.grad = topk_logS.grad = None
    terms = []
    for idx in pieces:
        idx = torch.tensor(idx)
        t, _ = method.loss(batch.select(idx), StudentOutput(logS[idx], topk_logS[idx]), progress)
        terms.append(t)
    norms = normalisers(terms)
    losses = [aggregate_terms(t, norms) for t in terms]
    for loss in losses:
        loss.backward()
    topk_grad = torch.zeros_like(topk_logS) if topk_logS.grad is None else topk_logS.grad.clone()
    return sum(loss.item() for loss in losses), logS.grad.clone(), topk_grad


@pytest.mark.parametrize("agg", AGG_MODES)
@pytest.mark.parametrize("run_name,method_name,hparams", runs(), ids=[r[0] for r in runs()])
def test_micro_batches_with_global_normalisers_give_the_whole_batch_loss_and_gradient(run_name, method_name,
                                                                                     hparams, agg):
    train = {**BASE_TRAIN, "loss_agg_mode": agg, "clip_ratio_c": 3.0}
    method = get_method_class(method_name, METHODS_DIR)(hparams, train, seed=0)
    batch, logS, topk_logS = full_batch()
    for step in (0, 8):  # REOPOLD explores at step 0 and selects by entropy at step 8
        progress = Progress(step, 10)
        method.prepare(batch, progress)
        whole = _loss_and_grads(method, batch, logS, topk_logS, progress, [list(range(8))])
        assert whole[1].abs().sum() > 0, "the check needs a gradient"
        for pieces in ([[0, 1, 2], [3], [4, 5, 6, 7]], [[7, 0], [5], [1, 2, 3, 4, 6]]):
            split = _loss_and_grads(method, batch, logS, topk_logS, progress, pieces)
            assert split[0] == pytest.approx(whole[0], rel=1e-5, abs=1e-7), (pieces, step)
            assert torch.allclose(split[1], whole[1], rtol=1e-5, atol=1e-7), (pieces, step)
            assert torch.allclose(split[2], whole[2], rtol=1e-5, atol=1e-7), (pieces, step)


@pytest.mark.parametrize("run_name,method_name,hparams", runs(), ids=[r[0] for r in runs()])
def test_loss_masks_do_not_depend_on_the_student(run_name, method_name, hparams):
    """What lets an engine count the global normalisers before any gradient."""
    method = get_method_class(method_name, METHODS_DIR)(hparams, BASE_TRAIN, seed=0)
    batch, logS, topk_logS = full_batch()
    progress = Progress(0, 10)
    method.prepare(batch, progress)
    a, _ = method.loss(batch, StudentOutput(logS, topk_logS), progress)
    b, _ = method.loss(batch, StudentOutput(logS.detach() - 2.0, torch.full_like(topk_logS, -3.0)), progress)
    assert len(a) == len(b) >= 1
    for x, y in zip(a, b):
        assert torch.equal(x.mask, y.mask) and x.agg == y.agg and x.weight == y.weight


def test_aggregation_modes_by_hand():
    v = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    m = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    expected = {"token-mean": 10 / 4, "seq-mean-token-mean": (2.0 + 4.0) / 2, "seq-mean-token-sum": (6 + 4) / 2,
                "token-sum": 10.0}
    for agg, value in expected.items():
        whole = batch_loss([LossTerm(v, m, agg, weight=2.0)])
        assert whole.item() == pytest.approx(2 * value), agg
        # each row alone, over the global normalisers (4 tokens, 2 sequences)
        pieces = [[LossTerm(v[i:i + 1], m[i:i + 1], agg, weight=2.0)] for i in range(2)]
        norms = normalisers(pieces)
        assert norms[0].tokens.item() == 4 and norms[0].seqs.item() == 2
        assert sum(aggregate_terms(p, norms).item() for p in pieces) == pytest.approx(2 * value), agg
    with pytest.raises(ValueError, match="unknown loss_agg_mode 'mean'"):
        LossTerm(v, m, "mean")
    with pytest.raises(ValueError, match="gave 1 and 2 loss terms"):
        normalisers([[LossTerm(v, m, "token-sum")], [LossTerm(v, m, "token-sum")] * 2])
