"""Known-answer tests of the evaluation metrics, the whole-set evaluation and the metrics CLI (CPU, offline)."""

from __future__ import annotations

import importlib.util
import json
import logging
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ldm.metrics.cap import cap, keypoint_oks, pose_similarity
from ldm.metrics.evaluate import EvalOptions, evaluate, read_detections, write_outputs
from ldm.metrics.features import INCEPTION_WEIGHTS_NAME, InceptionFeatures, TinyFeatures, load_feature_extractor
from ldm.metrics.fid import extract_features, frechet_distance, kernel_distance
from ldm.metrics.inputs import load_folder, load_index
from ldm.metrics.pce import pce, person_count_error
from ldm.metrics.pose_ap import PoseSample, build_coco, pose_ap
from ldm.metrics.report import PAPER_COLUMNS, comparison_table, find_metric, write_comparison
from ldm.pose.convert import rescale_pose
from ldm.pose.io import save_pose
from ldm.pose.keypoints import COCO_OKS_SIGMAS, Person, Pose

_spec = importlib.util.spec_from_file_location(
    "pose2img_metrics", Path(__file__).resolve().parents[1] / "scripts" / "pose2img_metrics.py"
)
pose2img_metrics = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(pose2img_metrics)


def _person(cx: float, cy: float, scale: float = 60.0, seed: int = 0, score: float = 1.0) -> Person:
    """A plausible upright figure centred at (cx, cy), all joints visible."""
    rng = np.random.default_rng(seed)
    base = np.array(
        [[0, -3], [-0.3, -3.2], [0.3, -3.2], [-0.6, -3], [0.6, -3], [-1, -2], [1, -2], [-1.5, -1], [1.5, -1],
         [-1.8, 0], [1.8, 0], [-0.7, 0.2], [0.7, 0.2], [-0.8, 1.6], [0.8, 1.6], [-0.9, 3], [0.9, 3]]
    )  # fmt: skip
    xy = np.array([cx, cy]) + scale * (base + rng.normal(0, 0.05, base.shape))
    return Person(np.concatenate([xy, np.ones((17, 1))], axis=1), score=score)


def _copy(person: Person, score: float = 0.9) -> Person:
    return Person(person.keypoints.copy(), score=score)


def _samples() -> list[PoseSample]:
    """Four 512x512 images: 2, 1, 0 (no GT person) and 1 persons; detections equal the GT."""
    layout = [[(150, 250), (360, 250)], [(256, 256)], [], [(250, 240)]]
    out = []
    for i, centres in enumerate(layout):
        gt = [_person(x, y, seed=10 * i + j) for j, (x, y) in enumerate(centres)]
        out.append(PoseSample(512, 512, gt, [_copy(p) for p in gt]))
    return out


# ------------------------------------------------------------------------------------------------------------ pose AP


def test_pose_ap_detections_equal_gt_is_one():
    stats = pose_ap(_samples())
    assert stats["AP"] == pytest.approx(1.0) and stats["AP50"] == pytest.approx(1.0)
    assert stats["AR"] == pytest.approx(1.0) and stats["AP(L)"] == pytest.approx(1.0)
    assert stats["AP(M)"] is None  # no medium-size ground truth: COCOeval's -1 becomes None


def test_pose_ap_shifted_joint_lowers_ap():
    samples = _samples()
    det = samples[1].detections[0]
    det.keypoints[9, :2] += 120.0  # one wrist moved: OKS drops below the upper thresholds
    gt = samples[1].gt[0].keypoints.astype(np.float64).copy()
    gt[:, 2] = 2
    area = np.ptp(gt[:, 0]) * np.ptp(gt[:, 1])
    oks = keypoint_oks(gt, det.keypoints, area=area)
    assert 0.5 < oks < 0.95
    stats = pose_ap(samples)
    assert 0.0 < stats["AP"] < 1.0 and stats["AP50"] == pytest.approx(1.0)


