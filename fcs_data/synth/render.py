"""Frames that look rendered: a textured table seen by a fixed pinhole camera, the Panda's links
drawn from its forward kinematics, shaded cubes, and mild sensor noise.

The background is ray-cast once per dataset; each frame is a copy of it with the arm and the cubes
drawn by PIL, so a frame costs about a millisecond.
"""

from __future__ import annotations

import itertools

import numpy as np
from PIL import Image, ImageDraw

from fcs_data.synth.kinematics import CUBE_HALF, Trajectory

CAMERA_POSES = {  # camera -> (position, look-at point), world frame (m)
    "cam_0": (np.array([1.2, 0.3, 0.8]), np.array([0.32, 0.0, 0.22])),
    "cam_1": (np.array([0.45, -1.05, 0.75]), np.array([0.4, 0.0, 0.15])),
}
_FOV_DEG = 52.0
_LINK_RADIUS = 0.045


class Camera:
    """A pinhole camera looking from `position` at `look_at`, for square `size` images."""

    def __init__(self, size: int, name: str = "cam_0"):
        self.size = size
        self.position, look_at = CAMERA_POSES[name]
        fwd = look_at - self.position
        fwd /= np.linalg.norm(fwd)
        right = np.cross(fwd, [0.0, 0.0, 1.0])
        right /= np.linalg.norm(right)
        down = np.cross(fwd, right)
        self.rot = np.stack([right, down, fwd])  # world -> camera
        self.focal = (size / 2) / np.tan(np.radians(_FOV_DEG) / 2)
        self.center = size / 2

    def project(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Pixel coordinates `(..., 2)` and depths `(...)` of world points `(..., 3)`."""
        cam = (points - self.position) @ self.rot.T
        depth = cam[..., 2]
        uv = self.focal * cam[..., :2] / depth[..., None] + self.center
        return uv, depth

    def rays(self) -> np.ndarray:
        """World-space ray directions `(size, size, 3)` through each pixel centre."""
        v, u = np.mgrid[0 : self.size, 0 : self.size] + 0.5
        d = np.stack([(u - self.center) / self.focal, (v - self.center) / self.focal, np.ones_like(u)], -1)
        return d @ self.rot


def _background(camera: Camera, rng: np.random.Generator) -> np.ndarray:
    d = camera.rays()
    t = np.where(d[..., 2] < -1e-6, -camera.position[2] / np.minimum(d[..., 2], -1e-6), np.inf)
    p = camera.position + d * np.where(np.isfinite(t), t, 0.0)[..., None]
    x, y = p[..., 0], p[..., 1]
    on_table = np.isfinite(t) & (x > -0.25) & (x < 0.95) & (y > -0.6) & (y < 0.6)
    on_floor = np.isfinite(t) & ~on_table
    phase = rng.uniform(0, 2 * np.pi, 3)
    grain = 0.5 + 0.5 * np.sin(55 * x + 4 * np.sin(9 * y + phase[0]) + phase[1])
    rings = 0.5 + 0.5 * np.sin(13 * y + 2 * np.sin(5 * x + phase[2]))
    wood = np.array([150.0, 104.0, 66.0]) * (0.78 + 0.16 * grain[..., None] + 0.08 * rings[..., None])
    tile = ((np.floor(x * 4) + np.floor(y * 4)) % 2)[..., None]
    floor = np.array([92.0, 96.0, 104.0]) * (0.9 + 0.08 * tile)
    height = np.clip(d[..., 2] * 2 + 0.5, 0, 1)[..., None]
    wall = np.array([176.0, 184.0, 196.0]) * (0.85 + 0.15 * height)
    img = np.where(on_table[..., None], wood, np.where(on_floor[..., None], floor, wall))
    dist = np.where(np.isfinite(t), t, 3.0)[..., None]
    img *= np.clip(1.15 - 0.12 * dist, 0.7, 1.0)  # light falls off with distance
    return np.clip(img, 0, 255).astype(np.uint8)


_CUBE_CORNERS = np.array([[sx, sy, sz] for sz in (-1, 1) for sy in (-1, 1) for sx in (-1, 1)], float) * CUBE_HALF
# faces as corner indices with outward normals
_CUBE_FACES = [
    ((4, 5, 7, 6), (0, 0, 1), 1.0),
    ((0, 1, 5, 4), (0, -1, 0), 0.72),
    ((2, 3, 7, 6), (0, 1, 0), 0.72),
    ((1, 3, 7, 5), (1, 0, 0), 0.85),
    ((0, 2, 6, 4), (-1, 0, 0), 0.6),
]


class Renderer:
    """Draws one `(size, size, 3)` uint8 RGB frame per time step of a `Trajectory`."""

    def __init__(self, size: int, rng: np.random.Generator, noise: int = 2, camera: str = "cam_0"):
        self.camera = Camera(size, camera)
        self.background = Image.fromarray(_background(self.camera, rng))
        self.noise = noise
        self.rng = rng

    def _px(self, points: np.ndarray) -> list[tuple[float, float]]:
        uv, _ = self.camera.project(points)
        return [tuple(map(float, p)) for p in uv]

    def _draw_cube(self, draw: ImageDraw.ImageDraw, center: np.ndarray, color: np.ndarray) -> None:
        corners = center + _CUBE_CORNERS
        for idx, normal, shade in _CUBE_FACES:
            face_center = corners[list(idx)].mean(axis=0)
            if np.dot(normal, self.camera.position - face_center) <= 0:
                continue
            fill = tuple(int(c * shade) for c in color)
            draw.polygon(self._px(corners[list(idx)]), fill=fill, outline=tuple(int(c * 0.45) for c in color))

    def _draw_link(self, draw: ImageDraw.ImageDraw, a: np.ndarray, b: np.ndarray, radius: float, color) -> None:
        uv, depth = self.camera.project(np.stack([a, b]))
        width = max(2, int(2 * radius * self.camera.focal / float(depth.mean())))
        pa, pb = tuple(map(float, uv[0])), tuple(map(float, uv[1]))
        draw.line([pa, pb], fill=(40, 42, 46), width=width + 2)
        draw.line([pa, pb], fill=color, width=width)
        r = width / 2
        for p in (pa, pb):
            draw.ellipse([p[0] - r, p[1] - r, p[0] + r, p[1] + r], fill=color)

    def _draw_arm(self, draw: ImageDraw.ImageDraw, frames: np.ndarray, opening: float) -> None:
        origins = frames[:, :3, 3]
        chain = [np.zeros(3), origins[0], origins[2], origins[3], origins[4], origins[6], origins[7]]
        self._draw_link(draw, np.array([0.0, 0.0, -0.02]), np.array([0.0, 0.0, 0.05]), 0.09, (60, 62, 70))
        for i, (a, b) in enumerate(itertools.pairwise(chain)):
            if np.linalg.norm(b - a) > 1e-6:
                shade = 235 - 12 * i
                self._draw_link(draw, a, b, _LINK_RADIUS * (1 - 0.06 * i), (shade, shade, shade + 4))
        tcp = frames[-1]
        hand_y, hand_z = tcp[:3, 1], tcp[:3, 2]
        palm = tcp[:3, 3] - 0.045 * hand_z
        self._draw_link(draw, origins[7], palm, 0.03, (30, 30, 34))
        self._draw_link(draw, palm - 0.05 * hand_y, palm + 0.05 * hand_y, 0.018, (30, 30, 34))
        for side in (-1.0, 1.0):
            base = palm + side * opening * hand_y
            self._draw_link(draw, base, base + 0.045 * hand_z, 0.009, (210, 210, 214))

    def frame(self, traj: Trajectory, t: int) -> np.ndarray:
        """Step `t` of a trajectory, `(size, size, 3)` uint8 RGB."""
        return self.draw(traj.frames[t], traj.cubes[t], traj.cube_colors, float(traj.gripper[t]))

    def draw(self, frames: np.ndarray, cubes: np.ndarray, cube_colors: np.ndarray, opening: float) -> np.ndarray:
        """One `(size, size, 3)` uint8 RGB frame of a scene: the arm's joint frames `(9, 4, 4)` (from
        `forward_kinematics`), cube centres `(n, 3)`, their colours `(n, 3)` uint8 and the finger opening
        (m). Draws sensor noise from `self.rng` (the synthetic datasets and the closed-loop world share it)."""
        img = self.background.copy()
        draw = ImageDraw.Draw(img)
        arm_depth = float(self.camera.project(frames[-1, :3, 3])[1])
        depths = self.camera.project(cubes)[1]
        order = np.argsort(-depths)
        behind = [i for i in order if depths[i] > arm_depth]
        front = [i for i in order if depths[i] <= arm_depth]
        for i in behind:
            self._draw_cube(draw, cubes[i], cube_colors[i])
        self._draw_arm(draw, frames, opening)
        for i in front:
            self._draw_cube(draw, cubes[i], cube_colors[i])
        out = np.asarray(img, dtype=np.uint8)
        if self.noise:
            noise = self.rng.integers(0, 2 * self.noise + 1, size=out.shape, dtype=np.uint8)
            out = np.clip(out.astype(np.int16) + noise - self.noise, 0, 255).astype(np.uint8)
        return out

    def frames(self, traj: Trajectory, steps: np.ndarray) -> np.ndarray:
        """Frames `(len(steps), size, size, 3)` uint8 RGB at the trajectory's `steps`."""
        return np.stack([self.frame(traj, int(t)) for t in steps])
