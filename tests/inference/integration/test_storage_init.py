"""The storage initializer against fake-gcs-server, run as the init container would run it.

Each test uploads model files with the real google-cloud-storage client and runs
`python -m modelops_inference.storage_init gs://… DEST` as a process, then checks what
a pod would see in DEST: verified files, the completion marker last, exit codes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest

from modelops_inference.storage_init import (
    EXIT_CHECKSUM,
    EXIT_NOT_FOUND,
    EXIT_OK,
    EXIT_PERMISSION,
    EXIT_RETRYABLE,
    MARKER,
    TMP_DIR,
)
from modelops_inference.storage_init.verify import crc32c_b64
from tests.components.faulty_proxy import FaultyProxy
from tests.components.procs import free_port
from tests.components.servers import FakeGCS
from tests.support.wait import wait_for

MiB = 1024 * 1024


def init_cmd(src: str, dest: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "modelops_inference.storage_init", src, str(dest), "--json", *extra]


def run_init(emulator_url: str, src: str, dest: Path, *extra: str, timeout: float = 120) -> tuple[int, dict, str]:
    env = dict(os.environ, STORAGE_EMULATOR_HOST=emulator_url, GOOGLE_CLOUD_PROJECT="test")
    done = subprocess.run(init_cmd(src, dest, *extra), env=env, capture_output=True, text=True, timeout=timeout)
    summary = json.loads(done.stdout.strip().splitlines()[-1]) if done.stdout.strip() else {}
    return done.returncode, summary, done.stderr


def upload(bucket: Any, files: dict[str, bytes]) -> None:
    for name, data in files.items():
        bucket.blob(name).upload_from_string(data)


def verified(dest: Path, bucket: Any, prefix: str) -> dict[str, bool]:
    """Each object's file in DEST, checked against the CRC32C GCS reports."""
    out = {}
    for blob in bucket.client.list_blobs(bucket.name, prefix=prefix):
        if blob.name.endswith("/"):
            continue
        path = dest / blob.name[len(prefix):]
        out[blob.name[len(prefix):]] = path.exists() and crc32c_b64(path) == blob.crc32c
    return out


@pytest.fixture
def model_files() -> dict[str, bytes]:
    return {
        "models/m/run1/config.json": b'{"architectures": ["LlamaForCausalLM"]}',
        "models/m/run1/tokenizer/tokenizer.json": os.urandom(200_000),
        **{f"models/m/run1/model-0000{i}-of-00004.safetensors": os.urandom(3 * MiB + i) for i in range(1, 5)},
    }


@pytest.fixture
def proxy(fake_gcs: FakeGCS) -> Iterator[FaultyProxy]:
    p = FaultyProxy(fake_gcs.url).start()
    yield p
    p.stop()


def test_copies_a_prefix_verified_with_the_marker_written_last(fake_gcs: FakeGCS, bucket: Any,
                                                               model_files: dict[str, bytes], tmp_path: Path) -> None:
    upload(bucket, model_files)
    bucket.blob("models/m/run1/").upload_from_string(b"")  # a console-made "folder" placeholder
    dest = tmp_path / "models" / "m"
    code, summary, log = run_init(fake_gcs.url, f"gs://{bucket.name}/models/m/run1/", dest, "--slice-mib", "1")
    assert code == EXIT_OK, log
    assert all(verified(dest, bucket, "models/m/run1/").values())
    assert sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file()) == sorted(
        [MARKER, *(n[len("models/m/run1/"):] for n in model_files)])  # no temp files left, no placeholder
    marker = json.loads((dest / MARKER).read_text())
    assert set(marker["files"]) == {n[len("models/m/run1/"):] for n in model_files}
    newest_file = max(p.stat().st_mtime_ns for p in dest.rglob("*") if p.is_file() and p.name != MARKER)
    assert (dest / MARKER).stat().st_mtime_ns >= newest_file
    assert summary["downloaded_files"] == 6 and summary["bytes_downloaded"] == sum(map(len, model_files.values()))
    assert "MB/s" in log and "all verified" in log


def test_a_second_run_finds_the_copy_complete(fake_gcs: FakeGCS, bucket: Any, model_files: dict[str, bytes],
                                              tmp_path: Path) -> None:
    upload(bucket, model_files)
    src = f"gs://{bucket.name}/models/m/run1/"
    assert run_init(fake_gcs.url, src, tmp_path)[0] == EXIT_OK
    code, summary, _ = run_init(fake_gcs.url, src, tmp_path)
    assert code == EXIT_OK and summary["already_complete"] and summary["bytes_downloaded"] == 0


def test_one_object_can_be_copied_on_its_own(fake_gcs: FakeGCS, bucket: Any, tmp_path: Path) -> None:
    upload(bucket, {"gguf/smollm2.Q4_1.gguf": os.urandom(MiB)})
    code, _, log = run_init(fake_gcs.url, f"gs://{bucket.name}/gguf/smollm2.Q4_1.gguf", tmp_path)
    assert code == EXIT_OK, log
    assert (tmp_path / "smollm2.Q4_1.gguf").stat().st_size == MiB