def test_pose_ap_known_recall_two_persons_one_found():
    first, second = _person(150, 250, seed=1), _person(360, 250, seed=2)
    samples = [PoseSample(512, 512, [first, second], [_copy(first)])]  # ids must not collide: first is found
    gt, dt = build_coco(samples)
    assert [a["id"] for a in gt.dataset["annotations"]] == [1, 2] and [a["id"] for a in dt.dataset["annotations"]] == [
        1
    ]
    stats = pose_ap(samples)
    assert stats["AR"] == pytest.approx(0.5)
    assert stats["AP"] == pytest.approx(51 / 101)  # precision 1 up to recall 0.5: 51 of the 101 recall points


def test_false_positive_on_image_without_gt_counts():
    samples = _samples()
    samples[2].detections.append(_person(256, 256, seed=99, score=0.99))  # highest score, on the empty image
    assert pose_ap(samples)["AP"] < 1.0


def test_gt_boxes_use_visible_joints_only():
    keypoints = np.zeros((17, 3), np.float32)
    keypoints[[5, 6, 11], :] = [[100, 50, 1], [140, 60, 1], [110, 150, 0.5]]
    keypoints[0] = [-1, -1, 0]  # the original's placeholder
    invisible = Person(np.zeros((17, 3)))
    gt, _ = build_coco([PoseSample(256, 256, [Person(keypoints), invisible], [])])
    (ann,) = gt.dataset["annotations"]  # the person without a visible joint is not ground truth
    assert ann["bbox"] == pytest.approx([100, 50, 40, 100])
    assert ann["area"] == pytest.approx(4000) and ann["num_keypoints"] == 3
    assert len(gt.getImgIds()) == 1


def test_pose_ap_without_detections_is_zero():
    samples = [PoseSample(s.width, s.height, s.gt, []) for s in _samples()]
    assert pose_ap(samples)["AP"] == 0.0


# ------------------------------------------------------------------------------------------------------------ CAP


def test_cap_identical_poses_is_one():
    stats = cap(_samples())
    assert stats["CAP"] == pytest.approx(1.0) and stats["CAR"] == pytest.approx(1.0)


def test_pose_similarity_matches_hand_computation():
    gt, dt = _person(200, 200, seed=1).keypoints, _person(230, 190, seed=2, scale=70).keypoints
    sig = np.asarray(COCO_OKS_SIGMAS)

    def norm(v):
        v = (v - v.min()) / (v.max() - v.min())
        return v / np.linalg.norm(v)

    g = np.concatenate([norm(gt[:, 0] / sig), norm(gt[:, 1] / sig)])
    d = np.concatenate([norm(dt[:, 0] / sig), norm(dt[:, 1] / sig)])
    expected = g @ d / (np.linalg.norm(g) * np.linalg.norm(d))
    assert pose_similarity(gt, dt, area=1e4) == pytest.approx(expected)
    # The original's bug: y_d := x_d / ||y_d|| (after x_d was L2-normalised).
    yd = dt[:, 1] / sig
    yd = (yd - yd.min()) / (yd.max() - yd.min())
    d_bug = np.concatenate([norm(dt[:, 0] / sig), norm(dt[:, 0] / sig) / np.linalg.norm(yd)])
    expected_bug = g @ d_bug / (np.linalg.norm(g) * np.linalg.norm(d_bug))
    assert pose_similarity(gt, dt, area=1e4, original_bug=True) == pytest.approx(expected_bug)
    assert expected_bug != pytest.approx(expected)


def test_pose_similarity_degenerate_poses_are_finite():
    single = np.zeros((17, 3))
    single[0] = [100, 100, 1]
    assert pose_similarity(single, single, area=0.0) == 1.0  # the lone joint coincides
    moved = single.copy()
    moved[0, :2] += 30
    assert pose_similarity(single, moved, area=2500.0) == pytest.approx(keypoint_oks(single, moved, area=2500.0))
    assert pose_similarity(single, moved, area=2500.0) < 1.0
    vertical = np.ones((17, 3))
    vertical[:, 0] = 50.0 * np.asarray(COCO_OKS_SIGMAS)  # x / sigma is constant: zero range after weighting
    vertical[:, 1] = np.arange(17) * 10.0
    value = pose_similarity(vertical, vertical, area=1e4)
    assert np.isfinite(value) and value == pytest.approx(1.0)
    assert np.isfinite(pose_similarity(vertical, np.zeros((17, 3)), area=1e4))  # detection with all joints at 0


