"""Built-in tasks register themselves on import."""
from opdbench.tasks import code, math, mixed  # noqa: F401
from opdbench.tasks.base import TASKS, Score, Task, get_task, register_task

__all__ = ["TASKS", "Score", "Task", "get_task", "register_task"]