def part_state(dest: Path, name: str) -> dict[str, Any] | None:
    """The resumption record of the object NAME in DEST's staging directory (each records its object)."""
    for path in (dest / TMP_DIR).glob("*.json"):
        try:
            doc = json.loads(path.read_text())
        except (FileNotFoundError, ValueError):
            continue
        if doc.get("name") == name:
            return doc
    return None


def test_objects_whose_names_would_flatten_alike_are_both_copied(fake_gcs: FakeGCS, bucket: Any,
                                                                 tmp_path: Path) -> None:
    # "a/b" and "a__b" (and a deep path longer than a file name may be) under one prefix.
    deep = "/".join(["d" * 60] * 6) + "/weights.bin"
    files = {"m/a/b": os.urandom(3 * MiB + 1), "m/a__b": os.urandom(2 * MiB + 7), f"m/{deep}": os.urandom(10)}
    upload(bucket, files)
    code, summary, log = run_init(fake_gcs.url, f"gs://{bucket.name}/m/", tmp_path, "--slice-mib", "1")
    assert code == EXIT_OK, log
    assert verified(tmp_path, bucket, "m/") == {"a/b": True, "a__b": True, deep: True}
    assert summary["downloaded_files"] == 3 and (tmp_path / MARKER).exists() and not (tmp_path / TMP_DIR).exists()


