"""Tasks for circuit discovery: prompts with a correct and an incorrect continuation, and metrics.

Built in: `ioi` (generated Indirect Object Identification). User tasks: a JSONL
file with `prompt`, `correct`, `incorrect` per line.
"""

from excise.tasks import ioi  # noqa: F401  (registers the built-in task)
from excise.tasks.base import TaskBatch, TaskExample, encode_examples
from excise.tasks.metrics import TaskScore, evaluate_task, task_logits
from excise.tasks.registry import TASKS, Task, TaskSplit, load_task, register_task, split_task

__all__ = [
    "TASKS",
    "Task",
    "TaskBatch",
    "TaskExample",
    "TaskScore",
    "TaskSplit",
    "encode_examples",
    "evaluate_task",
    "load_task",
    "register_task",
    "split_task",
    "task_logits",
]