# ------------------------------------------------------------------------------------------------------------ PCE


def test_person_count_error_known_answer():
    assert person_count_error([2, 0, 1, 3], [1, 1, 1, 0]) == pytest.approx((1 + 1 + 0 + 3) / 4)
    with pytest.raises(ValueError, match="one count per image"):
        person_count_error([1], [1, 2])


def test_pce_counts_images_without_gt():
    samples = _samples()  # GT counts 2, 1, 0, 1
    samples[0].detections.pop()  # 1 detected
    samples[2].detections += [_person(100, 100), _person(300, 300)]  # 2 detected where there is no person
    samples[3].detections.clear()  # 0 detected
    assert pce(samples) == pytest.approx((1 + 0 + 2 + 1) / 4)


def test_pce_min_score_ignores_low_score_fragments_only():
    samples = _samples()  # GT counts 2, 1, 0, 1; detections are the GT with score 0.9
    samples[1].detections.append(_person(400, 100, score=0.05))  # a fragment next to a real person
    samples[2].detections.append(_person(100, 100, score=0.1))  # a fragment on an empty image
    samples[3].detections[0] = _copy(samples[3].gt[0], score=0.15)  # a real person the detector doubts
    assert pce(samples) == pytest.approx((0 + 1 + 1 + 0) / 4)  # the original counts every detection
    assert pce(samples, min_score=0.12) == pytest.approx(0.0)
    assert pce(samples, min_score=0.2) == pytest.approx(1 / 4)  # the doubted person is now missed
    with pytest.raises(ValueError, match="min_score"):
        pce(samples, min_score=1.5)


def test_evaluate_reports_the_thresholded_pce_next_to_the_original():
    samples = _samples()
    samples[2].detections.append(_person(100, 100, score=0.05))
    with pytest.raises(ValueError, match="pce_min_scores"):
        EvalOptions(pce_min_scores=(0.0,))
    from ldm.metrics.evaluate import _pose_metrics, pce_name

    out = _pose_metrics(samples, EvalOptions(metrics=("pose",), pce_min_scores=(0.2, 0.01)))
    assert pce_name(0.2) == "PCE@0.2"
    assert out["PCE"] == pytest.approx(0.25) and out["PCE@0.01"] == pytest.approx(0.25)
    assert out["PCE@0.2"] == 0.0


# ------------------------------------------------------------------------------------------------------------ FID / KID


def _images(n: int, seed: int, low: int, high: int, size: int = 48) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(low, high, (size, size, 3), dtype=np.uint8) for _ in range(n)]


def test_fid_kid_identical_sets_zero_different_sets_larger():
    net = TinyFeatures(seed=0)
    a = extract_features(net, _images(24, 0, 0, 256))
    b = extract_features(net, _images(24, 1, 0, 128))
    assert a.shape == (24, 64) and a.dtype == torch.float64
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    assert frechet_distance(a, b) > 100 * 1e-6
    kid = kernel_distance(a, b, subset_size=1000, subsets=5)
    assert kid.subset_size == 24  # clamped to the set size
    # KID is the unbiased MMD² estimate: for identical sets it is 0 only up to an O(1/n) term (may be < 0).
    assert abs(kernel_distance(a, a, subset_size=1000, subsets=5).mean) < 0.01 * kid.mean
    with pytest.raises(ValueError, match="at least 2"):
        frechet_distance(a[:1], b)


