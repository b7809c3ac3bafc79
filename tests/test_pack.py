"""roadbuddy-pack and the package's predict.sh, on the tiny seeing model: the package answers the private-test layout
from another folder with the hub unusable and an empty cache exactly as roadbuddy-predict does with the same
settings; a package with a file corrupted, missing or edited refuses at start in one sentence; the rules it checks
(parameter cap, settings that cannot be packed) refuse before anything is written.
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
from roadbuddy.submit import frozen, pack_cli, sealed
from roadbuddy.submit import pack as pack_module
from roadbuddy.testing import tiny_task

SETTINGS = ["--model", tiny_task.CHECKPOINT, "--min-frames", tiny_task.FRAMES_SHOWN, "--max-frames",
            tiny_task.FRAMES_SHOWN, "--no-support-frames", "--no-progress", "--device", "cpu"]


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
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "TRANSFORMERS_"))}
    env.update(HF_HUB_CACHE=str(cache), HF_ENDPOINT="http://127.0.0.1:9", HF_HUB_OFFLINE="1")
    argv = ["--output", str(tmp_path / "pkg"), "--model", "roadbuddy/tiny-seeing", "--no-progress"]
    done = subprocess.run([sys.executable, "-m", "roadbuddy.submit.pack_cli", *argv], env=env, capture_output=True,
                          text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    packed = tmp_path / "pkg" / "models" / "m0"
    assert sorted(p.name for p in packed.iterdir()) == sorted(p.name for p in tiny_task.CHECKPOINT.iterdir()
                                                               if p.is_file())
    done = subprocess.run([sys.executable, "-m", "roadbuddy.submit.pack_cli", *argv[:1], str(tmp_path / "p2"),
                           "--model", "roadbuddy/not-cached"], env=env, capture_output=True, text=True, timeout=300,
                          check=False)
    assert done.returncode == 2 and done.stderr.count("error:") == 1, done.stderr


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
