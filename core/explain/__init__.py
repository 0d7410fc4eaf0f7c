"""Explanations of a face-expression model: attribution maps and filter pictures.

Every attribution method is an :class:`Explainer` with one contract,
``explain(images, targets) -> (N, 48, 48) float32 maps in 0..1`` (see
``core.explain.base``), listed in :data:`EXPLAINERS` under the key the
dashboard shows. ``core.explain.filters`` draws what filters and classes
respond to. Nothing here imports Streamlit.
"""

from core.explain.base import SCORES, Explainer, Score
from core.explain.gradcam import GradCAM, GradCAMPlusPlus
from core.explain.integrated import IntegratedGradients
from core.explain.lime import Lime, segment_face
from core.explain.occlusion import REGIONS, Occlusion, cover_regions, occlude_regions
from core.explain.saliency import Saliency
from core.explain.smoothgrad import SmoothGrad

EXPLAINERS: dict[str, type[Explainer]] = {
    "saliency": Saliency,
    "smoothgrad": SmoothGrad,
    "integrated": IntegratedGradients,
    "gradcam": GradCAM,
    "gradcampp": GradCAMPlusPlus,
    "lime": Lime,
    "occlusion": Occlusion,
}

__all__ = ["EXPLAINERS", "SCORES", "Explainer", "GradCAM", "GradCAMPlusPlus", "IntegratedGradients", "Lime", "Occlusion", "REGIONS", "Saliency", "Score", "SmoothGrad", "cover_regions", "occlude_regions", "segment_face"]
