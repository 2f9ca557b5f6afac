"""Every method against values computed by hand on small tensors, the limiting identities
of shared/METHODS.md, and where gradients may flow (TRL-style analytic tests).

Conventions: rho = 1 unless a test says otherwise (logS = logOld), token-mean, eps 0.2.
"""
import math

import pytest
import torch

from opdbench.train.losses import batch_loss
from opdbench.method import Progress, StudentOutput
from opdbench.registry import get_method_class

from conftest import BASE_TRAIN, METHODS_DIR, scored_batch

C_03 = math.log(0.3) / 0.7  # REOPOLD's floor at lambda 0.3: -1.7200...


def method(name, **hp):
    return get_method_class(name, METHODS_DIR)(hp, BASE_TRAIN, seed=0)


def on_policy(logOld, topk=None):
    """The student at the behaviour parameters: logS = logOld (rho = 1), with gradient."""
    logS = logOld.clone().requires_grad_(True)
    topk_logS = None if topk is None else topk.clone().requires_grad_(True)
    return StudentOutput(logS=logS, topk_logS=topk_logS)


def run(m, batch, student, step=0, total=10):
    progress = Progress(step, total)
    m.prepare(batch, progress)
    return loss_of(m, batch, student, progress)


def loss_of(m, batch, student, progress):
    """The method's loss terms aggregated over the batch, as the engine does, and its diagnostics."""
    terms, diag = m.loss(batch, student, progress)
    return batch_loss(terms), diag


def opd_loss(batch, logOld):
    student = on_policy(logOld)
    loss, _ = run(method("opd"), batch, student)
    loss.backward()
    return loss.item(), student.logS.grad


LOG_OLD = torch.tensor([[-1.0, -2.0, -0.5, -0.3], [-0.2, -1.0, -3.0, -0.7]])
LOG_T = torch.tensor([[-0.5, -5.0, -0.5, -0.1], [-0.1, -2.0, -1.0, -9.0]])
MASK = torch.tensor([[1.0, 1.0, 1.0, 1.0], [1.0, 1.0, 1.0, 0.0]])
R = LOG_T - LOG_OLD  # [[0.5, -3, 0, 0.2], [0.1, -1, 2, -8.3 (masked)]]


# -- EOPD --------------------------------------------------------------------------------
def topk_fixture():
    # teacher top-2 log-probs (full-vocabulary normalisation) and the student's at the same ids
    topk_logT = torch.log(torch.tensor([[[0.6, 0.2]] * 4, [[0.5, 0.5]] * 4]))
    topk_logS = torch.log(torch.tensor([[[0.3, 0.3]] * 4, [[0.1, 0.4]] * 4]))
    return topk_logT, topk_logS


def test_eopd_by_hand():
    topk_logT, topk_logS = topk_fixture()
    H_T = torch.tensor([[0.9, 0.1, 0.8, 0.5], [2.0, 0.0, 0.7, 3.0]])  # >= 0.8 at (0,0), (0,2), (1,0); (1,3) masked
    batch = scored_batch(LOG_OLD, LOG_T, MASK, topk_ids=torch.zeros(2, 4, 2, dtype=torch.long),
                         topk_logT=topk_logT, teacher_entropy=H_T)
    student = on_policy(LOG_OLD, topk_logS)
    loss, diag = run(method("eopd", k=2), batch, student)
    # renormalised teacher: row 0 -> (0.75, 0.25); row 1 -> (0.5, 0.5)
    fkl0 = 0.75 * (math.log(0.75) - math.log(0.3)) + 0.25 * (math.log(0.25) - math.log(0.3))
    fkl1 = 0.5 * (math.log(0.5) - math.log(0.1)) + 0.5 * (math.log(0.5) - math.log(0.4))
    assert diag["fkl"][0, 0].item() == pytest.approx(fkl0) and diag["fkl"][1, 0].item() == pytest.approx(fkl1)
    rkl = -(0.5 - 3.0 + 0.0 + 0.2 + 0.1 - 1.0 + 2.0) / 7
    assert loss.item() == pytest.approx(rkl + (2 * fkl0 + fkl1) / 7, rel=1e-6)
    loss.backward()
    # the FKL term's direct gradient: -pT~(v) / N at the selected tokens, 0 elsewhere
    g = student.topk_logS.grad
    assert g[0, 0].tolist() == pytest.approx([-0.75 / 7, -0.25 / 7]) and g[0, 1].abs().sum() == 0
    assert g[1, 3].abs().sum() == 0  # masked token: its entropy is above tau but it carries no loss


