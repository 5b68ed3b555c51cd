"""yolov7_loss.py: CIoU against torchvision, candidate cells by hand, SimOTA's dynamic k, learning."""

from __future__ import annotations

import torch
import torchvision
from yolov7 import build_model
from yolov7_loss import (
    LossConfig,
    YOLOv7Loss,
    complete_iou,
    find_candidates,
    simota_assign,
    split_levels,
)


def random_boxes(generator: torch.Generator, n: int) -> torch.Tensor:
    xy = torch.rand(n, 2, generator=generator) * 50
    wh = torch.rand(n, 2, generator=generator) * 30 + 1
    return torch.cat((xy, xy + wh), 1)


def test_complete_iou_equals_torchvision():
    generator = torch.Generator().manual_seed(0)
    a, b = random_boxes(generator, 200), random_boxes(generator, 200)
    expected = 1 - torchvision.ops.complete_box_iou_loss(a, b, reduction="none", eps=1e-7)
    torch.testing.assert_close(complete_iou(a, b), expected, atol=1e-4, rtol=1e-4)
    same = complete_iou(a, a)
    torch.testing.assert_close(same, torch.ones(200), atol=1e-5, rtol=0)


def test_candidates_centre_cell_and_two_nearest_neighbours():
    # one object at (x, y) = (27, 44) px, 16 x 16; stride 8 -> centre (3.375, 5.5) cells
    targets = torch.tensor([[0, 1, 27.0, 44.0, 16.0, 16.0]])
    anchors = torch.tensor([[16.0, 16.0], [160.0, 160.0]])  # the second is 10x too big: rejected
    cand = find_candidates(targets, anchors, 8, (10, 10))
    cells = sorted(zip(cand.col.tolist(), cand.row.tolist()))
    # x 3.375: fraction < 0.5 -> also the cell to the left (2); y 5.5: fraction 0.5 is not < 0.5,
    # but 10 - 5.5 = 4.5 has fraction 0.5 too -> no vertical neighbour; so cells (3, 5) and (2, 5)
    assert cells == [(2, 5), (3, 5)]
    assert set(cand.anchor.tolist()) == {0} and set(cand.target.tolist()) == {0}
    torch.testing.assert_close(cand.anchor_wh, torch.full((2, 2), 2.0))  # 16 px / stride 8


def test_candidates_right_and_down_neighbours():
    targets = torch.tensor([[1, 0, 8 * 4.8, 8 * 6.9, 16.0, 16.0]])  # centre (4.8, 6.9) cells
    cand = find_candidates(targets, torch.tensor([[16.0, 16.0]]), 8, (10, 10))
    assert sorted(zip(cand.col.tolist(), cand.row.tolist())) == [(4, 6), (4, 7), (5, 6)]
    assert set(cand.image.tolist()) == {1}


def test_simota_gives_every_separate_object_k_predictions():
    torch.manual_seed(0)
    model = build_model("tiny", 2)
    raw = model(torch.rand(2, 3, 64, 64))
    preds = split_levels(raw, 3)
    targets = torch.tensor(  # two objects far apart in image 0, one in image 1
        [
            [0, 0, 12.0, 12.0, 14.0, 18.0],
            [0, 1, 50.0, 52.0, 12.0, 12.0],
            [1, 1, 40.0, 30.0, 30.0, 20.0],
        ]
    )
    matched = simota_assign(preds, targets, model.head.anchors, (8, 16, 32), 2, LossConfig())
    owners = [int(t) for m in matched for t in m.target]
    assert set(owners) == {0, 1, 2}  # every object gets at least one prediction (k >= 1)
    # dynamic k = floor(sum of the 10 best IoUs) <= 10 predictions per object
    assert max(owners.count(g) for g in range(3)) <= 10
    for m in matched:  # a prediction of image i only serves objects of image i
        assert (targets[m.target, 0].long() == m.image).all()


