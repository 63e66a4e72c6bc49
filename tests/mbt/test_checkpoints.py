"""mbt.checkpoints: a checkpoint that can't fit on the disk is one error naming the folder, not
orbax's writer threads failing one by one."""

from __future__ import annotations

import errno

import numpy as np
import pytest

from mbt.checkpoints import CheckpointError, check_space, disk_errors


def test_a_checkpoint_that_can_not_fit_is_refused_before_orbax_writes(tmp_path):
    huge = {"params": np.broadcast_to(np.zeros(1, np.float32), (10**13,))}  # 40 TB, never allocated
    with pytest.raises(CheckpointError, match=r"run/checkpoints: no space for checkpoint 7 \(40000000\.0 MB "
                                              r"needed, [0-9.]+ MB free\); free some space"):
        check_space(str(tmp_path / "run"), 7, huge)
    check_space(str(tmp_path / "run"), 7, {"params": np.zeros(10, np.float32)})  # fits
    check_space("gs://bucket/run", 7, huge)  # a bucket answers for itself


def test_orbax_file_system_errors_are_raised_as_the_os_errors_they_are():
    message = ('RESOURCE_EXHAUSTED: Error writing local file "/r/checkpoints/1.orbax-checkpoint-tmp/_sharding": '
               'Failed writing: "/r/checkpoints/1.orbax-checkpoint-tmp/_sharding.__lock": Failed to write 78989 '
               "bytes to file 20: No space left on device [os_error_code='28']")  # as tensorstore says it
    with pytest.raises(OSError) as e, disk_errors():
        raise ValueError(message)
    assert e.value.errno == errno.ENOSPC and e.value.filename.startswith("/r/checkpoints/1.orbax")
    with pytest.raises(ValueError, match="shape mismatch"), disk_errors():
        raise ValueError("shape mismatch")  # anything else goes through unchanged
