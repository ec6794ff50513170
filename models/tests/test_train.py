"""The distillation loss and the teachers' soft targets (train.py --teachers)."""
import torch

import fermodel as fm
import train as T


def test_distillation_is_zero_at_the_teacher_and_pulls_the_student_towards_it():
    torch.manual_seed(0)
    target = torch.softmax(torch.randn(8, 7), -1)
    # every part already gives the target at this temperature: nothing to learn
    exact = (target.log() * 2.0).unsqueeze(1).repeat(1, 5, 1)
    assert T.distill_loss(exact, target, 2.0).abs() < 1e-5
    logits = torch.zeros(8, 5, 7, requires_grad=True)
    loss = T.distill_loss(logits, target, 2.0)
    assert loss > 0.01
    loss.backward()
    with torch.no_grad():
        after = T.distill_loss(logits - 0.5 * logits.grad, target, 2.0)
    assert after < loss


def test_teacher_targets_average_the_teachers_softened_predictions():
    torch.manual_seed(1)
    a, b = fm.Ensemble(n_classes=7).eval(), fm.Ensemble(n_classes=7).eval()
    x = torch.rand(3, 1, 48, 48) * 2 - 1
    ta = T.teacher_targets([a], x, "fp32", 2.0)
    tb = T.teacher_targets([b], x, "fp32", 2.0)
    assert ta.shape == (3, 7) and torch.allclose(ta.sum(-1), torch.ones(3), atol=1e-5)
    assert torch.allclose(T.teacher_targets([a, a], x, "fp32", 2.0), ta, atol=1e-6)
    assert torch.allclose(T.teacher_targets([a, b], x, "fp32", 2.0), (ta + tb) / 2, atol=1e-6)
    # a higher temperature gives a softer target
    assert T.teacher_targets([a], x, "fp32", 8.0).max() < T.teacher_targets([a], x, "fp32", 1.0).max()
