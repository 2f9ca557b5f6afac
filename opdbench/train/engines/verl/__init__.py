"""The verl engine (docs/verl.md): the suite's run handed to verl 0.9.1's PPO trainer with its
built-in on-policy distillation. Each module is one step of a run on verl:

- ``data``: the task's train prompts in verl's RL parquet schema;
- ``overrides``: the run's resolved config as verl's Hydra overrides;
- ``launch``: the launch script, verl's metrics in the suite's keys, the checkpoint in HF format;
- ``engine``: ``VerlEngine``, the engine that runs them in order.

Nothing here imports verl at module import: the suite runs without the verl extra too, and the
registry (``opdbench.train.engines.BUILTIN``) imports this package to register ``VerlEngine`` as ``verl``.
"""
from opdbench.train.engines.verl.engine import VerlEngine  # noqa: F401  (registers the engine)
