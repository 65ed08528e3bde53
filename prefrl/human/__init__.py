"""Human feedback: the pygame side-by-side viewer and the human oracle (labels through the store).

pygame is imported only when a window opens, so ``import prefrl.human`` stays cheap.
"""

import os

os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")

from prefrl.human.oracle import HumanOracle  # noqa: E402
from prefrl.human.viewer import Viewer, ViewerConfig  # noqa: E402

__all__ = ["HumanOracle", "Viewer", "ViewerConfig"]
