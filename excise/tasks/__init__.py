"""Tasks for circuit discovery: prompts with a correct and an incorrect continuation, and metrics.

Built in: `ioi` (generated Indirect Object Identification). User tasks: a JSONL
file with `prompt`, `correct`, `incorrect` per line.
"""

from excise.tasks.base import TaskBatch, TaskExample, encode_examples
from excise.tasks.ioi import IoiTask
from excise.tasks.metrics import TaskScore, evaluate_task, task_logits
from excise.tasks.registry import TASKS, Task, TaskSplit, load_task, split_task

TASKS.add(IoiTask.name, IoiTask)

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
    "split_task",
    "task_logits",
]
