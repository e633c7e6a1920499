"""Text helpers shared by the text plugins: validation, tokenizers, sentiment results (no torch).

Everything is built locally and deterministically: the default BERT tokenizer is a small
WordPiece vocabulary constructed in code, the LSTM's word vocabulary is generated, and a
Hugging Face checkpoint's own tokenizer files are read from its folder, never from a hub.
"""

from __future__ import annotations

import itertools
import json
import re
import string
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

from zoo.api import LABELS_FILE, BadInput

MAX_TEXT_CHARS = 100_000
TOKENIZER_FILE = "tokenizer.json"
VOCAB_FILE = "vocab.json"
BERT_SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")  # ids 0..4, as in bert-base-uncased
SPECIAL_NAMES = {"pad": "[PAD]", "unk": "[UNK]", "cls": "[CLS]", "sep": "[SEP]", "mask": "[MASK]"}
PAD, UNK = "<pad>", "<unk>"  # the word-level vocabulary's ids 0 and 1

# Common English words (movie-review flavoured, since the tasks are sentiment and embeddings).
COMMON_WORDS = tuple(
    """
    the a an and or but if then so because as of in on at to from by with without for about into over
    under after before between through during again once here there when where why how all any both each
    few more most other some such no nor not only own same than too very can will just should now is are
    was were be been being have has had having do does did doing would could may might must shall i me my
    we our you your he him his she her it its they them their what which who whom this that these those
    am one two three four five six seven eight nine ten first second last next new old good great best
    better bad worse worst awful terrible horrible boring dull slow poor weak wonderful excellent amazing
    brilliant beautiful perfect fantastic superb lovely nice fine fun funny enjoyable entertaining
    interesting moving touching powerful stunning fresh original clever smart charming sweet warm love
    loved like liked hate hated enjoy enjoyed recommend recommended waste wasted mess disappointing
    disappointed predictable stupid silly annoying painful pointless ugly cheap movie movies film films
    story plot acting actor actors actress cast character characters director script scene scenes ending
    music score screen camera performance performances role roles drama comedy horror action thriller
    series show episode book time times year years day days night people man woman men women life world
    way thing things something nothing everything anything part place end case week work make made see
    saw seen watch watched watching look looked think thought know knew get got give gave go went come
    came take took tell told say said feel felt find found want wanted seem seemed try tried leave left
    call called keep kept let begin began help show showed play played run ran move lived believe
    really quite well also still even never always often ever much many little long short big small high
    low real true full whole sure hard easy free able early late young right wrong own half rather almost
    enough far away back off out up down yes please thanks model models serving server request batch text
    texts sentence sentences word words language data fast quick much
    """.split()
)
_SUFFIXES = ("s", "es", "ed", "ing", "ly", "er", "est", "ness", "ment", "ful", "less", "able", "y")
_WORD = re.compile(r"\w+(?:'\w+)?|[^\w\s]")  # words (with one apostrophe part) and single symbols
# Runs between the whitespace BERT itself splits on; Python's \s would also cut at control
# characters that BERT's normalizer deletes, which joins the words around them.
_NON_SPACE = re.compile(r"[^ \t\n\r]+")


def check_text(item: Any, max_chars: int = MAX_TEXT_CHARS) -> str:
    """`item` if it is a text the text plugins accept; BadInput otherwise (empty text is fine).

    The one text check: every protocol's texts reach it through the plugin's processor.
    """
    if not isinstance(item, str):
        raise BadInput(f"a text must be a string, not {type(item).__name__}")
    if len(item) > max_chars:
        raise BadInput(f"text of {len(item)} characters exceeds the limit of {max_chars}")
    try:
        item.encode("utf-8")
    except UnicodeEncodeError as exc:  # a lone surrogate ("\ud800") is no character at all
        raise BadInput(f"text is not valid Unicode: {exc.reason} at position {exc.start}") from None
    return item


def _unique(words: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(words))  # first occurrence wins: order, and so ids, are stable


# -- WordPiece (BERT) ---------------------------------------------------------------------------
def default_wordpiece_vocab() -> list[str]:
    """The default BERT vocabulary, in id order: specials, characters, '##' pieces, words."""
    chars = string.ascii_lowercase + string.digits + string.punctuation
    pieces = [f"##{c}" for c in string.ascii_lowercase + string.digits] + [f"##{s}" for s in _SUFFIXES]
    return _unique([*BERT_SPECIALS, *chars, *pieces, *COMMON_WORDS])


