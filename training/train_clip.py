"""
Train a small CLIP contrastively on an image–caption dataset: the frozen CLIP that unCLIP's prior and decoder are
built on (paper §2: CLIP is trained first, then frozen).

    accelerate launch training/train_clip.py --train_data_dir data/shapes --output_dir runs/clip --max_train_minutes 8

Saves pipeline-style subfolders ``text_encoder`` (CLIPTextModelWithProjection), ``tokenizer`` (a real CLIPTokenizer
over the dataset's words), ``image_encoder`` (CLIPVisionModelWithProjection) and ``feature_extractor``
(CLIPImageProcessor at the model's input size, with the dataset's mean and std). Captions repeat in a small world, so
the loss counts every pair with the same caption as a positive (a multi-positive InfoNCE).

With ``--hard_negative_edits K`` every image is also scored against one *hard negative* caption: another caption
of the dataset with the same number of words that differs from its own in at most K word substitutions, or that
holds the same words in another order ("a red circle to the left of a blue square" against "... to the right
of ...", "a blue circle to the left of a red square", "a red circle at the top"). In-batch negatives rarely differ
from a caption in one word only, so without them CLIP learns a bag of colours and shapes and ignores positions and
relations (NegCLIP, Yuksekgonul et al. 2023). The neighbours come from the dataset's own captions: no word lists.
``--hard_negative_images`` adds the other direction: every caption is also scored against one training image whose
caption is one of its neighbours (NegCLIP's hard negative images), so the image tower, too, must tell "left of" from
"right of".
``--hard_negative_phrase_words P`` adds the captions of any length that differ in one phrase of at most P words on each
side ("to the left of" against "above"): with same-length neighbours only, a CLIP can pass every hard negative by
telling "left of or below" from "right of or above", and then cannot tell "left of" from "below" (training/README.md).
``--hard_negative_top_k K`` mines them: every ``--hard_negative_mining_steps`` batches the current text tower ranks
each caption's neighbours, and the negatives are drawn among the K closest, the ones the model still confuses.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch: spinning OpenMP threads stall on a shared CPU

import re
import sys

import torch
import torch.nn.functional as F
from transformers import (
    CLIPConfig,
    CLIPImageProcessor,
    CLIPModel,
    CLIPTextConfig,
    CLIPTextModelWithProjection,
    CLIPVisionConfig,
    CLIPVisionModelWithProjection,
)

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from training import common
from unclip_pipelines.tokenization import build_clip_tokenizer


def parse_args(argv=None):
    parser = common.build_parser(
        __doc__.split("\n\n")[0], train_batch_size=256, learning_rate=5e-4, max_train_steps=2000, validation_steps=250
    )
    model = parser.add_argument_group("model")
    model.add_argument("--image_size", type=int, default=64)
    model.add_argument("--patch_size", type=int, default=8)
    model.add_argument(
        "--hidden_size", type=int, default=128,
        help="width of both towers and of the projection (unCLIP needs text width == embedding width)",
    )
    model.add_argument("--num_hidden_layers", type=int, default=4)
    model.add_argument("--num_attention_heads", type=int, default=4)
    model.add_argument(
        "--position_embedding_std", type=float, default=None,
        help="initial std of the image tower's position embeddings (default: transformers' CLIP init, 0.02; with it "
        "the default small ViT does not learn where an object is even when trained to, see training/README.md)",
    )
    model.add_argument("--max_length", type=int, default=24, help="the tokenizer's model_max_length")
    model.add_argument("--extra_words", nargs="*", default=[], help="more single-token words for the tokenizer")
    model.add_argument(
        "--hard_negative_edits", type=int, default=0,
        help="score each image against one caption that differs from its own by at most this many words (0: off)",
    )
    model.add_argument(
        "--hard_negative_phrase_words", type=int, default=0,
        help="with --hard_negative_edits: also count as neighbours the captions that differ in one phrase of at most "
        "this many words on each side, of any length ('to the left of' / 'above'; 0: off)",
    )
    model.add_argument(
        "--hard_negative_images", action="store_true",
        help="also score each caption against one training image of a neighbouring caption (needs --hard_negative_edits)",
    )
    model.add_argument(
        "--hard_negative_top_k", type=int, default=0,
        help="draw each hard negative among the K neighbours the current text tower finds closest to the caption "
        "(hard negative mining; 0: among all neighbours, uniformly)",
    )
    model.add_argument(
        "--hard_negative_mining_steps", type=int, default=25,
        help="with --hard_negative_top_k: re-rank the neighbours every this many batches (and at the first batch "
        "after a resume: the ranking is not checkpointed)",
    )
    args = common.parse_args(parser, argv)
    if args.hard_negative_top_k and args.hard_negative_edits <= 0:
        parser.error("--hard_negative_top_k needs --hard_negative_edits K > 0: it ranks the neighbours")
    if args.hard_negative_top_k < 0 or args.hard_negative_mining_steps < 1:
        parser.error("--hard_negative_top_k must be >= 0 and --hard_negative_mining_steps >= 1")
    if args.hard_negative_phrase_words and args.hard_negative_edits <= 0:
        parser.error("--hard_negative_phrase_words needs --hard_negative_edits K > 0: it adds to the neighbours")
    if args.hard_negative_phrase_words < 0:
        parser.error("--hard_negative_phrase_words must be >= 0")
    if args.hard_negative_images and args.hard_negative_edits <= 0:
        parser.error("--hard_negative_images needs --hard_negative_edits K > 0: the negatives are images of the neighbours")
    return args


def words_of(captions) -> set[str]:
    return {word for caption in captions for word in re.findall(r"[a-z]+", caption.lower())}


class ContrastiveCLIP(torch.nn.Module):
    """CLIPModel + its input normalisation; ``forward`` returns the symmetric multi-positive contrastive loss."""

    def __init__(self, clip: CLIPModel, feature_extractor: CLIPImageProcessor):
        super().__init__()
        self.clip = clip
        self.feature_extractor = feature_extractor

    def embed_text(self, input_ids):
        return F.normalize(self.clip.text_projection(self.clip.text_model(input_ids=input_ids).pooler_output), dim=-1)

    def embed_images(self, pixels):
        pixel_values = common.normalize_pixels(self.feature_extractor, pixels)
        return F.normalize(self.clip.visual_projection(self.clip.vision_model(pixel_values).pooler_output), dim=-1)

    def forward(
        self, input_ids, pixels, caption_ids, negative_input_ids=None, negative_caption_ids=None,
        negative_pixels=None, negative_pixel_caption_ids=None,
    ):
        """
        Negative captions are extra columns of the image -> caption loss only, negative images extra columns of the
        caption -> image loss only; a negative whose caption id equals a row's own counts as a positive of that row.
        """
        scale = self.clip.logit_scale.exp().clamp(max=100)
        batch = len(caption_ids)
        if negative_pixels is not None:
            pixels = torch.cat([pixels, negative_pixels])
        images = self.embed_images(pixels)
        if negative_input_ids is not None:
            input_ids = torch.cat([input_ids, negative_input_ids])
        texts = self.embed_text(input_ids)

        def multi_positive_loss(rows, columns, column_ids):
            same = (caption_ids[:, None] == column_ids[None, :]).float()
            return F.cross_entropy(scale * rows @ columns.T, same / same.sum(1, keepdim=True))

        text_columns = caption_ids if negative_caption_ids is None else torch.cat([caption_ids, negative_caption_ids])
        image_columns = (
            caption_ids if negative_pixel_caption_ids is None else torch.cat([caption_ids, negative_pixel_caption_ids])
        )
        image_loss = multi_positive_loss(images[:batch], texts, text_columns)  # (B, B [+ B negatives])
        text_loss = multi_positive_loss(texts[:batch], images, image_columns)
        return (image_loss + text_loss) / 2


def caption_neighbours(captions: list[str], max_edits: int, max_phrase_words: int = 0) -> list[list[int]]:
    """
    For each caption, the indices of the others with as many words that differ in at most ``max_edits`` word
    substitutions or hold the same words in another order; with ``max_phrase_words = P > 0`` also those of any
    length that differ in one phrase of at most P words on each side, nothing inserted or deleted ("a red circle
    to the left of a blue square" and "a red circle above a blue square"; not "a red circle" and "a red circle on
    the left").
    """
    words = [caption.lower().split() for caption in captions]
    neighbours: list[set[int]] = [set() for _ in captions]
    by_length: dict[int, list[int]] = {}
    for index, caption_words in enumerate(words):
        by_length.setdefault(len(caption_words), []).append(index)
    for indices in by_length.values():
        vocabulary = {word: i for i, word in enumerate(sorted({w for i in indices for w in words[i]}))}
        codes = torch.tensor([[vocabulary[w] for w in words[i]] for i in indices])
        edits = (codes[:, None, :] != codes[None, :, :]).sum(-1)
        bags = torch.stack([torch.bincount(row, minlength=len(vocabulary)) for row in codes])
        same_bag = (bags[:, None, :] == bags[None, :, :]).all(-1)
        close = ((edits <= max_edits) | same_bag) & (edits > 0)
        for row, index in enumerate(indices):
            neighbours[index].update(indices[j] for j in close[row].nonzero().flatten().tolist())
    for a, b in phrase_substitutions(words, max_phrase_words):
        neighbours[a].add(b)
        neighbours[b].add(a)
    return [sorted(row) for row in neighbours]


def phrase_substitutions(words: list[list[str]], max_phrase_words: int) -> set[tuple[int, int]]:
    """
    Pairs ``(a, b)`` of word lists that are the same but for one phrase of 1 to ``max_phrase_words`` words on each
    side: every caption is keyed by (words before, words after) each of its phrases, and two captions sharing a key
    are a pair when their phrases differ in their first and in their last word (so the key is their longest common
    prefix and suffix, and neither phrase merely extends the other).
    """
    holes: dict[tuple, list[tuple[int, tuple[str, ...]]]] = {}
    for index, caption_words in enumerate(words):
        for start in range(len(caption_words)):
            for end in range(start + 1, min(start + max_phrase_words, len(caption_words)) + 1):
                key = (tuple(caption_words[:start]), tuple(caption_words[end:]))
                holes.setdefault(key, []).append((index, tuple(caption_words[start:end])))
    pairs = set()
    for filled in holes.values():
        for i, (a, phrase_a) in enumerate(filled):
            for b, phrase_b in filled[i + 1 :]:
                if a != b and phrase_a[0] != phrase_b[0] and phrase_a[-1] != phrase_b[-1]:
                    pairs.add((min(a, b), max(a, b)))
    return pairs


class NeighbourTable:
    """
    Every caption's neighbours (:func:`caption_neighbours`) as a padded table to draw hard negatives from. ``mine``
    narrows each row to the ``k`` neighbours closest to the caption under the current text embeddings, so the
    negatives are the ones the model confuses (for a CLIP that ignores layout: the caption with its relation or
    position mirrored) instead of mostly colour and shape swaps it already tells apart.
    """

    def __init__(self, rows: list[list[int]]):
        self.rows = rows  # every neighbour, for validation
        self.width = max(max(map(len, rows)), 1)
        self.all = torch.zeros(len(rows), self.width, dtype=torch.long)
        for i, row in enumerate(rows):
            self.all[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        self.all_counts = torch.tensor([len(row) for row in rows])
        self.table, self.counts = self.all, self.all_counts

    def mine(self, text: torch.Tensor, k: int) -> None:
        """Keep, per caption, the ``k`` neighbours whose (unit) embeddings in ``text`` are closest to its own."""
        k = min(k, self.width)
        text = text.float().cpu()
        # (captions, neighbours) cosines, a block of rows at a time: never a (captions, neighbours, width) tensor
        blocks = torch.arange(len(text)).split(1024)
        similarity = torch.cat([(text[rows] @ text.T).gather(1, self.all[rows]) for rows in blocks])
        similarity[torch.arange(self.width)[None, :] >= self.all_counts[:, None]] = -float("inf")
        self.table = self.all.gather(1, similarity.topk(k, dim=1).indices)
        self.counts = self.all_counts.clamp(max=k)

    def draw(self, own: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """One neighbouring caption id per caption id in ``own`` (a random caption for those without neighbours)."""
        counts = self.counts[own]
        pick = (torch.rand(len(own), generator=generator) * torch.where(counts > 0, counts, len(self.rows))).long()
        return torch.where(counts > 0, self.table[own, pick.clamp(max=self.table.shape[1] - 1)], pick)


def build(args, data: common.ImageTextData):
    tokenizer = build_clip_tokenizer(sorted(words_of(data.captions) | set(args.extra_words)), args.max_length)
    longest = max(len(ids) for ids in tokenizer(data.captions[:5000]).input_ids)
    if longest > args.max_length:
        print(f"warning: captions of up to {longest} tokens are truncated to --max_length {args.max_length}")
    size = {"shortest_edge": args.image_size}
    probe = CLIPImageProcessor(size=size, crop_size=args.image_size)
    pixels = common.clip_pixels(probe, data.images)
    data.release_images()
    sample = pixels[: 4096].float() / 255
    feature_extractor = CLIPImageProcessor(
        size=size, crop_size={"height": args.image_size, "width": args.image_size},
        image_mean=[round(v, 4) for v in sample.mean((0, 2, 3)).tolist()],
        image_std=[round(v, 4) for v in sample.std((0, 2, 3)).clamp(min=1e-3).tolist()],
    )
    width, heads, layers = args.hidden_size, args.num_attention_heads, args.num_hidden_layers
    text_config = CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=width, intermediate_size=4 * width, projection_dim=width,
        num_hidden_layers=layers, num_attention_heads=heads, max_position_embeddings=args.max_length,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    vision_config = CLIPVisionConfig(
        hidden_size=width, intermediate_size=4 * width, projection_dim=width, num_hidden_layers=layers,
        num_attention_heads=heads, image_size=args.image_size, patch_size=args.patch_size,
    )
    config = CLIPConfig(text_config=text_config.to_dict(), vision_config=vision_config.to_dict(), projection_dim=width)
    clip = CLIPModel(config)
    if args.position_embedding_std is not None:
        with torch.no_grad():
            clip.vision_model.embeddings.position_embedding.weight.normal_(0.0, args.position_embedding_std)
    return tokenizer, feature_extractor, pixels, ContrastiveCLIP(clip, feature_extractor)


def trim_padding(batch: dict, lengths: torch.Tensor) -> dict:
    """
    Cut ``input_ids`` and ``negative_input_ids`` to the longest caption among them (``lengths``: tokens with BOS and
    EOS). The text tower is causal and pools at EOS, so the padding after it never changes an embedding.
    """
    keys = [key for key in ("input_ids", "negative_input_ids") if key in batch]
    width = int(lengths.max())
    return batch | {key: batch[key][:, :width] for key in keys}


def split_towers(clip: CLIPModel) -> tuple[CLIPTextModelWithProjection, CLIPVisionModelWithProjection]:
    """The two towers of a CLIPModel as the WithProjection models the unCLIP pipelines load."""
    state = clip.state_dict()
    towers = []
    for cls, config, prefixes in (
        (CLIPTextModelWithProjection, clip.config.text_config, ("text_model.", "text_projection.")),
        (CLIPVisionModelWithProjection, clip.config.vision_config, ("vision_model.", "visual_projection.")),
    ):
        tower = cls(config)
        tower.load_state_dict({k: v for k, v in state.items() if k.startswith(prefixes)}, strict=True)
        towers.append(tower.eval())
    return towers[0], towers[1]


def main(argv=None) -> dict:
    args = parse_args(argv)
    accelerator = common.make_accelerator(args)
    data = common.ImageTextData(args)
    tokenizer, feature_extractor, pixels, model = build(args, data)
    input_ids, attention_mask = common.tokenize(tokenizer, data.captions)
    lengths = attention_mask.sum(1)
    position = {c: i for i, c in enumerate(sorted(set(data.captions)))}
    caption_ids = torch.tensor([position[c] for c in data.captions])
    accelerator.print(f"CLIP: {common.count_parameters(model)} parameters, vocabulary of {len(tokenizer)} tokens")

    unique_ids = neighbours = None
    if args.hard_negative_edits > 0:
        unique = sorted(position, key=position.get)
        unique_ids, unique_mask = common.tokenize(tokenizer, unique)
        unique_lengths = unique_mask.sum(1)
        neighbours = NeighbourTable(
            caption_neighbours(unique, args.hard_negative_edits, args.hard_negative_phrase_words)
        )
        accelerator.print(
            f"hard negatives: {neighbours.counts.float().mean():.1f} per caption on average "
            f"(<= {args.hard_negative_edits} word edits or reordered"
            + (f", or one phrase of <= {args.hard_negative_phrase_words} words swapped" if args.hard_negative_phrase_words else "")
            + f"); {int((neighbours.counts == 0).sum())} of "
            f"{len(unique)} captions have none and get a random caption"
            + (f"; drawn among the {args.hard_negative_top_k} the text tower finds closest, re-mined every "
               f"{args.hard_negative_mining_steps} batches" if args.hard_negative_top_k else "")
        )

    if args.hard_negative_images:
        # the training images of each caption, padded; a caption without any draws a random training image
        train_caption_ids = caption_ids[: data.num_train]
        order = torch.argsort(train_caption_ids, stable=True)
        image_counts = torch.bincount(train_caption_ids, minlength=len(unique))
        starts = torch.cumsum(image_counts, 0) - image_counts

    batches = 0

    def make_batch(indices, generator):
        nonlocal batches
        batch = {"input_ids": input_ids[indices], "pixels": pixels[indices], "caption_ids": caption_ids[indices]}
        if neighbours is not None:
            if args.hard_negative_top_k and batches % args.hard_negative_mining_steps == 0:
                device = next(model.parameters()).device
                with torch.no_grad():
                    text = torch.cat([model.embed_text(ids.to(device)) for ids in unique_ids.split(1024)])
                neighbours.mine(text, args.hard_negative_top_k)
            batches += 1
            own = caption_ids[indices]
            negative = neighbours.draw(own, generator)
            batch.update(negative_input_ids=unique_ids[negative], negative_caption_ids=negative)
        if args.hard_negative_images:
            # an image of another neighbour (drawn again, so the two directions don't share one negative caption)
            neighbour = neighbours.draw(own, generator)
            available = image_counts[neighbour]
            offset = (torch.rand(len(own), generator=generator) * available.clamp(min=1)).long()
            anywhere = (torch.rand(len(own), generator=generator) * data.num_train).long()
            image = torch.where(available > 0, order[(starts[neighbour] + offset).clamp(max=data.num_train - 1)], anywhere)
            batch.update(negative_pixels=pixels[image], negative_pixel_caption_ids=caption_ids[image])
        used = lengths[indices] if neighbours is None else torch.cat([lengths[indices], unique_lengths[negative]])
        return trim_padding(batch, used)

    val = data.validation_indices

    def validate(model: ContrastiveCLIP, folder, step):
        device = next(model.parameters()).device
        captions = [data.captions[i] for i in val.tolist()]
        unique = sorted(set(captions))
        text = model.embed_text(common.tokenize(tokenizer, unique)[0].to(device))
        images = model.embed_images(pixels[val].to(device))
        own = torch.tensor([unique.index(c) for c in captions], device=device)
        similarity = images @ text.T  # (images, unique captions)
        best_image = similarity.argmax(0)  # for each caption, its best image
        metrics = {}
        if neighbours is not None:  # does each image prefer its own caption to every caption a few words away?
            every = model.embed_text(unique_ids.to(device))
            scores = images @ every.T  # (images, all dataset captions)
            val_ids = caption_ids[val].tolist()
            beats = [
                float(scores[row, own_id] > scores[row, neighbours.rows[own_id]].max())
                for row, own_id in enumerate(val_ids)
                if neighbours.rows[own_id]
            ]
            if beats:
                metrics["hard_negative_accuracy"] = sum(beats) / len(beats)
            # does each caption score its own image above the validation images of its neighbours?
            by_image = scores[:, val_ids].T  # (own captions, validation images)
            beats = []
            for row, own_id in enumerate(val_ids):
                near = set(neighbours.rows[own_id])
                columns = [j for j, other in enumerate(val_ids) if other in near]
                if columns:
                    beats.append(float(by_image[row, row] > by_image[row, columns].max()))
            if beats:
                metrics["hard_negative_image_accuracy"] = sum(beats) / len(beats)
        return metrics | {
            "image_to_caption_accuracy": (similarity.argmax(1) == own).float().mean().item(),
            "caption_to_image_accuracy": (own[best_image] == torch.arange(len(unique), device=device)).float().mean().item(),
            "logit_scale": model.clip.logit_scale.exp().item(),
        }

    def save(model: ContrastiveCLIP, folder):
        text_encoder, image_encoder = split_towers(model.clip)
        text_encoder.save_pretrained(os.path.join(folder, "text_encoder"))
        image_encoder.save_pretrained(os.path.join(folder, "image_encoder"))
        tokenizer.save_pretrained(os.path.join(folder, "tokenizer"))
        feature_extractor.save_pretrained(os.path.join(folder, "feature_extractor"))

    stage = common.Stage(
        model=model, make_batch=make_batch, num_examples=data.num_train, save=save,
        validate=validate if len(val) else None,
        description=f"A small CLIP ({args.image_size} px, width {args.hidden_size}) trained contrastively.",
    )
    return common.train(args, stage, accelerator)


if __name__ == "__main__":
    main()
