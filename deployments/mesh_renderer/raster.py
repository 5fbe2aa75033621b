"""The two rasterise-and-shade backends of MeshRenderer, one sampling contract:

- a sample (pixel of the supersampled canvas) is drawn by the nearest triangle (larger
  z in our pixel space) that contains its centre. A centre exactly on an edge counts as
  inside for the torch rasteriser (ties: the lower triangle index) and as outside for
  PyTorch3D; mesh_renderer.NUDGE keeps synthetic meshes' edges off sample centres;
- its colour is the texture sampled bilinearly at the barycentric UV, with PyTorch3D's
  TexturesUV rules: texel (col, row) = (u * (Tw - 1), (1 - v) * (Th - 1)), clamped at
  the border (grid_sample, align_corners=True, padding "border").

Both return, per scene, the output-resolution mean colour of the covered samples
(float32 [H, W, 3], 0..1) and the coverage (float32 [H, W], 0..1).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from deployments.mesh_renderer.scene import Scene

# Candidate (triangle, sample) pairs tested at once by the torch rasteriser: bounds memory
# (about 40 bytes a pair) while keeping a 40k-triangle face in one or two chunks.
CANDIDATES_PER_CHUNK = 1 << 22
# PyTorch3D rasterises on CPU only naively (every pixel against every triangle): 30 s for a
# 40k-triangle mesh at 512^2. We bin instead: each TILE x TILE tile is rasterised against
# only the triangles whose box overlaps it, all tiles of a batch in one call.
TILE = 32


def resolve(rgb: torch.Tensor, mask: torch.Tensor, s: int) -> tuple[np.ndarray, np.ndarray]:
    """Samples [Hs, Ws, 3] / [Hs, Ws] -> (mean colour of covered samples, coverage) per pixel."""
    hs, ws = mask.shape
    h, w = hs // s, ws // s
    m = mask.reshape(h, s, w, s).float()
    count = m.sum((1, 3))
    total = (rgb.reshape(h, s, w, s, 3) * m[..., None]).sum((1, 3))
    colour = total / count.clamp(min=1)[..., None]
    return colour.cpu().numpy().astype(np.float32), (count / (s * s)).cpu().numpy().astype(np.float32)


# --------------------------------------------------------------------------- plain torch


def rasterize(verts: torch.Tensor, faces: torch.Tensor, h: int, w: int):
    """Z-buffer by scatter: every (triangle, sample in its box) pair is tested, the
    nearest inside pair per sample wins. verts [N, 3] float32 pixels (larger z nearer),
    faces [M, 3] long. Returns the winning face per sample ([h*w] long, -1 = empty) and
    its barycentric weights of vertices 1 and 2 ([h*w] float32 each)."""
    dev = verts.device
    fv = verts[faces]  # [M, 3, 3]
    v0 = fv[:, 0]
    e1, e2 = fv[:, 1] - v0, fv[:, 2] - v0
    det = e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]
    lo = torch.ceil(fv[:, :, :2].amin(1)).clamp(min=0).long()
    hi = torch.floor(fv[:, :, :2].amax(1))
    hi[:, 0].clamp_(max=w - 1)
    hi[:, 1].clamp_(max=h - 1)
    hi = hi.long()
    size = (hi - lo + 1).clamp(min=0)
    ok = (size[:, 0] > 0) & (size[:, 1] > 0) & (det.abs() > 1e-12)
    ids = torch.nonzero(ok).squeeze(1)
    # p - v0 = l1 e1 + l2 e2: l1, l2 are linear in (dx, dy) with these coefficients.
    inv = 1.0 / det[ids]
    a1, b1 = e2[ids, 1] * inv, -e2[ids, 0] * inv
    a2, b2 = -e1[ids, 1] * inv, e1[ids, 0] * inv
    x0, y0, z0 = v0[ids, 0], v0[ids, 1], v0[ids, 2]
    dz1, dz2 = e1[ids, 2], e2[ids, 2]
    bx, by, bw = lo[ids, 0], lo[ids, 1], size[ids, 0]
    counts = size[ids, 0] * size[ids, 1]

    found = []  # (sample, depth, face, l1, l2) of inside pairs, chunk by chunk
    ends = torch.cumsum(counts, 0)
    start = 0
    while start < len(ids):
        # Faces [start, stop) whose pairs fit the budget (at least one face).
        base = ends[start - 1] if start else ends.new_zeros(())
        stop = int(torch.searchsorted(ends, base + CANDIDATES_PER_CHUNK, right=True))
        stop = max(stop, start + 1)
        c = counts[start:stop]
        k = torch.repeat_interleave(torch.arange(start, stop, device=dev), c)
        local = torch.arange(len(k), device=dev) - (torch.cumsum(c, 0) - c).repeat_interleave(c)
        px = bx[k] + local % bw[k]
        py = by[k] + torch.div(local, bw[k], rounding_mode="floor")
        dx, dy = px.float() - x0[k], py.float() - y0[k]
        l1 = a1[k] * dx + b1[k] * dy
        l2 = a2[k] * dx + b2[k] * dy
        inside = (l1 >= 0) & (l2 >= 0) & (l1 + l2 <= 1)
        k, l1, l2 = k[inside], l1[inside], l2[inside]
        depth = z0[k] + l1 * dz1[k] + l2 * dz2[k]
        found.append((py[inside] * w + px[inside], depth, ids[k], l1, l2))
        start = stop

    face = torch.full((h * w,), -1, dtype=torch.long, device=dev)
    bary1 = torch.zeros(h * w, device=dev)
    bary2 = torch.zeros(h * w, device=dev)
    if not found:
        return face, bary1, bary2
    pix, depth, fid, l1, l2 = (torch.cat(t) for t in zip(*found))
    zbuf = torch.full((h * w,), -math.inf, device=dev).scatter_reduce(0, pix, depth, "amax")
    front = depth >= zbuf[pix]
    big = torch.iinfo(torch.long).max
    win = torch.full((h * w,), big, dtype=torch.long, device=dev).scatter_reduce(0, pix[front], fid[front], "amin")
    keep = front & (fid == win[pix])
    face[pix[keep]] = fid[keep]
    bary1[pix[keep]] = l1[keep]
    bary2[pix[keep]] = l2[keep]
    return face, bary1, bary2


def sample_texture(tex: torch.Tensor, uv: torch.Tensor) -> torch.Tensor:
    """Bilinear texels (float 0..1, [K, 3]) of uint8 tex [Th, Tw, 3] at uv [K, 2]."""
    th, tw = tex.shape[:2]
    x = (uv[:, 0] * (tw - 1)).clamp(0, tw - 1)
    y = ((1 - uv[:, 1]) * (th - 1)).clamp(0, th - 1)
    xa = x.floor().long().clamp(max=max(tw - 2, 0))
    ya = y.floor().long().clamp(max=max(th - 2, 0))
    xb, yb = (xa + 1).clamp(max=tw - 1), (ya + 1).clamp(max=th - 1)
    fx, fy = (x - xa)[:, None], (y - ya)[:, None]
    flat = tex.reshape(-1, 3)

    def at(yy, xx):
        return flat[yy * tw + xx].float()

    top = at(ya, xa) * (1 - fx) + at(ya, xb) * fx
    bottom = at(yb, xa) * (1 - fx) + at(yb, xb) * fx
    return (top * (1 - fy) + bottom * fy) / 255.0


def render_torch(scenes: list[Scene], device: torch.device, s: int) -> list[tuple[np.ndarray, np.ndarray]]:
    out = []
    for sc in scenes:
        verts = torch.from_numpy(sc.vertices).to(device)
        faces = torch.from_numpy(sc.triangles).to(device).long()
        face, l1, l2 = rasterize(verts, faces, sc.height, sc.width)
        mask = face >= 0
        rgb = torch.zeros(sc.height * sc.width, 3, device=device)
        if mask.any():
            tri = faces[face[mask]]
            uvs = torch.from_numpy(sc.uvs).to(device)
            w1, w2 = l1[mask, None], l2[mask, None]
            uv = (1 - w1 - w2) * uvs[tri[:, 0]] + w1 * uvs[tri[:, 1]] + w2 * uvs[tri[:, 2]]
            rgb[mask] = sample_texture(torch.from_numpy(sc.texture).to(device), uv)
        out.append(resolve(rgb.reshape(sc.height, sc.width, 3), mask.reshape(sc.height, sc.width), s))
    return out


# --------------------------------------------------------------------------- PyTorch3D


def _ndc(xy: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Pixel centres (x right, y down) -> PyTorch3D NDC (+x left, +y up; the shorter
    side spans [-1, 1]): pixel col c of a w-wide image sits at (w - 2c - 1) / min(h, w)."""
    m = min(h, w)
    return torch.stack([(w - 2 * xy[:, 0] - 1) / m, (h - 2 * xy[:, 1] - 1) / m], 1)