def wordpiece_tokenizer(
    vocab: Mapping[str, int],
    lowercase: bool = True,
    strip_accents: bool | None = None,
    specials: Mapping[str, str] | None = None,
) -> Tokenizer:
    """A BERT-style tokenizer over `vocab`: normalize, split, WordPiece, '[CLS] text [SEP]'."""
    names = {**SPECIAL_NAMES, **(specials or {})}
    missing = [names[k] for k in ("unk", "cls", "sep") if names[k] not in vocab]
    if missing:
        raise ValueError(f"the vocabulary lacks the special tokens {missing}")
    tokenizer = Tokenizer(models.WordPiece(dict(vocab), unk_token=names["unk"], max_input_chars_per_word=100))
    tokenizer.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=strip_accents, lowercase=lowercase
    )
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    cls, sep = names["cls"], names["sep"]
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{cls}:0 $A:0 {sep}:0",
        pair=f"{cls}:0 $A:0 {sep}:0 $B:1 {sep}:1",
        special_tokens=[(cls, vocab[cls]), (sep, vocab[sep])],
    )
    tokenizer.decoder = decoders.WordPiece(prefix="##")
    # Specials are matched whole in the input text, never split into characters.
    tokenizer.add_special_tokens([t for t in names.values() if t in vocab])
    return tokenizer


def default_tokenizer() -> Tokenizer:
    """The deterministic local stand-in for bert-base-uncased's tokenizer (same special ids)."""
    return wordpiece_tokenizer({token: i for i, token in enumerate(default_wordpiece_vocab())})


def save_tokenizer(tokenizer: Tokenizer, path: Path) -> None:
    """Write tokenizer.json without truncation or padding: those belong to the processor's config."""
    tokenizer.no_truncation()
    tokenizer.no_padding()
    path.write_text(tokenizer.to_str(pretty=True))


def _token_name(value: Any, default: str) -> str:
    if isinstance(value, dict):  # transformers writes AddedToken objects as dicts
        value = value.get("content")
    return value if isinstance(value, str) else default


def load_checkpoint_tokenizer(folder: Path) -> Tokenizer:
    """A Hugging Face checkpoint's tokenizer: tokenizer.json if present, else vocab.txt.

    For vocab.txt, `do_lower_case`, `strip_accents` and the special token names come from
    tokenizer_config.json, as BertTokenizerFast would read them.
    """
    if (folder / TOKENIZER_FILE).is_file():
        return Tokenizer.from_file(str(folder / TOKENIZER_FILE))
    vocab_file = folder / "vocab.txt"
    if not vocab_file.is_file():
        raise FileNotFoundError(f"{folder} has neither tokenizer.json nor vocab.txt")
    settings_file = folder / "tokenizer_config.json"
    settings = json.loads(settings_file.read_text()) if settings_file.is_file() else {}
    lines = vocab_file.read_text(encoding="utf-8").splitlines()
    vocab = {token: i for i, token in enumerate(lines) if token}
    specials = {k: _token_name(settings.get(f"{k}_token"), default) for k, default in SPECIAL_NAMES.items()}
    return wordpiece_tokenizer(
        vocab, bool(settings.get("do_lower_case", True)), settings.get("strip_accents"), specials
    )


def has_checkpoint_tokenizer(folder: Path) -> bool:
    return (folder / TOKENIZER_FILE).is_file() or (folder / "vocab.txt").is_file()


def truncating(tokenizer: Tokenizer, max_tokens: int) -> Tokenizer:
    """`tokenizer` cutting every text to `max_tokens` ids, special tokens included."""
    if max_tokens < 2:
        raise ValueError(f"max_tokens must be at least 2 ([CLS] and [SEP]), got {max_tokens}")
    tokenizer.no_padding()  # rows are padded per batch by zoo.api.collate
    tokenizer.enable_truncation(max_length=max_tokens)
    return tokenizer


def _leading_words(text: str, count: int) -> str:
    """The text up to the end of its `count`-th space-separated word (all of it if shorter)."""
    for number, match in enumerate(_NON_SPACE.finditer(text), start=1):
        if number == count:
            return text[: match.end()]
    return text


