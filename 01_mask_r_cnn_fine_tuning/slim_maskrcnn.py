"""The slim Mask R-CNN: small enough to train from scratch on 2 CPU cores in minutes.

torchvision's ``MaskRCNN`` class with a smaller backbone and smaller heads; every choice is a field of
:class:`SlimConfig` (stored in checkpoints as a plain dict). Compared with ``maskrcnn_resnet50_fpn``
(44 M parameters, 800 px, 2000 / 1000 proposals):

- ResNet-18 from random weights with trainable BatchNorm, stages 2-4 only (strides 8, 16, 32), and a
  64-channel FPN: most of the compute of a detector at this size is the backbone and the FPN;
- anchors of 32-256 px in tall shapes (height / width 1, 2, 3) for standing people;
- 150 proposals per image while training, 100 at test time; 32 sampled RoIs per image, up to half
  of them positive (torchvision: 2000 / 1000, 512, a quarter): the RoI heads' cost, RoIAlign's
  backward above all, scales with them, and the mask head learns from the positives;
- box head: two fully connected layers of 256 (torchvision: 1024); mask head: four 3x3 convolutions
  of 64 channels (torchvision: of 256) with dilations 1, 2, 4, 1 and the RoI-relative x, y of every
  cell as two extra input channels, so that it sees the whole RoI and knows where its middle is;
- a detail branch (:mod:`mask_detail`): the mask is refined at 28 x 28 with the RoI's own pixels
  and ResNet's stride-4 stage, which the stride-8 FPN level the head reads cannot resolve;
- box NMS at IoU 0.8 (torchvision: 0.5), then Matrix NMS on the masks (:mod:`matrix_nms`): boxes
  of two people standing one behind the other overlap as much as a duplicate's, masks do not;
- images resized to 256 px on the shorter side (at most 384 on the longer).

12.4 M parameters; 0.4-1.1 s per SGD step of 4 images at 256 px on 2 CPU cores (by machine).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any

import torch
import torchvision
from mask_detail import (
    DetailBackbone,
    DetailMaskHead,
    DetailRoIPool,
    FPNLevelsRPN,
    PixelMaskPredictor,
)
from matrix_nms import MatrixNMSTransform
from torch import Tensor, nn
from torchvision.models.detection import MaskRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.models.detection.faster_rcnn import (
    FastRCNNConvFCHead,
    FastRCNNPredictor,
    TwoMLPHead,
)
from torchvision.models.detection.mask_rcnn import MaskRCNNPredictor
from torchvision.ops import MultiScaleRoIAlign
from torchvision.ops.misc import Conv2dNormActivation

from detseg.errors import UserError


@dataclass
class SlimConfig:
    """A Mask R-CNN small enough to train from scratch on a CPU (every field is a plain value).

    Attributes:
        backbone: torchvision ResNet name (``resnet18`` / ``resnet34``), random init, BatchNorm.
        returned_layers: ResNet stages fed to the FPN: 2, 3, 4 are strides 8, 16, 32 (+ a max-pooled
            level at 64 for the RPN). Skipping stage 1 (stride 4) saves most of the FPN's cost.
        fpn_channels: channels of every FPN level (torchvision's default: 256).
        anchor_sizes: one tuple of anchor sizes (sqrt of area, pixels) per FPN level incl. the pool.
        aspect_ratios: anchor height / width ratios (people are about 2.5 times taller than wide).
        min_size, max_size: the transform resizes the shorter side to ``min_size`` (longer <= max_size).
        rpn_pre_nms_top_n_train / _test, rpn_post_nms_top_n_train / _test: proposals per image kept
            before / after the RPN's NMS.
            A scene here holds about 2 people, so 150 proposals after NMS still cover each of them
            many times (300 until 2026-12-03; fewer proposals also mean less NMS and sampling).
        box_batch_size_per_image: sampled RoIs per image for the box head loss (the positives among
            them train the mask head). On 2 CPU cores RoIAlign's backward, a single-threaded
            kernel, was about 20 % of a step. 32 sampled RoIs and 150 proposals instead of 128 and
            300 (a quarter positive in both) took the quick path from 0.689 bbox AP50 in 160 s wall
            to 0.735 in 106 s (same morning) and the default run to 8 min 56 s wall (bbox / segm
            AP50 0.960 / 0.795; 10 min 32 s and 0.963 / 0.789 in an earlier session with 128 and
            300); 64 gave 0.985 / 0.809 in 10 min 21 s. Numbers and commands: 01 README "Results".
        box_positive_fraction: the largest share of those sampled RoIs that may be positive (IoU >=
            0.5 with a person; torchvision: 0.25). The mask head learns only from the positives, so
            with 32 RoIs 0.25 gave it at most 8 per image and 0.5 gives 16: segm AP50 0.830 vs
            0.795, segm AP 0.385 vs 0.359, bbox AP50 0.961 vs 0.960 for the default run, with steps
            7 % slower; 0.75 gave 0.928 / 0.824. The 4-epoch quick path keeps 0.25 (tour.py).
        box_conv_layers: channels of 3x3 convolutions on the 7 x 7 RoI features before the box
            head's fully connected layer (the v2 recipe's head); empty: torchvision's two-layer MLP.
        representation_size: width of the box head's fully connected layer(s).
        mask_layers: channels of the mask head's 3x3 convolutions (torchvision: four of 256).
        mask_dilations: dilation of each of those convolutions (empty: all 1; else one per layer,
            so a different ``mask_layers`` needs its own ``mask_dilations``). Two plain 3 x 3
            convolutions let a cell see 5 x 5 cells of the 14 x 14 RoI, too little to tell the
            person in the middle of the proposal from an overlapping one; ``(1, 2, 4, 1)`` sees
            17 x 17, the whole RoI, and mixing the rates leaves no holes (four of rate 2 would see
            only every other cell: the "gridding" of Wang et al. 2018).
        mask_coords: append two channels holding each cell's x and y inside the RoI (-1 .. 1) to
            the mask head's input (CoordConv, Liu et al. 2018), so the head knows where the
            centre of its proposal is and can tell its own person from an overlapping one.
        mask_detail: 0, or the channels of a detail branch (:mod:`mask_detail`): the mask head
            is upsampled to 28 x 28 and refined there with the RoI's own pixels and a 1x1 projection
            to this many channels of ResNet's stage 1 (stride 4), so that masks follow the image's
            edges instead of a person-shaped guess from stride-8 features. On 300 fresh scenes,
            with 16: segm AP 0.402 vs 0.321, segm AP50 0.816 vs 0.792 (01 README "Results").
        norm: normalisation in the FPN and the heads: ``"none"`` (torchvision v1), ``"batch"`` or
            ``"group"`` (8 groups). He et al. ("Rethinking ImageNet Pre-training", 2019) train from
            scratch with it, over tens of thousands of steps; in the few hundred steps of a CPU run
            here the RPN learned much more slowly with it (bbox AP50 after 68 steps: 0.19 without,
            0.005 with BatchNorm), so the default is ``"none"``. The backbone always has BatchNorm.
        box_nms_thresh: IoU above which the box head's NMS drops the lower-scored of two
            detections at inference (torchvision: 0.5). Pedestrians in a group overlap: their
            boxes often have IoU above 0.5, and 0.5 deleted one of each such pair. With Matrix NMS
            (``mask_nms_sigma``) it is 0.8: the masks, not the boxes, then sort duplicates out.
        mask_nms_sigma: 0, or the Gaussian width of Matrix NMS on the pasted masks
            (:mod:`matrix_nms`, SOLOv2): a detection whose mask repeats a higher-scored one of the
            same class loses most of its score, while a person behind another, whose box overlaps
            but whose visible mask does not, keeps it.
        box_detections_per_img: detections kept per image at inference.
        extra: further keyword arguments of torchvision's ``MaskRCNN`` (e.g. ``box_score_thresh``).
    """

    backbone: str = "resnet18"
    returned_layers: tuple[int, ...] = (2, 3, 4)
    fpn_channels: int = 64
    anchor_sizes: tuple[tuple[int, ...], ...] = ((32,), (64,), (128,), (256,))
    aspect_ratios: tuple[float, ...] = (1.0, 2.0, 3.0)
    min_size: int = 256
    max_size: int = 384
    rpn_pre_nms_top_n_train: int = 600
    rpn_pre_nms_top_n_test: int = 300
    rpn_post_nms_top_n_train: int = 150
    rpn_post_nms_top_n_test: int = 100
    box_batch_size_per_image: int = 32
    box_positive_fraction: float = 0.5
    box_conv_layers: tuple[int, ...] = ()
    representation_size: int = 256
    mask_layers: tuple[int, ...] = (64, 64, 64, 64)
    mask_dilations: tuple[int, ...] = (1, 2, 4, 1)
    mask_coords: bool = True
    mask_detail: int = 16
    norm: str = "none"
    box_nms_thresh: float = 0.8
    mask_nms_sigma: float = 0.5
    box_detections_per_img: int = 20
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        """Every field holds a value of its default's kind (from --slim or a checkpoint alike)."""
        for f in fields(self):
            default = f.default if f.default is not MISSING else f.default_factory()  # type: ignore[misc]
            value = getattr(self, f.name)
            if not _same_kind(value, default):
                raise UserError(
                    f"slim model option {f.name}={value!r} is not like its default {default!r}",
                    fix=f"e.g. --slim {f.name}={json.dumps(default, separators=(',', ':'))}",
                )
        if not 0 < self.box_positive_fraction <= 1:
            raise UserError(
                f"slim model option box_positive_fraction must be in (0, 1], got "
                f"{self.box_positive_fraction}",
                fix="e.g. --slim box_positive_fraction=0.5",
            )

        if self.mask_nms_sigma < 0:
            raise UserError(
                f"slim model option mask_nms_sigma must be >= 0, got {self.mask_nms_sigma}",
                fix="e.g. --slim mask_nms_sigma=0.5 (0: box NMS only)",
            )
        if self.mask_detail < 0:
            raise UserError(
                f"slim model option mask_detail must be >= 0, got {self.mask_detail}",
                fix="e.g. --slim mask_detail=16 (0: no detail branch)",
            )
        if self.mask_detail and 1 in self.returned_layers:
            raise UserError(
                "slim model options: ResNet stage 1 feeds the mask head's detail branch "
                "(mask_detail), so it cannot also be an FPN level (returned_layers)",
                fix="add --slim mask_detail=0, or leave 1 out of returned_layers",
            )

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> SlimConfig:
        """Rebuild from :func:`dataclasses.asdict` output read back from JSON (lists -> tuples)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise UserError(
                f"unknown slim model options {unknown}", fix=f"use some of {sorted(known)}"
            )
        converted = {
            key: _tuples(value) if key != "extra" else dict(value) for key, value in values.items()
        }
        return cls(**converted)


# Fields added after train.py began to store every slim field in its checkpoints, with the value
# that rebuilds the model such an older checkpoint was trained as (its default at the time).
FIELDS_ADDED_LATER: dict[str, Any] = {"mask_detail": 0, "mask_nms_sigma": 0.0}


def checkpoint_slim_fields(values: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint's slim fields, completed with :data:`FIELDS_ADDED_LATER` where it lacks them."""
    return {**FIELDS_ADDED_LATER, **values}


