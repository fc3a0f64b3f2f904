"""A full disk is a fault, not a traceback (docs/design.md §8): on a real, small file system (a tmpfs) a JSONL
output, a metrics line and a final model that do not fit give one line naming the path and the space, leave no
temporary file, and keep the previous file intact."""

import errno

import pytest
import torch

from rlhfkit import storage
from rlhfkit.data.jsonl import append_jsonl, read_jsonl, write_jsonl
from rlhfkit.errors import UserError
from rlhfkit.models.loading import load_causal_lm, load_tokenizer
from rlhfkit.models.lora import save_model, save_scalar_model
from rlhfkit.models.scalar import ScalarModel
from rlhfkit.storage import save_pretrained_atomic
from tests.conftest import run_cli
from tests.small_disk import fill, small_disk
from tests.train.test_reward import _rankings

MB = 1024 * 1024


def _files(path):
    return {p.name: p.read_bytes() for p in sorted(path.iterdir()) if p.is_file()}


def _one_line(info) -> str:
    message = str(info.value)
    assert "\n" not in message
    return message


def test_a_jsonl_output_that_does_not_fit_is_one_line_and_the_previous_file_stays(tmp_path):
    with small_disk(tmp_path / "disk", 1 * MB) as disk:
        out = disk / "out.jsonl"
        write_jsonl(out, [{"n": 1}])
        before = out.read_bytes()
        big = ({"n": i, "text": "x" * 1000} for i in range(2000))  # 2 MB on a 1 MB disk
        with pytest.raises(UserError) as info:
            write_jsonl(out, big)
        message = _one_line(info)
        assert message.startswith(f"{out}: no space left on the device (") and " free)" in message
        assert f"{out} is unchanged" in message
        assert out.read_bytes() == before
        assert sorted(p.name for p in disk.iterdir()) == ["out.jsonl"]  # no temporary file


def test_the_cli_reports_a_full_disk_on_one_line_and_exits_2(tmp_path, capsys):
    rankings = _rankings(tmp_path / "rankings.jsonl", n=400)
    with small_disk(tmp_path / "disk", 64 * 1024) as disk:  # the pairs take ~150 kB
        code, _, err = run_cli(["data", "pairs", rankings, "--out", disk / "pairs.jsonl"], capsys)
        assert code == 2 and len(err.strip().splitlines()) == 1, err
        assert f"{disk / 'pairs.jsonl'}: no space left on the device" in err and "Traceback" not in err
        assert list(disk.iterdir()) == []


def test_a_metrics_line_that_does_not_fit_leaves_the_log_whole(tmp_path):
    with small_disk(tmp_path / "disk", 1 * MB) as disk:
        log = disk / "metrics.jsonl"
        append_jsonl(log, {"step": 1, "loss": 0.5})
        fill(disk, 0)
        before = log.read_bytes()
        with pytest.raises(UserError) as info:
            append_jsonl(log, {"step": 2, "text": "x" * 20_000})  # more than the rest of the file's last page
        assert _one_line(info).startswith(f"{log}: no space left on the device (needs ")
        assert log.read_bytes() == before and [r["step"] for r in read_jsonl(log)] == [1]


@pytest.mark.parametrize("when", ["checked-before", "during-the-write"])
def test_a_final_model_that_does_not_fit_is_one_line_and_the_previous_files_stay(when, tiny_gpt2, tmp_path,
                                                                                 monkeypatch):
    tokenizer = load_tokenizer(tiny_gpt2)
    model = load_causal_lm(tiny_gpt2, tokenizer)
    with small_disk(tmp_path / "disk", 4 * MB) as disk:
        out = disk / "run"
        save_model(out, model, tokenizer)
        before = _files(out)
        with torch.no_grad():
            next(model.parameters()).add_(1.0)
        fill(disk, 16 * 1024)
        if when == "during-the-write":
            monkeypatch.setattr(storage, "check_space", lambda *args, **kwargs: None)
        with pytest.raises(UserError) as info:
            save_model(out, model, tokenizer)
        message = _one_line(info)
        assert message.startswith(f"{out}: no space left on the device (needs ~") and " free)" in message
        assert f"the files in {out} are unchanged" in message
        assert _files(out) == before and not (out / ".saving").exists()