def _depth(z: torch.Tensor) -> torch.Tensor:
    """Our larger-is-nearer z -> PyTorch3D's view depth (smaller is nearer, > 0: faces
    behind the camera are dropped)."""
    return (z.max() - z + 1.0) if len(z) else z


def _raster_settings(size):
    from pytorch3d.renderer import RasterizationSettings

    # Orthographic: no perspective correction; faces_per_pixel=1 with no blur = hard edges
    # (the same settings the tiled CPU path passes to rasterize_meshes).
    return RasterizationSettings(
        image_size=size, blur_radius=0.0, faces_per_pixel=1, perspective_correct=False, cull_backfaces=False
    )


def _fragments_tiled(group: list[Scene], device: torch.device):
    """PyTorch3D fragments for a group of same-size scenes, rasterised tile by tile: one
    Meshes entry per non-empty tile (its triangles in tile-local NDC), one call of
    PyTorch3D's rasteriser, then the tiles' pix_to_face mapped back to the group's
    packed faces. The tiles need no camera (their vertices are NDC already), so this
    calls `rasterize_meshes`, the function MeshRasterizer runs after its camera
    transform; that transform would pad every tile to the largest one."""
    from pytorch3d.renderer.mesh.rasterize_meshes import rasterize_meshes
    from pytorch3d.renderer.mesh.rasterizer import Fragments
    from pytorch3d.structures import Meshes

    h, w = group[0].height, group[0].width
    nty, ntx = -(-h // TILE), -(-w // TILE)
    corners, keys, packed = [], [], []
    offset = 0
    for b, sc in enumerate(group):
        v = torch.from_numpy(sc.vertices).to(device)
        f = torch.from_numpy(sc.triangles).to(device).long()
        fv = v[f]  # [M, 3, 3] pixels
        fv[:, :, 2] = _depth(v[:, 2])[f]
        # The tiles a face's box touches (every sample inside the face is in the box).
        lo = torch.floor(fv[:, :, :2].amin(1)).long()
        hi = torch.ceil(fv[:, :, :2].amax(1)).long()
        limit = torch.tensor([w - 1, h - 1], device=device)
        t_lo = torch.div(lo.clamp(min=0), TILE, rounding_mode="floor")
        t_hi = torch.div(torch.minimum(hi, limit), TILE, rounding_mode="floor")
        n = (t_hi - t_lo + 1).clamp(min=0)
        n[((hi < 0) | (lo > limit)).any(1)] = 0  # off the canvas
        count = n[:, 0] * n[:, 1]
        face = torch.repeat_interleave(torch.arange(len(f), device=device), count)
        local = torch.arange(len(face), device=device) - (torch.cumsum(count, 0) - count).repeat_interleave(count)
        tile_xy = t_lo[face] + torch.stack([local % n[face, 0], torch.div(local, n[face, 0], rounding_mode="floor")], 1)
        c = fv[face]
        # Tile-local NDC: each tile is a TILE x TILE image whose top-left sample is its origin.
        xy = c[:, :, :2] - (tile_xy * TILE)[:, None, :].float()
        c = torch.cat([_ndc(xy.reshape(-1, 2), TILE, TILE).reshape(-1, 3, 2), c[:, :, 2:]], 2)
        corners.append(c)
        keys.append((b * nty + tile_xy[:, 1]) * ntx + tile_xy[:, 0])
        packed.append(face + offset)
        offset += len(f)
    corners, keys, packed = torch.cat(corners), torch.cat(keys), torch.cat(packed)
    order = torch.argsort(keys, stable=True)
    corners, keys, packed = corners[order], keys[order], packed[order]
    tiles, per_tile = torch.unique_consecutive(keys, return_counts=True)

    n_all = len(group) * nty * ntx
    p2f = torch.full((n_all, TILE, TILE), -1, dtype=torch.long, device=device)
    zbuf = torch.full((n_all, TILE, TILE), -1.0, device=device)
    bary = torch.full((n_all, TILE, TILE, 3), -1.0, device=device)
    dists = torch.full((n_all, TILE, TILE), -1.0, device=device)
    if len(tiles):
        verts = [t.reshape(-1, 3) for t in corners.split(per_tile.tolist())]
        faces = [torch.arange(3 * k, device=device).reshape(-1, 3) for k in per_tile.tolist()]
        hit, z, bc, d = rasterize_meshes(
            Meshes(verts=verts, faces=faces),
            image_size=TILE,
            blur_radius=0.0,
            faces_per_pixel=1,
            bin_size=0,
            perspective_correct=False,
            cull_backfaces=False,
        )
        # Packed tile faces are the sorted pairs in order: map them to the group's faces.
        hit = hit[..., 0]
        p2f[tiles] = torch.where(hit >= 0, packed[hit.clamp(min=0)], -1)
        zbuf[tiles], bary[tiles], dists[tiles] = z[..., 0], bc[..., 0, :], d[..., 0]

    def stitch(t: torch.Tensor) -> torch.Tensor:
        t = t.reshape(len(group), nty, ntx, TILE, TILE, *t.shape[3:]).transpose(2, 3)
        return t.reshape(len(group), nty * TILE, ntx * TILE, *t.shape[5:])[:, :h, :w, None]

    return Fragments(pix_to_face=stitch(p2f), zbuf=stitch(zbuf), bary_coords=stitch(bary), dists=stitch(dists))


def render_pytorch3d(
    scenes: list[Scene], device: torch.device, s: int, tiled: bool | None = None
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Scenes of the same canvas and texture size share one Meshes batch, one rasteriser
    call and one HardFlatShader call (full ambient light: colour = texel). `tiled`:
    rasterise by tiles (default on CPU) or whole images through MeshRasterizer with
    PyTorch3D's own coarse-to-fine binning (default on CUDA; naive on CPU)."""
    from pytorch3d.renderer import (
        AmbientLights,
        BlendParams,
        HardFlatShader,
        MeshRasterizer,
        OrthographicCameras,
        TexturesUV,
    )
    from pytorch3d.structures import Meshes

    groups: dict[tuple, list[int]] = {}
    out: list = [None] * len(scenes)
    for i, sc in enumerate(scenes):
        if len(sc.triangles):
            groups.setdefault((sc.height, sc.width, sc.texture.shape), []).append(i)
        else:  # nothing to draw (Meshes batches of only empty meshes fail in TexturesUV)
            empty = torch.zeros(sc.height, sc.width, dtype=torch.bool)
            out[i] = resolve(torch.zeros(sc.height, sc.width, 3), empty, s)
    cameras = OrthographicCameras(device=device)
    shader = HardFlatShader(
        device=device,
        cameras=cameras,
        lights=AmbientLights(device=device, ambient_color=((1.0, 1.0, 1.0),)),
        blend_params=BlendParams(background_color=(0.0, 0.0, 0.0)),
    )
    for (h, w, _), idx in groups.items():
        group = [scenes[i] for i in idx]
        verts, faces, uvs, maps = [], [], [], []
        for sc in group:
            v = torch.from_numpy(sc.vertices).to(device)
            verts.append(torch.cat([_ndc(v[:, :2], h, w), _depth(v[:, 2])[:, None]], 1))
            faces.append(torch.from_numpy(sc.triangles).to(device).long())
            uvs.append(torch.from_numpy(sc.uvs).to(device))
            maps.append(torch.from_numpy(sc.texture).to(device).float() / 255.0)
        textures = TexturesUV(
            maps=torch.stack(maps),
            faces_uvs=faces,
            verts_uvs=uvs,
            padding_mode="border",
            align_corners=True,
            sampling_mode="bilinear",
        )
        meshes = Meshes(verts=verts, faces=faces, textures=textures)
        if tiled if tiled is not None else device.type != "cuda":
            fragments = _fragments_tiled(group, device)
        else:
            fragments = MeshRasterizer(cameras=cameras, raster_settings=_raster_settings((h, w)))(meshes)
        images = shader(fragments, meshes, cameras=cameras)  # [B, h, w, 4], alpha = coverage 0/1
        for i, img in zip(idx, images):
            out[i] = resolve(img[..., :3], img[..., 3] > 0.5, s)
    return out
