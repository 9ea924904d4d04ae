"""The train pipeline with category-balanced samplers: a label in two categories is refused before any run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from omlcore.config import ConfigError
from omlcore.pipelines import train


def test_a_category_sampler_refuses_a_label_in_two_categories_before_any_run(tiny_csv: Path, tiny_config: Path) -> None:
    frame = pd.read_csv(tiny_csv)
    frame["category"] = np.where(frame["label"] % 2 == 0, "even", "odd")
    frame.loc[0, "category"] = "odd"  # label 0 now has items in both categories
    mixed = tiny_csv.parent / "mixed.csv"
    frame.to_csv(mixed, index=False)
    runs = tiny_config.parent / "runs"
    refused = pytest.raises(ConfigError, match=r"sampler\.name: the sampler 'category_balance' needs one category")
    with pytest.warns(UserWarning, match="more than one category"), refused:
        train(
            tiny_config,
            [
                f"dataset.csv={mixed}",
                "sampler.name=category_balance",
                "sampler.args={n_categories: 1, n_labels: 2, n_instances: 2}",
            ],
        )
    assert not runs.exists() or not any(runs.iterdir())