def test_loss_falls_when_learning_one_batch():
    torch.manual_seed(0)
    model = build_model("tiny", 3)
    loss_fn = YOLOv7Loss(model.head.anchors.clone(), (8, 16, 32), 3, LossConfig())
    images = torch.rand(2, 3, 64, 64)
    targets = torch.tensor([[0, 2, 30.0, 28.0, 20.0, 30.0], [1, 0, 20.0, 40.0, 16.0, 16.0]])
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    totals = []
    for _ in range(12):
        losses = loss_fn(model(images), targets)
        total = sum(losses.values())
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
        totals.append(float(total.detach()))
        assert set(losses) == {"box", "obj", "cls"}
    assert totals[-1] < 0.4 * totals[0]  # measured: 0.98 -> 0.15


def test_loss_without_objects_is_only_objectness():
    model = build_model("tiny", 3)
    loss_fn = YOLOv7Loss(model.head.anchors.clone(), (8, 16, 32), 3, LossConfig())
    losses = loss_fn(model(torch.rand(1, 3, 64, 64)), torch.zeros(0, 6))
    assert float(losses["box"]) == 0 and float(losses["cls"]) == 0 and float(losses["obj"]) > 0


# ------------------------------------------------ coarse-to-fine, lead-guided (auxiliary head)
# One level (stride 8, 10 x 10 cells), one anchor of the object's size, one object 4 x 4 cells
# centred at (3.3, 5.3) cells. Fine candidates: centre (3, 5), left (2, 5), up (3, 4); coarse: also
# right (4, 5) and down (3, 6). Each cell predicts the object's box shifted by ``d`` cells:
# IoU = (4 - d) / (4 + d): centre d 0 -> 1, left 0.1 -> 0.951, up 0.2 -> 0.905, right 0.3 -> 0.860,
# down 0.4 -> 0.818 (the farthest a cell can reach: offsets lie in (-0.5, 1.5)).
# Fine: dynamic k = floor(1 + 0.951 + 0.905) = 2 -> {centre, left};
# coarse: k = floor(1 + 0.951 + 0.905 + 0.860 + 0.818) = 4 -> all but down (the costliest).
HAND_TARGET = torch.tensor([[0, 1, 3.3 * 8, 5.3 * 8, 32.0, 32.0]])
HAND_ANCHORS = torch.tensor([[[32.0, 32.0]]])  # [L=1, A=1, 2]
CELL_OFFSETS = {  # (col, row): the predicted centre offset inside the cell (x, y)
    (3, 5): (0.3, 0.3),  # centre: exact
    (2, 5): (1.2, 0.3),  # left: needs 1.3, d = 0.1
    (3, 4): (0.3, 1.1),  # up: needs 1.3, d = 0.2
    (4, 5): (-0.4, 0.3),  # right: needs -0.7, d = 0.3
    (3, 6): (0.3, -0.3),  # down: needs -0.7, d = 0.4
}


def hand_raw(
    cells: dict[tuple[int, int], tuple[float, float]], num_classes: int = 2
) -> torch.Tensor:
    """[1, 5 + C, 10, 10] raw map whose listed cells decode to the given centre offsets (w = h = the
    anchor: raw 0); the other cells predict a tiny box far away (IoU 0)."""
    raw = torch.zeros(1, 5 + num_classes, 10, 10)
    raw[0, 2:4] = -8.0  # w, h = (2 sigmoid(-8)) ** 2 * 4 cells: about 0
    for (col, row), (ox, oy) in cells.items():
        raw[0, 0, row, col] = torch.logit(torch.tensor((ox + 0.5) / 2))
        raw[0, 1, row, col] = torch.logit(torch.tensor((oy + 0.5) / 2))
        raw[0, 2:4, row, col] = 0.0
    return raw


def matched_cells(matched) -> list[tuple[int, int]]:
    return sorted(zip(matched[0].col.tolist(), matched[0].row.tolist()))


def test_coarse_candidates_are_the_centre_cell_and_all_four_neighbours():
    cand = find_candidates(HAND_TARGET, HAND_ANCHORS[0], 8, (10, 10), offset=1.0)
    assert sorted(zip(cand.col.tolist(), cand.row.tolist())) == sorted(CELL_OFFSETS)
    at_border = torch.tensor([[0, 0, 0.6 * 8, 5.3 * 8, 32.0, 32.0]])  # centre x 0.6: no left cell
    cand = find_candidates(at_border, HAND_ANCHORS[0], 8, (10, 10), offset=1.0)
    assert sorted(zip(cand.col.tolist(), cand.row.tolist())) == [(0, 4), (0, 5), (0, 6), (1, 5)]


