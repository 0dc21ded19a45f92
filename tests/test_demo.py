"""The Gradio demo: pose-editor functions, slots, the Blocks, the /generate API and a real browser session.

The server tests launch the demo on 127.0.0.1 (a free port) with the tiny model and random weights; the browser
test drives headless Chromium over the DevTools protocol (`--remote-debugging-pipe`, stdlib only) and is skipped
when Chromium is not installed. `HUMANSD_UPDATE_SCREENSHOT=1` also writes assets/demo_screenshot.png.
"""

from __future__ import annotations

import base64
import importlib.util
import io
import json
import os
import select
import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from ldm.demo import pose_editor as pe
from ldm.demo.slots import (
    GenerationRequest,
    LazyPipeline,
    ModelSlot,
    build_request,
    pipeline_slot,
    resolve_pose,
    unavailable_slot,
)
from ldm.inference.pipeline import PoseToImagePipeline
from ldm.pose.io import save_pose
from ldm.pose.keypoints import NUM_KEYPOINTS, Person, Pose

ROOT = Path(__file__).resolve().parents[1]
TINY_CONFIG = ROOT / "configs" / "tiny" / "humansd-tiny.yaml"
PRESET = ROOT / "assets" / "poses" / "two_people.json"
SCREENSHOT_ASSET = ROOT / "assets" / "demo_screenshot.png"


class FakeDetector:
    """Returns the given persons for any image."""

    def __init__(self, persons: list[Person]):
        self.persons = persons
        self.calls = 0

    def detect(self, image: Any) -> list[Person]:
        self.calls += 1
        return list(self.persons)


def _photo(tmp_path: Path, size: tuple[int, int] = (300, 200)) -> Path:
    """A bright, noisy (not skeleton-like) RGB photo of size (width, height)."""
    rng = np.random.default_rng(0)
    path = tmp_path / "photo.jpg"
    Image.fromarray(rng.integers(60, 255, (size[1], size[0], 3), dtype=np.uint8)).save(path)
    return path


# ---------------------------------------------------------------------------------------------------- pose editor
def test_move_joint_clamps_makes_visible_and_leaves_input_alone():
    pose = pe.add_person(pe.empty_pose(512, 384))
    pose.persons[0].keypoints[9, 2] = 0.0
    moved = pe.move_joint(pose, 0, 9, 700.0, 100.0)
    assert moved.persons[0].keypoints[9].tolist() == [511.0, 100.0, 1.0]
    assert pose.persons[0].keypoints[9, 2] == 0.0  # a new pose is returned
    assert np.array_equal(np.delete(moved.persons[0].keypoints, 9, 0), np.delete(pose.persons[0].keypoints, 9, 0))
    hidden = pe.hide_joint(moved, 0, 9)
    assert hidden.persons[0].keypoints[9, 2] == 0.0
    with pytest.raises(ValueError, match="no person 2"):
        pe.move_joint(pose, 1, 0, 1, 1)
    with pytest.raises(ValueError, match=r"Joint index must be in \[0, 16\]"):
        pe.move_joint(pose, 0, 17, 1, 1)


def test_add_person_uses_the_standing_template_and_spreads_people():
    pose = pe.add_person(pe.empty_pose(512, 512))
    first = pose.persons[0].keypoints
    assert first.shape == (NUM_KEYPOINTS, 3) and (first[:, 2] == 1).all()
    assert abs(first[0, 0] - 256) < 1 and first[0, 1] < first[5, 1] < first[11, 1] < first[15, 1]  # head to feet
    assert first[5, 0] > first[6, 0]  # facing the viewer: the left shoulder is on the image's right
    pose = pe.add_person(pose)
    second_centre = pose.persons[1].keypoints[:, 0].mean()
    assert abs(second_centre - 256) > 100  # not on top of the first person
    removed = pe.remove_person(pose, 0)
    assert len(removed.persons) == 1 and np.array_equal(removed.persons[0].keypoints, pose.persons[1].keypoints)
    assert pe.person_choices(removed) == [("Person 1", 0)]
    with pytest.raises(ValueError, match="no person 3"):
        pe.remove_person(pose, 2)


