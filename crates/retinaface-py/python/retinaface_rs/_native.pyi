"""Type stubs of the native module (built from crates/retinaface-py/src)."""

import os
import pathlib
from collections.abc import Iterable, Iterator
from typing import Any, Literal, overload

import numpy as np
import numpy.typing as npt
from typing_extensions import TypeAlias

__version__: str

#: An image: a uint8 array (H, W, 3), (H, W), (H, W, 1) or (H, W, 4), an object numpy turns
#: into one (a PIL image), a path, or the bytes of an encoded image.
ImageLike: TypeAlias = npt.NDArray[np.uint8] | str | os.PathLike | bytes | bytearray | Any
Color: TypeAlias = Literal["rgb", "bgr"]

class Face:
    """One detected face."""

    @property
    def box(self) -> tuple[float, float, float, float]:
        """(x1, y1, x2, y2) in pixels."""
    @property
    def score(self) -> float:
        """The face probability."""
    @property
    def landmarks(self) -> list[tuple[float, float]] | None:
        """Left eye, right eye, nose tip, left and right mouth corner; None without them."""
    def to_dict(self) -> dict[str, Any]:
        """The record of `retinaface detect --json`."""

class Faces:
    """The faces found in one image, best first."""

    def __init__(
        self,
        boxes: npt.ArrayLike,
        scores: npt.ArrayLike,
        landmarks: npt.ArrayLike | None = None,
        width: int = 0,
        height: int = 0,
    ) -> None: ...

    @property
    def boxes(self) -> npt.NDArray[np.float32]:
        """(N, 4) [x1, y1, x2, y2]."""
    @property
    def scores(self) -> npt.NDArray[np.float32]:
        """(N,)."""
    @property
    def landmarks(self) -> npt.NDArray[np.float32] | None:
        """(N, 5, 2), or None for a model without a landmark head."""
    @property
    def width(self) -> int: ...
    @property
    def height(self) -> int: ...
    def __len__(self) -> int: ...
    def __getitem__(self, index: int) -> Face: ...
    def __iter__(self) -> Iterator[Face]: ...
    def to_list(self) -> list[dict[str, Any]]:
        """The records of `retinaface detect --json`."""

class Detector:
    """A face detector: a model, the options of every call, and a pool of threads."""

    def __init__(
        self,
        model: str | os.PathLike | None = None,
        threshold: float = 0.5,
        nms: float = 0.4,
        threads: int | None = None,
        tta: bool = False,
        max_side: int | None = 2000,
        max_image_pixels: int = 100_000_000,
    ) -> None: ...
    def detect(self, image: ImageLike, color: Color = "rgb") -> Faces:
        """Detect the faces in one image (the GIL released)."""
    def detect_batch(self, images: Iterable[ImageLike], color: Color = "rgb") -> list[Faces]:
        """Detect in many images in parallel, results in order."""
    @property
    def threshold(self) -> float: ...
    @property
    def nms(self) -> float: ...
    @property
    def threads(self) -> int: ...
    @property
    def tta(self) -> bool: ...
    @property
    def model(self) -> pathlib.Path | None: ...
    @property
    def network(self) -> str: ...
    @property
    def has_landmarks(self) -> bool: ...

@overload
def align(
    image: ImageLike,
    landmarks: Faces | npt.ArrayLike,
    size: int = 112,
    color: Color = "rgb",
    return_transforms: Literal[False] = False,
) -> npt.NDArray[np.uint8]: ...
@overload
def align(
    image: ImageLike,
    landmarks: Faces | npt.ArrayLike,
    size: int = 112,
    color: Color = "rgb",
    *,
    return_transforms: Literal[True],
) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.float64]]: ...
def anonymize(
    image: ImageLike,
    faces: Faces | npt.ArrayLike,
    mode: Literal["blur", "pixelate", "solid", "none"] = "blur",
    shape: Literal["ellipse", "box"] = "ellipse",
    scale: float = 1.3,
    color: Color = "rgb",
) -> npt.NDArray[np.uint8]: ...