def test_a_snapshot_that_does_not_fit_leaves_no_directory(tiny_gpt2, tmp_path):
    """PPO's and DPO's --save-every snapshots go to a new directory each: none of it stays behind."""
    tokenizer = load_tokenizer(tiny_gpt2)
    model = load_causal_lm(tiny_gpt2, tokenizer)
    with small_disk(tmp_path / "disk", 1 * MB) as disk:
        fill(disk, 16 * 1024)
        out = disk / "checkpoints" / "step-2"
        with pytest.raises(UserError) as info:
            save_pretrained_atomic(out, model, tokenizer)
        assert _one_line(info).startswith(f"{out}: no space left on the device (needs ~")
        assert "nothing was written" in str(info.value) and not out.exists()


def test_a_reward_model_that_does_not_fit_leaves_the_previous_one_loadable(tiny_gpt2, tmp_path, monkeypatch):
    tokenizer = load_tokenizer(tiny_gpt2)
    model = ScalarModel.from_backbone(tiny_gpt2, tokenizer, seed=0)
    with small_disk(tmp_path / "disk", 4 * MB) as disk:
        out = disk / "rm"
        save_scalar_model(out, model, tokenizer)
        before = _files(out)
        fill(disk, 16 * 1024)
        monkeypatch.setattr(storage, "check_space", lambda *args, **kwargs: None)  # it fails while writing
        with pytest.raises(UserError, match="no space left on the device"):
            save_scalar_model(out, ScalarModel.from_backbone(tiny_gpt2, tokenizer, seed=1), tokenizer)
        assert _files(out) == before and not (out / ".saving").exists()
        ScalarModel.from_pretrained(out)


# ------------------------------------------------------------------------------------------ the parts

def test_the_errors_of_a_full_disk_are_recognised_through_torch_and_safetensors():
    full = OSError(errno.ENOSPC, "No space left on device")
    try:
        try:
            raise full
        except OSError:
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598") from None
    except RuntimeError as wrapped:  # torch.save's error: the OSError is its context
        assert storage.full_disk_reason(wrapped) == "no space left on the device"
    safetensors = Exception("Error while serializing: I/O error: No space left on device (os error 28)")
    assert storage.full_disk_reason(safetensors) == "no space left on the device"
    assert storage.full_disk_reason(OSError(errno.EDQUOT, "Disk quota exceeded")) == "disk quota exceeded"
    assert storage.full_disk_reason(PermissionError(errno.EACCES, "Permission denied")) is None


def test_an_error_that_is_not_a_full_disk_still_removes_the_temporary_directory(tmp_path):
    with pytest.raises(PermissionError):
        with storage.atomic_dir(tmp_path / "step-1") as tmp:
            (tmp / "half").write_bytes(b"half")
            raise PermissionError(errno.EACCES, "Permission denied")
    assert list(tmp_path.iterdir()) == []


def test_the_space_asked_for_counts_each_storage_once_with_a_margin():
    weight = torch.zeros(1000)  # 4000 bytes
    state = {"a": weight, "tied": weight, "view": weight[:10], "other": torch.zeros(250), "step": 3}
    assert storage.tensor_bytes(state) == (5000, 2)
    assert storage.needed_bytes(state) == int(5000 * 1.1) + 2 * 1024 + 64 * 1024


def test_an_atomic_file_gets_the_permissions_open_gives(tmp_path):
    storage.write_text_atomic(tmp_path / "config.toml", "a = 1\n")
    plain = tmp_path / "plain.txt"
    plain.write_text("a = 1\n")
    assert (tmp_path / "config.toml").stat().st_mode == plain.stat().st_mode
    assert (tmp_path / "config.toml").read_text() == "a = 1\n" and not list(tmp_path.glob(".*.tmp"))
