"""AdaLog W/A post-training quantization of a timm VisionTransformer (the house ``vit_fmnist``).

The rewrite follows the spec's W/A configuration (section 3.2):

- every Linear/Conv2d becomes a :class:`~logmac.quant.modules.QuantLayer` with per-output-channel weights,
  uniform (BRECQ MSE range) or LogART log codes (DBS/SFS/ABS, 1+1/2 hardware levels);
- post-Softmax probabilities (input A of attn@V) are AdaLog-coded at scale 1; V, q and k are uniform per
  head; post-GELU activations are AdaLog-coded after the +c shift, with c folded into fc2's bias;
- every other linear input is uniform per tensor; the image (patch-embedding input) at 8 bits;
- post-LayerNorm inputs (qkv, fc1) are calibrated per channel and folded RepQ-ViT-style into the
  LayerNorm affine and the next layer's weight columns, so the datapath sees one per-tensor quantizer.

With ``acts="uniform"`` the AdaLog quantizers are replaced by uniform ones (the equal-bits baseline).
Calibration is FPCS per quantizer on FP inputs (32 images); no reconstruction.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from logmac.quant.config import QuantConfig, QuantError
from logmac.quant.methods.adalog.quantizers import FPCS_BUDGETS, GELU_OFFSET, AdaLogQuant, UniformQuant, fpcs_adalog, fpcs_uniform
from logmac.quant.modules import QuantLayer
from logmac.quant.uniform import uniform_range

SCORE_ROWS = 4096  # rows (tokens) of a calibration tensor that enter an FPCS score


@dataclass
class AdaLogConfig:
    """Settings of an AdaLog run.  ``weights``: "uniform" or "log" (LogART log_dynamic, hardware levels);
    ``acts``: "adalog" or "uniform" (the AdaLog-free baseline at equal bits)."""

    w_bits: int = 4
    a_bits: int = 4
    weights: str = "uniform"
    acts: str = "adalog"
    zero: str = "code"
    patch_bits: int = 8
    repq: bool = True
    calib_samples: int = 32
    fpcs: str = "spec"  # FPCS candidate budget: "spec" (section 3.3) or "reduced" (the first, loaded-machine runs)
    fpcs_rounds: int | None = None  # refinement rounds; None: the budget's (spec 5, reduced 3)
    seed: int = 0
    target_bits: int | None = None  # bits of the post-Softmax and post-GELU quantizers; None: a_bits

    def __post_init__(self) -> None:
        if self.weights not in ("uniform", "log"):
            raise QuantError(f"weights must be 'uniform' or 'log', got {self.weights!r}")
        if self.acts not in ("adalog", "uniform"):
            raise QuantError(f"acts must be 'adalog' or 'uniform', got {self.acts!r}")
        for name in ("a_bits", "patch_bits", "target_bits"):
            bits = getattr(self, name)
            if name == "target_bits" and bits is None:
                continue
            if not isinstance(bits, int) or not 2 <= bits <= 8:
                raise QuantError(f"{name} must be an integer in 2..8, got {bits!r}")
        if self.zero not in ("code", "flag"):
            raise QuantError(f"AdaLog zero mode must be 'code' or 'flag', got {self.zero!r}")
        if self.fpcs not in FPCS_BUDGETS:
            raise QuantError(f"fpcs must be one of {', '.join(FPCS_BUDGETS)}, got {self.fpcs!r}")
        if self.calib_samples < 1 or (self.fpcs_rounds is not None and self.fpcs_rounds < 0):
            raise QuantError("calib_samples must be >= 1 and fpcs_rounds >= 0")
        self.layer_config()  # validates w_bits for the weight grid

    def layer_config(self) -> QuantConfig:
        """The QuantConfig of the weight quantizers (activations are handled here, so a_bits = 32)."""
        method = "linear_mse" if self.weights == "uniform" else "log_dynamic"
        return QuantConfig(method=method, w_bits=self.w_bits, a_bits=32, hardware_approx=True,
                           zero=self.zero, seed=self.seed)

    @property
    def search(self) -> dict:
        """FPCS keyword arguments (budget and rounds) for every quantizer search of this run."""
        return {"budget": FPCS_BUDGETS[self.fpcs], "rounds": self.fpcs_rounds}

    @property
    def act_bits(self) -> int:
        """Bits of the two tensors AdaLog targets (post-Softmax, post-GELU), AdaLog or the uniform baseline."""
        return self.a_bits if self.target_bits is None else self.target_bits

    def label(self) -> str:
        targets = "" if self.target_bits is None else f" (Softmax/GELU at {self.target_bits} bits)"
        return f"W{self.w_bits}A{self.a_bits}{targets} {self.weights} weights, {self.acts} activations"

    def to_dict(self) -> dict:
        return asdict(self)


def activation_quantizer(cfg: AdaLogConfig, offset: float = 0.0) -> AdaLogQuant | UniformQuant:
    if cfg.acts == "adalog":
        return AdaLogQuant(cfg.act_bits, offset=offset, zero=cfg.zero)
    return UniformQuant(cfg.act_bits)


class Recording:
    """Mixin: with ``record`` set to a dict, forward appends its FP intermediates there (for calibration)."""

    record: dict[str, list[torch.Tensor]] | None = None

    def keep(self, name: str, t: torch.Tensor) -> None:
        if self.record is not None:
            self.record.setdefault(name, []).append(t.detach())


class QuantInput(Recording, nn.Module):
    """A QuantLayer behind its own input quantizer (patch embedding at 8 bits, classifier head)."""

    def __init__(self, name: str, layer: nn.Module, bits: int, cfg: AdaLogConfig) -> None:
        super().__init__()
        self.layer = QuantLayer(name, layer, cfg.layer_config())
        self.in_quant = UniformQuant(bits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.keep("x", x)
        return self.layer(self.in_quant(x))


class AdaLogAttention(Recording, nn.Module):
    """timm ``Attention`` with quantized qkv/proj, per-head q/k/V and an AdaLog (or uniform) Softmax output."""

    def __init__(self, name: str, attn: nn.Module, cfg: AdaLogConfig) -> None:
        super().__init__()
        if not isinstance(getattr(attn, "q_norm", None), nn.Identity) or not isinstance(getattr(attn, "norm", None), nn.Identity):
            raise QuantError(f"{name}: only plain timm Attention (no q/k norm, no inner norm) is supported")
        heads = attn.num_heads
        self.num_heads, self.head_dim, self.scale = heads, attn.head_dim, attn.scale
        layer_cfg = cfg.layer_config()
        self.qkv = QuantLayer(f"{name}.qkv", attn.qkv, layer_cfg)
        self.proj = QuantLayer(f"{name}.proj", attn.proj, layer_cfg)
        self.in_quant = UniformQuant(cfg.a_bits)
        self.q_quant = UniformQuant(cfg.a_bits, (1, heads, 1, 1))
        self.k_quant = UniformQuant(cfg.a_bits, (1, heads, 1, 1))
        self.v_quant = UniformQuant(cfg.a_bits, (1, heads, 1, 1))
        self.attn_quant = activation_quantizer(cfg)
        self.proj_quant = UniformQuant(cfg.a_bits)

    def heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """q, k, v as (B, H, T, D), before their quantizers."""
        self.keep("x", x)
        B, T, C = x.shape
        qkv = self.qkv(self.in_quant(x)).reshape(B, T, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        return qkv.unbind(0)

    def probs(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """Softmax(q k^T / sqrt(D)) from the quantized q and k: input A of attn@V, before its quantizer."""
        self.keep("q", q)
        self.keep("k", k)
        return torch.softmax((self.q_quant(q) * self.scale) @ self.k_quant(k).transpose(-2, -1), dim=-1)

    def output(self, heads_out: torch.Tensor) -> torch.Tensor:
        """Merge the heads' attn@V results (B, H, T, D) and apply the quantized projection."""
        B, H, T, D = heads_out.shape
        merged = heads_out.transpose(1, 2).reshape(B, T, H * D)
        self.keep("out", merged)
        return self.proj(self.proj_quant(merged))

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None, is_causal: bool = False) -> torch.Tensor:
        if attn_mask is not None or is_causal:
            raise QuantError("AdaLogAttention does not support attention masks")
        q, k, v = self.heads(x)
        a = self.probs(q, k)
        self.keep("a", a)
        self.keep("v", v)
        # float64 products and sums: the exact integer emulation (logmac.sim.adalog) then agrees to float32 rounding
        return self.output((self.attn_quant(a).double() @ self.v_quant(v).double()).to(a.dtype))


