"""OPD and its building blocks against values computed by hand (TRL-style analytic tests)."""
import math

import pytest
import torch

from opdbench.blocks import aggregate, clipped_policy_loss, log_ratio_credit
from opdbench.train.losses import batch_loss
from opdbench.method import Progress, StudentOutput
from opdbench.registry import get_method_class

from conftest import BASE_TRAIN as BASE, METHODS_DIR, scored_batch


def test_credit_is_detached_log_ratio():
    logT = torch.tensor([-0.5, -3.0], requires_grad=True)
    logOld = torch.tensor([-1.0, -1.0])
    R = log_ratio_credit(logT, logOld)
    assert torch.equal(R, torch.tensor([0.5, -2.0])) and not R.requires_grad


def test_aggregation_modes_by_hand():
    v = torch.tensor([[1.0, 2.0, 3.0], [4.0, 0.0, 0.0]])
    m = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    assert aggregate(v, m, "token-mean").item() == pytest.approx((1 + 2 + 3 + 4) / 4)
    assert aggregate(v, m, "seq-mean-token-mean").item() == pytest.approx((2.0 + 4.0) / 2)
    assert aggregate(v, m, "seq-mean-token-sum").item() == pytest.approx((6.0 + 4.0) / 2)
    assert aggregate(v, m, "token-sum").item() == pytest.approx(10.0)
    with pytest.raises(ValueError, match="token-mean"):
        aggregate(v, m, "mean")


def test_ppo_clip_by_hand():
    # ratios e^{0.5} (above 1.2) and e^{-0.5} (below 0.8), advantages +1 and -1
    logS = torch.tensor([0.5, -0.5, 0.5, -0.5], requires_grad=True)
    logOld = torch.zeros(4)
    A = torch.tensor([1.0, 1.0, -1.0, -1.0])
    loss, stats = clipped_policy_loss(logS, logOld, A, 0.2, 0.2)
    r_hi, r_lo = math.exp(0.5), math.exp(-0.5)
    # A>0: -min(r*A, clip(r)*A); A<0: the max of the two losses
    assert loss.tolist() == pytest.approx([-1.2, -r_lo, r_hi, 0.8])
    assert stats["clip_frac"].tolist() == [1.0, 0.0, 0.0, 1.0]
    loss.sum().backward()
    # clipped tokens get no gradient; unclipped get -A * ratio
    assert logS.grad.tolist() == pytest.approx([0.0, -r_lo, r_hi, 0.0])


def test_dual_clip_caps_negative_advantage_loss():
    logS = torch.tensor([2.0]); logOld = torch.zeros(1); A = torch.tensor([-1.0])
    loss, _ = clipped_policy_loss(logS, logOld, A, 0.2, 0.2, dual_clip=3.0)
    assert loss.item() == pytest.approx(3.0)  # min(e^2 * 1, 3 * 1)


def test_opd_loss_by_hand_and_gradient_only_through_ratio():
    OPD = get_method_class("opd", METHODS_DIR)
    method = OPD({}, BASE)
    logOld = torch.tensor([[-1.0, -2.0, -0.5], [-0.2, -1.0, -9.0]])
    logT = torch.tensor([[-0.5, -3.0, -0.5], [-0.1, -2.0, -9.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    batch = scored_batch(logOld, logT, mask)
    logS = logOld.clone().requires_grad_(True)  # on-policy: rho = 1
    student = StudentOutput(logS=logS)
    terms, diag = method.loss(batch, student, Progress(0, 10))
    loss = batch_loss(terms)  # the engine's aggregation of the method's per-token terms
    R = [[0.5, -1.0, 0.0], [0.1, -1.0, 0.0]]
    assert torch.allclose(diag["credit"], torch.tensor(R))
    # J = sum rho*R / #tokens = (0.5 - 1 + 0 + 0.1 - 1) / 5; loss = -J
    assert loss.item() == pytest.approx(-(0.5 - 1.0 + 0.0 + 0.1 - 1.0) / 5)
    loss.backward()
    # d loss / d logS = -R * rho / N on valid tokens, 0 on the masked one
    expected = [[-0.5 / 5, 1.0 / 5, 0.0], [-0.1 / 5, 1.0 / 5, 0.0]]
    assert torch.allclose(logS.grad, torch.tensor(expected))


def test_opd_teacher_equal_student_gives_zero_loss_and_gradient():
    OPD = get_method_class("opd", METHODS_DIR)
    logOld = torch.log(torch.tensor([[0.3, 0.6]]))
    batch = scored_batch(logOld, logOld.clone(), torch.ones(1, 2))
    logS = logOld.clone().requires_grad_(True)
    loss = batch_loss(OPD({}, BASE).loss(batch, StudentOutput(logS), Progress(0, 1))[0])
    loss.backward()
    assert loss.item() == 0.0 and logS.grad.abs().max().item() == 0.0
