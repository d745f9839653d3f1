"""MTCNN's cascade with every resize read off one summed-area table (same output).

facenet-pytorch's ``detect_face`` resizes each candidate box for R-Net (24×24) and O-Net
(48×48) in its own ``interpolate(mode="area")`` call: about 1,700 calls per 25-frame clip,
the largest part of detection time on a CPU and thousands of tiny kernel launches on a GPU.
An area resize is a mean over rectangular windows, and for integer-valued pixels (uint8
frames) a summed-area table gives every window's sum exactly. :func:`detect_faces` is
``detect_face``'s cascade with its resizes (the P-Net image pyramid,
:func:`resample_images`, and the two per-box loops, :func:`resample_boxes`) read off one
table per batch; the networks, thresholds, NMS, box regression and helpers are
facenet-pytorch's own. Boxes, scores and landmarks are the ones facenet-pytorch computes,
bit for bit (``tests/video/test_mtcnn.py`` checks this on real frames).
"""

from __future__ import annotations

import numpy as np

__all__ = ["detect_faces", "resample_boxes", "resample_images", "summed_area_table"]

#: Table entries gathered at once (bounds the temporary memory of the resizes).
CHUNK = 1 << 20


def summed_area_table(images):
    """Integral image of uint8 images, one plane per channel.

    Parameters
    ----------
    images : torch.Tensor
        uint8 (N, H, W, C); fastest when its permuted (N, C, H, W) form is contiguous.

    Returns
    -------
    torch.Tensor
        int32 (int64 when a plane's sum could overflow int32) (N, C, H + 1, W + 1),
        contiguous, with ``S[n, c, i, j] = images[n, :i, :j, c].sum()``; on the CPU from
        OpenCV's ``cv2.integral``, elsewhere from ``torch.cumsum``.
    """
    import torch

    if images.dtype != torch.uint8 or images.ndim != 4:
        raise TypeError(f"expected a uint8 (N, H, W, C) tensor, got {images.dtype} "
                        f"{tuple(images.shape)}")
    n, h, w, c = images.shape
    small = 255 * h * w < 2**31
    if images.device.type != "cpu" or not small:
        return _cumsum_table(images, torch.int32 if small else torch.int64)
    import cv2

    sat = np.empty((n, c, h + 1, w + 1), np.int32)
    planes = images.permute(0, 3, 1, 2).numpy()
    for i in range(n):
        for j in range(c):
            cv2.integral(np.ascontiguousarray(planes[i, j]), sum=sat[i, j])
    return torch.from_numpy(sat)


def _cumsum_table(images, dtype):
    """:func:`summed_area_table` by two ``torch.cumsum`` (any device)."""
    import torch

    n, h, w, c = images.shape
    sat = torch.zeros((n, c, h + 1, w + 1), dtype=dtype, device=images.device)
    sat[:, :, 1:, 1:] = images.permute(0, 3, 1, 2).cumsum(2, dtype=dtype).cumsum(3, dtype=dtype)
    return sat


def resample_boxes(sat, inds, y0, x0, hk, wk, size: int, dtype=None):
    """Area-resize image windows to ``size``×``size``, all at once.

    Computes what ``torch.nn.functional.interpolate(window, (size, size), mode="area")``
    (adaptive average pooling) gives for each window of an integer-valued image: output
    cell ``i`` averages rows ``floor(i·hk/size)`` to ``ceil((i+1)·hk/size)`` (exclusive),
    likewise for columns, and the mean is formed as ``sum / kh / kw`` in ``dtype`` like
    PyTorch's CPU kernel. The sums come exact from the summed-area table.

    Parameters
    ----------
    sat : torch.Tensor
        (N, C, H + 1, W + 1) contiguous integer summed-area table
        (:func:`summed_area_table`).
    inds : torch.Tensor
        int64 (K,) image index of each window.
    y0, x0 : torch.Tensor
        int64 (K,) top-left corner (row, column) of each window, in pixels.
    hk, wk : torch.Tensor
        int64 (K,) window height and width, each >= 1.
    size : int
        Output side.
    dtype : torch.dtype, optional
        Output dtype (default float32).

    Returns
    -------
    torch.Tensor
        (K, C, size, size) window means.
    """
    ya, yb = _edges(y0, hk, size)
    xa, xb = _edges(x0, wk, size)
    return _window_means(sat, inds, ya, yb, xa, xb, dtype)