def test_photo_without_person_gives_message_and_empty_pose(tmp_path):
    imported = pe.import_image(_photo(tmp_path), kind="photo", detector=FakeDetector([]))
    assert imported.pose is not None and imported.pose.persons == []
    assert (imported.pose.width, imported.pose.height) == (768, 512)  # editor frame: short side 512, multiples of 64
    assert "No person detected" in imported.message
    assert imported.backdrop.shape == (512, 768, 3) and not imported.skeleton
    no_detector = pe.import_image(_photo(tmp_path), kind="photo", detector=None)
    assert no_detector.pose.persons == [] and "No pose detector" in no_detector.message


def test_photo_pose_is_detected_and_rescaled_to_the_editor_frame(tmp_path):
    kpts = np.tile(np.array([[150.0, 100.0, 0.9]], np.float32), (NUM_KEYPOINTS, 1))
    detector = FakeDetector([Person(kpts, score=0.8)])
    imported = pe.import_image(_photo(tmp_path), kind="auto", detector=detector)
    assert detector.calls == 1 and imported.message is None
    assert imported.pose.persons[0].keypoints[0].tolist() == pytest.approx([384.0, 256.0, 0.9])


def test_real_mediapipe_finds_nobody_in_a_blank_photo(tmp_path):
    pytest.importorskip("mediapipe")
    from ldm.pose.estimator import build_detector

    path = tmp_path / "wall.png"
    Image.new("RGB", (256, 256), (180, 170, 160)).save(path)
    imported = pe.import_image(path, kind="photo", detector=build_detector("mediapipe"))
    assert imported.pose.persons == [] and "No person detected" in imported.message


def test_skeleton_image_is_kept_as_is_and_bad_images_are_one_line(tmp_path):
    skeleton = np.zeros((256, 256, 3), np.uint8)
    skeleton[100:110, 50:200] = (255, 0, 0)
    imported = pe.import_image(skeleton, kind="auto")
    assert imported.skeleton and imported.pose is None and imported.backdrop.shape == (512, 512, 3)
    bogus = tmp_path / "notes.png"
    bogus.write_text("not an image")
    with pytest.raises(ValueError, match=r"^notes.png is not a readable image \(UnidentifiedImageError\)\.$"):
        pe.import_image(bogus)
    with pytest.raises(ValueError, match="aspect ratio"):
        pe.import_image(np.zeros((100, 900, 3), np.uint8))


def test_pose_json_round_trip_and_errors(tmp_path):
    pose = pe.import_pose_file(PRESET).pose
    again = pe.pose_from_json(pe.pose_to_json(pose))
    assert (again.width, again.height) == (512, 512)
    np.testing.assert_allclose(again.to_array(), pose.to_array(), atol=1e-4)
    with pytest.raises(ValueError, match="^The pose JSON is empty"):
        pe.pose_from_json("  ")
    with pytest.raises(ValueError, match="^pose JSON: not valid") as err:
        pe.pose_from_json("{bad")
    assert "/tmp" not in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(ValueError, match="at most 8192 pixels"):
        pe.pose_from_json(json.dumps({"width": 100000, "height": 100000, "persons": []}))
    bad_file = tmp_path / "broken.json"
    bad_file.write_text('{"width": 64, "height": 64, "persons": [{"keypoints": [[1, 2]]}]}')
    with pytest.raises(ValueError, match="^broken.json") as err:
        pe.import_pose_file(bad_file)
    assert str(tmp_path) not in str(err.value)


def test_render_editor_marks_the_selected_joint():
    pose = pe.add_person(pe.empty_pose(512, 512))
    x, y = (int(v) for v in pose.persons[0].keypoints[9, :2])
    view = pe.render_editor(pose, person=0, joint=9)
    assert view.shape == (512, 512, 3) and view.dtype == np.uint8
    ring = view[y - 14 : y + 15, x - 14 : x + 15].reshape(-1, 3)
    assert ((ring[:, 0] > 200) & (ring[:, 1] > 180) & (ring[:, 2] < 80)).any()  # the yellow selection ring
    plain = pe.render_editor(pose)
    assert not ((plain[:, :, 0] > 200) & (plain[:, :, 1] > 180) & (plain[:, :, 2] < 80)).any()


