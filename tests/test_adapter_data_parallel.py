"""Two-process CPU data parallelism (accelerate launch, gloo) gives the one-process outputs.

The worker shards the requests by rank as lmms-eval's evaluator does (docs[rank::world_size]),
runs the adapter, gathers the texts with torch.distributed and rank 0 writes them out.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

WORKER = textwrap.dedent(
    """
    import json, sys
    sys.path.insert(0, sys.argv[3])
    import torch.distributed as dist
    from test_adapter import _docs, _requests
    from pulse_models.adapter import Pulse

    ckpt, out = sys.argv[1], sys.argv[2]
    model = Pulse(pretrained=ckpt, dtype="float32", batch_size=2)
    rank, world = model.rank, model.world_size
    assert world == 2 and model.device.type == "cpu", (world, model.device)
    docs = _docs(6)
    model.task_dict = {"t": {"test": docs}}
    mine = [r for r in _requests(docs) if r.args[3] % world == rank]
    texts = model.generate_until(mine)
    local = {r.args[3]: t for r, t in zip(mine, texts)}
    gathered = [None] * world
    dist.all_gather_object(gathered, local)
    if rank == 0:
        merged = {k: v for part in gathered for k, v in part.items()}
        json.dump({str(k): merged[k] for k in sorted(merged)}, open(out, "w"))
    # Leave together and destroy the group before exit: gloo torn down in interpreter finalization
    # can abort the process (see pulse_training.recipe.close_process_group).
    dist.barrier()
    dist.destroy_process_group()
    """
)


@pytest.mark.slow
def test_two_process_cpu_matches_one_process(tmp_path):
    from pulse_models.testing import make_tiny_original_checkpoint

    sys.path.insert(0, str(Path(__file__).parent))
    from test_adapter import _docs, _model, _run
    from test_training_recipe import _free_port  # a fixed port collides with another test run on the machine

    accelerate = shutil.which("accelerate", path=str(Path(sys.executable).parent)) or shutil.which("accelerate")
    if accelerate is None:
        pytest.skip("accelerate CLI not installed")
    ckpt = make_tiny_original_checkpoint(tmp_path / "ckpt", merge_type="flat", seed=1)
    worker = tmp_path / "worker.py"
    worker.write_text(WORKER)
    out = tmp_path / "dp.json"
    # accelerate 1.x: `launch --cpu --num_processes 2` starts ONE process (simple launcher); two CPU
    # processes need the torch.distributed launcher (--multi_gpu) with ACCELERATE_USE_CPU=1 -> MULTI_CPU, gloo.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "ACCELERATE_USE_CPU": "1"}
    cmd = [accelerate, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision",
           "no", "--dynamo_backend", "no", "--main_process_port", str(_free_port()), str(worker), str(ckpt), str(out),
           str(Path(__file__).parent)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    dp = json.loads(out.read_text())
    single = _run(_model(ckpt, 1), _docs(6))
    assert [dp[str(i)] for i in range(6)] == single
