"""roadbuddy-pack and the package's predict.sh, on the tiny seeing model: the package answers the private-test layout
from another folder with the hub unusable and an empty cache exactly as roadbuddy-predict does with the same
settings; a package with a file corrupted, missing or edited refuses at start in one sentence; the rules it checks
(parameter cap, settings that cannot be packed) refuse before anything is written. A frame selector (the committed
tiny one, on the brief-evidence clips it was trained for) travels as its loading files alone, is counted against
the cap, is checked before the first answer, and answers as roadbuddy-predict --frame-selector does.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import read_rows, run_main

from roadbuddy.config import RunConfig
from roadbuddy.selector.model import load_selector, selector_digest
from roadbuddy.submit import frozen, pack_cli, sealed
from roadbuddy.submit import pack as pack_module
from roadbuddy.testing import brief_task, tiny_task

SETTINGS = ["--model", tiny_task.CHECKPOINT, "--min-frames", tiny_task.FRAMES_SHOWN, "--max-frames",
            tiny_task.FRAMES_SHOWN, "--no-support-frames", "--no-progress", "--device", "cpu"]


# what a selector made by roadbuddy-finetune-selector packs as: the files load_selector reads, and its card
SELECTOR_PACKED = ["config.json", "model.safetensors", "preprocessor_config.json", "selector_card.json",
                   "tokenizer.json", "tokenizer_config.json"]


def pack(*argv) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = pack_cli.main([str(a) for a in argv])
    return code, err.getvalue()


@pytest.fixture(scope="module")
def private_data(tmp_path_factory) -> Path:
    """The tiny task's held-out clips in the private-test layout: DATA/private_test.json (no answers) + DATA/videos/."""
    heldout = tiny_task.write_heldout(tmp_path_factory.mktemp("heldout"))
    data = tmp_path_factory.mktemp("data")
    shutil.copytree(heldout.parent / "videos", data / "videos")
    items = json.loads(heldout.read_text(encoding="utf-8"))["data"]
    private = [{"id": i["id"], "question": i["question"], "choices": i["choices"],
                "video_path": i["video_path"].removeprefix("train/")} for i in items[:16]]
    (data / "private_test.json").write_text(json.dumps({"data": private}, ensure_ascii=False), encoding="utf-8")
    return data


@pytest.fixture(scope="module")
def package(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("pkg") / "package"
    code, err = pack("--output", out, *SETTINGS)
    assert code == 0, err
    return out


def run_package(package: Path, data: Path, result: Path, cwd: Path) -> subprocess.CompletedProcess:
    """predict.sh as the organisers run it, from another folder, with an empty Hugging Face cache and a hub that
    cannot be reached (any request would fail), the package's code first on the path."""
    home = cwd / "hf-home"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "TRANSFORMERS_", "ROADBUDDY_"))}
    env.update(ROADBUDDY_DATA=str(data), ROADBUDDY_RESULT=str(result), ROADBUDDY_PYTHON=sys.executable,
               HF_HOME=str(home), HF_ENDPOINT="http://127.0.0.1:9", PYTHONUNBUFFERED="1",
               http_proxy="http://127.0.0.1:9", https_proxy="http://127.0.0.1:9")
    done = subprocess.run([str(package / "predict.sh")], check=False, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=600)
    assert not home.exists() or not any(home.rglob("*.safetensors")), "the package reached for the hub cache"
    return done


def test_package_answers_the_private_layout_as_predict_does(package, private_data, tmp_path):
    code, err = run_main("--test-json", private_data / "private_test.json", "--output",
                         tmp_path / "direct" / "submission.csv", *SETTINGS[:-3])
    assert code == 0, err
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    done = run_package(package, private_data, tmp_path / "result", elsewhere)
    assert done.returncode == 0, done.stderr
    assert f"code {package.resolve() / 'code' / 'roadbuddy'}" in done.stderr  # the sealed code ran, not this repo's
    assert "slowest question" in done.stderr
    got = read_rows(tmp_path / "result" / "submission.csv")
    assert got == read_rows(tmp_path / "direct" / "submission.csv") and len(got) == 17
    assert [r[:2] for r in read_rows(tmp_path / "result" / "time_submission.csv")] == got