# ------------------------------------------------------------------------------------------------ requests, slots
def test_resolve_pose_and_build_request(tmp_path):
    skeleton = tmp_path / "skeleton.png"
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(skeleton)
    pose, init, notes = resolve_pose("", str(skeleton), "skeleton")
    assert isinstance(pose, np.ndarray) and init is None and notes == []
    pose, init, notes = resolve_pose("", str(_photo(tmp_path)), "photo", FakeDetector([]))
    assert pose.persons == [] and init.shape == (512, 768, 3) and "No person detected" in notes[0]
    pose, _, notes = resolve_pose("", None, "auto")
    assert pose is None and "No pose given" in notes[0]
    request = build_request(
        "", pe.empty_pose(), None, num_images=2, steps=3, pose_threshold=0.05, guidance_scale=7.5, strength=1.0,
        seed=-1, eta=0.0, negative_prompt="bad", added_prompt="best quality", sampler="ddim",
    )  # fmt: skip
    assert request.seed is None and request.num_images == 2 and request.full_prompt == "best quality"
    assert GenerationRequest("a cat", added_prompt="").full_prompt == "a cat"
    with pytest.raises(ValueError, match=r"Steps must be a whole number in \[1, 50\]; got 0"):
        build_request(
            "x", None, None, num_images=1, steps=0, pose_threshold=0.05, guidance_scale=7.5, strength=1.0,
            seed=1, eta=0.0, negative_prompt="", added_prompt="", sampler="ddim",
        )  # fmt: skip


def test_lazy_slot_loads_on_first_use_only(tiny_pipe):
    calls = []

    def load() -> PoseToImagePipeline:
        calls.append(1)
        return tiny_pipe

    slot = pipeline_slot(load, default_steps=2)
    assert calls == []  # building the slot loads nothing
    steps = []
    request = GenerationRequest("a dancer", pe.import_pose_file(PRESET).pose, steps=2, num_images=2)
    out = slot.generate(request, lambda i, total: steps.append((i, total)))
    slot.generate(request, None)
    assert calls == [1] and steps == [(1, 2), (2, 2)]
    assert len(out.images) == 2 and out.images[0].size == (64, 64) and out.pose_map.size == (64, 64)
    lazy = LazyPipeline(load)
    assert not lazy.loaded and lazy.get() is tiny_pipe and lazy.loaded
    with pytest.raises(ValueError, match="ControlNet is not available: not here"):
        unavailable_slot("ControlNet", "not here").generate(request, None)


def test_humansd_slot_takes_steps_and_guidance_from_the_config_without_loading():
    from ldm.demo.slots import SlotOptions, humansd_slot
    from ldm.inference.defaults import TINY_CONFIG as MANNEQUIN_CONFIG

    slot = humansd_slot(SlotOptions(config=ROOT / MANNEQUIN_CONFIG, checkpoint=ROOT / "missing.safetensors"))
    assert (slot.default_steps, slot.default_guidance, slot.default_eta) == (5, 1.0, 1.0)  # its `defaults:`
    slot = humansd_slot(SlotOptions(config=ROOT / "configs/humansd/humansd-inference.yaml", checkpoint=None))
    assert (slot.default_steps, slot.default_guidance, slot.default_eta) == (50, 10.0, 0.0)  # the original's


# ---------------------------------------------------------------------------------------------------- the Blocks
@pytest.fixture(scope="module")
def tiny_pipe() -> PoseToImagePipeline:
    return PoseToImagePipeline.from_config(TINY_CONFIG, allow_random=True)


def _slots(pipe: PoseToImagePipeline) -> list[ModelSlot]:
    note = "not bundled in this rebuild yet."
    return [pipeline_slot(pipe), unavailable_slot("ControlNet", note), unavailable_slot("T2I-Adapter", note)]


