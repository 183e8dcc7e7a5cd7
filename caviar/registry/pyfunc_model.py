"""The MLflow pyfunc flavour of a registered version: `mlflow.pyfunc.load_model(
"models:/nsmc-sentiment@champion").predict(["정말 재미있어요"])` answers with no caviar code beyond the
installed package. Its one artifact is the checkpoint folder the version registered (serving files
and card), loaded by the same Predictor that `caviar serve` uses.
"""

from __future__ import annotations

import warnings

import mlflow.pyfunc
import pandas as pd

from model.predict import Predictor

ARTIFACT = "checkpoint"  # the key of the checkpoint folder among the model's artifacts


with warnings.catch_warnings():  # MLflow asks for type hints; predict takes a list or a DataFrame alike
    warnings.filterwarnings("ignore", message=".*type hints.*", category=UserWarning)

    class SentimentModel(mlflow.pyfunc.PythonModel):
        """Reviews in (a list of strings, or a one-column DataFrame), one row per review out: label
        (긍정 or 부정), its confidence and the probability of 긍정."""

        def load_context(self, context) -> None:
            self.predictor = Predictor.from_checkpoint(context.artifacts[ARTIFACT])

        def predict(self, context, model_input, params=None) -> pd.DataFrame:
            if isinstance(model_input, pd.DataFrame):
                texts = model_input.iloc[:, 0].astype(str).tolist()
            elif isinstance(model_input, str):
                texts = [model_input]
            else:
                texts = [str(text) for text in model_input]
            predictions = self.predictor.predict(texts)
            return pd.DataFrame(
                {
                    "label": [p.label for p in predictions],
                    "confidence": [p.confidence for p in predictions],
                    "positive_probability": [p.positive_probability for p in predictions],
                }
            )
