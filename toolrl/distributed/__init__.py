"""Scale-out: the same RL step from one CPU to many GPU nodes.

- `data_parallel.py`: the training side. Every rank runs `RLTrainer.step` unchanged on its share
  of each mini-batch; normalisers and gradients are summed over ranks (gloo on CPU, NCCL + FSDP2
  on GPUs), which makes the update equal to the single-process one.
- `rollout.py`: rollout workers as Ray actors (one engine each), the trajectories of a step
  spread over them, a dead worker replaced and its trajectories re-run.
- `async_rollout.py`: `trainer.mode=async` on the rollout workers: they produce the next steps'
  batches while the ranks train, within the staleness bound.
- `sandbox.py`: sandbox workers as a Ray actor pool behind the `code_interpreter` tool.
- `launch.py`: `cluster.backend=ray`: places all of it on a Ray cluster and runs `fit`.

Ray is imported only here, and only when a Ray run starts (`pip install toolrl[ray]`).
"""