def test_interrupted_then_restarted_resumes_without_refetching(fake_gcs: FakeGCS, bucket: Any,
                                                               tmp_path: Path) -> None:
    files = {f"m/a-{i}.bin": os.urandom(2 * MiB) for i in range(4)}
    files["m/z/big.safetensors"] = os.urandom(16 * MiB)  # 8 slices of 2 MiB, fetched after the small files
    files["m/z__big.safetensors"] = os.urandom(MiB)  # a name that once shared the big file's part file
    upload(bucket, files)
    dest = tmp_path / "m"
    env = dict(os.environ, STORAGE_EMULATOR_HOST=fake_gcs.url)
    # Throttled so that it can be caught half-way: ~3 s for 25 MiB.
    proc = subprocess.Popen(init_cmd(f"gs://{bucket.name}/m/", dest, "--max-mbps", "8", "--workers", "2",
                                     "--slice-mib", "2"), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def big_file_half_done() -> bool:
        state = part_state(dest, "m/z/big.safetensors")
        return state is not None and 2 <= len(state["done"]) < 7

    try:
        wait_for(big_file_half_done, timeout=30, what="the large file to be partly downloaded", interval=0.02)
    finally:
        proc.send_signal(signal.SIGKILL)  # a node dying, not a polite stop
        out, err = proc.communicate(timeout=10)
    assert not (dest / MARKER).exists(), err  # a partial copy is never presented as complete
    assert not (dest / "z" / "big.safetensors").exists()
    state = part_state(dest, "m/z/big.safetensors")
    assert state is not None
    done_slices = len(state["done"])
    before = {n: (dest / n[2:]).stat() for n in files if n.startswith("m/a-")}

    code, summary, log = run_init(fake_gcs.url, f"gs://{bucket.name}/m/", dest, "--slice-mib", "2")
    assert code == EXIT_OK, log
    assert summary["skipped_files"] == 4 and summary["resumed_files"] == 1
    assert summary["bytes_downloaded"] == 16 * MiB - done_slices * 2 * MiB + MiB  # the rest, and z__big
    for n, st in before.items():  # the finished files were left alone, not fetched again
        after = (dest / n[2:]).stat()
        assert (after.st_ino, after.st_mtime_ns) == (st.st_ino, st.st_mtime_ns)
    assert all(verified(dest, bucket, "m/").values())
    assert (dest / MARKER).exists() and not (dest / TMP_DIR).exists()


def test_sigterm_stops_cleanly_and_the_next_run_finishes(fake_gcs: FakeGCS, bucket: Any, tmp_path: Path) -> None:
    upload(bucket, {f"m/{i}.bin": os.urandom(2 * MiB) for i in range(6)})
    env = dict(os.environ, STORAGE_EMULATOR_HOST=fake_gcs.url)
    proc = subprocess.Popen(init_cmd(f"gs://{bucket.name}/m/", tmp_path, "--max-mbps", "4", "--workers", "1"),
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: (tmp_path / "0.bin").exists(), timeout=30, what="the first file to land", interval=0.02)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == EXIT_RETRYABLE, err
    assert "interrupted" in err and not (tmp_path / MARKER).exists()
    assert run_init(fake_gcs.url, f"gs://{bucket.name}/m/", tmp_path)[0] == EXIT_OK


def test_a_corrupted_local_file_is_fetched_again(fake_gcs: FakeGCS, bucket: Any, model_files: dict[str, bytes],
                                                 tmp_path: Path) -> None:
    upload(bucket, model_files)
    src = f"gs://{bucket.name}/models/m/run1/"
    assert run_init(fake_gcs.url, src, tmp_path)[0] == EXIT_OK
    victim = tmp_path / "model-00002-of-00004.safetensors"
    data = bytearray(victim.read_bytes())
    data[1000] ^= 0xFF  # same size, different bytes: only a checksum notices
    victim.write_bytes(bytes(data))
    (tmp_path / MARKER).unlink()  # as after an interrupted copy
    code, summary, log = run_init(fake_gcs.url, src, tmp_path)
    assert code == EXIT_OK, log
    assert summary["downloaded_files"] == 1 and summary["skipped_files"] == 5
    assert all(verified(tmp_path, bucket, "models/m/run1/").values())


def test_verify_existing_catches_corruption_under_a_marker(fake_gcs: FakeGCS, bucket: Any,
                                                           model_files: dict[str, bytes], tmp_path: Path) -> None:
    upload(bucket, model_files)
    src = f"gs://{bucket.name}/models/m/run1/"
    assert run_init(fake_gcs.url, src, tmp_path)[0] == EXIT_OK
    victim = tmp_path / "config.json"
    victim.write_bytes(victim.read_bytes().replace(b"Llama", b"Lxama"))
    code, summary, _ = run_init(fake_gcs.url, src, tmp_path, "--verify-existing")
    assert code == EXIT_OK and not summary["already_complete"] and summary["downloaded_files"] == 1
    assert all(verified(tmp_path, bucket, "models/m/run1/").values())


def test_bytes_corrupted_in_transit_are_refetched_never_kept(proxy: FaultyProxy, bucket: Any,
                                                             model_files: dict[str, bytes], tmp_path: Path) -> None:
    upload(bucket, model_files)
    proxy.corrupt("model-00003", times=1)
    code, summary, log = run_init(proxy.url, f"gs://{bucket.name}/models/m/run1/", tmp_path)
    assert code == EXIT_OK, log
    assert proxy.corrupted == 1 and summary["refetched_files"] == 1
    assert "checksum mismatch" in log
    assert all(verified(tmp_path, bucket, "models/m/run1/").values())


def test_bytes_that_never_verify_fail_permanently_and_leave_nothing(proxy: FaultyProxy, bucket: Any,
                                                                     model_files: dict[str, bytes],
                                                                     tmp_path: Path) -> None:
    upload(bucket, model_files)
    proxy.corrupt("model-00003", times=-1)
    code, summary, log = run_init(proxy.url, f"gs://{bucket.name}/models/m/run1/", tmp_path)
    assert code == EXIT_CHECKSUM, log
    assert summary == {"ok": False, "exit_code": EXIT_CHECKSUM, "retryable": False,
                       "error": summary["error"]} and "checksum mismatch after 3 downloads" in summary["error"]
    assert not (tmp_path / "model-00003-of-00004.safetensors").exists()
    assert not (tmp_path / MARKER).exists()


def test_a_changed_source_is_synced_again(fake_gcs: FakeGCS, bucket: Any, model_files: dict[str, bytes],
                                          tmp_path: Path) -> None:
    upload(bucket, model_files)
    src = f"gs://{bucket.name}/models/m/run1/"
    assert run_init(fake_gcs.url, src, tmp_path)[0] == EXIT_OK
    upload(bucket, {"models/m/run1/config.json": b'{"architectures": ["Gemma2ForCausalLM"]}'})
    code, summary, _ = run_init(fake_gcs.url, src, tmp_path)
    assert code == EXIT_OK and summary["downloaded_files"] == 1 and summary["skipped_files"] == 5
    assert b"Gemma2" in (tmp_path / "config.json").read_bytes()


@pytest.mark.parametrize("where, expect", [
    ("gs://no-such-bucket-xyz/models/", "bucket gs://no-such-bucket-xyz does not exist"),
    ("gs://{bucket}/no/such/prefix/", "no objects under"),
])
def test_a_missing_source_is_a_permanent_error(fake_gcs: FakeGCS, bucket: Any, tmp_path: Path, where: str,
                                               expect: str) -> None:
    code, summary, log = run_init(fake_gcs.url, where.format(bucket=bucket.name), tmp_path / "d")
    assert code == EXIT_NOT_FOUND and not summary["retryable"]
    assert expect in log


def test_permission_denied_is_a_permanent_error(proxy: FaultyProxy, tmp_path: Path) -> None:
    proxy.refuse_status = 403
    code, summary, log = run_init(proxy.url, "gs://private/models/", tmp_path)
    assert code == EXIT_PERMISSION and "permission denied" in log


def test_an_unreachable_storage_is_retryable(tmp_path: Path) -> None:
    code, summary, log = run_init(f"http://127.0.0.1:{free_port()}", "gs://b/m/", tmp_path, "--attempts", "2")
    assert code == EXIT_RETRYABLE and summary["retryable"]
    assert "temporary failure" in log


def test_bad_arguments_are_usage_errors(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "modelops_inference.storage_init", "s3://x/y", str(tmp_path)],
                          capture_output=True, text=True)
    assert done.returncode == 2 and "gs://" in done.stderr