def encode_pieces(tokenizer: Tokenizer, text: str) -> dict[str, np.ndarray]:
    """One text to BERT's input_ids, attention_mask and token_type_ids (int64, no batch axis)."""
    truncation = tokenizer.truncation
    encoding = None
    if truncation is not None and len(text) > 4 * truncation["max_length"]:
        # Every word gives at least one token, so a long text's leading words already fill the
        # budget: tokenizing 100,000 characters to keep 512 tokens costs ~40 ms, this ~2 ms.
        # Words are split at whitespace, where BERT splits too; if control characters (dropped
        # by the normalizer) made the prefix fall short, the whole text is tokenized after all.
        prefix = _leading_words(text, truncation["max_length"])
        encoding = tokenizer.encode(prefix)
        if len(encoding.ids) < truncation["max_length"] and len(prefix) < len(text):
            encoding = None
    if encoding is None:
        encoding = tokenizer.encode(text)
    ids = encoding.ids
    if not ids:  # a tokenizer without a post-processor gives nothing for "": keep length >= 1
        unk = tokenizer.token_to_id("[UNK]")
        ids, types = [unk if unk is not None else 0], [0]
    else:
        types = encoding.type_ids
    input_ids = np.asarray(ids, dtype=np.int64)
    return {
        "input_ids": input_ids,
        "attention_mask": np.ones_like(input_ids),
        "token_type_ids": np.asarray(types, dtype=np.int64),
    }


# -- word level (LSTM) --------------------------------------------------------------------------
def _generated_words() -> Any:
    """Pronounceable made-up words ('bada', 'bade', ...), endlessly, in a fixed order."""
    syllables = [c + v for c in "bcdfghjklmnprstvwz" for v in "aeiou"]
    for count in itertools.count(2):
        for parts in itertools.product(syllables, repeat=count):
            yield "".join(parts)


def default_word_vocab(size: int) -> dict[str, int]:
    """A word -> id vocabulary of exactly `size` entries: <pad>=0, <unk>=1, words, generated words."""
    if size < 2:
        raise ValueError(f"a word vocabulary needs at least <pad> and <unk>, got size {size}")
    base = _unique([PAD, UNK, *COMMON_WORDS, *string.punctuation])
    words = itertools.chain(base, (w for w in _generated_words() if w not in set(base)))
    return {word: i for i, word in enumerate(itertools.islice(words, size))}


def check_word_vocab(vocab: Mapping[str, int], vocab_size: int, source: str) -> None:
    """Raise ValueError unless `vocab` has <pad>=0, <unk>=1 and distinct ids below `vocab_size`."""
    if vocab.get(PAD) != 0 or vocab.get(UNK) != 1:
        raise ValueError(f"{source}: the vocabulary must map {PAD} to 0 and {UNK} to 1")
    ids = list(vocab.values())
    if not all(isinstance(i, int) and 0 <= i < vocab_size for i in ids):
        raise ValueError(f"{source}: every id must be an integer in 0..{vocab_size - 1}")
    if len(set(ids)) != len(ids):
        raise ValueError(f"{source}: two words share an id")


class WordTokenizer:
    """Lowercase, split into words and symbols, look up ids (unknown words -> <unk>)."""

    def __init__(self, vocab: Mapping[str, int]) -> None:
        self.vocab = dict(vocab)
        self.unk = self.vocab[UNK]

    @classmethod
    def from_file(cls, path: Path) -> WordTokenizer:
        return cls(json.loads(path.read_text(encoding="utf-8")))

    def encode(self, text: str, max_tokens: int) -> np.ndarray:
        """Ids of the first `max_tokens` words; an empty text is one <unk> (length is never 0)."""
        words = (m.group() for m in _WORD.finditer(text.lower()))  # lazily: stop at max_tokens
        ids = [self.vocab.get(word, self.unk) for word in itertools.islice(words, max_tokens)]
        return np.asarray(ids or [self.unk], dtype=np.int64)


# -- labels ---------------------------------------------------------------------------------------
def write_labels(labels: Sequence[str], dest: Path) -> None:
    (dest / LABELS_FILE).write_text(json.dumps(list(labels)))


def read_labels(assets: Path) -> tuple[str, ...]:
    return tuple(json.loads((assets / LABELS_FILE).read_text()))
