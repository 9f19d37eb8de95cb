"""The one reader and writer of the results that scripts store and chapters load."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from minitransformer.book.stored import RESULTS_DIR, read_results, run_info, write_results


def test_round_trip_with_numpy_and_torch_scalars(tmp_path):
    blob = {"format": "demo/1", "rows": [{"ok": np.bool_(True), "n": np.int64(3), "x": torch.tensor(0.5).item()}]}
    path = write_results(tmp_path / "sub" / "demo.json", blob)
    assert read_results(path, "scripts/demo.py", "demo/1") == {
        "format": "demo/1",
        "rows": [{"ok": True, "n": 3, "x": 0.5}],
    }


def test_missing_file_says_how_to_make_it_and_a_wrong_format_is_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"make them with:  python scripts/demo.py"):
        read_results(tmp_path / "none.json", "scripts/demo.py")
    path = write_results(tmp_path / "other.json", {"format": "other/1"})
    with pytest.raises(ValueError, match="is not a demo/1 file"):
        read_results(path, "scripts/demo.py", "demo/1")
    with pytest.raises(TypeError, match="object is not JSON serialisable"):
        write_results(tmp_path / "bad.json", {"x": object()})


def test_run_info_names_what_a_result_depends_on():
    info = run_info("scripts/demo.py", ["--seeds", "3"])
    assert info["command"] == "python scripts/demo.py --seeds 3"
    assert info["threads"] == torch.get_num_threads() and info["torch"] == str(torch.__version__)
    assert set(info) == {"torch", "threads", "omp_wait_policy", "date", "command"}


@pytest.mark.parametrize(
    "name",
    [
        "block_variants.json",
        "mnist_data_efficiency.json",
        "reversal_rnn.json",
        "reversal_capacity.json",
        "reversal_attention_seeds.json",
    ],
)
def test_every_stored_result_is_read_by_the_one_reader(name):
    blob = read_results(RESULTS_DIR / name, "scripts/...")
    assert blob and "command" in (blob.get("settings") or blob)
