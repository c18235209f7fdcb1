"""Brute-force versions of the ops: plain loops over every window, pixel and box, float64 sums."""

import itertools


def brute_window(s, h, w):
    """Every h x w window summed directly in float64; the first maximum in row-major order."""
    height, width = s.shape
    h, w = min(max(h, 0), height), min(max(w, 0), width)
    best, where = None, None
    for y, x in itertools.product(range(height - h + 1), range(width - w + 1)):
        v = s[y : y + h, x : x + w].double().sum().item()
        if best is None or v > best:
            best, where = v, (y, x)
    return [where[0], where[1], where[0] + h, where[1] + w], best


def brute_peak(s, h, w):
    height, width = s.shape
    h, w = min(max(h, 0), height), min(max(w, 0), width)
    flat = s.double().flatten().tolist()
    k = flat.index(max(flat))
    py, px = divmod(k, width)

    def clip(v, hi):
        return min(max(v, 0), hi)

    return [clip(py - h // 2, height), clip(px - w // 2, width), clip(py + h // 2, height), clip(px + w // 2, width)]


def brute_weight(s_target, s_source, box, height, width):
    y1, x1, y2, x2 = box
    area_rule = 1.0 - (y2 - y1) * (x2 - x1) / (height * width)
    total_t, total_s = s_target.double().sum().item(), s_source.double().sum().item()
    if total_t == 0 or total_s == 0:
        return area_rule
    a = (total_t - s_target[y1:y2, x1:x2].double().sum().item()) / total_t
    b = s_source[y1:y2, x1:x2].double().sum().item() / total_s
    return area_rule if a + b == 0 else a / (a + b)


def brute_paste(images, perm, boxes):
    out = images.clone()
    for i in range(images.shape[0]):
        y1, x1, y2, x2 = boxes[i].tolist()
        out[i, :, y1:y2, x1:x2] = images[int(perm[i]), :, y1:y2, x1:x2]
    return out
