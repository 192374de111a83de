"""Shared test configuration: make ``tests/`` importable for the small helper modules in it."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