def resample_images(sat, height: int, width: int, dtype=None):
    """Area-resize whole images (``interpolate(..., mode="area")``), exactly, from the table.

    Parameters
    ----------
    sat : torch.Tensor
        (N, C, H + 1, W + 1) contiguous integer summed-area table.
    height, width : int
        Output size.
    dtype : torch.dtype, optional
        Output dtype (default float32).

    Returns
    -------
    torch.Tensor
        (N, C, height, width).
    """
    import torch

    dtype = dtype or torch.float32
    hp, wp = sat.shape[2:]
    zero = torch.zeros(1, dtype=torch.int64, device=sat.device)
    ya, yb = (e[0] for e in _edges(zero, zero + hp - 1, height))
    xa, xb = (e[0] for e in _edges(zero, zero + wp - 1, width))
    # the windows form a grid: difference the table's rows, then its columns
    rows = sat.index_select(2, yb) - sat.index_select(2, ya)
    tot = rows.index_select(3, xb) - rows.index_select(3, xa)
    return tot.to(dtype) / (yb - ya).to(dtype)[:, None] / (xb - xa).to(dtype)


def _edges(start, length, size: int):
    """(K, size) window cell edges: ``start + floor(a·L/size)``, ``start +
    ceil((a+1)·L/size)`` for ``a = 0 .. size-1``."""
    import torch

    a = torch.arange(size, device=start.device)
    lo = start[:, None] + torch.div(a * length[:, None], size, rounding_mode="floor")
    hi = start[:, None] + torch.div((a + 1) * length[:, None] + size - 1, size,
                                    rounding_mode="floor")
    return lo, hi