def _same_kind(value: Any, default: Any) -> bool:
    """``value`` is of ``default``'s kind: bool, int, number, str, dict, or a sequence of those."""
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(value, bool) and isinstance(default, bool)
    if isinstance(default, int):
        return isinstance(value, int)
    if isinstance(default, float):
        return isinstance(value, int | float)
    if isinstance(default, tuple):
        element = default[0] if default else 0  # the empty defaults are lists of channels
        return isinstance(value, list | tuple) and all(_same_kind(v, element) for v in value)
    return isinstance(value, type(default))


def _tuples(value: Any) -> Any:
    return tuple(_tuples(v) for v in value) if isinstance(value, list | tuple) else value


def group_norm(channels: int, groups: int = 8) -> nn.GroupNorm:
    """GroupNorm with ``groups`` groups (fewer if ``channels`` is smaller), called like BatchNorm2d."""
    return nn.GroupNorm(min(groups, channels), channels)


NORM_LAYERS: dict[str, Callable[[int], nn.Module] | None] = {
    "batch": nn.BatchNorm2d,
    "group": group_norm,
    "none": None,
}


def _norm_layer(config: SlimConfig) -> Callable[[int], nn.Module] | None:
    if config.norm not in NORM_LAYERS:
        raise UserError(f"unknown norm {config.norm!r}", fix=f"use one of {sorted(NORM_LAYERS)}")
    return NORM_LAYERS[config.norm]


