"""04's rows of the bad-input suite (``tests/test_bad_input.py``; row format in ``detseg.bad_input``)."""

from __future__ import annotations

from detseg.bad_input import Case

S = "04_basic_object_detection"
SO_TRAIN, SO_PREDICT = f"{S}/train_single_object.py", f"{S}/predict_single_object.py"
TRAIN, EXPORT = f"{S}/train_detector.py", f"{S}/export_detector.py"
IMAGE, VIDEO = f"{S}/detect_image.py", f"{S}/detect_video.py"
PNG = {"a.png": "png"}

CASES = [
    # train_single_object.py
    Case("04-so-train-val-fraction", SO_TRAIN, ["--val-fraction", "1.5", "--dry-run"],
         "--val-fraction"),
    Case("04-so-train-two-images", SO_TRAIN, ["--num-images", "2", "--dry-run"], "--num-images"),
    Case("04-so-train-zero-epochs", SO_TRAIN, ["--epochs", "0", "--dry-run"], "--epochs"),
    Case("04-so-train-dropout-1", SO_TRAIN, ["--dropout", "1", "--dry-run"], "--dropout"),
    Case("04-so-train-pretrained-small", SO_TRAIN, ["--pretrained", "none", "--dry-run"],
         "--pretrained"),
    Case("04-so-train-missing-data", SO_TRAIN, ["--data-path", "{tmp}/nope", "--dry-run"],
         "{tmp}/nope"),
    Case("04-so-train-unknown-backbone", SO_TRAIN, ["--backbone", "vgg99"], "--backbone"),
    # predict_single_object.py
    Case("04-so-predict-text-checkpoint", SO_PREDICT,
         ["{tmp}/a.png", "--weights", "{tmp}/w.pt"], "{tmp}/w.pt",
         {"w.pt": "text checkpoint", **PNG}),
    Case("04-so-predict-foreign-checkpoint", SO_PREDICT,
         ["{tmp}/a.png", "--weights", "{tmp}/w.pt"], "{tmp}/w.pt",
         {"w.pt": "foreign checkpoint", **PNG}),
    Case("04-so-predict-missing-image", SO_PREDICT,
         ["{tmp}/none.png", "--weights", "{tmp}/w.pt"], "{tmp}/none.png",
         {"w.pt": "foreign checkpoint"}),
    Case("04-so-predict-missing-weights", SO_PREDICT,
         ["{tmp}/a.png", "--weights", "{tmp}/none.pt"], "{tmp}/none.pt", PNG),
    # train_detector.py
    Case("04-det-train-width", TRAIN, ["--width-mult", "0", "--dry-run"], "--width-mult"),
    Case("04-det-train-image-size", TRAIN, ["--image-size", "10", "--dry-run"], "--image-size"),
    Case("04-det-train-budget", TRAIN, ["--time-budget", "-1", "--dry-run"], "--time-budget"),
    Case("04-det-train-pretrain-epochs", TRAIN, ["--pretrain-epochs", "0", "--dry-run"],
         "--pretrain-epochs"),
    Case("04-det-train-pretraining-retinanet", TRAIN,
         ["--model", "retinanet_small", "--backbone-pretraining", "shape_crops", "--dry-run"],
         "--backbone-pretraining"),
    Case("04-det-train-anchor-scales", TRAIN, ["--anchor-scales", "0.6", "0.05", "--dry-run"],
         "--anchor-scales"),
    Case("04-det-train-unknown-model", TRAIN, ["--model", "yolo9000"], "--model"),
    Case("04-det-train-text-data", TRAIN, ["--data-path", "{tmp}/f.txt", "--dry-run"],
         "{tmp}/f.txt", {"f.txt": "text"}),
    Case("04-det-train-empty-folder", TRAIN, ["--data-path", "{tmp}/d", "--dry-run"], "{tmp}/d",
         {"d": "empty folder"}),
    # detect_image.py / detect_video.py
    Case("04-detect-missing-image", IMAGE, ["{tmp}/none.jpg", "--classic", "haar_face"],
         "{tmp}/none.jpg"),
    Case("04-detect-two-detectors", IMAGE,
         ["{tmp}/a.png", "--classic", "haar_face", "--model", "ssd300_vgg16"], "--model", PNG),
    Case("04-detect-runtime-without-weights", IMAGE, ["{tmp}/a.png", "--runtime", "opencv"],
         "--runtime", PNG),
    Case("04-detect-score-threshold", IMAGE,
         ["{tmp}/a.png", "--classic", "haar_face", "--score-threshold", "2"], "--score-threshold",
         PNG),
    Case("04-detect-text-checkpoint", IMAGE, ["{tmp}/a.png", "--weights", "{tmp}/w.pt"],
         "{tmp}/w.pt", {"w.pt": "text checkpoint", **PNG}),
    Case("04-detect-foreign-checkpoint", IMAGE, ["{tmp}/a.png", "--weights", "{tmp}/w.pt"],
         "{tmp}/w.pt", {"w.pt": "foreign checkpoint", **PNG}),
    Case("04-video-missing-source", VIDEO, ["--source", "{tmp}/none.mp4", "--classic",
                                            "hog_people"], "{tmp}/none.mp4"),
    Case("04-video-zero-frames", VIDEO, ["--max-frames", "0", "--classic", "hog_people"],
         "--max-frames"),
    # export_detector.py
    Case("04-export-missing-weights", EXPORT, ["--weights", "{tmp}/none.pt"], "{tmp}/none.pt"),
    Case("04-export-text-checkpoint", EXPORT, ["--weights", "{tmp}/w.pt"], "{tmp}/w.pt",
         {"w.pt": "text checkpoint"}),
]  # fmt: skip