@pytest.mark.parametrize("harm", ["corrupt weights", "missing tokenizer", "settings edited"])
def test_a_harmed_package_refuses_at_start_in_one_sentence(harm, package, private_data, tmp_path):
    copy = tmp_path / "package"
    shutil.copytree(package, copy)
    if harm == "corrupt weights":
        weights = next((copy / "models").rglob("*.safetensors"))
        blob = bytearray(weights.read_bytes())
        blob[-1] ^= 0xFF
        weights.write_bytes(bytes(blob))
        named = weights.relative_to(copy).as_posix()
    elif harm == "missing tokenizer":
        gone = next((copy / "models").rglob("tokenizer*.json"))
        gone.unlink()
        named = gone.relative_to(copy).as_posix()
    else:
        doc = json.loads((copy / "settings.json").read_text())
        doc["members"][0]["max_frames"] = 64
        (copy / "settings.json").write_text(json.dumps(doc))
        named = "settings.json"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    done = run_package(copy, private_data, tmp_path / "result", elsewhere)
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert done.returncode == 2 and len(errors) == 1 and named in errors[0], done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "result" / "predictions.jsonl").exists()


def test_package_holds_what_its_dockerfile_and_script_name(package):
    listed = sealed.read_manifest(package)
    assert set(listed) == {p.as_posix() for p in sealed.package_files(package)}
    docker = (package / "Dockerfile").read_text()
    copied = re.findall(r"^COPY (\S+) ", docker, flags=re.MULTILINE)
    assert copied and all((package / c).exists() for c in copied)
    assert re.search(r'^CMD \["/opt/roadbuddy/predict.sh"\]', docker, flags=re.MULTILINE) and os.access(
        package / "predict.sh", os.X_OK)
    assert re.search(r"^FROM \$\{BASE\}", docker, flags=re.MULTILINE) and "nvidia/cuda:" in docker
    script = (package / "predict.sh").read_text()
    assert "export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1" in script and "ROADBUDDY_DATA:-/data" in script
    pins = dict(line.split("==") for line in (package / "requirements.txt").read_text().split())
    assert {"torch", "transformers", "safetensors", "av", "peft"} <= set(pins)
    assert all(re.fullmatch(r"[0-9][0-9A-Za-z.]*", v) for v in pins.values()), pins  # no local build tags
    settings = json.loads((package / "settings.json").read_text())
    (member,) = settings["members"]
    assert member["model"] == "models/m0" and (package / "models/m0/config.json").is_file()
    assert settings["total_parameters"] == settings["parameters"]["models/m0"] > 0
    assert not list(package.rglob("*.py[co]")) and not list((package / "models").rglob("*.py"))


def test_frozen_settings_give_the_run_back(package, tmp_path):
    member = json.loads((package / "settings.json").read_text())["members"][0]
    cfg = frozen.thaw(member, package, test_json=tmp_path / "q.json", output=tmp_path / "s.csv")
    want = RunConfig(model=str(package / "models/m0"), min_frames=tiny_task.FRAMES_SHOWN,
                     max_frames=tiny_task.FRAMES_SHOWN, support_frames=False, progress=False, device="cpu",
                     test_json=tmp_path / "q.json", output=tmp_path / "s.csv")
    assert cfg == want


def test_from_run_packs_the_runs_settings_and_refuses_answer_flags(package, private_data, tmp_path):
    code, err = run_main("--test-json", private_data / "private_test.json", "--output",
                         tmp_path / "run" / "submission.csv", "--limit", 2, *SETTINGS[:-3])
    assert code == 0, err
    code, err = pack("--output", tmp_path / "again", "--from-run", tmp_path / "run", "--no-progress",
                     "--device", "cpu")
    assert code == 0, err
    packed = json.loads((package / "settings.json").read_text())["members"]
    assert json.loads((tmp_path / "again" / "settings.json").read_text())["members"] == packed
    code, err = pack("--output", tmp_path / "other", "--from-run", tmp_path / "run", "--max-frames", 8)
    assert code == 2 and "--max-frames 8 with --from-run" in err and not (tmp_path / "other").exists()