def test_tiny_features_seeded_and_roundtrip(tmp_path):
    images = torch.from_numpy(np.stack(_images(3, 2, 0, 256, size=40))).permute(0, 3, 1, 2)
    first, second = TinyFeatures(seed=3), TinyFeatures(seed=3)
    assert torch.equal(first(images), second(images))
    first.save(tmp_path / "tiny.safetensors")
    loaded = load_feature_extractor("tiny", tiny_weights=tmp_path / "tiny.safetensors")
    assert torch.equal(loaded(images), first(images)) and loaded.label == "tiny features"
    with pytest.raises(ValueError, match="uint8"):
        first(images.float())


def test_inception_from_local_weights(tmp_path):
    import torchvision

    net = torchvision.models.inception_v3(weights=None, num_classes=1008, aux_logits=False, init_weights=False)
    path = tmp_path / INCEPTION_WEIGHTS_NAME
    torch.save(net.state_dict(), path)
    images = torch.from_numpy(np.stack(_images(2, 0, 0, 256, size=64))).permute(0, 3, 1, 2)
    features = InceptionFeatures.from_weights(path, dims=64)  # the 64-d output stops after the first block: fast
    assert features(images).shape == (2, 64) and features.num_features == 64 and features.label == "Inception-64"
    with pytest.raises(FileNotFoundError, match=INCEPTION_WEIGHTS_NAME):
        InceptionFeatures.from_weights(tmp_path / "absent.pth")
    torch.save({"fc.weight": torch.zeros(3)}, tmp_path / "wrong.pth")
    with pytest.raises(ValueError, match="does not match the FID Inception"):
        InceptionFeatures.from_weights(tmp_path / "wrong.pth")


@pytest.mark.slow
def test_inception_2048_features(tmp_path):
    import torchvision

    net = torchvision.models.inception_v3(weights=None, num_classes=1008, aux_logits=False, init_weights=False)
    torch.save(net.state_dict(), tmp_path / INCEPTION_WEIGHTS_NAME)
    features = InceptionFeatures.from_weights(tmp_path / INCEPTION_WEIGHTS_NAME, dims=2048)
    images = torch.from_numpy(np.stack(_images(2, 0, 0, 256, size=64))).permute(0, 3, 1, 2)
    assert features(images).shape == (2, 2048) and features.label == "Inception-v3"


# ------------------------------------------------------------------------------------------------------------ CLIP


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    """A random-weight open_clip model of a tiny custom architecture, saved to a file."""
    import open_clip

    folder = tmp_path_factory.mktemp("clip")
    config = {
        "embed_dim": 16,
        "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
    }
    cfg_path = folder / "tiny-clip-metrics-test.json"
    cfg_path.write_text(json.dumps(config))
    open_clip.add_model_config(cfg_path)
    torch.manual_seed(0)
    model = open_clip.create_model("tiny-clip-metrics-test", pretrained=None)
    torch.save(model.state_dict(), folder / "weights.pt")
    return cfg_path, folder / "weights.pt"


def test_clip_score_formula(tiny_clip):
    import open_clip

    from ldm.metrics.clip_score import ClipScorer

    cfg_path, weights = tiny_clip
    scorer = ClipScorer.from_weights(cfg_path, weights)
    images, prompts = _images(3, 5, 0, 256, size=40), ["a dancer", "a red figure on blue", "two people"]
    scores = scorer.scores(images, prompts)
    model = open_clip.create_model("tiny-clip-metrics-test", pretrained=None)
    model.load_state_dict(torch.load(weights, weights_only=True))
    model.eval()
    with torch.no_grad():
        img = model.encode_image(torch.stack([scorer.preprocess(Image.fromarray(i)) for i in images]))
        txt = model.encode_text(open_clip.get_tokenizer("tiny-clip-metrics-test")(prompts))
    cos = torch.nn.functional.cosine_similarity(img, txt).double().numpy()
    np.testing.assert_allclose(scores, 100 * np.maximum(cos, 0), rtol=1e-5, atol=1e-4)
    with pytest.raises(FileNotFoundError, match="--clip-weights"):
        ClipScorer.from_weights(cfg_path, weights.parent / "none.bin")


