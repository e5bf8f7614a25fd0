"""The published method's constants: one owner, every stage and the CLI import them.

The numbers are those of the published sand-mining method (Sentinel-2 at 10 m, river AOI,
U-Net on windows); each stage's defaults take them from here, so changing one is one edit.
"""

AOI_BUFFER_M: float = 1000.0
"""River AOI: river vectors buffered by 1 km (training sampling, prediction, evaluation, monitoring)."""

WINDOW_PX: int = 160
"""Square model window in pixels, for training and prediction."""

EDGE_PX: int = 30
"""Prediction: pixels discarded at each side of a window when the windows are stitched (160 px
windows step by 100 px)."""

BORDER_PX: int = 30
"""Evaluation: pixels dropped at each edge of the whole image before counting."""