def test_parameter_cap_and_bad_sources_refuse_before_writing(tmp_path):
    code, err = pack("--output", tmp_path / "p", "--max-params", 1000, *SETTINGS)
    assert code == 2 and "above --max-params" in err and "models/m0" in err, err
    assert not (tmp_path / "p").exists() and not (tmp_path / "p.partial").exists()
    code, err = pack("--output", tmp_path / "p", "--model", tmp_path / "nothing")
    assert code == 2 and err.count("error:") == 1 and "no such folder" in err, err
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    code, err = pack("--output", tmp_path / "full", *SETTINGS)
    assert code == 2 and "not an empty folder" in err, err
    code, err = pack("--output", tmp_path / "r", "--from-run", tmp_path)
    assert code == 2 and "no run.json" in err, err


def test_an_ensemble_packs_its_shared_model_once_and_its_package_answers_as_the_ensemble(private_data, tmp_path):
    from roadbuddy.submit import ensemble_cli

    questions = private_data / "private_test.json"
    for name, extra in (("plain", []), ("orders", ["--permutations", 2])):
        code, err = run_main("--test-json", questions, "--output", tmp_path / name / "submission.csv", *SETTINGS[:-3],
                             *extra)
        assert code == 0, err
    with contextlib.redirect_stderr(io.StringIO()):
        assert ensemble_cli.main([str(tmp_path / "plain"), str(tmp_path / "orders"), "--weights", "2,1",
                                  "--output", str(tmp_path / "ens" / "submission.csv")]) == 0
    code, err = pack("--output", tmp_path / "pkg", "--from-run", tmp_path / "ens", "--no-progress", "--device", "cpu")
    assert code == 0, err
    settings = json.loads((tmp_path / "pkg" / "settings.json").read_text())
    assert [m["permutations"] for m in settings["members"]] == [1, 2] and settings["weights"] == [2 / 3, 1 / 3]
    assert sorted(p.name for p in (tmp_path / "pkg" / "models").iterdir()) == ["m0"]  # one model, packed once
    assert list(settings["parameters"]) == ["models/m0"]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    done = run_package(tmp_path / "pkg", private_data, tmp_path / "result", elsewhere)
    assert done.returncode == 0, done.stderr
    assert read_rows(tmp_path / "result" / "submission.csv") == read_rows(tmp_path / "ens" / "submission.csv")
    summed = {r[0]: r[2] for r in read_rows(tmp_path / "result" / "time_submission.csv")[1:]}
    members = [{r[0]: int(r[2]) for r in read_rows(tmp_path / "result" / "members" / i / "time_submission.csv")[1:]}
               for i in ("0", "1")]
    assert all(abs(int(summed[q]) - members[0][q] - members[1][q]) <= 1 for q in summed)  # the 30 s rule counts both


def test_an_ensemble_above_the_cap_together_is_refused(private_data, tmp_path):
    from roadbuddy.submit import ensemble_cli
    from roadbuddy.testing.checkpoints import write_tiny_checkpoint

    other = write_tiny_checkpoint(tmp_path / "other")
    questions = private_data / "private_test.json"
    for name, model in (("a", tiny_task.CHECKPOINT), ("b", other)):
        code, err = run_main("--test-json", questions, "--output", tmp_path / name / "submission.csv", "--limit", 2,
                             "--model", model, *SETTINGS[2:-3])
        assert code == 0, err
    with contextlib.redirect_stderr(io.StringIO()):
        assert ensemble_cli.main([str(tmp_path / "a"), str(tmp_path / "b"), "--output",
                                  str(tmp_path / "ens" / "submission.csv")]) == 0
    sizes = [pack_module.safetensors_parameters(sorted(Path(m).glob("*.safetensors")))
             for m in (tiny_task.CHECKPOINT, other)]
    cap = max(sizes) + 10  # each model alone fits, both together do not
    code, err = pack("--output", tmp_path / "pkg", "--from-run", tmp_path / "ens", "--max-params", cap)
    assert code == 2 and "above --max-params" in err and "models/m0" in err and "models/m1" in err, err
    assert not (tmp_path / "pkg").exists()