def test_fine_and_coarse_assignment_by_hand():
    preds = split_levels([hand_raw(CELL_OFFSETS)], 1)
    args = (preds, HAND_TARGET, HAND_ANCHORS, (8,), 2, LossConfig())
    assert matched_cells(simota_assign(*args)) == [(2, 5), (3, 5)]
    assert matched_cells(simota_assign(*args, coarse=True)) == [(2, 5), (3, 4), (3, 5), (4, 5)]


def test_auxiliary_head_learns_the_coarse_labels_chosen_by_the_lead_head():
    """The box-loss gradient reaches the lead map at the 2 fine cells and the auxiliary map at the
    4 coarse ones, although the auxiliary map alone would choose other cells (its own best
    predictions are at the far neighbours): the assignment is guided by the lead head."""
    lead = hand_raw(CELL_OFFSETS).requires_grad_(True)
    aux_own = {  # exact where it can be, and the lead's best cells made poor
        (3, 5): (0.3, 0.3), (4, 5): (-0.49, 0.3), (3, 6): (0.3, -0.49),
        (2, 5): (1.49, -0.49), (3, 4): (-0.49, 1.49),
    }  # fmt: skip
    aux = hand_raw(aux_own).requires_grad_(True)
    self_guided = simota_assign(
        split_levels([aux.detach()], 1), HAND_TARGET, HAND_ANCHORS, (8,), 2, LossConfig(),
        coarse=True,
    )  # fmt: skip
    assert (4, 5) in matched_cells(self_guided) and (3, 6) in matched_cells(self_guided)
    config = LossConfig(box=1.0, obj=0.0, cls=0.0)
    loss_fn = YOLOv7Loss(HAND_ANCHORS, (8,), 2, config)
    losses = loss_fn([lead, aux], HAND_TARGET)
    losses["box"].backward()
    lead_cells = sorted((c, r) for r, c in (lead.grad[0, :4].abs().sum(0) > 0).nonzero().tolist())
    aux_cells = sorted((c, r) for r, c in (aux.grad[0, :4].abs().sum(0) > 0).nonzero().tolist())
    assert lead_cells == [(2, 5), (3, 5)]
    assert aux_cells == [(2, 5), (3, 4), (3, 5), (4, 5)]


def test_loss_with_auxiliary_maps_adds_a_quarter_of_their_terms():
    torch.manual_seed(0)
    model = build_model("tiny", 3)
    loss_fn = YOLOv7Loss(model.head.anchors.clone(), (8, 16, 32), 3, LossConfig())
    images = torch.rand(2, 3, 64, 64)
    targets = torch.tensor([[0, 2, 30.0, 28.0, 20.0, 30.0], [1, 0, 20.0, 40.0, 16.0, 16.0]])
    lead = [r.detach() for r in model(images)]
    aux = [torch.randn_like(r) for r in lead]
    only_lead = loss_fn(lead, targets)
    both = loss_fn(lead + aux, targets)
    coarse = simota_assign(
        split_levels(lead, 3), targets, model.head.anchors, (8, 16, 32), 3, LossConfig(),
        coarse=True,
    )  # fmt: skip
    aux_terms = [0.0, 0.0, 0.0]
    for level, (pred, m) in enumerate(zip(split_levels(aux, 3), coarse)):
        for i, term in enumerate(loss_fn.level_terms(pred, m, level, targets)):
            aux_terms[i] += float(term)
    config = loss_fn.config
    for i, (name, gain) in enumerate(
        (("box", config.box), ("obj", config.obj), ("cls", config.cls))
    ):
        expected = float(only_lead[name]) + 0.25 * aux_terms[i] * gain * 2
        assert abs(float(both[name]) - expected) < 1e-5 * max(1.0, expected), name
    assert sum(len(m.image) for m in coarse) > sum(
        len(m.image) for m in simota_assign(
            split_levels(lead, 3), targets, model.head.anchors, (8, 16, 32), 3, LossConfig()
        )
    )  # fmt: skip
