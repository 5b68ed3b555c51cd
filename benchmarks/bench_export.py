"""Benchmark case: ONNX Runtime vs eager PyTorch on a small CNN (CPU, batch 1 and 8).

Registered in :data:`detseg.bench.CASES` as ``export-ort``; run with ``detseg bench run --case export-ort``.
The example folders register their own trained-model cases (Mask R-CNN, U-Net, ...).
"""

from __future__ import annotations

import tempfile
from pathlib import Path


def _small_cnn():
    import torch

    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 32, 3, padding=1),
        torch.nn.BatchNorm2d(32),
        torch.nn.ReLU(),
        torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(32, 64, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(64, 10),
    ).eval()


def case_ort_vs_eager(
    image_size: int = 128, batch_sizes: tuple[int, ...] = (1, 8), threads: int = 1
) -> dict:
    """Median latency of eager PyTorch and ONNX Runtime, their ratio (ORT / eager) and parity.

    Both run with the same number of intra-op threads (``threads``), so the ratio compares the
    runtimes, not how each copes with a busy machine.
    """
    import torch

    from detseg.export import check_parity, export_onnx, ort_session, time_inference

    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    model = _small_cnn()
    result: dict[str, float | str] = {"main": "ratio_b1"}
    with tempfile.TemporaryDirectory() as tmp:
        path = export_onnx(
            model,
            (torch.rand(1, 3, image_size, image_size),),
            Path(tmp) / "cnn.onnx",
            input_names=["images"],
            output_names=["logits"],
            dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}},
        )
        session = ort_session(path, threads=threads)
        for batch in batch_sizes:
            images = torch.rand(batch, 3, image_size, image_size)
            with torch.inference_mode():
                eager = time_inference(model, images, warmup=3, repeats=20)
            onnx_time = time_inference(
                lambda x: session.run(None, {"images": x}), images.numpy(), warmup=3, repeats=20
            )
            result[f"eager_ms_b{batch}"] = eager["median_ms"]
            result[f"ort_ms_b{batch}"] = onnx_time["median_ms"]
            result[f"ratio_b{batch}"] = onnx_time["median_ms"] / eager["median_ms"]
            result[f"max_abs_diff_b{batch}"] = check_parity(model, session, images)
    torch.set_num_threads(previous_threads)
    result["threads"] = threads
    return result