def test_a_hub_id_is_packed_from_the_hugging_face_cache_without_the_network(tmp_path):
    """--model org/name: the snapshot in the cache (the layout the hub client writes), never a download."""
    cache = tmp_path / "hub"
    snapshot = cache / "models--roadbuddy--tiny-seeing" / "snapshots" / ("0" * 40)
    shutil.copytree(tiny_task.CHECKPOINT, snapshot)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("0" * 40)
    selector = cache / "models--roadbuddy--tiny-selector" / "snapshots" / ("1" * 40)  # --frame-selector org/name too
    shutil.copytree(brief_task.SELECTOR, selector)
    (selector.parents[1] / "refs").mkdir()
    (selector.parents[1] / "refs" / "main").write_text("1" * 40)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "TRANSFORMERS_"))}
    env.update(HF_HUB_CACHE=str(cache), HF_ENDPOINT="http://127.0.0.1:9", HF_HUB_OFFLINE="1")
    argv = ["--output", str(tmp_path / "pkg"), "--model", "roadbuddy/tiny-seeing", "--no-progress",
            "--frame-selector", "roadbuddy/tiny-selector"]
    done = subprocess.run([sys.executable, "-m", "roadbuddy.submit.pack_cli", *argv], env=env, capture_output=True,
                          text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    packed = tmp_path / "pkg" / "models" / "m0"
    assert sorted(p.name for p in packed.iterdir()) == sorted(p.name for p in tiny_task.CHECKPOINT.iterdir()
                                                               if p.is_file())
    assert sorted(p.name for p in (tmp_path / "pkg" / "selectors" / "s0").iterdir()) == SELECTOR_PACKED
    (member,) = json.loads((tmp_path / "pkg" / "settings.json").read_text())["members"]
    assert member["frame_selector"] == "selectors/s0"
    done = subprocess.run([sys.executable, "-m", "roadbuddy.submit.pack_cli", *argv[:1], str(tmp_path / "p2"),
                           "--model", "roadbuddy/not-cached"], env=env, capture_output=True, text=True, timeout=300,
                          check=False)
    assert done.returncode == 2 and done.stderr.count("error:") == 1, done.stderr
    done = subprocess.run([sys.executable, "-m", "roadbuddy.submit.pack_cli", *argv[:1], str(tmp_path / "p3"),
                           "--model", "roadbuddy/tiny-seeing", "--frame-selector", "roadbuddy/not-cached"], env=env,
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 2 and done.stderr.count("error:") == 1 and "--frame-selector roadbuddy/not-cached" in (
        done.stderr) and "not in the Hugging Face cache" in done.stderr, done.stderr
    assert not (tmp_path / "p3").exists()


def test_an_adapter_travels_with_its_model_and_a_changed_one_is_refused(private_data, tmp_path):
    from roadbuddy.testing.checkpoints import write_tiny_adapter

    adapter = write_tiny_adapter(tiny_task.CHECKPOINT, tmp_path / "adapter")
    questions = private_data / "private_test.json"
    code, err = run_main("--test-json", questions, "--output", tmp_path / "run" / "submission.csv", "--limit", 6,
                         "--adapter", adapter, *SETTINGS[:-3])
    assert code == 0, err
    code, err = pack("--output", tmp_path / "pkg", "--from-run", tmp_path / "run", "--no-progress", "--device", "cpu")
    assert code == 0, err
    settings = json.loads((tmp_path / "pkg" / "settings.json").read_text())
    assert settings["members"][0]["adapter"] == "adapters/a0" and settings["parameters"]["adapters/a0"] > 0
    assert {"adapter_config.json", "adapter_model.safetensors", "roadbuddy_adapter.json"} <= {
        p.name for p in (tmp_path / "pkg" / "adapters" / "a0").iterdir()}
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    done = run_package(tmp_path / "pkg", private_data, tmp_path / "result", elsewhere)
    assert done.returncode == 0, done.stderr
    direct = {r[0]: r[1] for r in read_rows(tmp_path / "run" / "submission.csv")}
    packaged = {r[0]: r[1] for r in read_rows(tmp_path / "result" / "submission.csv")}
    assert all(packaged[q] == a for q, a in direct.items())  # the run answered 6; the package all 16
    write_tiny_adapter(tiny_task.CHECKPOINT, adapter, seed=1)  # other weights in the run's adapter folder
    code, err = pack("--output", tmp_path / "again", "--from-run", tmp_path / "run")
    assert code == 2 and "holds other weights than the run used" in err and not (tmp_path / "again").exists(), err


def test_a_file_the_run_would_not_read_is_not_frozen_as_a_path():
    """--debias-prior without --debias: nothing to pack, so settings.json names no file outside the package."""
    member = frozen.freeze(RunConfig(debias_prior=Path("/elsewhere/prior.json")), {"model": "models/m0"})
    assert member["debias_prior"] is None and member["model"] == "models/m0" and member["packed_files"] == ["model"]


# --- the frame selector -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def selector_source(tmp_path_factory) -> Path:
    """The committed tiny selector as roadbuddy-finetune-selector leaves its output folder, and then some: its card,
    log, chart and notes, a checkpoint/ and scan-cache/ of the training, a pickle and a code file beside the weights."""
    folder = tmp_path_factory.mktemp("selector") / "tiny-selector"
    shutil.copytree(brief_task.SELECTOR, folder)
    (folder / "checkpoint").mkdir()
    (folder / "checkpoint" / "trainable.safetensors").write_bytes((folder / "model.safetensors").read_bytes())
    (folder / "checkpoint" / "state.json").write_text("{}")
    (folder / "scan-cache").mkdir()
    (folder / "scan-cache" / "brief_0000.npy").write_bytes(b"\x93NUMPY")
    (folder / "training_args.bin").write_bytes(b"pickle")
    (folder / "modeling_siglip.py").write_text("raise SystemExit('remote code ran')\n")
    return folder


@pytest.fixture(scope="module")
def selector_package(tmp_path_factory, selector_source) -> Path:
    out = tmp_path_factory.mktemp("pkg") / "package"
    code, err = pack("--output", out, *SETTINGS, "--frame-selector", selector_source)
    assert code == 0, err
    return out


@pytest.fixture(scope="module")
def selector_ensemble_package(tmp_path_factory, selector_source) -> Path:
    """Two members, the second with the frame selector, packed --from-run of the ensemble.json roadbuddy-ensemble
    writes (each member's folder and run.json settings; nothing else of it is read): a harmed selector must be
    refused before the first member answers, not when the second loads it."""
    base = tmp_path_factory.mktemp("ensemble")
    common = {"model": str(tiny_task.CHECKPOINT), "min_frames": tiny_task.FRAMES_SHOWN,
              "max_frames": tiny_task.FRAMES_SHOWN, "support_frames": False}
    members = [{"folder": str(base / f"run{i}"), "settings": RunConfig(**common, **extra).answer_settings()}
               for i, extra in enumerate(({}, {"frame_selector": str(selector_source)}))]
    (base / "ens").mkdir()
    (base / "ens" / pack_cli.ENSEMBLE_FILE).write_text(json.dumps({"members": members, "weights": [0.5, 0.5]},
                                                                  default=str))
    code, err = pack("--output", base / "package", "--from-run", base / "ens", "--no-progress", "--device", "cpu")
    assert code == 0, err
    return base / "package"


@pytest.fixture(scope="module")
def brief_data(tmp_path_factory) -> Path:
    """Brief-evidence clips (16 s, the evidence on screen 1 s: where the frames fall decides the answer) in the
    private-test layout."""
    heldout = brief_task.write_heldout(tmp_path_factory.mktemp("brief"), clips=8)
    data = tmp_path_factory.mktemp("brief-data")
    shutil.copytree(heldout.parent / "videos", data / "videos")
    items = json.loads(heldout.read_text(encoding="utf-8"))["data"]
    private = [{"id": i["id"], "question": i["question"], "choices": i["choices"],
                "video_path": i["video_path"].removeprefix("train/")} for i in items]
    (data / "private_test.json").write_text(json.dumps({"data": private}, ensure_ascii=False), encoding="utf-8")
    return data


def test_a_packed_frame_selector_is_the_files_that_load_it_and_thaws_to_the_package_folder(selector_package,
                                                                                            selector_source, tmp_path):
    settings = json.loads((selector_package / "settings.json").read_text())
    (member,) = settings["members"]
    assert member["frame_selector"] == "selectors/s0" and "frame_selector" in member["packed_files"]
    assert sorted(p.name for p in (selector_package / "selectors").iterdir()) == ["s0"]
    assert sorted(p.name for p in (selector_package / "selectors" / "s0").iterdir()) == SELECTOR_PACKED
    cfg = frozen.thaw(member, selector_package, test_json=tmp_path / "q.json", output=tmp_path / "s.csv")
    want = RunConfig(model=str(selector_package / "models/m0"), min_frames=tiny_task.FRAMES_SHOWN,
                     max_frames=tiny_task.FRAMES_SHOWN, support_frames=False, progress=False, device="cpu",
                     frame_selector=str(selector_package / "selectors/s0"), test_json=tmp_path / "q.json",
                     output=tmp_path / "s.csv")
    assert cfg == want
    assert cfg.answer_settings()["frame_selector_sha256"] == selector_digest(selector_source)  # the same weights
    load_selector(cfg.frame_selector)  # the packed files alone load it
    count = pack_module.safetensors_parameters([selector_source / "model.safetensors"])
    assert settings["parameters"]["selectors/s0"] == count > 0
    assert settings["total_parameters"] == settings["parameters"]["models/m0"] + count


@pytest.mark.parametrize("harm", ["corrupt selector weights", "not a SigLIP, resealed", "no tokenizer, resealed"])
def test_a_package_with_a_harmed_frame_selector_refuses_at_start_in_one_sentence(harm, selector_ensemble_package,
                                                                                 private_data, tmp_path):
    copy = tmp_path / "package"
    shutil.copytree(selector_ensemble_package, copy)
    assert [m["frame_selector"] for m in json.loads((copy / "settings.json").read_text())["members"]] == [
        None, "selectors/s0"]
    folder = copy / "selectors" / "s0"
    if harm == "corrupt selector weights":
        weights = folder / "model.safetensors"
        blob = bytearray(weights.read_bytes())
        blob[-1] ^= 0xFF
        weights.write_bytes(bytes(blob))
        named = "selectors/s0/model.safetensors"
    else:  # harmed, then SHA256SUMS written again: the selector check itself must refuse
        if harm == "not a SigLIP, resealed":
            config = json.loads((folder / "config.json").read_text())
            (folder / "config.json").write_text(json.dumps({**config, "model_type": "bert"}))
        else:
            (folder / "tokenizer.json").unlink()
        sealed.write_manifest(copy)
        named = "selectors/s0"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    done = run_package(copy, private_data, tmp_path / "result", elsewhere)
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert done.returncode == 2 and len(errors) == 1 and named in errors[0], done.stderr
    assert "Traceback" not in done.stderr and not list((tmp_path / "result").rglob("predictions.jsonl"))  # no member


def test_from_run_packs_the_runs_frame_selector_and_refuses_one_rewritten_after_the_run(selector_source, tmp_path):
    from safetensors.torch import load_file, save_file

    selector = tmp_path / "selector"
    shutil.copytree(selector_source, selector)
    cfg = RunConfig(model=str(tiny_task.CHECKPOINT), min_frames=tiny_task.FRAMES_SHOWN,
                    max_frames=tiny_task.FRAMES_SHOWN, support_frames=False, frame_selector=str(selector),
                    scan_fps=4.0, selector_times=2)
    run = tmp_path / "run"
    run.mkdir()  # the run.json roadbuddy-predict writes (its answer settings): all --from-run reads of a run
    (run / "run.json").write_text(json.dumps({"settings": cfg.answer_settings()}, indent=2, default=str))
    assert "frame_selector_sha256" in cfg.answer_settings()
    code, err = pack("--output", tmp_path / "pkg", "--from-run", run, "--no-progress", "--device", "cpu")
    assert code == 0, err
    (member,) = json.loads((tmp_path / "pkg" / "settings.json").read_text())["members"]
    assert (member["frame_selector"], member["scan_fps"], member["selector_times"]) == ("selectors/s0", 4.0, 2)
    assert selector_digest(tmp_path / "pkg" / "selectors" / "s0") == cfg.answer_settings()["frame_selector_sha256"]
    assert sorted(p.name for p in (tmp_path / "pkg" / "selectors" / "s0").iterdir()) == SELECTOR_PACKED
    tensors = load_file(selector / "model.safetensors")
    name = min(tensors)
    tensors[name] = tensors[name] + 0.01  # retrained in place after the run
    save_file(tensors, selector / "model.safetensors", metadata={"format": "pt"})
    code, err = pack("--output", tmp_path / "again", "--from-run", run)
    assert code == 2 and err.count("error:") == 1 and "frame selector" in err, err
    assert "holds other weights than the run used" in err and not (tmp_path / "again").exists(), err
    shutil.rmtree(selector)
    code, err = pack("--output", tmp_path / "again", "--from-run", run)
    assert code == 2 and "frame selector" in err and "is gone" in err and not (tmp_path / "again").exists(), err


def test_the_parameter_cap_counts_the_frame_selector_and_a_bad_one_refuses_before_writing(selector_source, tmp_path):
    model = pack_module.safetensors_parameters(sorted(tiny_task.CHECKPOINT.glob("*.safetensors")))
    selector = pack_module.safetensors_parameters([selector_source / "model.safetensors"])
    with_selector = [*SETTINGS, "--frame-selector", selector_source]
    code, err = pack("--output", tmp_path / "p", "--max-params", model + selector - 1, *with_selector)
    assert code == 2 and "above --max-params" in err and "selectors/s0" in err and "frame selector" in err, err
    assert not (tmp_path / "p").exists() and not (tmp_path / "p.partial").exists()
    cfg = RunConfig(model=str(tiny_task.CHECKPOINT), frame_selector=str(selector_source))
    assert pack_module.plan([cfg], None, model + selector).parameters == {"models/m0": model, "selectors/s0": selector}
    assert "frame selector" in " ".join(pack_cli.build_parser().format_help().split())
    code, err = pack("--output", tmp_path / "p", *SETTINGS, "--frame-selector", tiny_task.CHECKPOINT)
    assert code == 2 and err.count("error:") == 1 and "SigLIP" in err, err  # a VLM is no selector
    code, err = pack("--output", tmp_path / "p", *SETTINGS, "--frame-selector", tmp_path / "nothing")
    assert code == 2 and err.count("error:") == 1 and "no such folder" in err, err
    assert not (tmp_path / "p").exists()


def test_a_package_with_a_frame_selector_answers_as_predict_does_with_it(selector_package, selector_source,
                                                                         brief_data, tmp_path):
    questions = brief_data / "private_test.json"
    direct = {}
    for name, extra in (("even", []), ("selected", ["--frame-selector", selector_source])):
        code, err = run_main("--test-json", questions, "--output", tmp_path / name / "submission.csv",
                             *SETTINGS[:-3], *extra)
        assert code == 0, err
        direct[name] = read_rows(tmp_path / name / "submission.csv")
    assert direct["selected"] != direct["even"]  # predict uses the selector: the comparison below means something
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    done = run_package(selector_package, brief_data, tmp_path / "result", elsewhere)
    assert done.returncode == 0, done.stderr
    assert read_rows(tmp_path / "result" / "submission.csv") == direct["selected"] and len(direct["selected"]) == 17
    ran = json.loads((tmp_path / "result" / "run.json").read_text())["settings"]
    assert ran["frame_selector"] == str(selector_package.resolve() / "selectors" / "s0")
    assert ran["frame_selector_sha256"] == selector_digest(selector_source)