def test_eopd_with_infinite_tau_is_opd():
    topk_logT, topk_logS = topk_fixture()
    batch = scored_batch(LOG_OLD, LOG_T, MASK, topk_ids=torch.zeros(2, 4, 2, dtype=torch.long), topk_logT=topk_logT,
                         teacher_entropy=torch.full((2, 4), 5.0))
    student = on_policy(LOG_OLD, topk_logS)
    loss, _ = run(method("eopd", tau=math.inf), batch, student)
    loss.backward()
    ref_loss, ref_grad = opd_loss(batch, LOG_OLD)
    assert loss.item() == pytest.approx(ref_loss) and torch.allclose(student.logS.grad, ref_grad)
    assert student.topk_logS.grad is None or student.topk_logS.grad.abs().sum() == 0


def test_topk_entropy_lower_bound_by_hand_and_below_the_full_entropy():
    from opdbench.blocks import topk_entropy_lower_bound

    # top-2 of (0.6, 0.2 | tail 0.2): -0.6 log 0.6 - 0.2 log 0.2 - 0.2 log 0.2 (tail at most 0.2 per token)
    bound = topk_entropy_lower_bound(torch.log(torch.tensor([[0.6, 0.2]])))
    assert bound.item() == pytest.approx(-0.6 * math.log(0.6) - 0.4 * math.log(0.2))
    # equality when the tail is made of k-th-sized tokens: (0.6, 0.2, 0.2) has exactly this entropy
    assert bound.item() == pytest.approx(-(torch.tensor([0.6, 0.2, 0.2]) * torch.tensor([0.6, 0.2, 0.2]).log()).sum())
    gen = torch.Generator().manual_seed(0)
    logp = torch.log_softmax(3 * torch.randn(500, 50, generator=gen), -1)
    full = -(logp.exp() * logp).sum(-1)
    for k in (1, 4, 16, 50):
        topk = logp.topk(k, -1).values
        assert (topk_entropy_lower_bound(topk) <= full + 1e-5).all()
    assert torch.allclose(topk_entropy_lower_bound(logp.topk(50, -1).values), full, atol=1e-5)  # the whole vocabulary


def test_topk_forward_kl_from_an_engine_computed_raw_fkl_equals_the_one_from_the_student_logprobs():
    """verl computes sum_k pT (log pT - log pS) in the student's forward (no topk_logS): the
    renormalised FKL (EOPD) follows from it exactly, gradient included."""
    from opdbench.blocks import topk_forward_kl

    topk_logT, topk_logS = topk_fixture()
    for renormalize in (True, False):
        a = topk_logS.clone().requires_grad_(True)
        expected = topk_forward_kl(topk_logT, StudentOutput(logS=LOG_OLD, topk_logS=a), renormalize)
        expected.sum().backward()
        b = topk_logS.clone().requires_grad_(True)
        raw = (topk_logT.exp() * (topk_logT - b)).sum(-1)  # what verl's compute_forward_kl_topk returns
        got = topk_forward_kl(topk_logT, StudentOutput(logS=LOG_OLD, topk_fkl=raw), renormalize)
        got.sum().backward()
        assert torch.allclose(got, expected, atol=1e-6) and torch.allclose(a.grad, b.grad, atol=1e-6)


