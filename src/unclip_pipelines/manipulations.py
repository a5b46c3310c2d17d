"""
The math of unCLIP's image manipulations (paper §3, §4), in one place: normalisation, spherical interpolation,
text-diff directions, best-of-N selection and the PCA of CLIP image embeddings.

Everything here works on plain tensors; the pipelines (:meth:`UnCLIPImageVariationPipeline.interpolate`,
:meth:`~UnCLIPImageVariationPipeline.text_diff`, :func:`probe_pca_grid`, ...) only call it.
"""

from __future__ import annotations

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

#: below this angle (radians) :func:`slerp` falls back to interpolating the directions linearly
_PARALLEL_ANGLE = 1e-4


def normalize(x: torch.Tensor, dim: int = -1, eps: float = 1e-12) -> torch.Tensor:
    """``x / ‖x‖`` along ``dim`` (zero vectors stay zero)."""
    return x / x.norm(dim=dim, keepdim=True).clamp(min=eps)


def slerp(a: torch.Tensor, b: torch.Tensor, t: float | torch.Tensor) -> torch.Tensor:
    r"""
    Spherical interpolation from ``a`` (t = 0) to ``b`` (t = 1), per row.

    The direction moves along the great circle at constant angular speed,
    ``(sin((1 - t)Ω) â + sin(tΩ) b̂) / sin Ω`` with ``cos Ω = â · b̂`` (the dot product of the normalised rows), and
    the norm is interpolated linearly, ``(1 - t)‖a‖ + t‖b‖``, so unit inputs stay on the unit sphere. This is the
    true slerp, not the element-wise ``lerp`` followed by a renormalisation.

    Args:
        a, b: tensors of the same shape; rows are flattened over every dimension but the first (a single vector
            ``(D,)`` is one row), so decoder latents ``(B, C, H, W)`` are interpolated image by image.
        t: a number, or a 1-D tensor of ``F`` values, which adds a leading frame dimension: ``(F, *a.shape)``.

    ``t = 0`` and ``t = 1`` return ``a`` and ``b`` exactly. Parallel rows fall back to linear interpolation;
    antipodal rows have no unique great circle and are interpolated linearly too.
    """
    if a.shape != b.shape:
        raise ValueError(f"slerp needs tensors of one shape, got {tuple(a.shape)} and {tuple(b.shape)}.")
    frames = torch.as_tensor(t, dtype=torch.float64, device=a.device)
    if frames.ndim > 1:
        raise ValueError("`t` must be a number or a 1-D tensor of interpolation positions.")
    rows = a.reshape(1 if a.ndim == 1 else a.shape[0], -1).double()
    rows_b = b.reshape(rows.shape).double()
    steps = frames.reshape(-1, 1, 1)

    norm_a, norm_b = rows.norm(dim=-1, keepdim=True), rows_b.norm(dim=-1, keepdim=True)
    unit_a, unit_b = normalize(rows), normalize(rows_b)
    omega = (unit_a * unit_b).sum(-1, keepdim=True).clamp(-1, 1).acos()
    sin_omega = omega.sin()
    degenerate = (omega < _PARALLEL_ANGLE) | (sin_omega < _PARALLEL_ANGLE)
    safe_sin = torch.where(degenerate, torch.ones_like(sin_omega), sin_omega)
    spherical = (((1 - steps) * omega).sin() * unit_a + (steps * omega).sin() * unit_b) / safe_sin
    linear = normalize((1 - steps) * unit_a + steps * unit_b)
    direction = torch.where(degenerate, linear, spherical)
    out = direction * ((1 - steps) * norm_a + steps * norm_b)

    out = out.to(a.dtype).reshape(frames.numel(), *a.shape)
    exact = frames.reshape(-1, *([1] * a.ndim))
    out = torch.where(exact == 0, a.unsqueeze(0), torch.where(exact == 1, b.unsqueeze(0), out))
    return out if frames.ndim == 1 else out[0]


def text_diff_direction(source_text_embeds: torch.Tensor, target_text_embeds: torch.Tensor) -> torch.Tensor:
    """The text diff of paper §3.3, ``z_d = normalise(z_t − z_t0)`` (unit rows)."""
    diff = target_text_embeds - source_text_embeds
    if (diff.norm(dim=-1) == 0).any():
        raise ValueError(
            "The source and target prompts have the same CLIP text embedding, so there is no direction to move "
            "along: use prompts that differ in what they describe."
        )
    return normalize(diff)


