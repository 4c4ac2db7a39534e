"""Synthetic training data: the generator, storing its frames, POST /train/generate-synthetic.

Usage: `from services.trainer.synthetic import SyntheticDataGenerator` (the spec's Python API).
"""

from services.trainer.synthetic.generator import SyntheticDataGenerator, label_distribution
from services.trainer.synthetic.repository import store_frame

__all__ = ["SyntheticDataGenerator", "label_distribution", "store_frame"]
