"""MLflow pyfunc wrapping a `.nemo` (NeMo models do not go through torch.export).

`mlflow.pyfunc.load_model(uri).predict(["text", ...])` returns a DataFrame: classifier columns `label`,
`name`, `p_cancer`, `p_neurological`, `p_other`; NER columns `tags` (space-separated B/I/O, one per
whitespace token) and `entities` (JSON list of disease strings). NER takes the inference param
`documents` (MLflow's params, declared in the signature): one integer per text, sentences with the same
one share their abbreviations, `predict(texts, params={"documents": [0, 0, 1]})`; without it each text
stands alone. Needs the training env.
"""

from __future__ import annotations

import json
from pathlib import Path

import mlflow.pyfunc

INPUT_EXAMPLE = {
    "classifier": ["Germline mutations in BRCA1 predispose to breast and ovarian cancer ."],
    "ner": ["Germline mutations in BRCA1 predispose to breast cancer and ovarian cancer ."],
}


class NemoPyfunc(mlflow.pyfunc.PythonModel):
    """Restores the packaged .nemo on CPU once per load; predicts in eval mode."""

    def __init__(self, task: str):
        self.task = task
        self.model = None

    def load_context(self, context) -> None:
        from tasks.training.artifact import restore_nemo

        self.model = restore_nemo(Path(context.artifacts["nemo"]), self.task)

    def predict(self, context, model_input, params=None):
        import pandas as pd

        from tasks.training.predict import predict_texts

        texts = _texts(model_input)
        rows = predict_texts(self.model, self.task, texts, _documents(texts, params))
        if self.task == "classifier":
            return pd.DataFrame(
                [
                    {
                        "label": r["label"],
                        "name": r["name"],
                        "p_cancer": r["probabilities"][0],
                        "p_neurological": r["probabilities"][1],
                        "p_other": r["probabilities"][2],
                    }
                    for r in rows
                ]
            )
        return pd.DataFrame(
            [{"tags": " ".join(r["tags"]), "entities": json.dumps(r["entities"])} for r in rows]
        )


def _texts(model_input) -> list[str]:
    import pandas as pd

    if isinstance(model_input, pd.DataFrame):
        col = "text" if "text" in model_input.columns else model_input.columns[0]
        return [str(t) for t in model_input[col]]
    if isinstance(model_input, str):
        return [model_input]
    return [str(t) for t in model_input]


def _documents(texts: list[str], params: dict | None) -> list[int] | None:
    """NER: the `documents` param (one integer per text) groups sentences for abbreviation resolution;
    empty or absent: each text stands alone."""
    documents = list((params or {}).get("documents") or [])
    if not documents:
        return None
    if len(documents) != len(texts):
        raise ValueError(f"params.documents has {len(documents)} values for {len(texts)} texts")
    return [int(d) for d in documents]


def log_pyfunc(task: str, nemo_path: Path):
    """Log the pyfunc (signature + input example, explicit requirements so logging skips inference)."""
    import pandas as pd
    from mlflow.models import infer_signature
    from mlflow.types.schema import ParamSchema, ParamSpec

    example = INPUT_EXAMPLE[task]
    if task == "classifier":
        out = pd.DataFrame(
            [{"label": 0, "name": "cancer", "p_cancer": 0.9, "p_neurological": 0.05, "p_other": 0.05}]
        )
    else:
        out = pd.DataFrame([{"tags": "O O O B I O", "entities": "[]"}])
    signature = infer_signature(example, out)  # one unnamed string column: predict(["..."]) works
    if task == "ner":  # MLflow drops input columns the signature lacks: the grouping travels as a param
        signature.params = ParamSchema([ParamSpec("documents", "long", [], (-1,))])
    reqs = _requirements()
    return mlflow.pyfunc.log_model(
        name="model",
        python_model=NemoPyfunc(task),
        artifacts={"nemo": str(nemo_path)},
        signature=signature,
        input_example=example,
        pip_requirements=reqs,
    )


# What a model server must install (it reads requirements.txt only): NeMo's stack, and what NER scoring
# imports beyond it (Ab3P for abbreviations, pytorch-crf for Viterbi decoding, seqeval for entity spans).
SERVING_DISTRIBUTIONS = (
    "ncbi-retrain",
    "nemo_toolkit",
    "torch",
    "transformers",
    "lightning",
    "mlflow",
    "pandas",
    "pyab3p",
    "pytorch-crf",
    "seqeval",
)


def _requirements() -> list[str]:
    from importlib.metadata import PackageNotFoundError, version

    reqs = []
    for name in SERVING_DISTRIBUTIONS:
        try:
            reqs.append(f"{name}=={version(name)}")
        except PackageNotFoundError:
            continue
    return reqs