def _window_means(sat, inds, ya, yb, xa, xb, dtype=None):
    """(K, C, oh, ow) means of the windows rows ``ya..yb`` x columns ``xa..xb`` (exclusive
    ends; (K, oh) and (K, ow)) of images ``inds``, as ``sum / kh / kw``."""
    import torch

    dtype = dtype or torch.float32
    _, c, hp, wp = sat.shape
    flat = sat.view(-1)
    k, oh, ow = len(inds), ya.shape[1], xa.shape[1]
    out = torch.empty((k, c, oh, ow), dtype=dtype, device=sat.device)
    chan = (torch.arange(c, device=sat.device) * (hp * wp))[None, :, None, None]
    step = max(1, CHUNK // (c * oh * ow))
    for s in range(0, k, step):
        sl = slice(s, s + step)
        base = (inds[sl] * (c * hp * wp))[:, None, None, None] + chan

        def at(r, col):  # table entries at rows r x columns col: (m, C, oh, ow)
            return flat.take(base + (r * wp)[:, None, :, None] + col[:, None, None, :])

        tot = at(yb[sl], xb[sl]) - at(ya[sl], xb[sl]) - at(yb[sl], xa[sl]) + at(ya[sl], xa[sl])
        kh = (yb[sl] - ya[sl]).to(dtype)[:, None, :, None]
        kw = (xb[sl] - xa[sl]).to(dtype)[:, None, None, :]
        out[sl] = tot.to(dtype) / kh / kw
    return out


def detect_faces(mtcnn, images) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Run a facenet-pytorch ``MTCNN``'s cascade on a batch of same-size frames.

    Parameters
    ----------
    mtcnn : facenet_pytorch.MTCNN
        Supplies the networks, ``min_face_size``, ``thresholds``, ``factor``, ``device``.
    images : torch.Tensor or numpy.ndarray
        uint8 (N, H, W, 3) RGB frames.

    Returns
    -------
    list of tuple
        Per frame: boxes float32 (k, 4) ``x1, y1, x2, y2``, probabilities float32 (k,),
        landmarks float32 (k, 5, 2), largest box first — what ``MTCNN.detect(images,
        landmarks=True)`` returns with ``select_largest=True``, as plain arrays (k may be 0).
    """
    import torch
    from facenet_pytorch.models.utils import detect_face as fp
    from torchvision.ops.boxes import batched_nms

    device = mtcnn.device
    if isinstance(images, np.ndarray) and not images.flags.writeable:
        images = images.copy()  # torch warns about read-only arrays (we never write)
    imgs = torch.as_tensor(images, device=device)
    if imgs.dtype != torch.uint8 or imgs.ndim != 4 or imgs.shape[-1] != 3:
        raise TypeError(f"expected uint8 (N, H, W, 3) frames, got {imgs.dtype} "
                        f"{tuple(imgs.shape)}")
    pnet, rnet, onet = mtcnn.pnet, mtcnn.rnet, mtcnn.onet
    threshold = mtcnn.thresholds
    dtype = next(pnet.parameters()).dtype
    n_images, h, w, _ = imgs.shape
    sat = summed_area_table(imgs)  # every resize below is read off this table

    with torch.no_grad():
        # Stage 1: P-Net over the image pyramid (as detect_face).
        m = 12.0 / mtcnn.min_face_size
        minl = min(h, w) * m
        scale, scales = m, []
        while minl >= 12:
            scales.append(scale)
            scale *= mtcnn.factor
            minl *= mtcnn.factor
        boxes, image_inds, picks, offset = [], [], [], 0
        for scale in scales:
            im = resample_images(sat, int(h * scale + 1), int(w * scale + 1), dtype)
            reg, probs = pnet((im - 127.5) * 0.0078125)
            b, i = fp.generateBoundingBox(reg, probs[:, 1], scale, threshold[0])
            boxes.append(b)
            image_inds.append(i)
            picks.append(batched_nms(b[:, :4], b[:, 4], i, 0.5) + offset)
            offset += b.shape[0]
        boxes, image_inds = torch.cat(boxes), torch.cat(image_inds)
        pick = torch.cat(picks)
        boxes, image_inds = boxes[pick], image_inds[pick]
        pick = batched_nms(boxes[:, :4], boxes[:, 4], image_inds, 0.7)
        boxes, image_inds = boxes[pick], image_inds[pick]
        regw = boxes[:, 2] - boxes[:, 0]
        regh = boxes[:, 3] - boxes[:, 1]
        boxes = torch.stack([boxes[:, 0] + boxes[:, 5] * regw, boxes[:, 1] + boxes[:, 6] * regh,
                             boxes[:, 2] + boxes[:, 7] * regw, boxes[:, 3] + boxes[:, 8] * regh,
                             boxes[:, 4]]).permute(1, 0)
        boxes = fp.rerec(boxes)

        # Stage 2: R-Net on 24x24 candidates.
        if len(boxes):
            boxes, image_inds, im = _candidates(sat, boxes, image_inds, w, h, 24, dtype)
            out = fp.fixed_batch_process((im - 127.5) * 0.0078125, rnet)
            score = out[1][:, 1]
            ipass = score > threshold[1]
            boxes = torch.cat((boxes[ipass, :4], score[ipass].unsqueeze(1)), dim=1)
            image_inds, mv = image_inds[ipass], out[0][ipass]
            pick = batched_nms(boxes[:, :4], boxes[:, 4], image_inds, 0.7)
            boxes, image_inds, mv = boxes[pick], image_inds[pick], mv[pick]
            boxes = fp.rerec(fp.bbreg(boxes, mv))

        # Stage 3: O-Net on 48x48 candidates, landmarks, "Min" NMS.
        points = torch.zeros(0, 5, 2, device=device)
        if len(boxes):
            boxes, image_inds, im = _candidates(sat, boxes, image_inds, w, h, 48, dtype)
            out = fp.fixed_batch_process((im - 127.5) * 0.0078125, onet)
            score = out[2][:, 1]
            ipass = score > threshold[2]
            pts = out[1][ipass]
            boxes = torch.cat((boxes[ipass, :4], score[ipass].unsqueeze(1)), dim=1)
            image_inds, mv = image_inds[ipass], out[0][ipass]
            w_i = (boxes[:, 2] - boxes[:, 0] + 1)[:, None]
            h_i = (boxes[:, 3] - boxes[:, 1] + 1)[:, None]
            points = torch.stack((w_i * pts[:, :5] + boxes[:, 0:1] - 1,
                                  h_i * pts[:, 5:10] + boxes[:, 1:2] - 1), dim=2)
            boxes = fp.bbreg(boxes, mv)
            pick = fp.batched_nms_numpy(boxes[:, :4], boxes[:, 4], image_inds, 0.7, "Min")
            boxes, image_inds, points = boxes[pick], image_inds[pick], points[pick]

    boxes, points = boxes.cpu().numpy(), points.cpu().numpy()
    image_inds = image_inds.cpu().numpy()
    result = []
    for i in range(n_images):
        b, p = boxes[image_inds == i], points[image_inds == i]
        order = np.argsort((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]))[::-1]
        b, p = b[order], p[order]
        result.append((b[:, :4].astype(np.float32), b[:, 4].astype(np.float32),
                       p.astype(np.float32).reshape(-1, 5, 2)))
    return result


def _candidates(sat, boxes, image_inds, w: int, h: int, size: int, dtype):
    """The boxes' windows (clipped like ``detect_face.pad``), resized to ``size``.

    Windows left empty by the clipping are dropped with their boxes (facenet-pytorch skips
    their crops too, which would misalign its score and box arrays).
    """
    import torch
    from facenet_pytorch.models.utils.detect_face import pad

    y, ey, x, ex = (torch.as_tensor(v, dtype=torch.int64, device=sat.device)
                    for v in pad(boxes, w, h))
    keep = (ey > y - 1) & (ex > x - 1)
    if not bool(keep.all()):
        boxes, image_inds = boxes[keep], image_inds[keep]
        y, ey, x, ex = y[keep], ey[keep], x[keep], ex[keep]
    im = resample_boxes(sat, image_inds, y - 1, x - 1, ey - y + 1, ex - x + 1, size, dtype)
    return boxes, image_inds, im