class AdaLogMlp(Recording, nn.Module):
    """timm ``Mlp`` (fc1, GELU, fc2) with the post-GELU activations AdaLog-coded after the +c shift.

    Bias reparameterisation: fc2 computes ``W_hat (x + c) + b - c W_hat 1 = W_hat x + b``, so the shift
    costs nothing at run time and the datapath only sees non-negative codes.
    """

    def __init__(self, name: str, mlp: nn.Module, cfg: AdaLogConfig) -> None:
        super().__init__()
        if not isinstance(mlp.act, nn.GELU) or not isinstance(getattr(mlp, "norm", nn.Identity()), nn.Identity):
            raise QuantError(f"{name}: only timm Mlp with GELU and no inner norm is supported")
        layer_cfg = cfg.layer_config()
        self.fc1 = QuantLayer(f"{name}.fc1", mlp.fc1, layer_cfg)
        self.fc2 = QuantLayer(f"{name}.fc2", mlp.fc2, layer_cfg)
        self.act = mlp.act
        self.in_quant = UniformQuant(cfg.a_bits)
        self.hid_quant = activation_quantizer(cfg, GELU_OFFSET)
        self.register_buffer("fc2_shifted_bias", torch.zeros(mlp.fc2.out_features))

    @property
    def shifted(self) -> bool:
        """True when fc2 reads AdaLog codes of GELU + c (and so uses the reparameterised bias)."""
        return isinstance(self.hid_quant, AdaLogQuant) and self.hid_quant.enabled

    def hidden(self, x: torch.Tensor) -> torch.Tensor:
        """GELU(fc1(x)): fc2's input before its quantizer."""
        self.keep("x", x)
        h = self.act(self.fc1(self.in_quant(x)))
        self.keep("h", h)
        return h

    @torch.no_grad()
    def reparameterise_bias(self) -> None:
        """b' = b - c * W_hat 1, from fc2's quantized weight (call after the weights are fitted)."""
        w = self.fc2.effective_weight()
        bias = self.fc2.bias if self.fc2.bias is not None else torch.zeros(w.shape[0])
        self.fc2_shifted_bias.copy_(bias - GELU_OFFSET * w.sum(dim=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.hidden(x)
        if self.shifted:
            w = self.fc2.effective_weight()
            y = F.linear(self.hid_quant(h).double(), w.double(), self.fc2_shifted_bias.double())  # see AdaLogAttention
            return y.to(h.dtype)
        return self.fc2(self.hid_quant(h) if isinstance(self.hid_quant, UniformQuant) else h)


def rewrite_vit(model: nn.Module, cfg: AdaLogConfig) -> nn.Module:
    """Replace a timm VisionTransformer's layers by their quantized forms, in place (all quantizers off)."""
    for attr in ("patch_embed", "blocks", "head", "norm"):
        if not hasattr(model, attr):
            raise QuantError(f"model is not a timm VisionTransformer (no .{attr})")
    if getattr(model, "global_pool", "token") != "token" or not isinstance(model.fc_norm, nn.Identity):
        raise QuantError("only class-token ViTs without fc_norm are supported")
    model.patch_embed.proj = QuantInput("patch_embed.proj", model.patch_embed.proj, cfg.patch_bits, cfg)
    for i, block in enumerate(model.blocks):
        block.attn = AdaLogAttention(f"blocks.{i}.attn", block.attn, cfg)
        block.mlp = AdaLogMlp(f"blocks.{i}.mlp", block.mlp, cfg)
    model.head = QuantInput("head", model.head, cfg.a_bits, cfg)
    return model


def _recorders(model: nn.Module) -> list[Recording]:
    return [m for m in model.modules() if isinstance(m, Recording)]


@torch.no_grad()
def record_fp(model: nn.Module, calib: torch.Tensor, batch_size: int = 32) -> None:
    """Run the FP path (every quantizer off) over ``calib``; each module keeps its intermediates in ``record``."""
    set_quant(model, False)
    for m in _recorders(model):
        m.record = {}
    for batch in calib.split(batch_size):
        model(batch)
    for m in _recorders(model):
        m.record = {k: torch.cat(v) for k, v in m.record.items()}


def set_quant(model: nn.Module, on: bool) -> None:
    """Switch every weight and activation quantizer of a rewritten model on (fake-quant) or off (FP)."""
    for m in model.modules():
        if isinstance(m, QuantLayer):
            m.quant_on = on
        elif isinstance(m, (AdaLogQuant, UniformQuant)):
            m.enabled = on


@torch.no_grad()
def repq_fold(norm: nn.LayerNorm, layer: QuantLayer, x: torch.Tensor, bits: int) -> None:
    """RepQ-ViT post-LayerNorm reparameterisation (FP-exact): per-channel ranges become one per-tensor one.

    With per-channel (s_c, z_c) of the LN output, s = mean(s_c), z = round(mean(z_c)), r1 = s_c/s and
    r2 = z_c - z: the LN affine is changed to give x' = (x + s_c r2) / r1, the next layer's columns are
    multiplied by r1 and its bias loses W (s_c r2).  Then round(x'/s) + z = round(x/s_c) + z_c for every
    channel, and the next layer's FP output is unchanged.
    """
    rows = x.reshape(-1, x.shape[-1]).double()
    scale_c, zp_c = uniform_range(rows.T.contiguous(), bits, mse=True)
    scale_t, zp_t = scale_c.mean(), torch.round(zp_c.mean())
    r1, r2 = scale_c / scale_t, zp_c - zp_t
    shift = scale_c * r2
    weight = layer.inner.weight.double()
    bias = layer.inner.bias.double() if layer.inner.bias is not None else torch.zeros(weight.shape[0], dtype=torch.float64)
    layer.inner.bias = nn.Parameter((bias - weight @ shift).float(), requires_grad=False)
    layer.inner.weight.copy_((weight * r1[None, :]).float())
    norm.weight.copy_((norm.weight.double() / r1).float())
    norm.bias.copy_(((norm.bias.double() + shift) / r1).float())


@dataclass
class AdaLogResult:
    """The quantized model (changed in place) and what calibration cost."""

    model: nn.Module
    config: AdaLogConfig
    seconds: float
    quantizers: dict[str, dict] = field(default_factory=dict)


def flatten_rows(t: torch.Tensor, limit: int = SCORE_ROWS) -> torch.Tensor:
    """Up to ``limit`` rows of a (..., C) tensor (strided, deterministic) to keep FPCS scores cheap."""
    flat = t.reshape(-1, t.shape[-1])
    return flat[:: max(1, flat.shape[0] // limit)]


def linear_output_score(layer: QuantLayer, x: torch.Tensor, offset: float = 0.0):
    """Score: squared error of ``layer``'s quantized-weight output on the candidate vs its FP output."""
    target = F.linear(x, layer.inner.weight)
    w_hat = layer.effective_weight()
    return lambda x_hat: float((F.linear(x_hat - offset, w_hat) - target).pow(2).sum())


def set_adalog_quant(quant: UniformQuant, scale: float, zero_point: float, index: tuple = ()) -> None:
    quant.scale[index] = scale
    quant.zero_point[index] = zero_point


@torch.no_grad()
def calibrate_uniform_quantizers(quant: UniformQuant, x: torch.Tensor, layer: QuantLayer, search: dict) -> None:
    x = flatten_rows(x)
    set_adalog_quant(quant, *fpcs_uniform(x, quant.bits, linear_output_score(layer, x), **search))


@torch.no_grad()
def _calibrate_attention(attn: AdaLogAttention, search: dict) -> None:
    rec = attn.record
    calibrate_uniform_quantizers(attn.in_quant, rec["x"], attn.qkv, search)
    calibrate_uniform_quantizers(attn.proj_quant, rec["out"], attn.proj, search)
    calibrate_head_quantizers(attn, rec["q"], rec["k"], rec["v"], rec["a"], search)


@torch.no_grad()
def calibrate_head_quantizers(quant: nn.Module, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, a: torch.Tensor,
                              search: dict) -> None:
    """FPCS for an attention's per-head q, k and V quantizers (each scored on the product it feeds) and its
    post-Softmax quantizer (scored on A·V), from recorded (N, heads, T, d) tensors.  ``quant`` holds
    ``q_quant``, ``k_quant``, ``v_quant`` and ``attn_quant`` (the ViT attention and the BERT hook alike)."""
    for h in range(q.shape[1]):
        qh, kh, vh, ah = q[:, h], k[:, h], v[:, h], a[:, h]
        scores = qh @ kh.transpose(-2, -1)
        set_adalog_quant(quant.q_quant, *fpcs_uniform(qh, quant.q_quant.bits,
                                          lambda c, kh=kh, s=scores: float((c @ kh.transpose(-2, -1) - s).pow(2).sum()),
                                          **search),
             (0, h, 0, 0))
        set_adalog_quant(quant.k_quant, *fpcs_uniform(kh, quant.k_quant.bits,
                                          lambda c, qh=qh, s=scores: float((qh @ c.transpose(-2, -1) - s).pow(2).sum()),
                                          **search),
             (0, h, 0, 0))
        av = ah @ vh
        set_adalog_quant(quant.v_quant, *fpcs_uniform(vh, quant.v_quant.bits,
                                          lambda c, ah=ah, t=av: float((ah @ c - t).pow(2).sum()), **search),
             (0, h, 0, 0))
    target = a @ v

    def attn_score(a_hat: torch.Tensor) -> float:
        return float((a_hat @ v - target).pow(2).sum())

    if isinstance(quant.attn_quant, AdaLogQuant):
        fpcs_adalog(a, quant.attn_quant, attn_score, search_scale=False, **search)
    else:
        set_adalog_quant(quant.attn_quant, *fpcs_uniform(a, quant.attn_quant.bits, attn_score, **search))


@torch.no_grad()
def _calibrate_mlp(mlp: AdaLogMlp, search: dict) -> None:
    rec = mlp.record
    calibrate_uniform_quantizers(mlp.in_quant, rec["x"], mlp.fc1, search)
    h = flatten_rows(rec["h"])
    if isinstance(mlp.hid_quant, AdaLogQuant):
        fpcs_adalog(h, mlp.hid_quant, linear_output_score(mlp.fc2, h, GELU_OFFSET), search_scale=True, **search)
    else:
        set_adalog_quant(mlp.hid_quant, *fpcs_uniform(h, mlp.hid_quant.bits, linear_output_score(mlp.fc2, h), **search))


def _patch_score(layer: QuantLayer, x: torch.Tensor):
    conv = layer.inner
    target = conv(x)
    w_hat = layer.effective_weight()
    return lambda x_hat: float((F.conv2d(x_hat, w_hat, conv.bias, conv.stride, conv.padding) - target).pow(2).sum())


@torch.no_grad()
def quantize_vit(model: nn.Module, calib: torch.Tensor, cfg: AdaLogConfig) -> AdaLogResult:
    """Rewrite and calibrate a timm ViT in place: RepQ fold, weights, then FPCS for every activation quantizer."""
    start = time.perf_counter()
    torch.manual_seed(cfg.seed)
    if calib.ndim != 4:
        raise QuantError(f"ViT calibration images must be (N, C, H, W), got shape {tuple(calib.shape)}")
    calib = calib[: cfg.calib_samples]
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    rewrite_vit(model, cfg).eval()  # the new modules start in training mode (exact 2**-x, no mantissa table)
    record_fp(model, calib)
    if cfg.repq:
        for block in model.blocks:
            repq_fold(block.norm1, block.attn.qkv, block.attn.record["x"], cfg.a_bits)
            repq_fold(block.norm2, block.mlp.fc1, block.mlp.record["x"], cfg.a_bits)
        record_fp(model, calib)
    for m in model.modules():
        if isinstance(m, QuantLayer):
            m.fit()
            m.quant_on = True
    for block in model.blocks:
        block.mlp.reparameterise_bias()
        _calibrate_attention(block.attn, cfg.search)
        _calibrate_mlp(block.mlp, cfg.search)
    patch = model.patch_embed.proj
    set_adalog_quant(patch.in_quant, *fpcs_uniform(patch.record["x"], patch.in_quant.bits,
                                       _patch_score(patch.layer, patch.record["x"]), **cfg.search))
    calibrate_uniform_quantizers(model.head.in_quant, model.head.record["x"], model.head.layer, cfg.search)
    for m in _recorders(model):
        m.record = None
    set_quant(model, True)
    return AdaLogResult(model, cfg, time.perf_counter() - start, quantizer_summary(model))


def quantizer_summary(model: nn.Module) -> dict[str, dict]:
    """Per AdaLog quantizer: its chosen base numerator q and scale (for reports)."""
    return {name: {"q": m.q, "scale": round(m.scale, 6), "bits": m.bits}
            for name, m in model.named_modules() if isinstance(m, AdaLogQuant)}


@torch.no_grad()
def activation_errors(model: nn.Module, images: torch.Tensor, batch_size: int = 64) -> dict[str, list[float]]:
    """Quantization error of the two tensors AdaLog targets, per block, on the FP model's tensors for ``images``.

    Each block's post-Softmax A and post-GELU H (recorded with every quantizer off) go through that block's
    own quantizer (AdaLog or uniform); returned are the relative MSEs ``sum((Q(t) - t)**2) / sum(t**2)`` of
    ``softmax`` (A), ``gelu`` (H), and of their consumers' outputs with FP operands: ``attn_v`` (A V) and
    ``fc2`` (H W^T, no bias).  The model is left with every quantizer on.
    """
    def rel(err: torch.Tensor, ref: torch.Tensor) -> float:
        return float(err.double().pow(2).sum() / ref.double().pow(2).sum())

    record_fp(model, images, batch_size)
    set_quant(model, True)
    out: dict[str, list[float]] = {"softmax": [], "gelu": [], "attn_v": [], "fc2": []}
    try:
        for block in model.blocks:
            attn, mlp = block.attn, block.mlp
            a, v, h = attn.record["a"], attn.record["v"], mlp.record["h"]
            a_hat = attn.attn_quant(a)
            h_hat = mlp.hid_quant(h)
            if isinstance(mlp.hid_quant, AdaLogQuant):
                h_hat = h_hat - mlp.hid_quant.offset  # the fc2 bias reparameterisation removes the shift
            w = mlp.fc2.inner.weight
            out["softmax"].append(rel(a_hat - a, a))
            out["gelu"].append(rel(h_hat - h, h))
            out["attn_v"].append(rel((a_hat - a) @ v, a @ v))
            out["fc2"].append(rel(F.linear(h_hat - h, w), F.linear(h, w)))
    finally:
        for m in _recorders(model):
            m.record = None
    return out