def test_build_demo_wires_one_public_generate_endpoint(tiny_pipe):
    import gradio as gr

    from ldm.demo.app import build_demo

    demo = build_demo(_slots(tiny_pipe), banner="tiny model")
    assert isinstance(demo, gr.Blocks)
    public = [fn for fn in demo.fns.values() if fn.api_visibility == "public"]
    assert [fn.api_name for fn in public] == ["generate"]
    galleries = [b for b in demo.blocks.values() if isinstance(b, gr.Gallery)]
    assert [g.label for g in galleries] == ["HumanSD"]  # unavailable slots get a note, not a gallery
    steps = next(b for b in demo.blocks.values() if isinstance(b, gr.Slider) and b.label == "Steps")
    assert steps.value == 20  # the slot's default (tiny model), not the full-size 50
    guidance = next(b for b in demo.blocks.values() if isinstance(b, gr.Slider) and b.label == "Guidance scale")
    assert guidance.value == 10.0  # humansd-tiny.yaml names no guidance: the original's 10
    eta = next(b for b in demo.blocks.values() if isinstance(b, gr.Number) and b.label == "eta (DDIM)")
    assert eta.value == 0.0
    demo = build_demo([pipeline_slot(tiny_pipe, default_guidance=1.5, default_eta=1.0)], banner="tiny model")
    guidance = next(b for b in demo.blocks.values() if isinstance(b, gr.Slider) and b.label == "Guidance scale")
    eta = next(b for b in demo.blocks.values() if isinstance(b, gr.Number) and b.label == "eta (DDIM)")
    assert guidance.value == 1.5 and eta.value == 1.0
    with pytest.raises(ValueError, match="No available model"):
        build_demo([unavailable_slot("ControlNet", "x")])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served(tiny_pipe, tmp_path_factory) -> Iterator[str]:
    """The demo served on 127.0.0.1 (free port), with a fake photo detector that finds one person."""
    from ldm.demo.app import build_demo, launch_demo
    from ldm.inference.defaults import resolve_model

    os.environ["GRADIO_TEMP_DIR"] = str(tmp_path_factory.mktemp("gradio"))  # keep uploads/outputs in the test
    notice = resolve_model(None, None)[2] or "Test run: the tiny model with random, untrained weights."
    kpts = np.tile(np.array([[150.0, 100.0, 0.9]], np.float32), (NUM_KEYPOINTS, 1))
    demo = build_demo(_slots(tiny_pipe), detector=FakeDetector([Person(kpts)]), banner=notice)
    url = launch_demo(demo, port=_free_port(), prevent_thread_lock=True, quiet=True)
    try:
        yield url
    finally:
        demo.close()
        os.environ.pop("GRADIO_TEMP_DIR", None)


def test_generate_api_with_gradio_client(served, tmp_path):
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    assert served.startswith("http://127.0.0.1:")
    client = Client(served, verbose=False, download_files=str(tmp_path))
    pose_json = pe.pose_to_json(pe.import_pose_file(PRESET).pose)
    gallery, status = client.predict(prompt="a dancer", pose_json=pose_json, steps=2, seed=7, api_name="/generate")
    assert [item["caption"] for item in gallery] == ["pose map", "sample 1"]
    with Image.open(gallery[1]["image"]) as image:
        assert image.size == (64, 64) and image.mode == "RGB"
    assert "seed 7" in status and "2 DDIM steps" in status
    # The progress bar follows the sampler steps (gr.Progress fed by the pipeline callback).
    job = client.submit(prompt="x", steps=50, num_images=4, api_name="/generate")
    seen = set()
    deadline = time.monotonic() + 60
    while not job.done() and time.monotonic() < deadline:
        seen.update((u.desc, u.length) for u in (job.status().progress_data or []) if u.length)
        time.sleep(0.005)
    job.result(timeout=60)
    assert ("HumanSD: sampling", 50) in seen
    # A photo with an empty pose JSON: the pose is detected from it.
    gallery, _ = client.predict(
        prompt="x", pose_json="", image=handle_file(str(_photo(tmp_path))), steps=1, api_name="/generate"
    )
    with Image.open(gallery[0]["image"]) as pose_map:
        assert pose_map.size == (96, 64) and np.asarray(pose_map).max() > 0  # tiny model: short side 64
    for kwargs, message in [
        ({"pose_json": "{bad"}, "pose JSON: not valid"),
        ({"steps": 51}, "Steps must be a whole number in [1, 50]; got 51"),
        ({"image": handle_file(str(ROOT / "setup.py"))}, "setup.py is not a readable image"),
        ({"comparison_models": ["ControlNet"]}, "Unknown comparison model(s) ['ControlNet']"),
    ]:
        with pytest.raises(AppError) as err:
            client.predict(**{"prompt": "x", "steps": 1, **kwargs}, api_name="/generate")
        assert message in str(err.value) and "Traceback" not in str(err.value)