def test_eopd_with_the_topk_entropy_gates_on_its_lower_bound():
    topk_logT, topk_logS = topk_fixture()
    m = method("eopd", k=2, entropy="topk", tau=0.9)
    assert "teacher_entropy" not in m.needs and "teacher_topk" in m.needs
    assert "teacher_entropy" in method("eopd").needs
    # row 0: top-2 (0.6, 0.2): bound 0.6 log(1/0.6) + 0.4 log(1/0.2) = 0.950 >= 0.9; row 1 (0.5, 0.5): log 2 = 0.693
    batch = scored_batch(LOG_OLD, LOG_T, MASK, topk_ids=torch.zeros(2, 4, 2, dtype=torch.long), topk_logT=topk_logT)
    student = on_policy(LOG_OLD, topk_logS)
    loss, diag = run(m, batch, student)
    assert diag["fkl_token"].tolist() == [[1, 1, 1, 1], [0, 0, 0, 0]]
    fkl0 = 0.75 * (math.log(0.75) - math.log(0.3)) + 0.25 * (math.log(0.25) - math.log(0.3))
    rkl = -(0.5 - 3.0 + 0.0 + 0.2 + 0.1 - 1.0 + 2.0) / 7
    assert loss.item() == pytest.approx(rkl + 4 * fkl0 / 7, rel=1e-6)


# -- REOPOLD -----------------------------------------------------------------------------
def test_reopold_floor_value():
    assert C_03 == pytest.approx(-1.719961, abs=1e-6)


def test_reopold_exploration_phase_masks_credits_below_the_floor():
    batch = scored_batch(LOG_OLD, LOG_T, MASK)
    student = on_policy(LOG_OLD)
    loss, diag = run(method("reopold"), batch, student, step=0, total=9)  # T_switch = 3
    # kept: R >= -1.72 -> all valid tokens except (0,1) R=-3; (1,3) is padding
    kept = [[1, 0, 1, 1], [1, 1, 1, 0]]
    assert diag["kept"].tolist() == kept
    assert loss.item() == pytest.approx(-(0.5 + 0.0 + 0.2 + 0.1 - 1.0 + 2.0) / 6)
    loss.backward()
    assert student.logS.grad[0, 1].item() == 0.0 and student.logS.grad[0, 0].item() == pytest.approx(-0.5 / 6)


def test_reopold_refinement_phase_uses_top_entropy_tokens_and_floored_credit():
    H = torch.tensor([[0.1, 0.9, 0.5, 0.3], [0.2, 0.6, 0.05, 9.0]])
    batch = scored_batch(LOG_OLD, LOG_T, MASK, entropy=H)
    loss, diag = run(method("reopold", beta=0.5), batch, on_policy(LOG_OLD), step=3, total=9)
    # valid entropies {0.1, 0.9, 0.5, 0.3, 0.2, 0.6, 0.05}: median 0.3 -> keep H >= 0.3
    assert diag["kept"].tolist() == [[0, 1, 1, 1], [0, 1, 0, 0]]
    # credits floored at c: (0,1) -3 -> c; (1,1) -1 stays
    assert loss.item() == pytest.approx(-(C_03 + 0.0 + 0.2 - 1.0) / 4, rel=1e-6)


def test_reopold_ablation_rows():
    batch = scored_batch(LOG_OLD, LOG_T, MASK)
    # (1) bounded credit only: every token, credit max(R, c)
    loss, diag = run(method("reopold", entropy_selection=False, schedule=False), batch, on_policy(LOG_OLD))
    assert diag["kept"].sum().item() == 7
    assert loss.item() == pytest.approx(-(0.5 + C_03 + 0.0 + 0.2 + 0.1 - 1.0 + 2.0) / 7, rel=1e-6)
    # Entropy OPD: entropy mask from the first step, raw credit
    H = torch.tensor([[0.1, 0.9, 0.5, 0.3], [0.2, 0.6, 0.05, 9.0]])
    batch = scored_batch(LOG_OLD, LOG_T, MASK, entropy=H)
    loss, diag = run(method("reopold", bounded_credit=False, schedule=False, beta=0.5), batch, on_policy(LOG_OLD))
    assert loss.item() == pytest.approx(-(-3.0 + 0.0 + 0.2 - 1.0) / 4)


def test_reopold_without_floor_or_switch_is_opd():
    batch = scored_batch(LOG_OLD, LOG_T, MASK, entropy=torch.rand(2, 4))
    student = on_policy(LOG_OLD)
    loss, _ = run(method("reopold", lam=0.0, t_switch=2.0), batch, student, step=9, total=10)
    loss.backward()
    ref_loss, ref_grad = opd_loss(batch, LOG_OLD)
    assert loss.item() == pytest.approx(ref_loss) and torch.allclose(student.logS.grad, ref_grad)


