"""The stored form of a failure model: JSON holding each booster in LightGBM's own text format.

Usage: ``blob = dump(model)``; ``model = load(blob, sha256(blob))``. No pickle: the boosters
are ``Booster.model_to_string()`` text, the rest plain JSON; the whole blob is checked
against its sha256 before anything in it is read.

Versions: 2 adds the breach features to the feature spec (``FeatureSpec.breach``); a version
1 artifact has none and loads as it was trained (the same features, the same numbers).
"""

from __future__ import annotations

import hashlib
from typing import Any

import lightgbm as lgb
import orjson

from services.trainer.failure.definition import FailureDefinition
from services.trainer.failure.features import FeatureSpec
from services.trainer.failure.model import FailureModel, HorizonModel, lgb_names

ARTIFACT_FORMAT = "lightgbm-text+json"
FORMAT_VERSION = 2
READS_VERSIONS = (1, 2)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def dump(model: FailureModel) -> bytes:
    """Serialise a trained failure model (deterministic for the same model)."""
    doc: dict[str, Any] = {
        "format": ARTIFACT_FORMAT,
        "format_version": FORMAT_VERSION,
        "definition": model.definition.to_dict(),
        "features": model.spec.to_dict(),
        "feature_names": model.spec.names,
        "summary": model.summary,
        "horizons": [
            {
                "horizon_min": h.horizon_min,
                "threshold": h.threshold,
                "validation": h.validation,
                "booster": h.booster.model_to_string(),
            }
            for h in model.horizons
        ],
    }
    return orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY)


def load(data: bytes, checksum: str) -> FailureModel:
    """A model from ``dump``'s bytes; ValueError saying why if it is not one this build reads."""
    actual = sha256(data)
    if actual != checksum:
        raise ValueError(f"model checksum mismatch: expected {checksum}, got {actual}")
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise ValueError(f"not a {ARTIFACT_FORMAT} artifact: the blob is not JSON") from None
    if not isinstance(doc, dict) or doc.get("format") != ARTIFACT_FORMAT:
        found = doc.get("format") if isinstance(doc, dict) else type(doc).__name__
        raise ValueError(f"artifact format {found!r} is not {ARTIFACT_FORMAT!r}")
    version = doc.get("format_version")
    if version not in READS_VERSIONS:
        readable = ", ".join(str(v) for v in READS_VERSIONS)
        raise ValueError(
            f"artifact format version {version!r} is not supported "
            f"(this build reads {readable}); retrain"
        )
    definition = FailureDefinition.from_dict(doc["definition"])
    spec = FeatureSpec.from_dict(doc["features"])
    if list(doc["feature_names"]) != spec.names:
        raise ValueError("artifact feature names differ from this build's features; retrain")
    horizons = []
    for h in doc["horizons"]:
        booster = lgb.Booster(model_str=h["booster"])
        if booster.feature_name() != lgb_names(spec):
            raise ValueError(f"booster of horizon {h['horizon_min']} has other features; retrain")
        horizons.append(
            HorizonModel(int(h["horizon_min"]), booster, float(h["threshold"]), h["validation"])
        )
    return FailureModel(definition, spec, horizons, doc.get("summary", {}))