# ---------------------------------------------------------------------------------------------------------- end to end


def _write_world(root: Path, *, missing: int | None = None, gen_size: int = 64) -> tuple[Path, Path]:
    """A 5-entry Human-Art-like set in two scenarios: 96x128 references, gen_size² generated images."""
    base, gen = root / "data", root / "gen"
    entries, scenarios = {}, ["dance", "dance", "cartoon", "cartoon", "cartoon"]
    rng = np.random.default_rng(0)
    for i, scenario in enumerate(scenarios):
        rel = f"images/{scenario}/{i:06d}.png"
        (base / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (128, 96, 3), dtype=np.uint8)).save(base / rel)
        persons = [] if i == 2 else [_person(48, 64, scale=12, seed=i)]
        save_pose(Pose(persons, width=96, height=128), base / f"poses/{i:06d}.json")
        entries[f"k{i}"] = {"img_path": rel, "pose_path": f"poses/{i:06d}.json", "prompt": f"a {scenario} figure {i}"}
        if i != missing:
            out = gen / f"images/{scenario}/{i:06d}_0.png"
            out.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (gen_size, gen_size, 3), dtype=np.uint8)).save(out)
    (base / "mapping.json").write_text(json.dumps(entries))
    return gen, base / "mapping.json"


def _gt_detections(eval_set) -> dict[str, list[Person]]:
    """Detections equal to the conditioning poses rescaled to the generated size."""
    from ldm.pose.io import load_pose

    out = {}
    for item in eval_set.items:
        pose = load_pose(item.pose_path, width=96, height=128)
        w, h = Image.open(item.image_path).size
        out[item.image_id] = [_copy(p) for p in rescale_pose(pose, w, h).persons]
    return out


def test_evaluate_folder_end_to_end(tmp_path, tiny_clip, caplog):
    from ldm.metrics.clip_score import ClipScorer

    gen, mapping = _write_world(tmp_path, missing=4)
    eval_set = load_folder(gen, mapping)
    assert len(eval_set.items) == 4 and len(eval_set.missing) == 1 and eval_set.notes
    clip = ClipScorer.from_weights(*tiny_clip)
    options = EvalOptions(kid_subset_size=3, kid_subsets=4)
    with caplog.at_level(logging.WARNING):
        result = evaluate(
            eval_set, detections=_gt_detections(eval_set), features=TinyFeatures(), clip=clip, options=options
        )
    assert "missing images" in caplog.text
    overall = result.overall
    assert overall.metrics["AP"] == pytest.approx(1.0) and overall.metrics["CAP"] == pytest.approx(1.0)
    assert overall.metrics["PCE"] == 0.0 and 0.0 <= overall.metrics["CLIPSIM"] <= 100.0
    assert "FID (tiny features)" in overall.metrics and "FID" not in overall.metrics
    assert overall.counts == {
        "images": 4, "pose_images": 4, "gt_persons": 3, "detected_persons": 3,
        "reference_images": 4, "kid_subset_size": 3, "clip_pairs": 4,
    }  # fmt: skip
    assert set(result.scenarios) == {"cartoon", "dance"}
    assert result.scenarios["cartoon"].counts["images"] == 2 and result.scenarios["dance"].counts["images"] == 2
    assert result.meta["missing_images"] == 1
    paths = write_outputs(result, tmp_path / "out")
    data = json.loads(paths["json"].read_text())
    assert data["scenarios"]["dance"]["counts"]["pose_images"] == 2
    markdown, csv = paths["markdown"].read_text(), paths["csv"].read_text()
    assert "| cartoon | 2 | 2 | 1 | 2 |" in markdown and "FID (tiny features)" in markdown
    assert csv.splitlines()[0].startswith("scenario,images,pose_images") and len(csv.splitlines()) == 4
    assert read_detections(paths["detections"]).keys() == result.detections.keys()