# -- ExOPD -------------------------------------------------------------------------------
LOG_REF = torch.tensor([[-1.5, -2.5, -0.4, -0.3], [-0.3, -1.2, -2.0, -1.0]])


def test_exopd_credit_by_hand():
    batch = scored_batch(LOG_OLD, LOG_T, MASK, logRef=LOG_REF)
    loss, diag = run(method("exopd"), batch, on_policy(LOG_OLD))
    expected = 1.25 * (LOG_T - LOG_REF) - (LOG_OLD - LOG_REF)
    assert torch.allclose(diag["credit"], expected)
    assert diag["credit"][0, 0].item() == pytest.approx(1.25 * 1.0 - 0.5)
    assert loss.item() == pytest.approx(-(expected * MASK).sum().item() / 7)


def test_exopd_with_lambda_one_is_opd():
    batch = scored_batch(LOG_OLD, LOG_T, MASK, logRef=LOG_REF)
    student = on_policy(LOG_OLD)
    loss, diag = run(method("exopd", lam=1.0), batch, student)
    loss.backward()
    ref_loss, ref_grad = opd_loss(batch, LOG_OLD)
    assert torch.allclose(diag["credit"], R) and loss.item() == pytest.approx(ref_loss)
    assert torch.allclose(student.logS.grad, ref_grad)


def test_exopd_dual_clip_caps_negative_credit_at_large_ratio():
    batch = scored_batch(torch.zeros(1, 1), torch.tensor([[-2.0]]), logRef=torch.zeros(1, 1))
    student = StudentOutput(logS=torch.tensor([[2.0]], requires_grad=True))  # rho = e^2
    m = get_method_class("exopd", METHODS_DIR)({"lam": 1.0}, {**BASE_TRAIN, "clip_ratio_c": 3.0})
    loss, _ = run(m, batch, student)
    assert loss.item() == pytest.approx(3.0 * 2.0)  # min(rho * 2, c * 2) with A = -2


# -- Uni-OPD -----------------------------------------------------------------------------
def uni_batch(outcome, logT=None):
    # two prompts x 3 rollouts, 2 tokens each
    logOld = torch.zeros(6, 2)
    logT = torch.tensor([[-1.0, -1.0], [0.0, -2.0], [-0.4, 0.0], [-0.5, -0.5], [-0.2, 0.0], [0.0, 0.0]]) if logT is None else logT
    return scored_batch(logOld, logT, group=torch.tensor([0, 0, 0, 1, 1, 1]), outcome=torch.tensor(outcome))


def test_uniopd_spread_margin_calibration_by_hand():
    batch = uni_batch([1.0, 0.0, 1.0, 0.0, 0.0, 0.0])  # group 1 all wrong: untouched
    m = method("uniopd", online_balance=False)
    m.prepare(batch, Progress(0, 1))
    # G = [-1, -1, -0.2 | -0.5, -0.1, 0]; group 0: correct {0, 2} mean -0.6, incorrect {1} -1 -> gap 0.4
    assert batch.extras["margin_shift"].tolist() == pytest.approx([0.0] * 6, abs=1e-6)
    batch = uni_batch([0.0, 1.0, 0.0, 1.0, 0.0, 0.0])
    m.prepare(batch, Progress(0, 1))
    # group 0: correct {1} G -1, incorrect {0, 2} mean -0.6 -> gap -0.4, d = 0.8
    # group 1: correct {3} G -0.5, incorrect {4, 5} mean -0.05 -> gap -0.45, d = 0.85
    assert batch.extras["margin_shift"].tolist() == pytest.approx([-0.4, 0.4, -0.4, 0.425, -0.425, -0.425])
    adv = batch.extras["advantage"]
    assert adv[1].tolist() == pytest.approx([0.4, -1.6])
    loss, _ = loss_of(m, batch, on_policy(batch.logOld), Progress(0, 1))
    assert loss.item() == pytest.approx(-(adv.sum().item()) / 12, rel=1e-6)


