"""The data: the stratified split, the class subset, the per-epoch order, the lazy tf.data batches."""

from __future__ import annotations

import bbox_data
import numpy as np
import pytest

from detseg.data import samples
from detseg.errors import UserError


@pytest.fixture(scope="module")
def dataset():
    return bbox_data.load_source(None)  # the 24-image smoke data, 8 per class


def test_split_is_stratified_disjoint_complete_and_seeded(dataset):
    splits = bbox_data.split_dataset(dataset, val_fraction=0.25, test_fraction=0.25, seed=0)
    names = {part: [r.file_name for r in splits[part].records] for part in splits}
    assert sum(len(v) for v in names.values()) == len(dataset) == 24
    assert len(set().union(*map(set, names.values()))) == 24  # disjoint and complete
    for part, expected in (("train", 4), ("val", 2), ("test", 2)):
        labels = bbox_data.true_labels(splits[part])
        assert np.bincount(labels, minlength=3).tolist() == [expected] * 3
    again = bbox_data.split_dataset(dataset, val_fraction=0.25, test_fraction=0.25, seed=0)
    assert [r.file_name for r in again["test"].records] == names["test"]
    other = bbox_data.split_dataset(dataset, val_fraction=0.25, test_fraction=0.25, seed=1)
    assert [r.file_name for r in other["test"].records] != names["test"]


def test_split_of_one_class_holds_out_the_same_images_as_the_multiclass_split(dataset):
    splits = bbox_data.split_dataset(dataset, val_fraction=0.25, test_fraction=0.25, seed=0)
    airplanes = bbox_data.select_classes(splits["test"], ["airplane"])
    assert airplanes.classes == ["airplane"]
    assert [r.file_name for r in airplanes.records] == [
        r.file_name for r in splits["test"].records if r.file_name.startswith("airplane/")
    ]
    faces_first = bbox_data.select_classes(dataset, ["face", "airplane"])
    label_of = {r.file_name.split("/")[0]: int(r.labels[0]) for r in faces_first.records}
    assert label_of == {"face": 0, "airplane": 1}  # relabelled in the order asked
    with pytest.raises(UserError, match="'zebra' is not in the dataset"):
        bbox_data.select_classes(dataset, ["zebra"])


def test_empty_split_is_a_user_error(dataset):
    tiny = bbox_data.select_classes(dataset, ["face"])
    tiny.records = tiny.records[:2]
    with pytest.raises(UserError, match="split is empty"):
        bbox_data.split_dataset(tiny, val_fraction=0.1, test_fraction=0.2)


def test_epoch_order_depends_on_seed_and_epoch_only():
    first = bbox_data.epoch_order(50, seed=0, epoch=3)
    assert sorted(first.tolist()) == list(range(50))
    np.testing.assert_array_equal(first, bbox_data.epoch_order(50, seed=0, epoch=3))
    assert not np.array_equal(first, bbox_data.epoch_order(50, seed=0, epoch=4))
    assert not np.array_equal(first, bbox_data.epoch_order(50, seed=1, epoch=3))


def test_box_dataset_gives_normalised_boxes_and_reads_images_lazily(dataset, monkeypatch):
    reads = []
    real_read = samples.read_image
    monkeypatch.setattr(samples, "read_image", lambda path: reads.append(path) or real_read(path))
    subset = bbox_data.select_classes(dataset, dataset.classes)
    order = np.array([5, 0, 7])
    pipeline = bbox_data.box_dataset(
        subset, image_size=64, batch_size=2, with_class=True, order=order
    )
    assert reads == []  # building the pipeline reads no image
    batches = list(pipeline)
    assert len(reads) == 3 and [b[0].shape[0] for b in batches] == [2, 1]
    images = np.concatenate([b[0].numpy() for b in batches])
    boxes = np.concatenate([b[1]["bbox"].numpy() for b in batches])
    labels = np.concatenate([b[1]["class"].numpy() for b in batches])
    assert images.shape == (3, 64, 64, 3) and images.min() >= 0 and images.max() <= 1
    chosen = [subset.records[i] for i in order]
    expected = np.stack([r.boxes[0] / [r.width, r.height, r.width, r.height] for r in chosen])
    np.testing.assert_allclose(boxes, expected, atol=1e-6)
    assert labels.tolist() == [int(r.labels[0]) for r in chosen]


def test_training_dataset_concatenates_each_epochs_own_order(dataset):
    subset = bbox_data.select_classes(dataset, ["airplane"])  # 8 images
    pipeline = bbox_data.training_dataset(
        subset, image_size=32, batch_size=8, with_class=False, seed=2, first_epoch=1, last_epoch=3
    )
    batches = [targets["bbox"].numpy() for _, targets in pipeline]
    assert len(batches) == 2 * bbox_data.steps_per_epoch(8, 8)
    normalised = bbox_data.true_boxes(subset) / bbox_data.image_sizes(subset)
    for batch, epoch in zip(batches, (1, 2)):
        order = bbox_data.epoch_order(8, seed=2, epoch=epoch)
        np.testing.assert_allclose(batch, normalised[order], atol=1e-6)


def test_images_with_several_boxes_are_refused(tmp_path):
    (tmp_path / "images" / "cat").mkdir(parents=True)
    from detseg.data.imageio import write_image

    write_image(tmp_path / "images" / "cat" / "a.jpg", np.zeros((20, 30, 3), np.uint8))
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "cat.csv").write_text("a.jpg,1,1,5,5,cat\na.jpg,6,6,9,9,cat\n")
    with pytest.raises(UserError, match="several boxes"):
        bbox_data.load_source(tmp_path)


def test_flipped_batches_are_the_mirrored_images_with_mirror_boxes(dataset):
    plain = bbox_data.box_dataset(dataset, image_size=32, batch_size=24, with_class=False)
    flipped = bbox_data.box_dataset(
        dataset, image_size=32, batch_size=24, with_class=False, flip=1.0
    )
    (images, targets), (mirrored, mirrored_targets) = next(iter(plain)), next(iter(flipped))
    # the image is reversed along x (resizing commutes with a left-right flip up to rounding)
    np.testing.assert_allclose(mirrored.numpy(), images.numpy()[:, :, ::-1], atol=2 / 255)
    boxes = targets["bbox"].numpy()
    np.testing.assert_allclose(
        mirrored_targets["bbox"].numpy(), bbox_data.mirror_boxes(boxes), atol=1e-6
    )
    # hand-computed: x1' = 1 - x2, x2' = 1 - x1, y unchanged; mirroring twice is the identity
    box = np.array([[0.1, 0.2, 0.4, 0.9]], np.float32)
    np.testing.assert_allclose(bbox_data.mirror_boxes(box), [[0.6, 0.2, 0.9, 0.9]], atol=1e-7)
    np.testing.assert_allclose(
        bbox_data.mirror_boxes(bbox_data.mirror_boxes(boxes)), boxes, atol=1e-6
    )
    assert not np.allclose(bbox_data.mirror_boxes(boxes), boxes)  # the boxes are not centred