def test_evaluate_index_with_random_tiny_estimator(tmp_path):
    from ldm.pose.estimator import PoseEstimator, PoseEstimatorConfig, load_pose_config

    gen, mapping = _write_world(tmp_path, gen_size=64)
    data = json.loads(mapping.read_text())
    entries = [
        {
            "key": key,
            "prompt": e["prompt"],
            "scenario": Path(e["img_path"]).parent.name,
            "reference_image": str(mapping.parent / e["img_path"]),
            "pose_path": str(mapping.parent / e["pose_path"]),
            "generated": [f"images/{Path(e['img_path']).with_suffix('').as_posix().split('images/')[1]}_0.png"],
        }
        for key, e in data.items()
    ]
    entries[0]["generated"].append("images/dance/absent_1.png")
    (gen / "index.shard-0-of-1.json").write_text(json.dumps({"meta": {}, "report": {}, "entries": entries}))
    eval_set = load_index(gen)
    assert len(eval_set.items) == 5 and eval_set.missing == ["images/dance/absent_1.png"]
    torch.manual_seed(0)
    cfg = load_pose_config("tiny")  # random weights; small input and no flip test keep it fast
    detector = PoseEstimator.from_config(
        PoseEstimatorConfig(cfg.net, replace(cfg.test, input_size=64, flip_test=False))
    )
    result = evaluate(eval_set, detector=detector, options=EvalOptions(metrics=("pose",)))
    assert result.overall.counts["gt_persons"] == 4 and result.overall.counts["pose_images"] == 5
    assert 0.0 <= result.overall.metrics["AP"] <= 1.0 and result.overall.metrics["PCE"] >= 0.0


def test_gt_rescaled_to_generated_size(tmp_path):
    gen, mapping = _write_world(tmp_path, gen_size=32)
    eval_set = load_folder(gen, mapping)
    options = EvalOptions(metrics=("pose",), cap_original_bug=True)
    result = evaluate(eval_set, detections=_gt_detections(eval_set), options=options)
    assert result.overall.metrics["AP"] == pytest.approx(1.0)  # detections in 32x32 pixels match the rescaled GT
    assert "CAP (original y bug)" in result.overall.metrics and "CAP" not in result.overall.metrics


# ------------------------------------------------------------------------------------------------------------ report


def test_comparison_table_and_chart(tmp_path):
    runs = {}
    for name, ap in (("HumanSD", 0.3), ("ControlNet", 0.2)):
        metrics = {"FID": 26.0, "KID": 0.25, "AP": ap, "AP(M)": ap / 2, "CAP": 0.59, "PCE": 1.6, "CLIPSIM": 33.0}
        run = {"overall": {"counts": {"images": 10}, "metrics": metrics}, "scenarios": {}}
        run["scenarios"]["dance"] = {"counts": {"images": 5}, "metrics": metrics}
        (tmp_path / name).mkdir()
        (tmp_path / name / "metrics.json").write_text(json.dumps(run))
        runs[name] = tmp_path / name
    paths = write_comparison(runs, tmp_path / "cmp", with_paper=True)
    table = paths["markdown"].read_text()
    assert "| Model | Images | FID | KID×10 | AP | AP(m) | CAP | PCE | CLIPSIM |" in table
    assert "| HumanSD | 10 | 26.00 | 2.50 | 30.00 | 15.00 | 59.00 | 1.60 | 33.00 |" in table
    assert "HumanSD (0.2M) (paper)" in table
    assert paths["chart"].read_bytes()[:4] == b"\x89PNG"
    assert [c.header for c in PAPER_COLUMNS] == ["FID", "KID×10", "AP", "AP(m)", "CAP", "PCE", "CLIPSIM"]
    labelled = {"FID (tiny features)": 3.0}
    assert find_metric(labelled, "FID") == ("FID (tiny features)", 3.0)
    assert "non-standard" in comparison_table({"x": {"overall": {"counts": {}, "metrics": labelled}}})


# ------------------------------------------------------------------------------------------------------------ CLI


