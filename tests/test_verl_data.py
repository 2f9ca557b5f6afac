"""The suite's train prompts in verl's parquet schema, read back through verl's own RLHFDataset."""
import pytest
from omegaconf import OmegaConf

from conftest import tiny
from opdbench.train.engines.verl.data import COLUMNS, problem_of, write_parquet
from opdbench.train.rollout import encode_prompts
from opdbench.tasks.base import get_task

MATH_ROWS = [
    {"answer": "1", "id": 0, "problem": "Dee has 5 eggs. Dee loses 3. Dee loses 1. How many eggs does Dee have now?",
     "solution": "5 - 3 = 2. 2 - 1 = 1. The answer is \\boxed{1}.", "steps": 2},
    {"answer": "6", "id": 7, "problem": "Eve has 9 pens. Eve loses 2. Eve gives 1 to Gus. How many pens does Eve have now?",
     "solution": "9 - 2 = 7. 7 - 1 = 6. The answer is \\boxed{6}.", "steps": 2},
]
CODE_ROWS = [{"entry_point": "process", "id": 3, "problem": "Write a Python function `process(xs)` that returns len(xs).",
              "reference": "def process(xs):\n    return len(xs)\n", "tests": [{"input": [[1, 2]], "output": 2}]}]


@pytest.mark.parametrize("task_name, rows", [("math", MATH_ROWS), ("code", CODE_ROWS)])
def test_verls_dataset_reads_back_the_prompts_the_local_engine_encodes(tmp_path, task_name, rows):
    import pyarrow.parquet as pq
    from verl.utils.dataset.rl_dataset import RLHFDataset

    task = get_task(task_name)
    path = write_parquet(task, rows, tmp_path / "train.parquet")
    assert tuple(pq.read_schema(path).names) == COLUMNS
    tok, _ = tiny(tmp_path)
    config = OmegaConf.create({"prompt_key": "prompt", "max_prompt_length": 256, "filter_overlong_prompts": True,
                               "filter_overlong_prompts_workers": 1, "cache_dir": str(tmp_path / "cache")})
    dataset = RLHFDataset(str(path), tok, config)
    assert len(dataset) == len(rows)  # none filtered as overlong
    for i, row in enumerate(rows):
        item = dataset[i]
        assert item["raw_prompt"] == task.messages(row)
        assert item["data_source"] == task_name and item["ability"] == task_name
        assert item["index"] == i and item["extra_info"]["split"] == "train" and item["extra_info"]["id"] == row["id"]
        assert problem_of(item["reward_model"]["ground_truth"]) == row
        # verl's agent loop applies the chat template to raw_prompt: the same ids as the local engine's.
        ids = tok.apply_chat_template(item["raw_prompt"], add_generation_prompt=True, tokenize=True, return_dict=False)
        assert ids == encode_prompts(tok, task, [row])[0]


def test_a_prompt_longer_than_max_prompt_length_is_what_verl_filters(tmp_path):
    """The lengths agree: verl drops exactly the prompts whose encoding exceeds its limit."""
    from verl.utils.dataset.rl_dataset import RLHFDataset

    task = get_task("math")
    tok, _ = tiny(tmp_path)
    lengths = [len(ids) for ids in encode_prompts(tok, task, MATH_ROWS)]
    assert lengths[0] != lengths[1]
    config = OmegaConf.create({"max_prompt_length": min(lengths), "filter_overlong_prompts": True,
                               "filter_overlong_prompts_workers": 1, "cache_dir": str(tmp_path / "cache")})
    dataset = RLHFDataset(str(write_parquet(task, MATH_ROWS, tmp_path / "train.parquet")), tok, config)
    assert [dataset[i]["extra_info"]["id"] for i in range(len(dataset))] == [MATH_ROWS[lengths.index(min(lengths))]["id"]]
