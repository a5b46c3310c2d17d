"""Build real ``CLIPTokenizer`` objects offline, for toy worlds and tests (no Hub download)."""

from __future__ import annotations

import string
from collections.abc import Iterable

from transformers import CLIPTokenizer

_BASE_CHARACTERS = list(string.punctuation) + list(string.digits) + list(string.ascii_lowercase)


def build_clip_tokenizer(words: Iterable[str] = (), model_max_length: int = 77) -> CLIPTokenizer:
    """
    A byte-pair ``CLIPTokenizer`` whose vocabulary holds every lowercase character (alone and word-final) and, as
    single tokens, each of ``words``; any other text still tokenizes, character by character. The pad token is
    ``"!"`` (id 0), as in Karlo. Saved with ``save_pretrained``, it reloads with ``CLIPTokenizer.from_pretrained``.

    transformers 5 needs ``merges`` as tuples: string merges raise, and vocab/merges *files* silently give a 2-token
    tokenizer, so the vocabulary is built in memory.
    """
    vocab: dict[str, int] = {}
    for char in _BASE_CHARACTERS:
        vocab.setdefault(char, len(vocab))
    for char in _BASE_CHARACTERS:
        vocab.setdefault(char + "</w>", len(vocab))
    merges: list[tuple[str, str]] = []
    for word in sorted({w.lower() for w in words}):
        pieces = list(word[:-1]) + [word[-1] + "</w>"]
        current = pieces[0]
        for piece in pieces[1:]:
            merged = current + piece
            if merged not in vocab:
                merges.append((current, piece))
                vocab[merged] = len(vocab)
            current = merged
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=merges, pad_token="!", model_max_length=model_max_length)