def test_cli_tiny_quality_and_detections(tmp_path):
    gen, mapping = _write_world(tmp_path, missing=1)
    eval_set = load_folder(gen, mapping)
    dets = {
        k: [{"keypoints": p.keypoints.tolist(), "score": p.score} for p in v]
        for k, v in _gt_detections(eval_set).items()
    }
    (tmp_path / "dets.json").write_text(json.dumps(dets))
    out = tmp_path / "out"
    argv = ["--images", str(gen), "--mapping", str(mapping), "--metrics", "pose,quality", "--feature-net", "tiny"]
    argv += ["--detections", str(tmp_path / "dets.json"), "--outdir", str(out), "--kid-subset-size", "2"]
    assert pose2img_metrics.main([*argv, "--pce-min-score", "0.5", "--pose-errors"]) == 0
    data = json.loads((out / "metrics.json").read_text())
    assert data["overall"]["metrics"]["AP"] == pytest.approx(1.0)
    assert data["overall"]["metrics"]["joints good"] == pytest.approx(1.0)  # detections = the poses: all good
    assert data["overall"]["metrics"]["AP fixed all"] == pytest.approx(1.0)
    assert data["overall"]["metrics"]["PCE@0.5"] == data["overall"]["metrics"]["PCE"] == 0.0
    assert data["overall"]["counts"]["images"] == 4 and data["meta"]["missing_images"] == 1
    assert (out / "metrics.md").is_file() and (out / "metrics.csv").is_file()


def test_cli_missing_weights_messages_and_exit_codes(tmp_path, caplog):
    gen, mapping = _write_world(tmp_path)
    base = ["--images", str(gen), "--mapping", str(mapping), "--outdir", str(tmp_path / "o")]
    with caplog.at_level(logging.ERROR):
        code = pose2img_metrics.main([*base, "--metrics", "quality", "--inception-weights", str(tmp_path / "x.pth")])
    assert code == 1 and INCEPTION_WEIGHTS_NAME in caplog.text and "Nothing can be computed" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.ERROR):
        code = pose2img_metrics.main([*base, "--metrics", "text,quality", "--feature-net", "tiny"])
    assert code == 0 and "--clip-weights" in caplog.text  # text skipped, quality computed
    data = json.loads((tmp_path / "o" / "metrics.json").read_text())
    assert "text" in data["meta"]["skipped"] and "FID (tiny features)" in data["overall"]["metrics"]


def test_cli_bad_inputs(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        pose2img_metrics.main(["--images", str(tmp_path)])
    assert exc.value.code == 2 and "--images needs --mapping" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        pose2img_metrics.main(["--index", str(tmp_path), "--metrics", "pose,colour"])
    assert exc.value.code == 2 and "comma-separated subset" in capsys.readouterr().err
    assert pose2img_metrics.parse_metrics("quality, pose") == ("quality", "pose")
    assert pose2img_metrics.main(["--index", str(tmp_path), "--metrics", "quality", "--feature-net", "tiny"]) == 1
    gen, mapping = _write_world(tmp_path / "w")
    empty = tmp_path / "empty"
    empty.mkdir()
    argv = ["--images", str(empty), "--mapping", str(mapping), "--metrics", "quality", "--feature-net", "tiny"]
    assert pose2img_metrics.main([*argv, "--outdir", str(tmp_path / "o")]) == 1  # nothing to evaluate


def test_cli_generates_then_evaluates(tmp_path):
    from ldm.data.synthetic import write_tiny_dataset

    mapping = write_tiny_dataset(tmp_path / "data", n=4, size=64, seed=0)
    out = tmp_path / "run"
    argv = ["--from-mapping", str(mapping), "--outdir", str(out), "--metrics", "quality", "--feature-net", "tiny"]
    assert pose2img_metrics.main([*argv, "--steps", "1", "--limit", "2", "--kid-subset-size", "2"]) == 0
    data = json.loads((out / "metrics.json").read_text())
    assert data["overall"]["counts"]["images"] == 2 and data["meta"]["source"].startswith("index")
    assert (out / "index.shard-0-of-1.json").is_file()
