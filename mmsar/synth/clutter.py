"""Backscatter backgrounds in linear intensity (sigma-nought like, float32).

The image model is ``I = sigma * S``: a reflectivity map ``sigma`` (sea, land, targets) times
multiplicative speckle ``S ~ Gamma(L, 1/L)`` (mean 1, variance 1/L for L looks). Sea clutter may carry a
slowly varying gamma texture, which makes the intensity K-distributed; ``nu=None`` leaves it flat so the
speckle statistics can be checked on their own.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DB_RANGE = (-25.0, 12.0)  # dB mapped onto 0..255 in 8-bit output (fixed, so scenes are comparable)


def speckle(rng: np.random.Generator, shape: tuple[int, int], looks: int) -> np.ndarray:
    """Multiplicative L-look intensity speckle: Gamma(shape=L, scale=1/L), float32, mean 1, var 1/L.

    For integer L a Gamma(L, 1) variable is the sum of L unit exponentials, which numpy's ziggurat draws
    several times faster than its general gamma sampler.
    """
    s = rng.standard_exponential(size=shape, dtype=np.float32)
    for _ in range(int(looks) - 1):
        s += rng.standard_exponential(size=shape, dtype=np.float32)
    s *= np.float32(1.0 / looks)
    return s


def _interp_axis(n_out: int, n_in: int) -> tuple[np.ndarray, np.ndarray]:
    """Left neighbour index and weight of the right one, mapping a coarse axis onto ``n_out`` samples."""
    pos = np.clip((np.arange(n_out, dtype=np.float32) + 0.5) * np.float32(n_in / n_out) - 0.5, 0, n_in - 1)
    i0 = np.minimum(pos.astype(np.int64), max(n_in - 2, 0))
    return i0, (pos - i0).astype(np.float32)


def upsample(coarse: np.ndarray, shape: tuple[int, int], *, smooth: bool = True) -> np.ndarray:
    """Resize a small float field to ``shape``: separable bilinear, or blocky nearest (at least 2x2 in)."""
    coarse = np.asarray(coarse, dtype=np.float32)
    ch, cw = coarse.shape
    if not smooth:
        iy = (np.arange(shape[0]) * ch) // shape[0]
        ix = (np.arange(shape[1]) * cw) // shape[1]
        return coarse[iy][:, ix]
    jx, fx = _interp_axis(shape[1], cw)
    rows = coarse[:, jx] * (1 - fx) + coarse[:, jx + 1] * fx  # (ch, W): cheap
    jy, fy = _interp_axis(shape[0], ch)
    out = rows[jy] * (1 - fy)[:, None]
    out += rows[jy + 1] * fy[:, None]
    return out


def texture(rng: np.random.Generator, shape: tuple[int, int], nu: float, cell: int, *, smooth: bool = True):
    """A mean-1 gamma texture field, correlated over about ``cell`` pixels."""
    ch, cw = max(2, shape[0] // cell + 2), max(2, shape[1] // cell + 2)
    coarse = rng.standard_gamma(nu, size=(ch, cw)).astype(np.float32) / np.float32(nu)
    return upsample(coarse, shape, smooth=smooth)


def sea(
    rng: np.random.Generator, shape: tuple[int, int], level: float, nu: float | None = None
) -> np.ndarray:
    """Sea reflectivity: ``level`` everywhere, times a K-clutter gamma texture of order ``nu`` if given."""
    if nu is None:
        return np.full(shape, level, dtype=np.float32)
    out = texture(rng, shape, nu, cell=int(rng.integers(24, 96)))
    out *= np.float32(level)
    return out


def land(rng: np.random.Generator, shape: tuple[int, int], level: float) -> np.ndarray:
    """Land reflectivity around ``level``: blocky 'fields' modulated by a smooth heterogeneity.

    Both are combined on the coarse field grid and upsampled once (one full-size pass: 4096 px scenes).
    """
    cell = int(rng.integers(16, 64))
    ch, cw = max(2, shape[0] // cell + 2), max(2, shape[1] // cell + 2)
    fields = np.clip(rng.standard_gamma(8.0, size=(ch, cw)).astype(np.float32) / np.float32(8.0), 0.4, 2.5)
    hills = texture(rng, (ch, cw), nu=6.0, cell=max(2, int(rng.integers(64, 256)) // cell))
    return upsample(np.float32(level) * fields * hills, shape, smooth=False)


@dataclass(frozen=True)
class Shore:
    """A meandering line across the scene: ``s(p) = (p - c) . n + m(p . t)``; ``s > 0`` is one side.

    ``half_width`` > 0 makes it a river (water where ``|s| < half_width``); 0 makes it a coastline
    (land where ``s > 0``).
    """

    cx: float
    cy: float
    angle: float  # direction of the normal n, radians
    amps: tuple[float, ...]
    waves: tuple[float, ...]
    phases: tuple[float, ...]
    half_width: float = 0.0

    @property
    def normal(self) -> np.ndarray:
        return np.array([np.cos(self.angle), np.sin(self.angle)])

    @property
    def tangent(self) -> np.ndarray:
        return np.array([-np.sin(self.angle), np.cos(self.angle)])

    def meander(self, tau: np.ndarray) -> np.ndarray:
        out = np.zeros_like(tau, dtype=np.float64)
        for a, lam, ph in zip(self.amps, self.waves, self.phases, strict=True):
            out += a * np.sin(2 * np.pi * tau / lam + ph)
        return out

    def point(self, tau: float) -> np.ndarray:
        """The point of the line (``s = 0``) at tangent coordinate ``tau`` from the centre."""
        c = np.array([self.cx, self.cy])
        return c + tau * self.tangent - float(self.meander(np.array([tau]))[0]) * self.normal

    def signed(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """``s`` at points (x, y) (arrays of any matching shape)."""
        dx, dy = x - self.cx, y - self.cy
        n, t = self.normal, self.tangent
        return dx * n[0] + dy * n[1] + self.meander(dx * t[0] + dy * t[1])

    def field(self, shape: tuple[int, int]) -> np.ndarray:
        """``s`` on the pixel-centre grid, float32; the meander comes from a 1-D lookup for speed."""
        h, w = shape
        n, t = self.normal.astype(np.float32), self.tangent.astype(np.float32)
        xs = np.arange(w, dtype=np.float32) + 0.5 - np.float32(self.cx)
        ys = np.arange(h, dtype=np.float32) + 0.5 - np.float32(self.cy)
        tau = xs[None, :] * t[0] + ys[:, None] * t[1]
        lo = float(tau.min()) - 1
        table = self.meander(np.arange(lo, float(tau.max()) + 2, 1.0)).astype(np.float32)
        s = xs[None, :] * n[0] + ys[:, None] * n[1]
        s += table[(tau - np.float32(lo)).astype(np.int32)]
        return s

    def water(self, shape: tuple[int, int]) -> np.ndarray:
        s = self.field(shape)
        return np.abs(s) < self.half_width if self.half_width > 0 else s <= 0


def random_shore(rng: np.random.Generator, shape: tuple[int, int], half_width: float = 0.0) -> Shore:
    """A shore through the middle part of the scene with a gentle meander (slopes well under 1)."""
    h, w = shape
    size = float(min(h, w))
    amps = tuple(float(size * a) for a in rng.uniform(0.005, 0.03, size=2))
    waves = tuple(float(size * lam) for lam in rng.uniform(0.8, 2.5, size=2))
    return Shore(
        cx=float(w * rng.uniform(0.35, 0.65)),
        cy=float(h * rng.uniform(0.35, 0.65)),
        angle=float(rng.uniform(0, 2 * np.pi)),
        amps=amps,
        waves=waves,
        phases=tuple(float(p) for p in rng.uniform(0, 2 * np.pi, size=2)),
        half_width=half_width,
    )


def to_db8(intensity: np.ndarray) -> np.ndarray:
    """Linear intensity to 8-bit through a fixed dB window (:data:`DB_RANGE`)."""
    lo, hi = DB_RANGE
    db = np.log10(np.maximum(intensity, np.float32(1e-6)))
    db *= np.float32(10.0 * 255.0 / (hi - lo))
    db -= np.float32(lo * 255.0 / (hi - lo))
    return np.clip(db, 0, 255).astype(np.uint8)


def to_uint16(intensity: np.ndarray) -> np.ndarray:
    """Linear intensity to a uint16 amplitude product: ``DN = round(2000 * sqrt(I))``, clipped."""
    return np.clip(np.rint(np.sqrt(intensity) * 2000.0), 0, 65535).astype(np.uint16)
