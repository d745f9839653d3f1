"""The naive baseline of the extraction benchmarks: facenet-pytorch's examples, frame by
frame and face by face.

``cv2.VideoCapture.read`` through the whole clip keeping the sampled frames, ``MTCNN.detect``
on each full-resolution frame one at a time (same MTCNN settings as the ``FaceDetector`` it
is built from), the largest face above ``min_prob`` cropped with facenet-pytorch's
``extract_face``, and each face embedded alone by ``InceptionResnetV1`` (same weights,
default contiguous memory format, ``torch.no_grad``).
"""

from __future__ import annotations

from contextlib import nullcontext

import numpy as np

from benchmarks.common import sync

__all__ = ["Naive", "read_every_frame"]


def read_every_frame(path: str, n: int) -> list[np.ndarray]:
    """The naive decode: ``cap.read()`` (decode + BGR conversion) of every frame, keeping
    the ``n`` sampled ones as RGB."""
    import cv2

    from deepmetric.video.frames import sample_indices

    cap = cv2.VideoCapture(path)
    wanted = set(sample_indices(int(cap.get(cv2.CAP_PROP_FRAME_COUNT)), n).tolist())
    frames, i = [], 0
    while True:
        ok, bgr = cap.read()
        if not ok:
            break
        if i in wanted:
            frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
        i += 1
    cap.release()
    return frames


class Naive:
    """Frame-by-frame, face-by-face facenet-pytorch pipeline."""

    def __init__(self, device: str, precision: str, detector):
        import torch
        from facenet_pytorch import MTCNN

        from deepmetric.features.backbones.weights import load_facenet

        d = detector
        self.device = device
        self.precision = precision
        self.min_prob = d.min_prob
        self.image_size = d.image_size
        self.margin = d.margin
        self.mtcnn = MTCNN(image_size=d.image_size, margin=d.margin,
                           min_face_size=d.min_face_size, thresholds=list(d.thresholds),
                           factor=d.factor, device=device)
        self.model = load_facenet().to(device).eval()  # contiguous, as loaded
        self.torch = torch

    def amp(self):
        if self.precision == "bf16":
            return self.torch.autocast("cuda", dtype=self.torch.bfloat16)
        return nullcontext()

    def clip(self, path: str, n: int) -> dict:
        import torch
        from facenet_pytorch.models.mtcnn import fixed_image_standardization
        from facenet_pytorch.models.utils.detect_face import extract_face

        frames = read_every_frame(path, n)
        t = len(frames)
        boxes = np.full((t, 4), np.nan, np.float32)
        embs = np.full((t, 512), np.nan, np.float32)
        crops = np.zeros((t, self.image_size, self.image_size, 3), np.uint8)
        for j, frame in enumerate(frames):
            b, p = self.mtcnn.detect(frame)
            if b is None:
                continue
            keep = p >= self.min_prob
            if not keep.any():
                continue
            b = b[keep]
            k = int(np.argmax((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])))
            face = extract_face(frame, b[k], self.image_size, self.margin)  # float (3,S,S)
            x = fixed_image_standardization(face).unsqueeze(0).to(self.device)
            with torch.no_grad(), self.amp():
                e = self.model(x)
            embs[j] = e[0].float().cpu().numpy()
            boxes[j] = b[k]
            crops[j] = face.permute(1, 2, 0).numpy().astype(np.uint8)
        sync(self.device)
        return {"frames": frames, "boxes": boxes, "embedding": embs, "crops": crops,
                "found": ~np.isnan(boxes[:, 0])}
