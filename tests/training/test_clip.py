"""train_clip's hard negatives: which captions count as neighbours, and how they enter the contrastive loss."""

import pytest
import torch
import torch.nn.functional as F

from training.train_clip import ContrastiveCLIP, caption_neighbours

CAPTIONS = [
    "a red circle",  # 0
    "a blue circle",  # 1: one word from 0
    "a blue square",  # 2: two words from 0, one from 1
    "a red square on the left",  # 3
    "a red square on the right",  # 4: one word from 3
    "a red circle to the left of a blue square",  # 5
    "a red circle to the right of a blue square",  # 6: one word from 5
    "a blue square to the left of a red circle",  # 7: the objects of 5 swapped (same words, 4 substitutions)
    "a green diamond to the left of a yellow triangle",  # 8: four words from 5, other words
]


def test_caption_neighbours_by_word_edits_and_reordering():
    one = caption_neighbours(CAPTIONS, max_edits=1)
    assert one[0] == [1] and sorted(one[1]) == [0, 2] and one[3] == [4]
    assert sorted(one[5]) == [6, 7]  # the relation word, and the reordered objects
    assert one[8] == []
    two = caption_neighbours(CAPTIONS, max_edits=2)
    assert sorted(two[0]) == [1, 2]
    assert 8 not in two[5] and 5 not in two[8]
    # captions of other lengths are never neighbours
    assert all(len(CAPTIONS[j].split()) == len(CAPTIONS[i].split()) for i, row in enumerate(two) for j in row)


def test_caption_neighbours_by_one_phrase_of_any_length():
    captions = CAPTIONS + [
        "a red circle above a blue square",  # 9: 5 with "to the left of" -> "above"
        "a blue square to the right of a red circle",  # 10: says what 5 says, in other words
        "a red circle on the left",  # 11: "a red circle" with a phrase added
        "a red circle below a blue square",  # 12: one word from 9
    ]
    assert 9 not in caption_neighbours(captions, max_edits=2)[5]  # other lengths: never, without phrases
    rows = caption_neighbours(captions, max_edits=2, max_phrase_words=4)
    assert {9, 12} <= set(rows[5]) and 5 in rows[9] and 5 in rows[12]
    assert 10 not in rows[5]  # the differing stretch is 8 words on each side
    assert 11 not in rows[0] and 0 not in rows[11]  # an inserted phrase is not a substitution: "a red circle" holds
    assert 9 not in caption_neighbours(captions, max_edits=2, max_phrase_words=3)[5]  # "to the left of": 4 words
    assert all(i not in row and row == sorted(set(row)) for i, row in enumerate(rows))
    # symmetric, and a superset of the same-length neighbours
    assert all(i in rows[j] for i, row in enumerate(rows) for j in row)
    assert all(set(a) <= set(b) for a, b in zip(caption_neighbours(captions, max_edits=2), rows, strict=True))


class FixedEmbeddings(ContrastiveCLIP):
    """ContrastiveCLIP whose towers are lookup tables: ids and "pixels" index fixed unit vectors."""

    def __init__(self, text, images):
        torch.nn.Module.__init__(self)
        self.text, self.images = F.normalize(text, dim=-1), F.normalize(images, dim=-1)
        self.clip = torch.nn.Module()
        self.clip.logit_scale = torch.nn.Parameter(torch.tensor(0.0))

    def embed_text(self, input_ids):
        return self.text[input_ids]

    def embed_images(self, pixels):
        return self.images[pixels]


def test_hard_negatives_enter_only_the_image_to_caption_loss():
    torch.manual_seed(0)
    model = FixedEmbeddings(torch.randn(5, 8), torch.randn(3, 8))
    ids, pixels, caption_ids = torch.tensor([0, 1, 2]), torch.tensor([0, 1, 2]), torch.tensor([10, 11, 12])
    plain = model(ids, pixels, caption_ids)
    logits = model.images @ model.text[:3].T
    expected = (F.cross_entropy(logits, torch.arange(3)) + F.cross_entropy(logits.T, torch.arange(3))) / 2
    torch.testing.assert_close(plain, expected)

    negatives, negative_caption_ids = torch.tensor([3, 4, 3]), torch.tensor([20, 21, 20])
    with_negatives = model(ids, pixels, caption_ids, negatives, negative_caption_ids)
    wide = model.images @ model.text[torch.tensor([0, 1, 2, 3, 4, 3])].T
    expected = (F.cross_entropy(wide, torch.arange(3)) + F.cross_entropy(logits.T, torch.arange(3))) / 2
    torch.testing.assert_close(with_negatives, expected)
    assert with_negatives > plain


def test_a_negative_that_is_another_rows_caption_counts_as_its_positive():
    torch.manual_seed(0)
    model = FixedEmbeddings(torch.randn(3, 8), torch.randn(2, 8))
    # row 0's negative is row 1's caption (id 11): for image 1 that column is a second positive
    loss = model(torch.tensor([0, 1]), torch.tensor([0, 1]), torch.tensor([10, 11]), torch.tensor([1, 2]), torch.tensor([11, 12]))
    wide = model.images @ model.text[torch.tensor([0, 1, 1, 2])].T
    targets = torch.tensor([[1.0, 0, 0, 0], [0, 0.5, 0.5, 0]])
    square = model.images @ model.text[:2].T
    expected = (F.cross_entropy(wide, targets) + F.cross_entropy(square.T, torch.eye(2))) / 2
    torch.testing.assert_close(loss, expected)