MASK_ROI_SIZE = 14  # RoIAlign output of the mask branch (the predictor doubles it to 28)


class RoICoordinates(nn.Module):
    """Append the RoI-relative position of every cell: ``[R, C, S, S] -> [R, C + 2, S, S]``.

    Channel ``C`` is x and channel ``C + 1`` is y, both from -1 (left / top edge of the RoI) to 1.
    The grid is a non-persistent buffer: it is not part of the state dict.
    """

    def __init__(self, size: int) -> None:
        super().__init__()
        steps = torch.linspace(-1.0, 1.0, size)
        ys, xs = torch.meshgrid(steps, steps, indexing="ij")  # [S, S] each
        self.register_buffer("grid", torch.stack([xs, ys])[None], persistent=False)  # [1, 2, S, S]

    def forward(self, features: Tensor) -> Tensor:
        grid = self.grid.to(features.dtype).expand(features.shape[0], -1, -1, -1)
        return torch.cat([features, grid], dim=1)


def slim_mask_head(config: SlimConfig, norm_layer: Callable[[int], nn.Module] | None) -> nn.Module:
    """The mask head: ``[R, C, 14, 14]`` RoI features -> ``[R, mask_layers[-1], 14, 14]``.

    3 x 3 convolutions (+ norm) + ReLU with ``config.mask_dilations``, initialised as torchvision's
    ``MaskRCNNHeads`` (He normal, fan-out); with ``mask_coords`` the RoI-relative x and y first.
    """
    layers = list(config.mask_layers)
    dilations = list(config.mask_dilations) or [1] * len(layers)
    if len(dilations) != len(layers):
        raise UserError(
            f"mask_dilations needs one rate per mask layer ({len(layers)}), got {len(dilations)}",
            fix="e.g. mask_layers=[64,64,64,64] with mask_dilations=[1,2,4,1]",
        )
    blocks: list[nn.Module] = [RoICoordinates(MASK_ROI_SIZE)] if config.mask_coords else []
    in_channels = config.fpn_channels + (2 if config.mask_coords else 0)
    for out_channels, dilation in zip(layers, dilations):
        blocks.append(
            Conv2dNormActivation(
                in_channels,
                out_channels,
                kernel_size=3,
                padding=dilation,
                dilation=dilation,
                norm_layer=norm_layer,
            )
        )
        in_channels = out_channels
    head = nn.Sequential(*blocks)
    for module in head.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
    return head


