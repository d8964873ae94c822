"""English text that works offline: Jane Austen's six novels from Debian's ``r-cran-janeaustenr``.

The .deb is unpacked (never installed: no R needed) by ``scripts/setup.sh`` into ``.data/janeaustenr``; its
lazy-load database ``data/Rdata.rdb`` holds one character vector per novel (the hard-wrapped Project
Gutenberg lines), read here with PyPI ``rdata``.

Fixed split, so calibration never sees evaluation text:

- calibration: Sense and Sensibility, Pride and Prejudice, Mansfield Park, Emma, Northanger Abbey;
- evaluation: Persuasion (her last completed novel).
"""

from __future__ import annotations

import functools
import os
import re
import warnings
import zlib
from pathlib import Path

import torch

from logmac.models.data import DataMissingError

AUSTEN_NOVELS = ("sensesensibility", "prideprejudice", "mansfieldpark", "emma", "northangerabbey", "persuasion")
AUSTEN_SPLIT = {"calibration": AUSTEN_NOVELS[:5], "evaluation": ("persuasion",)}
_PACKAGE_SUBDIR = Path("usr/lib/R/site-library/janeaustenr")


def austen_dir() -> Path:
    """The unpacked R package folder; ``LOGMAC_AUSTEN_DIR`` overrides the repo's ``.data/janeaustenr``."""
    if "LOGMAC_AUSTEN_DIR" in os.environ:
        return Path(os.environ["LOGMAC_AUSTEN_DIR"])
    return Path(__file__).resolve().parents[2] / ".data" / "janeaustenr" / _PACKAGE_SUBDIR


@functools.lru_cache(maxsize=2)
def _austen_lines(root: Path) -> dict[str, list[str]]:
    index_file, db_file = root / "data" / "Rdata.rdx", root / "data" / "Rdata.rdb"
    if not (index_file.is_file() and db_file.is_file()):
        raise DataMissingError(f"the Austen corpus is missing ({db_file} not found); run `bash scripts/setup.sh`, which "
                               "does `apt-get download r-cran-janeaustenr` and `dpkg -x` into .data/janeaustenr, "
                               "or set LOGMAC_AUSTEN_DIR to the unpacked .../site-library/janeaustenr folder")
    import rdata

    try:
        index = rdata.read_rds(str(index_file))["variables"]
        db = db_file.read_bytes()
        novels = {}
        for name in AUSTEN_NOVELS:
            offset, length = (int(v) for v in index[name])
            # Each lazy-load record: 4-byte big-endian uncompressed length, then a zlib stream of an RDS object.
            blob = zlib.decompress(db[offset + 4: offset + length])
            with warnings.catch_warnings():  # a lazy-load record has no RDS magic; rdata warns, then reads it fine
                warnings.filterwarnings("ignore", message="Unknown file type")
                parsed = rdata.parser.parse_data(blob)
            novels[name] = [str(line) for line in rdata.conversion.convert(parsed)]
    except (KeyError, ValueError, zlib.error, EOFError) as err:
        raise ValueError(f"cannot read the Austen corpus in {root / 'data'} ({type(err).__name__}: {err}); "
                         "the files are corrupt: delete .data/janeaustenr and rerun scripts/setup.sh") from err
    return novels


def austen_novel(name: str, *, root: str | Path | None = None) -> str:
    """One novel as plain text: wrapped lines joined into paragraphs, paragraphs separated by a blank line."""
    if name not in AUSTEN_NOVELS:
        raise KeyError(f"unknown Austen novel {name!r}; the novels are {AUSTEN_NOVELS}")
    lines = _austen_lines(Path(root) if root is not None else austen_dir())[name]
    paragraphs, current = [], []
    for line in lines + [""]:
        if line.strip():
            current.append(line.strip())
        elif current:
            paragraphs.append(" ".join(current))
            current = []
    return "\n\n".join(paragraphs)


def austen_text(split: str = "evaluation", *, root: str | Path | None = None) -> str:
    """The novels of ``split`` ("calibration" or "evaluation", see the module docstring), concatenated."""
    if split not in AUSTEN_SPLIT:
        raise ValueError(f"Austen split must be one of {sorted(AUSTEN_SPLIT)}, not {split!r}")
    return "\n\n".join(austen_novel(name, root=root) for name in AUSTEN_SPLIT[split])


def austen_tokens(tokenizer, split: str = "evaluation", *, max_tokens: int | None = None) -> torch.Tensor:
    """The ``split`` text as one 1-d int64 token stream for a HF ``tokenizer``, cut to ``max_tokens``."""
    text = austen_text(split)
    if max_tokens is not None:
        text = text[: max_tokens * 8]  # tokenising all 700k words takes seconds; ~4 chars a token, so 8x is ample
    ids = torch.tensor(tokenizer(text, add_special_tokens=False)["input_ids"], dtype=torch.long)
    return ids[:max_tokens] if max_tokens is not None else ids


_SENTENCE_END = re.compile(r"(?<=[.!?])[\"']?\s+(?=[\"']?[A-Z])")


def austen_sentences(split: str = "evaluation", n: int = 256, *, min_words: int = 6) -> list[str]:
    """``n`` sentences of at least ``min_words`` words, spread evenly through the ``split`` text (deterministic)."""
    sentences = [s.strip() for para in austen_text(split).split("\n\n") for s in _SENTENCE_END.split(para)]
    sentences = [s for s in sentences if len(s.split()) >= min_words]
    if n > len(sentences):
        raise ValueError(f"asked for {n} sentences but the {split} text has only {len(sentences)}")
    step = len(sentences) / n
    return [sentences[int(i * step)] for i in range(n)]