def test_uniopd_lift_and_minmax_margins():
    for margin, expected in (("lift", [0.0, 0.8, 0.0, 0.85, 0.0, 0.0]),
                             # minmax: group 0 min_c -1 - max_i -0.2 = -0.8 -> d 1.2; group 1: -0.5 - 0 -> d 0.9
                             ("minmax", [-0.6, 0.6, -0.6, 0.45, -0.45, -0.45])):
        batch = uni_batch([0.0, 1.0, 0.0, 1.0, 0.0, 0.0])
        method("uniopd", online_balance=False, margin=margin).prepare(batch, Progress(0, 1))
        assert batch.extras["margin_shift"].tolist() == pytest.approx(expected), margin


def test_uniopd_online_balance_and_outlier_mask():
    logT = torch.tensor([[-1.0, -12.0], [0.0, -2.0], [-0.4, 0.0], [-0.5, -0.5], [-0.2, 0.0], [0.0, 0.0]])
    batch = uni_batch([1.0, 1.0, 0.0, 1.0, 0.0, 0.0], logT=logT)
    method("uniopd", margin="none").prepare(batch, Progress(0, 1))
    keep = batch.extras["loss_tokens"]
    assert keep[0, 1].item() == 0.0  # |logOld - logT| = 12 >= 10
    per_rollout = (keep.sum(-1) > 0).float()
    # group 0: 2 correct vs 1 incorrect -> one correct dropped; group 1: 1 vs 2 -> one incorrect dropped
    assert per_rollout[:3].sum().item() == 2 and per_rollout[2].item() == 1.0
    assert per_rollout[3:].sum().item() == 2 and per_rollout[3].item() == 1.0


def test_uniopd_margin_averages_every_response_token_outliers_included():
    """G_i is the mean advantage over all of rollout i's response tokens (METHODS.md; the
    official code masks |logOld - logT| >= 10 in the policy-gradient loss only)."""
    logT = torch.tensor([[-1.0, -1.0], [0.0, -12.0], [-0.4, 0.0], [-0.5, -0.5], [-0.2, 0.0], [0.0, 0.0]])
    batch = uni_batch([1.0, 0.0, 1.0, 0.0, 0.0, 0.0], logT=logT)
    m = method("uniopd", online_balance=False)
    m.prepare(batch, Progress(0, 1))
    # G = [-1, -6, -0.2 | ...]: group 0 gap = -0.6 - (-6) = 5.4 >= 0.4, no shift. Averaging over the
    # tokens left by the outlier mask would give G_1 = 0, gap -0.6, d = 1.0 and shifts of +-0.5.
    assert batch.extras["margin_shift"].tolist() == pytest.approx([0.0] * 6, abs=1e-6)
    assert batch.extras["loss_tokens"][1].tolist() == [1.0, 0.0]  # the outlier still leaves the loss
    batch = uni_batch([0.0, 1.0, 0.0, 1.0, 0.0, 0.0], logT=logT)
    m.prepare(batch, Progress(0, 1))
    # group 0: correct {1} G -6, incorrect {0, 2} mean -0.6 -> gap -5.4, d = 5.8 (masked mean: d = 0.6)
    assert batch.extras["margin_shift"][:3].tolist() == pytest.approx([-2.9, 2.9, -2.9])
    adv = batch.extras["advantage"]
    assert adv[1].tolist() == pytest.approx([2.9, -9.1])
    loss, _ = loss_of(m, batch, on_policy(batch.logOld), Progress(0, 1))
    keep = batch.extras["loss_tokens"]  # seq-mean-token-mean over the kept tokens (11 of 12 here: token-mean)
    assert loss.item() == pytest.approx(-((adv * keep).sum() / keep.sum()).item(), rel=1e-6)


def test_uniopd_without_calibration_balance_or_outliers_is_opd_with_its_aggregation():
    batch = uni_batch([1.0, 0.0, 1.0, 0.0, 0.0, 0.0])  # gap 0.4 >= delta 0: no shift either way
    train = {**BASE_TRAIN, "clip_ratio_high": 0.28, "loss_agg_mode": "seq-mean-token-mean"}
    uni = get_method_class("uniopd", METHODS_DIR)({"delta": 0.0, "online_balance": False}, train)
    student = on_policy(batch.logOld)
    loss, _ = run(uni, batch, student)
    loss.backward()
    opd = get_method_class("opd", METHODS_DIR)({}, train)
    ref = on_policy(batch.logOld)
    ref_loss, _ = run(opd, batch, ref)
    ref_loss.backward()
    assert loss.item() == pytest.approx(ref_loss.item()) and torch.allclose(student.logS.grad, ref.logS.grad)


