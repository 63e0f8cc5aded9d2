"""The first model `smoke up` trains on generated data gets the obvious cases right (cluster/initial_model.py).

Real pipeline, real registry, scored through Serve's own scoring code (serve.model.ModelServer),
on the README's /predict example (the first row of the Kaggle recordings), the API's samples,
and a dense smouldering fire.
"""

from __future__ import annotations

import numpy as np
import pytest

from cluster.initial_model import GENERATED_CSV, train_initial_model
from ingest.schema import ALIASES, MEASUREMENTS
from ingest.settings import ServeSettings, load_settings
from serve.model import ModelServer
from serve.routes.predict import SAMPLES
from tests.serve_support import SEED

SMOULDERING = {"Temperature": 23.0, "Humidity": 44.0, "TVOC": 20_000.0, "eCO2": 2_500.0, "Raw H2": 12_000.0,
               "Raw Ethanol": 17_500.0, "Pressure": 938.6, "PM1.0": 300.0, "PM2.5": 380.0, "NC0.5": 2_000.0,
               "NC1.0": 390.0, "NC2.5": 75.0}


def _values(reading: dict[str, float]) -> np.ndarray:
    by_name = {ALIASES[k]: v for k, v in reading.items()}
    return np.array([[by_name[m] for m in MEASUREMENTS]])


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("first-model")
    settings = load_settings(environ={})
    settings = settings.model_copy(update={
        "train": settings.train.model_copy(update={"registry_dir": str(root / "registry")}),
        "stream": settings.stream.model_copy(update={"lake_dir": str(root / "lake")})})
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)  # no data/smoke_detection_iot.csv here: the generated file is used
        stages: list[str] = []
        version, label = train_initial_model(settings, stages.append)
        assert (root / GENERATED_CSV).exists() and label.startswith("generated")
    model_server = ModelServer(settings.train.registry_dir, settings.train.model_name, ServeSettings())
    model_server.refresh()
    assert model_server.loaded and model_server.primary.model.version == version
    return model_server


@pytest.mark.parametrize("name, reading, expected", [
    ("README /predict example (first Kaggle row, no fire)", SEED, 0),
    ("/predict/sample?kind=normal", SAMPLES["normal"], 0),
    ("/predict/sample?kind=fire", SAMPLES["fire"], 1),
    ("dense smouldering smoke", SMOULDERING, 1),
])
def test_first_model_is_right_on_the_obvious_cases(server, name, reading, expected):
    scored = server.score(_values(reading), [None])
    assert int(scored.prediction[0]) == expected, (name, float(scored.probability[0]), float(scored.threshold[0]))
