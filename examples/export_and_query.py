"""Export a model for TF Serving and query the SavedModel from plain TensorFlow.

Exports the trained model of CONFIG (default ``configs/demo_mr2ct.ini``; run
``tfuq train`` on it first) as the next version under ``[EXPORT]
export_dir``. Without a trained model it exports freshly built weights from
a temporary model_dir, which is enough to show the interface. Then a
separate Python process, in which Keras and tfuq cannot even be imported,
loads the SavedModel with TensorFlow alone, lists its signatures and asks
``serving_default`` (T MC passes in the graph) and ``predict_mc`` (T chosen
per request) about a batch of windows. Last, it writes the REST request a
client would POST to TF Serving.

Run: .venv/bin/python examples/export_and_query.py [CONFIG]
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import numpy as np

from tfuq.config import load_config
from tfuq.export.client import encode_request
from tfuq.model_store import MODEL_FILE
from tfuq.stages.export import export

ROOT = Path(__file__).resolve().parents[1]

#: Runs in a process that has TensorFlow only.
QUERY = textwrap.dedent(
    """
    import sys
    for name in ("keras", "tfuq", "tf_keras", "tensorflow_probability"):
        sys.modules[name] = None  # importing them now fails: the SavedModel must not need them
    import numpy as np
    import tensorflow as tf

    loaded = tf.saved_model.load(sys.argv[1])
    for key, signature in sorted(loaded.signatures.items()):
        inputs = {k: tuple(v.shape) for k, v in signature.structured_input_signature[1].items()}
        print(f"  {key}: inputs {inputs} -> outputs {sorted(signature.structured_outputs)}")
    specs = loaded.signatures["serving_default"].structured_input_signature[1]
    rng = np.random.default_rng(0)
    windows = {k: tf.constant(rng.normal(size=(2, *v.shape[1:])), tf.float32) for k, v in specs.items()}
    maps = loaded.signatures["serving_default"](**windows)
    for key in ("mean", "epistemic_std", "aleatoric_std", "total_std"):
        value = float(tf.reduce_mean(maps[key]))
        print(f"  serving_default {key}: shape {tuple(maps[key].shape)}, mean {value:.4g}")
    more = loaded.signatures["predict_mc"](**windows, mc_samples=tf.constant(50))
    print(f"  predict_mc with T = 50: mean epistemic std {float(tf.reduce_mean(more['epistemic_std'])):.4g}")
    """
)


def main(config_path: Path) -> None:
    config = load_config(config_path)
    scratch = None
    if not (config.model_dir / MODEL_FILE).is_file():
        import keras

        from tfuq.networks import build_model

        scratch = tempfile.TemporaryDirectory()
        config = load_config(config_path, [f"SYSTEM.model_dir={scratch.name}"])
        print(
            f"no trained model in {config_path}'s model_dir: exporting untrained weights from {scratch.name}"
        )
        keras.utils.set_random_seed(0)
        build_model(config).save(config.model_dir / MODEL_FILE)
    version = export(config)
    meta = json.loads((version / "assets.extra" / "tfuq_export.json").read_text())
    print(f"exported {version} (T = {meta['mc_samples']}, units: {meta['units']})")
    print("querying it from a process with TensorFlow only:")
    subprocess.run([sys.executable, "-c", QUERY, str(version)], check=True)

    window = {k: np.zeros((1, *shape[1:]), np.float32) for k, shape in meta["inputs"].items()}
    request = version.parent.parent / "request.json"
    request.write_bytes(encode_request(window))
    name = config.export.model_name
    note = " (temporary: removed when this script ends)" if scratch is not None else ""
    print(f"REST request body for one window: {request}{note}")
    print(f"  curl -d @{request} http://localhost:8501/v1/models/{name}:predict")
    print(
        f"  (server: docker run -p 8501:8501 -v {version.parent}:/models/{name} -e MODEL_NAME={name} "
        "tensorflow/serving)"
    )
    if scratch is not None:
        scratch.cleanup()


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "configs" / "demo_mr2ct.ini")