# --------------------------------------------------------------------------------------------------- the browser
class Chromium:
    """Headless Chromium driven over the DevTools protocol on --remote-debugging-pipe (fd 3 in, fd 4 out)."""

    def __init__(self, binary: str, profile: Path, *, width: int, height: int):
        cmd_read, self._cmd_write = os.pipe()
        self._out_read, out_write = os.pipe()
        args = [
            binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
            "--disable-extensions", "--hide-scrollbars", "--mute-audio", "--remote-debugging-pipe",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            # Nothing but 127.0.0.1: other names do not resolve, other addresses go to a dead proxy.
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1", "--proxy-server=127.0.0.1:9",
            f"--user-data-dir={profile}", f"--window-size={width},{height}", "about:blank",
        ]  # fmt: skip
        shell = f'exec "$@" 3<&{cmd_read} 4>&{out_write}'  # put the pipe ends on the fds Chromium expects
        self.proc = subprocess.Popen(
            ["bash", "-c", shell, "chromium", *args],
            pass_fds=(cmd_read, out_write),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        os.close(cmd_read)
        os.close(out_write)
        self._buffer = b""
        self._id = 0
        self.session: str | None = None

    def send(self, method: str, params: dict | None = None, *, timeout: float = 30.0) -> dict:
        self._id += 1
        message = {"id": self._id, "method": method, "params": params or {}}
        if self.session and not method.startswith(("Target.", "Browser.")):
            message["sessionId"] = self.session
        os.write(self._cmd_write, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            while b"\0" not in self._buffer:
                ready, _, _ = select.select([self._out_read], [], [], max(0.0, deadline - time.monotonic()))
                if not ready:
                    raise TimeoutError(f"Chromium did not answer {method} within {timeout} s")
                chunk = os.read(self._out_read, 1 << 20)
                if not chunk:
                    raise RuntimeError("Chromium closed the DevTools pipe")
                self._buffer += chunk
            raw, self._buffer = self._buffer.split(b"\0", 1)
            reply = json.loads(raw)
            if reply.get("id") == self._id:  # events and other replies are skipped
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})

    def open(self, url: str, width: int, height: int) -> None:
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        self.resize(width, height)
        self.send("Page.navigate", {"url": url})

    def resize(self, width: int, height: int) -> None:
        metrics = {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False}
        self.send("Emulation.setDeviceMetricsOverride", metrics)

    def js(self, expression: str) -> Any:
        result = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True})
        return result.get("result", {}).get("value")

    def wait_for(self, expression: str, timeout: float) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.js(expression)
            if value:
                return value
            time.sleep(0.2)
        raise TimeoutError(f"timed out after {timeout} s waiting for: {expression}")

    def click(self, x: float, y: float) -> None:
        for kind in ("mousePressed", "mouseReleased"):
            self.send("Input.dispatchMouseEvent", {"type": kind, "x": x, "y": y, "button": "left", "clickCount": 1})

    def screenshot(self) -> bytes:
        return base64.b64decode(self.send("Page.captureScreenshot", {"format": "png"})["data"])

    def close(self) -> None:
        try:
            self.send("Browser.close", timeout=5)
        except (OSError, RuntimeError, TimeoutError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, 9)
            self.proc.wait(timeout=10)
        os.close(self._cmd_write)
        os.close(self._out_read)


def _set_number(browser: Chromium, elem_id: str, value: int) -> None:
    browser.js(
        f"""(() => {{const box = document.querySelector('#{elem_id} input[type=number]');
        box.value = '{value}'; box.dispatchEvent(new Event('input', {{bubbles: true}}));
        box.dispatchEvent(new Event('change', {{bubbles: true}})); box.blur(); }})()"""
    )


def _compact_png(png: bytes) -> bytes:
    """Quantise the screenshot to a palette (the UI has few colours) to keep the committed asset small."""
    image = Image.open(io.BytesIO(png)).convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT)
    out = io.BytesIO()
    image.save(out, format="PNG", optimize=True)
    return out.getvalue()