def test_hard_negative_images_enter_only_the_caption_to_image_loss():
    torch.manual_seed(0)
    model = FixedEmbeddings(torch.randn(3, 8), torch.randn(5, 8))
    ids, pixels, caption_ids = torch.tensor([0, 1, 2]), torch.tensor([0, 1, 2]), torch.tensor([10, 11, 12])
    # image 3 shows caption 20; image 4 shows caption 12, so for row 2 it is a second positive
    loss = model(ids, pixels, caption_ids, negative_pixels=torch.tensor([3, 4, 3]),
                 negative_pixel_caption_ids=torch.tensor([20, 12, 20]))
    square = model.images[:3] @ model.text.T
    wide = model.text @ model.images[torch.tensor([0, 1, 2, 3, 4, 3])].T
    targets = torch.tensor([[1.0, 0, 0, 0, 0, 0], [0, 1, 0, 0, 0, 0], [0, 0, 0.5, 0, 0.5, 0]])
    expected = (F.cross_entropy(square, torch.arange(3)) + F.cross_entropy(wide, targets)) / 2
    torch.testing.assert_close(loss, expected)


def test_hard_negative_images_need_hard_negative_edits():
    from training.train_clip import parse_args

    with pytest.raises(SystemExit):
        parse_args(["--train_data_dir", "d", "--output_dir", "o", "--hard_negative_images"])
    with pytest.raises(SystemExit):
        parse_args(["--train_data_dir", "d", "--output_dir", "o", "--hard_negative_phrase_words", "4"])
    args = parse_args(["--train_data_dir", "d", "--output_dir", "o", "--hard_negative_images", "--hard_negative_edits", "2"])
    assert args.hard_negative_images


@pytest.mark.parametrize("max_edits", [0, -1])
def test_no_neighbours_without_edits_except_reorderings(max_edits):
    rows = caption_neighbours(CAPTIONS, max_edits)
    assert rows[5] == [7] and rows[0] == []


def test_neighbour_table_mining_keeps_the_closest_neighbours():
    from training.train_clip import NeighbourTable

    rows = caption_neighbours(CAPTIONS, max_edits=2)
    table = NeighbourTable(rows)
    generator = torch.Generator().manual_seed(0)
    own = torch.tensor([5] * 200 + [8] * 50)
    drawn = table.draw(own, generator)
    assert set(drawn[:200].tolist()) == set(rows[5])  # uniformly among all neighbours before mining
    assert all(0 <= d < len(CAPTIONS) for d in drawn[200:].tolist())  # caption 8 has none: a random caption
    # text embeddings in which caption 7 (the reordered 5) is closest to 5, caption 6 next
    text = torch.eye(len(CAPTIONS))
    text[7, 5], text[6, 5] = 5.0, 2.0
    table.mine(F.normalize(text, dim=-1), k=1)
    assert set(table.draw(own[:200], generator).tolist()) == {7}
    table.mine(F.normalize(text, dim=-1), k=2)
    assert set(table.draw(own[:200], generator).tolist()) == {6, 7}
    assert table.rows == rows  # validation still sees every neighbour


def test_mining_and_position_init_arguments():
    from training.train_clip import parse_args

    base = ["--train_data_dir", "d", "--output_dir", "o"]
    with pytest.raises(SystemExit):
        parse_args(base + ["--hard_negative_top_k", "2"])  # nothing to rank without --hard_negative_edits
    with pytest.raises(SystemExit):
        parse_args(base + ["--hard_negative_edits", "2", "--hard_negative_top_k", "2", "--hard_negative_mining_steps", "0"])
    args = parse_args(base + ["--hard_negative_edits", "2", "--hard_negative_top_k", "2"])
    assert args.hard_negative_top_k == 2 and args.position_embedding_std is None


def test_trimmed_padding_leaves_the_text_embeddings_unchanged():
    from transformers import CLIPModel, CLIPConfig, CLIPTextConfig, CLIPVisionConfig

    from training.common import tokenize
    from training.train_clip import build_clip_tokenizer, trim_padding, words_of

    torch.manual_seed(0)
    tokenizer = build_clip_tokenizer(sorted(words_of(CAPTIONS)), 24)
    ids, mask = tokenize(tokenizer, CAPTIONS)
    text = CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, projection_dim=32, num_hidden_layers=2,
        num_attention_heads=2, max_position_embeddings=24, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                              image_size=16, patch_size=8, projection_dim=32)
    clip = CLIPModel(CLIPConfig(text_config=text.to_dict(), vision_config=vision.to_dict(), projection_dim=32))
    model = ContrastiveCLIP(clip, None).eval()
    short, long = [0, 1, 2], [5, 3]
    batch = trim_padding({"input_ids": ids[short], "negative_input_ids": ids[long], "pixels": None}, mask[short + long].sum(1))
    width = int(mask[long].sum(1).max())
    assert batch["input_ids"].shape[1] == batch["negative_input_ids"].shape[1] == width < ids.shape[1]
    alone = trim_padding({"input_ids": ids[short]}, mask[short].sum(1))["input_ids"]
    assert alone.shape[1] == int(mask[short].sum(1).max()) < width
    with torch.no_grad():
        full = model.embed_text(ids)
        torch.testing.assert_close(model.embed_text(batch["input_ids"]), full[short], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(model.embed_text(batch["negative_input_ids"]), full[long], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(model.embed_text(alone), full[short], atol=1e-5, rtol=1e-5)