def receptive_field(head: nn.Module, channels: int, size: int = 14) -> Tensor:
    """Which cells of a ``size x size`` RoI change ``head``'s output at the centre cell.

    Backpropagates from the centre through a copy of ``head`` whose convolution weights are made
    positive, so that no ReLU is dead and every path that exists counts.

    Args:
        head: maps ``[R, channels, size, size]`` to ``[R, C', size, size]`` (e.g. a mask head).
    Returns:
        bool Tensor[size, size].
    """
    probe = copy.deepcopy(head)
    with torch.no_grad():
        for module in probe.modules():
            if isinstance(module, nn.Conv2d):
                module.weight.uniform_(0.1, 1.0)
    features = torch.rand(1, channels, size, size, requires_grad=True)
    probe(features)[0, :, size // 2, size // 2].sum().backward()
    return features.grad.abs().sum(dim=(0, 1)) > 0


def slim_backbone(config: SlimConfig) -> BackboneWithFPN | DetailBackbone:
    """ResNet (random init, trainable BatchNorm) + FPN with ``config.fpn_channels`` channels.

    Returns a module mapping images ``[B, 3, H, W]`` to an ordered dict of feature maps
    ``{"0": [B, C, H/8, W/8], "1": [B, C, H/16, W/16], "2": [B, C, H/32, W/32], "pool": [B, C, H/64, W/64]}``
    for the default ``returned_layers=(2, 3, 4)``; with ``mask_detail`` also ``"detail"`` and
    ``"image"`` (:class:`mask_detail.DetailBackbone`).
    """
    resnet = torchvision.models.get_model(config.backbone, weights=None, norm_layer=nn.BatchNorm2d)
    stage_channels = {1: resnet.layer1, 2: resnet.layer2, 3: resnet.layer3, 4: resnet.layer4}
    in_channels = [_out_channels(stage_channels[k]) for k in config.returned_layers]
    return_layers = {f"layer{k}": str(i) for i, k in enumerate(config.returned_layers)}
    if config.mask_detail:
        return DetailBackbone(
            resnet,
            return_layers,
            in_channels,
            config.fpn_channels,
            stage1_channels=_out_channels(resnet.layer1),
            detail_channels=config.mask_detail,
            norm_layer=_norm_layer(config),
        )
    return BackboneWithFPN(
        resnet, return_layers, in_channels, config.fpn_channels, norm_layer=_norm_layer(config)
    )


def _out_channels(stage: nn.Module) -> int:
    last_block = list(stage.children())[-1]
    convs = [m for m in last_block.modules() if isinstance(m, nn.Conv2d)]
    return convs[-1].out_channels


def slim_maskrcnn(num_classes: int, config: SlimConfig | dict | None = None) -> MaskRCNN:
    """The slim Mask R-CNN of ``config`` with random weights.

    Args:
        num_classes: object classes + 1 (background).
        config: a :class:`SlimConfig`, or its fields as a dict (from a checkpoint), or None.
    Returns:
        torchvision ``MaskRCNN``: ``model(images, targets)`` gives the five losses in train mode,
        ``model(images)`` a list of ``{"boxes", "labels", "scores", "masks"}`` in eval mode.
    Raises:
        UserError: unknown options, or ``anchor_sizes`` that do not give one tuple per level.
    """
    if isinstance(config, dict):
        config = SlimConfig.from_dict(config)
    config = config or SlimConfig()
    backbone = slim_backbone(config)
    levels = [str(i) for i in range(len(config.returned_layers))]
    if len(config.anchor_sizes) != len(levels) + 1:
        raise UserError(
            f"anchor_sizes needs {len(levels) + 1} entries (one per FPN level and the pool level), "
            f"got {len(config.anchor_sizes)}",
            fix="give one tuple of sizes per level",
        )
    anchors = AnchorGenerator(
        config.anchor_sizes, (tuple(config.aspect_ratios),) * len(config.anchor_sizes)
    )
    channels = config.fpn_channels
    norm_layer = _norm_layer(config)
    if config.box_conv_layers:
        box_head: nn.Module = FastRCNNConvFCHead(
            (channels, 7, 7),
            list(config.box_conv_layers),
            [config.representation_size],
            norm_layer=norm_layer,
        )
    else:
        box_head = TwoMLPHead(channels * 7 * 7, config.representation_size)
    arguments: dict[str, Any] = dict(
        num_classes=None,  # both predictors are given below
        min_size=config.min_size,
        max_size=config.max_size,
        rpn_anchor_generator=anchors,
        rpn_pre_nms_top_n_train=config.rpn_pre_nms_top_n_train,
        rpn_pre_nms_top_n_test=config.rpn_pre_nms_top_n_test,
        rpn_post_nms_top_n_train=config.rpn_post_nms_top_n_train,
        rpn_post_nms_top_n_test=config.rpn_post_nms_top_n_test,
        box_roi_pool=MultiScaleRoIAlign(levels, output_size=7, sampling_ratio=2),
        box_head=box_head,
        box_predictor=FastRCNNPredictor(config.representation_size, num_classes),
        box_batch_size_per_image=config.box_batch_size_per_image,
        box_positive_fraction=config.box_positive_fraction,
        box_nms_thresh=config.box_nms_thresh,
        box_detections_per_img=config.box_detections_per_img,
        mask_roi_pool=MultiScaleRoIAlign(levels, output_size=MASK_ROI_SIZE, sampling_ratio=2),
        mask_head=slim_mask_head(config, norm_layer),
        mask_predictor=MaskRCNNPredictor(
            config.mask_layers[-1], config.mask_layers[-1], num_classes
        ),
    )
    clashes = sorted(set(config.extra) & set(arguments))
    if clashes:
        raise UserError(
            f"extra sets {clashes}, which the slim model sets from its own fields",
            fix="set the field instead, e.g. --slim box_nms_thresh=0.6",
        )
    model = MaskRCNN(backbone, **arguments, **config.extra)
    if config.mask_detail:  # after the constructor, which accepts only its own RoI pool type
        fuse_channels = config.mask_layers[-1] // 2
        heads = model.roi_heads
        heads.mask_roi_pool = DetailRoIPool(levels, MASK_ROI_SIZE)
        heads.mask_head = DetailMaskHead(
            heads.mask_head, config.mask_layers[-1], config.mask_detail + 3, fuse_channels
        )
        heads.mask_predictor = PixelMaskPredictor(fuse_channels, num_classes)
        model.rpn = FPNLevelsRPN.like(model.rpn)  # the detail maps are no RPN levels
    if config.mask_nms_sigma > 0:
        model.transform = MatrixNMSTransform.like(model.transform, sigma=config.mask_nms_sigma)
    return model


def slim_config_dict(config: SlimConfig | None = None) -> dict[str, Any]:
    """:class:`SlimConfig` as a plain dict (for checkpoints' ``config``)."""
    return asdict(config or SlimConfig())
