"""The zoo's catalogue: one frozen record per published checkpoint, looked up by name or alias.

Names follow OML's zoo, so OML users keep theirs. Checksums are as their publishers give them: OML
publishes a prefix of the md5 of each file, torchvision a prefix of the sha256 in the file name, OpenAI
the full sha256 in the URL. ``cmc1`` is CMC@1 at 224 x 224 as reported in OML 4.0's README (tables
"Image models zoo"), not measured by omlcore. Files are downloaded to :func:`omlcore.models.hub.checkpoints_dir`
under OML's file names (torchvision's for torchvision-only weights), so a copy from OML's or torch's cache
can be dropped in by hand.

The built-in entries are the constant :data:`BUILTIN_PRETRAINED`; nothing is registered at import time.
Checkpoints of one's own are found by name inside :func:`extra_pretrained` (your code, tests against a local
server); a plugin publishes a pretrained model as an extractor of its ``register_extractors`` hook, whose
factory loads ``weights=entry.download()``.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from omlcore.errors import UnknownComponentError
from omlcore.models.hub import HashAlgorithm, check_filename, checkpoints_dir, download
from omlcore.transforms.ops import CLIP_MEAN, CLIP_STD

__all__ = [
    "BUILTIN_PRETRAINED",
    "OML_DOCS_ZOO_SOURCE",
    "OML_ZOO_SOURCE",
    "PretrainedModel",
    "extra_pretrained",
    "find_pretrained",
    "get_pretrained",
    "list_pretrained",
]

OML_ZOO_SOURCE = "OML 4.0 README, 'Image models zoo' (https://github.com/OML-Team/open-metric-learning#zoo)"
OML_DOCS_ZOO_SOURCE = (
    "OML documentation, page 'Zoo' (readme/zoo.md in the docs folder of "
    "https://github.com/OML-Team/open-metric-learning; OML 4.0's README gives other figures for some models)"
)
_OML_CKPTS = "https://oml.daloroserver.com/download/checkpoints"
_OML_PIPELINES = "https://github.com/OML-Team/open-metric-learning/tree/main/pipelines/features_extraction"
_FB = "https://dl.fbaipublicfiles.com"
_TORCHVISION = "https://download.pytorch.org/models"
_OPENAI = "https://openaipublic.azureedge.net/clip/models"
_SBER = "https://huggingface.co/sberbank-ai"

_DINO = "DINO, Caron et al. 2021 (facebookresearch/dino)"
_OML = "OML (OML-Team/open-metric-learning)"
_TV = "torchvision ImageNet-1k classifier"
_CLIP = "CLIP, Radford et al. 2021 (openai/CLIP)"
_RUCLIP = "ruCLIP, Sber AI (ai-forever/ru-clip)"


def _gdrive(file_id: str) -> str:
    return f"https://drive.usercontent.google.com/download?id={file_id}&export=download&confirm=t"


@dataclass(frozen=True)
class PretrainedModel:
    """One zoo entry.

    Attributes:
        name: the zoo name (``"vits16_dino"``).
        arch: the registered extractor that takes the weights (``"vits16"``).
        urls: where to download the file, tried in order (mirrors).
        hash: hex digest of the file, or the prefix of it that the publisher gives.
        hash_algorithm: ``"md5"`` or ``"sha256"``.
        filename: the file's name in the cache folder: a plain name (no ``..``, no path separator, no leading dot).
        init_args: constructor arguments of ``arch`` that go with the weights (``from_pretrained`` uses them).
        transform: the registered transform that preprocesses images for this model, with ``transform_args``.
        source: who trained the weights and how.
        cmc1: reported CMC@1 per dataset (Stanford Online Products, DeepFashion InShop, CUB 200 2011, CARS 196).
        cmc1_source: where ``cmc1`` comes from.
        recipe: the config / pipeline that trained the weights, if published.
        aliases: other names that find this entry.
    """

    name: str
    arch: str
    urls: tuple[str, ...]
    hash: str
    hash_algorithm: HashAlgorithm
    filename: str
    init_args: Mapping[str, Any] = field(default_factory=dict)
    transform: str = "resize_normalize"
    transform_args: Mapping[str, Any] = field(default_factory=dict)
    source: str = ""
    cmc1: Mapping[str, float] = field(default_factory=dict)
    cmc1_source: str = ""
    recipe: str = ""
    aliases: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if len(self.hash) < 6 or any(c not in "0123456789abcdef" for c in self.hash.lower()):
            raise ValueError(f"zoo entry {self.name!r}: hash must be at least 6 hex digits, got {self.hash!r}")
        if self.hash_algorithm not in ("md5", "sha256"):
            raise ValueError(f"zoo entry {self.name!r}: hash_algorithm must be md5 or sha256")
        try:
            check_filename(self.filename)
        except ValueError as error:
            raise ValueError(f"zoo entry {self.name!r}: {error}") from None

    @property
    def local_path(self) -> Path:
        """Where the file is (or will be) in the cache."""
        return checkpoints_dir() / self.filename

    def download(self, progress: bool = True) -> Path:
        """The verified local file, downloaded and pinned on first use (see :func:`omlcore.models.hub.download`)."""
        return download(self.urls, self.filename, self.hash, self.hash_algorithm, progress=progress)


_IMAGENET_224 = {"size": 224}
_RESIZE_256_CROP_224 = {"resize": 256, "crop": 224}
_RESIZE_224_CROP_224 = {"resize": 224, "crop": 224}
_LETTERBOX_224 = {"size": 224, "fill": 255}
_CLIP_LETTERBOX_224 = {"size": 224, "fill": 255, "mean": list(CLIP_MEAN), "std": list(CLIP_STD)}


def _scores(sop: float, inshop: float, cub: float, cars: float) -> dict[str, float]:
    return {"sop": sop, "inshop": inshop, "cub": cub, "cars": cars}


def _dino(arch: str, folder: str, md5: str, scores: dict[str, float]) -> PretrainedModel:
    return PretrainedModel(
        name=f"{arch}_dino",
        arch=arch,
        urls=(f"{_FB}/dino/{folder}/{folder}.pth",),
        hash=md5,
        hash_algorithm="md5",
        filename=f"{arch}_dino.ckpt",
        transform="resize_normalize",
        transform_args=_IMAGENET_224,
        source=f"{_DINO}, self-supervised on ImageNet-1k",
        cmc1=scores,
        cmc1_source=OML_DOCS_ZOO_SOURCE,
    )


def _oml_vit(dataset: str, md5: str, file: str, drive_id: str, score: float, **kwargs: Any) -> PretrainedModel:
    return PretrainedModel(
        name=f"vits16_{dataset}",
        arch="vits16",
        urls=(f"{_OML_CKPTS}/{dataset}/{file}", _gdrive(drive_id)),
        hash=md5,
        hash_algorithm="md5",
        filename=f"vits16_{dataset}.ckpt",
        source=f"{_OML}, DINO vits16 fine-tuned on {dataset}",
        cmc1={dataset: score},
        cmc1_source=OML_ZOO_SOURCE,
        recipe=f"{_OML_PIPELINES}/extractor_{dataset}",
        **kwargs,
    )


def _torchvision(depth: int, version: int, sha256: str, **kwargs: Any) -> PretrainedModel:
    return PretrainedModel(
        name=f"resnet{depth}_imagenet1k_v{version}",
        arch=f"resnet{depth}",
        urls=(f"{_TORCHVISION}/resnet{depth}-{sha256}.pth",),
        hash=sha256,
        hash_algorithm="sha256",
        filename=f"resnet{depth}-{sha256}.pth",
        source=f"{_TV} (IMAGENET1K_V{version} weights)",
        **kwargs,
    )


def _clip_tower(arch: str, name: str, scores: dict[str, float], **kwargs: Any) -> PretrainedModel:
    return PretrainedModel(
        name=name,
        arch=arch,
        filename=f"{name}.ckpt",
        transform="letterbox_normalize",
        transform_args=_CLIP_LETTERBOX_224,
        cmc1=scores,
        cmc1_source=OML_DOCS_ZOO_SOURCE,
        **kwargs,
    )


def _openai(arch: str, name: str, sha256: str, file: str, scores: dict[str, float]) -> PretrainedModel:
    return _clip_tower(
        arch,
        name,
        scores,
        urls=(f"{_OPENAI}/{sha256}/{file}",),
        hash=sha256,
        hash_algorithm="sha256",
        source=f"{_CLIP}, image-text contrastive pre-training (TorchScript file)",
        aliases=(arch,),
    )


def _sber(arch: str, name: str, repo: str, md5: str, scores: dict[str, float]) -> PretrainedModel:
    return _clip_tower(
        arch,
        name,
        scores,
        urls=(f"{_SBER}/{repo}/resolve/main/pytorch_model.bin",),
        hash=md5,
        hash_algorithm="md5",
        source=f"{_RUCLIP}, Russian image-text pre-training",
    )


#: The built-in zoo, one record per published checkpoint.
BUILTIN_PRETRAINED: tuple[PretrainedModel, ...] = (
    _dino("vits16", "dino_deitsmall16_pretrain", "cf0f22", _scores(0.648, 0.509, 0.627, 0.265)),
    _dino("vits8", "dino_deitsmall8_pretrain", "230cd5", _scores(0.651, 0.524, 0.661, 0.315)),
    _dino("vitb16", "dino_vitbase16_pretrain", "552daf", _scores(0.658, 0.514, 0.541, 0.288)),
    _dino("vitb8", "dino_vitbase8_pretrain", "556550", _scores(0.689, 0.599, 0.506, 0.313)),
    _oml_vit(
        "inshop",
        "a76b85",
        "vits16_inshop_a76b85.ckpt",
        "1niX-TC8cj6j369t7iU2baHQSVN3MVJbW",
        0.921,
        transform="resize_center_crop",
        transform_args=_RESIZE_224_CROP_224,
    ),
    _oml_vit(
        "sop",
        "21e743",
        "vits16_sop_21e743.ckpt",
        "1zuGRHvF2KHd59aw7i7367OH_tQNOGz7A",
        0.866,
        init_args={"normalise_features": True},
        transform="resize_center_crop",
        transform_args=_RESIZE_224_CROP_224,
    ),
    _oml_vit(
        "cub",
        "e82633",
        "vits16_cub.ckpt",
        "1p2tUosFpGXh5sCCdzlXtjV87kCDfG34G",
        0.837,
        transform="letterbox_normalize",
        transform_args=_LETTERBOX_224,
    ),
    _oml_vit(
        "cars",
        "9f1e59",
        "vits16_cars.ckpt",
        "1hcOxDRRXrKr6ZTCyBauaY8Ue-pok4Icg",
        0.907,
        transform="letterbox_normalize",
        transform_args=_LETTERBOX_224,
    ),
    PretrainedModel(
        name="vits16_224_mlp_384_inshop",
        arch="extractor_with_mlp",
        urls=(f"{_OML_CKPTS}/inshop/vits16_224_mlp_384_inshop.ckpt",),
        hash="35244966",
        hash_algorithm="md5",
        filename="vits16_224_mlp_384_inshop.ckpt",
        init_args={"extractor": {"name": "vits16"}, "mlp_features": [384]},
        transform="resize_center_crop",
        transform_args=_RESIZE_256_CROP_224,
        source=f"{_OML}, vits16 + MLP head (384) trained on inshop",
    ),
    PretrainedModel(
        name="resnet50_moco_v2",
        arch="resnet50",
        urls=(f"{_FB}/moco/moco_checkpoints/moco_v2_800ep/moco_v2_800ep_pretrain.pth.tar",),
        hash="a04e12f8",
        hash_algorithm="md5",
        filename="moco_v2_800ep_pretrain.pth.tar",
        init_args={"gem_p": 5.0},
        transform="resize_center_crop",
        transform_args=_RESIZE_256_CROP_224,
        source="MoCo v2, Chen et al. 2020 (facebookresearch/moco), self-supervised on ImageNet-1k, 800 epochs",
        cmc1=_scores(0.493, 0.267, 0.264, 0.149),
        cmc1_source=OML_DOCS_ZOO_SOURCE,
    ),
    _torchvision(18, 1, "f37072fd", transform="resize_center_crop", transform_args=_RESIZE_256_CROP_224),
    _torchvision(34, 1, "b627a593", transform="resize_center_crop", transform_args=_RESIZE_256_CROP_224),
    _torchvision(
        50,
        1,
        "0676ba61",
        transform="resize_center_crop",
        transform_args=_RESIZE_256_CROP_224,
        cmc1=_scores(0.515, 0.284, 0.455, 0.247),
        cmc1_source=OML_DOCS_ZOO_SOURCE,
    ),
    _torchvision(101, 1, "63fe2227", transform="resize_center_crop", transform_args=_RESIZE_256_CROP_224),
    _torchvision(152, 1, "394f9c45", transform="resize_center_crop", transform_args=_RESIZE_256_CROP_224),
    *(
        _torchvision(
            depth,
            2,
            sha256,
            transform="resize_center_crop",
            transform_args={"resize": 232, "crop": 224, "interpolation": "bilinear"},
        )
        for depth, sha256 in ((50, "11ad3fa6"), (101, "cd907fc2"), (152, "f82ba261"))
    ),
    _openai(
        "vitb32_clip",
        "openai_vitb32_224",
        "40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af",
        "ViT-B-32.pt",
        _scores(0.612, 0.491, 0.560, 0.693),
    ),
    _openai(
        "vitb16_clip",
        "openai_vitb16_224",
        "5806e77cd80f8b59890b7e101eabd078d9fb84e6937f9e85e4ecb61988df416f",
        "ViT-B-16.pt",
        _scores(0.648, 0.606, 0.665, 0.767),
    ),
    _openai(
        "vitl14_clip",
        "openai_vitl14_224",
        "b8cca3fd41ae0c99ba7e8951adf17d267cdb84cd88be6f7c2e0eca1737a03836",
        "ViT-L-14.pt",
        _scores(0.670, 0.675, 0.745, 0.844),
    ),
    _sber(
        "vitb32_clip",
        "sber_vitb32_224",
        "ruclip-vit-base-patch32-224",
        "e2c4dab46a3cfa608bdd762973e90d32",
        _scores(0.547, 0.514, 0.448, 0.618),
    ),
    _sber(
        "vitb16_clip",
        "sber_vitb16_224",
        "ruclip-vit-base-patch16-224",
        "7882e07674d78c674e33cb892a68bbfc",
        _scores(0.565, 0.565, 0.524, 0.648),
    ),
    _sber(
        "vitl14_clip",
        "sber_vitl14_224",
        "ruclip-vit-large-patch14-224",
        "9b4a1cd25d15bad4ffd2ba6e34b8a67c",
        _scores(0.512, 0.555, 0.606, 0.707),
    ),
)


def _index(models: Iterable[PretrainedModel], into: Mapping[str, PretrainedModel]) -> Mapping[str, PretrainedModel]:
    """``into`` plus every name and alias of ``models``; a name or alias that is taken raises, naming the holder."""
    index = dict(into)
    for model in models:
        holders = sorted({index[key].name for key in (model.name, *model.aliases) if key in index})
        if holders:
            raise ValueError(f"zoo entry {model.name!r}: a name or alias is taken by {', '.join(holders)}")
        index.update(dict.fromkeys((model.name, *model.aliases), model))
    return MappingProxyType(index)


_BUILTIN_INDEX = _index(BUILTIN_PRETRAINED, {})
_ACTIVE: ContextVar[Mapping[str, PretrainedModel]] = ContextVar("omlcore_pretrained", default=_BUILTIN_INDEX)


@contextmanager
def extra_pretrained(*models: PretrainedModel) -> Iterator[None]:
    """Find ``models`` by name and alias too, inside the ``with`` block (this thread / async context only).

    >>> with extra_pretrained(PretrainedModel("mine", "vits16", (url,), md5, "md5", "mine.ckpt")):  # doctest: +SKIP
    ...     model = from_pretrained("mine")

    Raises:
        ValueError: a name or alias is taken (by a built-in entry or an enclosing block's).
    """
    token = _ACTIVE.set(_index(models, _ACTIVE.get()))
    try:
        yield
    finally:
        _ACTIVE.reset(token)


def find_pretrained(name: str) -> PretrainedModel | None:
    """The zoo entry called ``name`` (or aliased so), else None."""
    return _ACTIVE.get().get(name)


def get_pretrained(name: str) -> PretrainedModel:
    """The zoo entry called ``name``; an unknown name raises with the closest known names."""
    model = find_pretrained(name)
    if model is None:
        close = difflib.get_close_matches(str(name), list(_ACTIVE.get()), n=5, cutoff=0.5)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise UnknownComponentError(
            f"Unknown pretrained model '{name}'.{hint} omlcore.models.list_pretrained() lists the zoo."
        )
    return model


def list_pretrained(arch: str | None = None) -> list[str]:
    """Names of the zoo entries (for one ``arch`` if given), sorted."""
    return sorted({model.name for model in _ACTIVE.get().values() if arch is None or model.arch == arch})
