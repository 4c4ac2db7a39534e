"""Synthetic training data: the generator, storing its frames, POST /train/generate-synthetic.

Usage: `from services.trainer.synthetic import SyntheticDataGenerator` (the spec's Python API).
"""

from services.trainer.synthetic.generator import SyntheticDataGenerator

__all__ = ["SyntheticDataGenerator"]
