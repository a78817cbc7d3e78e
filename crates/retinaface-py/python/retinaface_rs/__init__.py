"""RetinaFace face detection on a pure-Rust engine.

    >>> import retinaface_rs as rf
    >>> faces = rf.Detector().detect("photo.jpg")
    >>> faces.boxes, faces.scores, faces.landmarks

`Detector` holds a model (the embedded MobileNet-0.25 one by default) and its options;
`align` and `anonymize` work on an image and its faces; `retinaface_rs.ray` has a class for
Ray Data. Every call releases the GIL while it works.
"""

from ._native import Detector, Face, Faces, __version__, align, anonymize

__all__ = ["Detector", "Face", "Faces", "align", "anonymize", "detect", "__version__"]

_default = None


def detect(image, color="rgb"):
    """Detect faces with a shared `Detector()` (the embedded model, default options)."""
    global _default
    if _default is None:
        _default = Detector()
    return _default.detect(image, color=color)