# -- TrOPD -------------------------------------------------------------------------------
def test_trust_region_probability_and_seeded_draw():
    from opdbench.blocks import trust_region_mask

    credit = torch.tensor([0.5, 0.0, math.log(0.25), -50.0])
    M, p = trust_region_mask(credit, torch.Generator().manual_seed(0))
    assert p.tolist() == pytest.approx([1.0, 1.0, 0.25, math.exp(-50)])
    assert M[:2].tolist() == [1.0, 1.0] and M[3].item() == 0.0
    M2, _ = trust_region_mask(credit, torch.Generator().manual_seed(0))
    assert torch.equal(M, M2)
    draws = torch.stack([trust_region_mask(credit.expand(2000, 4), torch.Generator().manual_seed(s))[0][:, 2]
                         for s in range(3)])
    assert draws.mean().item() == pytest.approx(0.25, abs=0.02)


def test_tropd_by_hand_trust_outlier_and_guidance():
    # token credits: 0.5 (trust surely), -50 (outlier surely), teacher-prefix token, padding
    logOld = torch.tensor([[-1.0, -0.1, -2.0, -1.0]])
    logT = torch.tensor([[-0.5, -50.1, -0.2, -1.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    teacher_token = torch.tensor([[0.0, 0.0, 1.0, 0.0]])
    topk_logT = torch.log(torch.tensor([[[0.6, 0.2]] * 4]))
    topk_logS = torch.log(torch.tensor([[[0.3, 0.3]] * 4]))
    batch = scored_batch(logOld, logT, mask, topk_ids=torch.zeros(1, 4, 2, dtype=torch.long),
                         topk_logT=topk_logT, teacher_token=teacher_token)
    student = on_policy(logOld, topk_logS)
    loss, diag = run(method("tropd", k=2), batch, student)
    assert diag["trust"].tolist() == [[1.0, 0.0, 0.0, 0.0]]
    fkl = 0.6 * math.log(0.6 / 0.3) + 0.2 * math.log(0.2 / 0.3)  # raw top-k probabilities (not renormalised)
    guidance = 0.001 * (-0.2 - (-2.0))
    assert loss.item() == pytest.approx((-0.5 + fkl + guidance) / 3, rel=1e-6)
    loss.backward()
    assert student.logS.grad[0].tolist() == pytest.approx([-0.5 / 3, 0.0, -0.001 / 3, 0.0])
    assert student.topk_logS.grad[0, 1].tolist() == pytest.approx([-0.6 / 3, -0.2 / 3])
    assert student.topk_logS.grad[0, 0].abs().sum() == 0  # trust tokens get no FKL


def test_tropd_with_teacher_equal_to_student_is_opd():
    topk = torch.log(torch.tensor([[[0.6, 0.2]] * 4] * 2))
    batch = scored_batch(LOG_OLD, LOG_OLD.clone(), MASK, topk_ids=torch.zeros(2, 4, 2, dtype=torch.long),
                         topk_logT=topk)
    student = on_policy(LOG_OLD, topk)
    loss, diag = run(method("tropd", guidance=False), batch, student)
    loss.backward()
    assert diag["trust"].sum().item() == 7  # P_trust = 1 everywhere
    ref_loss, ref_grad = opd_loss(batch, LOG_OLD)
    assert loss.item() == pytest.approx(ref_loss) and torch.allclose(student.logS.grad, ref_grad)


def test_tropd_outlier_variants_by_hand():
    tau = C_03
    kw = dict(topk_ids=torch.zeros(2, 4, 2, dtype=torch.long), topk_logT=topk_fixture()[0])
    batch = scored_batch(LOG_OLD, LOG_T, MASK, **kw)
    # Clip Outlier: max(R, tau) on every token
    loss, _ = run(method("tropd", region="threshold", outlier="clip", guidance=False), batch, on_policy(LOG_OLD, topk_fixture()[1]))
    assert loss.item() == pytest.approx(-(0.5 + tau + 0.0 + 0.2 + 0.1 - 1.0 + 2.0) / 7, rel=1e-6)
    # Mask Outlier: 1[R > tau] R, over all tokens
    loss, _ = run(method("tropd", region="threshold", outlier="mask", guidance=False), batch, on_policy(LOG_OLD, topk_fixture()[1]))
    assert loss.item() == pytest.approx(-(0.5 + 0.0 + 0.2 + 0.1 - 1.0 + 2.0) / 7, rel=1e-6)
    # FKL alone: the raw top-k forward KL on every token, no policy gradient
    topk_logT, topk_logS = topk_fixture()
    student = on_policy(LOG_OLD, topk_logS)
    loss, _ = run(method("tropd", region="none", outlier="fkl", guidance=False), batch, student)
    fkl_row0 = 0.6 * math.log(0.6 / 0.3) + 0.2 * math.log(0.2 / 0.3)
    fkl_row1 = 0.5 * math.log(0.5 / 0.1) + 0.5 * math.log(0.5 / 0.4)
    assert loss.item() == pytest.approx((4 * fkl_row0 + 3 * fkl_row1) / 7, rel=1e-6)
    loss.backward()
    assert student.logS.grad.abs().sum() == 0


def test_tropd_jsd_by_hand():
    b = 0.5
    logOld, logT = torch.log(torch.tensor([[0.4]])), torch.log(torch.tensor([[0.2]]))
    topk_logT, topk_logS = torch.log(torch.tensor([[[0.6, 0.2]]])), torch.log(torch.tensor([[[0.3, 0.3]]]))
    batch = scored_batch(logOld, logT, topk_ids=torch.zeros(1, 1, 2, dtype=torch.long), topk_logT=topk_logT)
    loss, _ = run(method("tropd", region="none", outlier="jsd", guidance=False), batch, on_policy(logOld, topk_logS))
    forward = b * (0.6 * math.log(0.6 / 0.45) + 0.2 * math.log(0.2 / 0.25))  # pM = (0.45, 0.25)
    credit = -(1 - b) * math.log(0.4 / 0.3)  # pM(x) = 0.5 * 0.2 + 0.5 * 0.4
    assert loss.item() == pytest.approx(-credit + forward, rel=1e-6)


def test_tropd_prefix_schedule_is_cosine_annealed_to_zero():
    m = method("tropd")
    assert [m.max_prefix(64, Progress(s, 10)) for s in (0, 5, 10)] == [64, 32, 0]
    lengths = m.prefix_lengths(1000, 64, Progress(5, 10), torch.Generator().manual_seed(0))
    assert min(lengths) == 0 and max(lengths) == 32
    assert method("tropd", guidance=False).prefix_lengths(5, 64, Progress(0, 10), torch.Generator()) == [0] * 5


# -- every method ------------------------------------------------------------------------
ALL = ["opd", "eopd", "reopold", "exopd", "uniopd", "tropd"]


@pytest.mark.parametrize("name", ALL)
def test_credits_are_stop_gradient(name):
    """The teacher's and reference's log-probs never receive gradient and the credit is
    detached: the loss reaches the student only through logS (in rho = exp(logS - logOld))
    and its top-k log-probs."""
    logOld = LOG_OLD.clone().requires_grad_(True)
    logT = LOG_T.clone().requires_grad_(True)
    logRef = LOG_REF.clone().requires_grad_(True)
    topk_logT = topk_fixture()[0].clone().requires_grad_(True)
    batch = scored_batch(logOld, logT, MASK, entropy=torch.rand(2, 4), group=torch.tensor([0, 0]),
                         logRef=logRef, topk_ids=torch.zeros(2, 4, 2, dtype=torch.long), topk_logT=topk_logT,
                         teacher_entropy=torch.full((2, 4), 2.0), outcome=torch.tensor([1.0, 0.0]),
                         teacher_token=torch.tensor([[0.0, 0.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0]]))
    student = on_policy(LOG_OLD, topk_fixture()[1])
    loss, diag = run(method(name), batch, student)
    grads = torch.autograd.grad(loss, [logT, logRef, topk_logT, student.logS], allow_unused=True)
    for g in grads[:3]:
        assert g is None or g.abs().sum() == 0
    assert grads[3] is not None and grads[3].abs().sum() > 0
    assert not diag["credit"].requires_grad