def test_browser_edit_generate_and_screenshot(served, tmp_path):
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    if binary is None:
        pytest.skip("chromium not installed: apt-get install chromium")
    width, height = 1400, 1000
    browser = Chromium(binary, tmp_path / "profile", width=width, height=height)
    try:
        browser.open(served, width, height)
        browser.wait_for(
            "!!document.querySelector('#pose-canvas img') && !!document.querySelector('#generate-btn')", 90
        )
        time.sleep(2.0)  # let the layout settle and the event handlers attach before clicking
        # Edit: the selected joint (person 1's left wrist) moves to the clicked spot, so the canvas is redrawn.
        before = browser.js("document.querySelector('#pose-canvas img').src")
        left, top, w, h, nat_w, nat_h = browser.js(
            "(() => {const i = document.querySelector('#pose-canvas img'), r = i.getBoundingClientRect();"
            " return [r.left, r.top, r.width, r.height, i.naturalWidth, i.naturalHeight];})()"
        )
        click = (left + 0.42 * w, top + 0.12 * h)
        src = "document.querySelector('#pose-canvas img').src"
        for attempt in range(3):  # a click that lands before the page is interactive (busy machine) is retried
            browser.click(*click)
            try:
                after = browser.wait_for(f"{src} !== {json.dumps(before)} && {src}", 30)
                break
            except TimeoutError:
                if attempt == 2:
                    raise
        # Where the click lands in image pixels (object-fit: contain, as Gradio's ImagePreview maps it).
        scale = min(w / nat_w, h / nat_h)
        expected = (
            (click[0] - left - (w - nat_w * scale) / 2) / scale,
            (click[1] - top - (h - nat_h * scale) / 2) / scale,
        )
        with urllib.request.urlopen(after, timeout=10) as response:  # the redrawn canvas, from 127.0.0.1
            canvas = np.asarray(Image.open(io.BytesIO(response.read())).convert("RGB")).astype(int)
        x0, y0 = int(expected[0]), int(expected[1])
        window = canvas[max(0, y0 - 20) : y0 + 21, max(0, x0 - 20) : x0 + 21]
        ring = (window[..., 0] > 200) & (window[..., 1] > 180) & (window[..., 2] < 80)
        assert ring.any(), f"the selected joint's ring is not where the click landed ({expected})"
        _set_number(browser, "images-slider", 3)
        browser.js("document.querySelector('#generate-btn').click()")
        count = browser.wait_for(
            "(() => {const n = document.querySelectorAll('#gallery-humansd img').length; return n >= 4 ? n : 0;})()",
            180,
        )
        assert count >= 4  # pose map + 3 samples
        assert "seed" in browser.js("document.querySelector('#run-status').innerText")
        time.sleep(1.0)  # image decode and fade-in
        browser.resize(width, int(browser.js("Math.ceil(document.documentElement.scrollHeight)")))
        time.sleep(0.5)
        png = _compact_png(browser.screenshot())
    finally:
        browser.close()
    shot = tmp_path / "demo_screenshot.png"
    shot.write_bytes(png)
    with Image.open(shot) as image:
        assert image.width == width and image.height > 800
    assert len(png) < 300_000
    if os.environ.get("HUMANSD_UPDATE_SCREENSHOT") == "1":
        SCREENSHOT_ASSET.write_bytes(png)


# ------------------------------------------------------------------------------------------------------ the script
def test_script_defaults_are_local_and_private(tmp_path):
    spec = importlib.util.spec_from_file_location("demo_script", ROOT / "scripts" / "gradio" / "pose2img.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)  # importing the script starts nothing
    args = script.build_parser().parse_args([])
    assert (args.host, args.port, args.share, args.detector) == ("127.0.0.1", 7860, False, None)
    assert script.load_detector("none", None) is None
    missing = str(tmp_path / "missing.pth")
    assert script.main(["--detector", "higherhrnet", "--detector-ckpt", missing]) == 2  # exits before serving


def test_save_pose_presets_are_listed(tmp_path):
    save_pose(Pose([], width=64, height=64), tmp_path / "my_pose.json")
    (tmp_path / "readme.txt").write_text("ignored")
    assert pe.list_presets(tmp_path) == {"my pose": tmp_path / "my_pose.json"}
    assert pe.list_presets(tmp_path / "missing") == {}
