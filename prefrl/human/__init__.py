"""Human feedback: the pygame side-by-side viewer (the human oracle itself, ``HumanOracle``, is in
``prefrl.core.oracles``: people answer through the store).

pygame is imported only when a window opens, so ``import prefrl.human`` stays cheap.
"""

import os

os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")

from prefrl.human.viewer import Viewer, ViewerConfig  # noqa: E402

__all__ = ["Viewer", "ViewerConfig"]