def best_of_candidates(candidates: torch.Tensor, text_embeds: torch.Tensor, num_candidates: int) -> torch.Tensor:
    """
    Best-of-N sampling of the prior (paper §2.2): ``candidates`` holds ``num_candidates`` consecutive rows per item,
    ``text_embeds`` the CLIP text embedding of each item (one row per item, or one per candidate). Keeps, per item, the
    candidate with the highest dot product of the *normalised* embeddings (CLIP's similarity; the paper's embeddings
    are unit vectors).
    """
    items = candidates.shape[0] // num_candidates
    if text_embeds.shape[0] == candidates.shape[0]:
        text_embeds = text_embeds[::num_candidates]
    scores = (normalize(candidates.float()).view(items, num_candidates, -1) * normalize(text_embeds.float())[:, None])
    best = scores.sum(-1).argmax(dim=1)
    return candidates.view(items, num_candidates, -1)[torch.arange(items, device=best.device), best]


class UnCLIPPCA(ModelMixin, ConfigMixin):
    r"""
    A PCA of CLIP image embeddings (paper §4, Fig. 7): which information the first principal components carry.

    Fit it on a set of embeddings with :meth:`fit`, save it next to the model
    (``pca.save_pretrained(f"{model_dir}/pca")``, safetensors) and load it with
    ``UnCLIPPCA.from_pretrained(model_dir, subfolder="pca")``. :meth:`reconstruct` keeps the first ``k``
    components; :func:`~unclip_pipelines.pipelines.probes.probe_pca_grid` decodes such reconstructions.

    Parameters:
        embedding_dim: width of the embeddings.
        num_components: number of principal components kept (≤ min(number of fitted embeddings - 1, embedding_dim)).
    """

    @register_to_config
    def __init__(self, embedding_dim: int, num_components: int):
        super().__init__()
        self.mean = nn.Parameter(torch.zeros(embedding_dim), requires_grad=False)
        self.components = nn.Parameter(torch.zeros(num_components, embedding_dim), requires_grad=False)
        self.explained_variance = nn.Parameter(torch.zeros(num_components), requires_grad=False)

    @property
    def num_components(self) -> int:
        return self.config.num_components

    @classmethod
    def fit(cls, embeddings: torch.Tensor, num_components: int | None = None) -> UnCLIPPCA:
        """PCA of ``embeddings`` ``(N, D)`` (SVD of the centred rows, in float64); components by decreasing variance."""
        if not isinstance(embeddings, torch.Tensor) or embeddings.ndim != 2:
            raise ValueError("`embeddings` must be a (num_embeddings, embedding_dim) tensor.")
        count, dim = embeddings.shape
        rank = min(count - 1, dim)
        if rank < 1:
            raise ValueError(f"A PCA needs at least 2 embeddings, got {count}.")
        num_components = rank if num_components is None else num_components
        if isinstance(num_components, bool) or not isinstance(num_components, int) or not 1 <= num_components <= rank:
            raise ValueError(
                f"`num_components` must be an integer in [1, {rank}] for {count} embeddings of width {dim} "
                f"(at most min(N - 1, D)), got {num_components!r}: fit on more embeddings for more components."
            )
        data = embeddings.detach().double().cpu()
        mean = data.mean(0)
        _, singular, vh = torch.linalg.svd(data - mean, full_matrices=False)
        pca = cls(embedding_dim=dim, num_components=num_components)
        with torch.no_grad():
            pca.mean.copy_(mean.float())
            pca.components.copy_(vh[:num_components].float())
            pca.explained_variance.copy_((singular[:num_components] ** 2 / (count - 1)).float())
        return pca.to(embeddings.device)

    def _check_k(self, k: int) -> None:
        if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k <= self.num_components:
            raise ValueError(f"`k` must be an integer in [0, {self.num_components}] (components kept), got {k!r}.")

    def encode(self, embeddings: torch.Tensor, k: int | None = None) -> torch.Tensor:
        """The coordinates ``(B, k)`` of ``embeddings`` on the first ``k`` components (all by default)."""
        k = self.num_components if k is None else k
        self._check_k(k)
        return (embeddings.to(self.mean.dtype) - self.mean) @ self.components[:k].T

    def decode(self, coefficients: torch.Tensor) -> torch.Tensor:
        """Embeddings from their coordinates on the first ``coefficients.shape[-1]`` components."""
        return self.mean + coefficients @ self.components[: coefficients.shape[-1]]

    def reconstruct(self, embeddings: torch.Tensor, k: int) -> torch.Tensor:
        """``embeddings`` projected on the mean plus the first ``k`` components (``k = 0``: the mean)."""
        return self.decode(self.encode(embeddings, k)).to(embeddings.dtype)
