"""PLIP and CONCH loaders, end to end on tiny random-initialised models saved in the real layouts.

No weights can be downloaded here, so each test builds a small model of the same architecture,
writes it the way the real weights are distributed (PLIP: a ``save_pretrained`` folder with
config, weights, tokenizer and preprocessor files; CONCH: a ``pytorch_model.bin`` state dict with
the checkpoint's key names plus the byte-level BPE tokenizer JSON) and loads it through the
public functions.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

from spotwhisper.encoders.clip_models import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, WeightsError, load_conch, load_plip
from spotwhisper.encoders.conch_arch import ConchArch, ConchModule, conch_caption_parts, conch_checkpoint_shapes

torch.set_num_threads(1)

CORPUS = [
    "an H&E image of invasive carcinoma.",
    "a histopathology image of lymphocytes and stroma.",
    "adipose tissue with fat cells.",
    "ductal carcinoma in situ",
    "normal breast glands and ducts",
]
LONG_TEXT = "invasive carcinoma with lymphocytes and stroma " * 40


# ------------------------------------------------------------------------------------ builders
def build_tiny_plip(folder, seed: int = 0):
    """A tiny transformers CLIP saved like ``vinid/plip`` (config, safetensors, tokenizer, processor)."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPTokenizer

    chars = sorted(pre_tokenizers.ByteLevel.alphabet())
    merges = [("i", "n"), ("a", "n"), ("t", "i"), ("o", "n</w>"), ("in", "v"), ("c", "a")]
    vocab = chars + [c + "</w>" for c in chars] + ["".join(m) for m in merges] + ["<|startoftext|>", "<|endoftext|>"]
    tok = CLIPTokenizer(vocab={t: i for i, t in enumerate(vocab)}, merges=merges)
    cfg = CLIPConfig(
        text_config={
            "vocab_size": len(vocab),
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "max_position_embeddings": 77,
            "bos_token_id": tok.bos_token_id,
            "eos_token_id": tok.eos_token_id,
            "pad_token_id": tok.pad_token_id,
        },
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "image_size": 32,
            "patch_size": 16,
        },
        projection_dim=16,
    )
    torch.manual_seed(seed)
    CLIPModel(cfg).save_pretrained(folder)
    tok.save_pretrained(folder)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder


def build_conch_tokenizer(path) -> Tokenizer:
    """A small byte-level BPE laid out like ``conch_byte_level_bpe_uncased.json``."""
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.Sequence([normalizers.NFD(), normalizers.StripAccents(), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<pad>", "<start_of_text>", "<end_of_text>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS * 3, trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="<start_of_text> $A <end_of_text>", special_tokens=[("<start_of_text>", 1), ("<end_of_text>", 2)]
    )
    tok.save(str(path))
    return tok


def tiny_conch_arch(vocab_size: int) -> ConchArch:
    return ConchArch(
        embed_dim=16,
        embed_dim_caption=32,
        image_size=32,
        patch_size=16,
        vision_width=32,
        vision_layers=2,
        vision_heads=2,
        attn_pooler_heads=2,
        n_queries_caption=4,
        context_length=24,
        vocab_size=vocab_size,
        text_width=32,
        text_heads=2,
        text_layers=2,
        decoder_layers=1,
    )


def build_tiny_conch(folder, seed: int = 0):
    """Tiny CONCH: ``pytorch_model.bin`` with every checkpoint key (incl. decoder) + tokenizer JSON."""
    tok = build_conch_tokenizer(folder / "conch_byte_level_bpe_uncased.json")
    arch = tiny_conch_arch(tok.get_vocab_size())
    torch.manual_seed(seed)
    sd = dict(ConchModule(arch).state_dict())
    for prefix, part in conch_caption_parts(arch).items():
        sd.update({f"{prefix}.{k}": torch.randn_like(v) for k, v in part.state_dict().items()})
    torch.save(sd, folder / "pytorch_model.bin")
    return folder / "pytorch_model.bin", arch, sd


@pytest.fixture(scope="module")
def plip_dir(tmp_path_factory):
    return build_tiny_plip(tmp_path_factory.mktemp("plip"))


@pytest.fixture(scope="module")
def conch_ckpt(tmp_path_factory):
    return build_tiny_conch(tmp_path_factory.mktemp("conch"))


def _images(n=3, h=40, w=52, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), dtype=np.uint8)


def _check_model_contract(model, caplog):
    x = model.preprocess(_images())
    assert x.shape == (3, 3, model.image_size, model.image_size) and x.dtype == torch.float32
    img = model.encode_image(x)
    assert img.shape == (3, model.embed_dim)
    assert torch.allclose(img.norm(dim=1), torch.ones(3), atol=1e-5)
    assert torch.equal(model.encode_image(x), img)  # same image, same embedding
    assert not torch.allclose(img[0], img[1])  # different images differ
    with caplog.at_level(logging.WARNING):
        txt = model.encode_text(["invasive carcinoma", LONG_TEXT, "adipose tissue"])
    assert txt.shape == (3, model.embed_dim)
    assert torch.allclose(txt.norm(dim=1), torch.ones(3), atol=1e-5)
    assert "truncated" in caplog.text
    assert torch.allclose(model.encode_text(["invasive carcinoma"])[0], txt[0], atol=1e-5)  # batch-independent
    assert model.encode_text([]).shape == (0, model.embed_dim)
    assert np.isfinite(model.logit_scale) and model.logit_scale > 1


# ---------------------------------------------------------------------------- published facts
def test_published_constants():
    # OpenAI CLIP normalisation: PathologyFoundation/plip reproducibility/embedders/transform.py
    # (Normalize((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711))) and
    # mahmoodlab/CONCH conch/open_clip_custom/constants.py (OPENAI_DATASET_MEAN/STD, used by factory.py)
    assert OPENAI_CLIP_MEAN == (0.48145466, 0.4578275, 0.40821073)
    assert OPENAI_CLIP_STD == (0.26862954, 0.26130258, 0.27577711)
    # mahmoodlab/CONCH conch/open_clip_custom/model_configs/conch_ViT-B-16.json
    a = ConchArch()
    assert (a.embed_dim, a.embed_dim_caption, a.image_size, a.patch_size) == (512, 768, 448, 16)
    assert (a.attn_pooler_heads, a.n_queries_caption, a.context_length, a.vocab_size) == (8, 256, 128, 32007)
    assert (a.text_width, a.text_heads, a.text_layers, a.decoder_layers) == (768, 12, 12, 12)
    # coca_model.CoCaVisionCfg defaults (ViT-B): 12 layers, width 768, 12 heads
    assert (a.vision_width, a.vision_layers, a.vision_heads, a.mlp_ratio) == (768, 12, 12, 4.0)


def test_conch_checkpoint_keys_match_the_published_architecture():
    shapes = conch_checkpoint_shapes(ConchArch())
    # names and shapes implied by conch/open_clip_custom (coca_model.py, vision_tower.py, transformer.py)
    expected = {
        "visual.trunk.cls_token": (1, 1, 768),
        "visual.trunk.pos_embed": (1, 785, 768),  # 28² + CLS
        "visual.trunk.patch_embed.proj.weight": (768, 3, 16, 16),
        "visual.trunk.blocks.11.attn.qkv.weight": (2304, 768),
        "visual.trunk.norm.weight": (768,),
        "visual.attn_pool_contrast.query": (1, 512),
        "visual.attn_pool_contrast.attn.k_proj_weight": (512, 768),
        "visual.attn_pool_contrast.ln_k.weight": (768,),
        "visual.ln_contrast.weight": (512,),
        "visual.proj_contrast": (512, 512),
        "visual.attn_pool_caption.query": (256, 768),
        "visual.ln_caption.weight": (768,),
        "text.token_embedding.weight": (32007, 768),
        "text.positional_embedding": (128, 768),
        "text.cls_emb": (768,),
        "text.transformer.resblocks.11.attn.in_proj_weight": (2304, 768),
        "text.ln_final.weight": (768,),
        "text.text_projection": (768, 512),
        "text_decoder.resblocks.11.mlp.c_fc.weight": (3072, 768),
        "text_decoder.cross_attn.11.ln_1_kv.weight": (768,),
        "text_decoder.text_projection": (768, 32007),
        "logit_scale": (),
    }
    for key, shape in expected.items():
        assert shapes.get(key) == shape, key
    assert not any(k.endswith("attn_mask") for k in shapes)  # non-persistent buffers are not saved


# ------------------------------------------------------------------------------------------ PLIP
def test_plip_end_to_end(plip_dir, caplog):
    model = load_plip(str(plip_dir))
    assert (model.name, model.embed_dim, model.image_size, model.context_length) == ("plip", 16, 32, 77)
    assert model.mean == OPENAI_CLIP_MEAN and model.std == OPENAI_CLIP_STD
    _check_model_contract(model, caplog)
    saved = load_file(str(plip_dir / "model.safetensors"))
    own = model.module.state_dict()
    assert saved and all(torch.equal(own[k], v) for k, v in saved.items())


def test_preprocess_normalises_with_published_constants(plip_dir):
    model = load_plip(str(plip_dir))
    grey = np.full((1, 64, 80, 3), 128, dtype=np.uint8)  # resized + centre-cropped, values unchanged
    x = model.preprocess(grey)
    assert x.shape == (1, 3, 32, 32)
    expect = (128 / 255 - np.asarray(OPENAI_CLIP_MEAN)) / np.asarray(OPENAI_CLIP_STD)
    assert np.allclose(x[0].mean(dim=(1, 2)).numpy(), expect, atol=1e-4)
    with pytest.raises(ValueError, match="uint8"):
        model.preprocess(grey.astype(np.float32))
    with pytest.raises(ValueError, match="expected a"):
        model.encode_image(torch.zeros(1, 32, 32))


def test_plip_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_plip(str(tmp_path / "missing"))
    with pytest.raises(WeightsError, match="no config.json"):
        load_plip(str(tmp_path))
    with pytest.raises(WeightsError, match="download"):
        load_plip("nobody/not-a-cached-model")


# ----------------------------------------------------------------------------------------- CONCH
def test_conch_end_to_end(conch_ckpt, caplog):
    path, arch, saved = conch_ckpt
    model = load_conch(path, arch=arch)
    assert (model.name, model.embed_dim, model.image_size, model.context_length) == ("conch", 16, 32, 24)
    assert model.mean == OPENAI_CLIP_MEAN and model.std == OPENAI_CLIP_STD
    _check_model_contract(model, caplog)
    own = model.module.state_dict()
    assert all(torch.equal(own[k], saved[k]) for k in own)  # round trip of every retrieval weight
    assert set(saved) - set(own) == {
        k for k in saved if k.startswith(("text_decoder.", "visual.attn_pool_caption.", "visual.ln_caption."))
    }
    assert np.isclose(model.logit_scale, np.exp(saved["logit_scale"].item()))
    # CONCH's tokenize(): 127 tokens (here context-1), <start_of_text> … <end_of_text>, <pad> = 0 fill
    ids = model.tokenizer(
        ["adipose tissue"], max_length=arch.context_length - 1, padding="max_length", truncation=True
    )["input_ids"][0]
    assert len(ids) == arch.context_length - 1 and ids[0] == 1 and 2 in ids and ids[-1] == 0


def test_conch_towers_match_reference_formulation(conch_ckpt):
    """Our open_clip/timm-built towers equal CONCH's own forward (written out from coca_model.py,
    transformer.py and vision_tower.py: CLS mask padded on the left of the last row only,
    sequence-first attentional pooler)."""
    path, arch, _ = conch_ckpt
    model = load_conch(path, arch=arch)
    text = model.module.text
    ids = model.tokenizer(
        ["invasive carcinoma", "fat"],
        max_length=arch.context_length - 1,
        padding="max_length",
        truncation=True,
        return_tensors="pt",
    )["input_ids"]
    with torch.inference_mode():
        x = torch.cat([text.token_embedding(ids), text.cls_emb.expand(len(ids), 1, -1)], dim=1)
        n = x.shape[1]
        cls_mask = F.pad((ids != arch.pad_id).unsqueeze(1).float(), (1, 0, ids.shape[1], 0), value=1.0).bool()
        add = torch.zeros(cls_mask.shape).masked_fill_(~cls_mask, float("-inf")).repeat_interleave(arch.text_heads, 0)
        causal = torch.full((n, n), float("-inf")).triu_(1)
        h = text.transformer(x + text.positional_embedding[:n], attn_mask=causal[None] + add)
        ref_text = F.normalize(text.ln_final(h[:, -1]) @ text.text_projection, dim=-1)
        visual = model.module.visual
        imgs = model.preprocess(_images(2))
        tokens = visual.trunk.forward_features(imgs)
        pool = visual.attn_pool_contrast
        mha = torch.nn.MultiheadAttention(
            arch.embed_dim, arch.attn_pooler_heads, kdim=arch.vision_width, vdim=arch.vision_width
        )  # sequence-first, as in CONCH
        mha.load_state_dict(pool.attn.state_dict())
        k = pool.ln_k(tokens).permute(1, 0, 2)
        q = pool.ln_q(pool.query).unsqueeze(1).repeat(1, len(imgs), 1)
        pooled = mha(q, k, k, need_weights=False)[0].permute(1, 0, 2)[:, 0]
        ref_img = F.normalize(visual.ln_contrast(pooled) @ visual.proj_contrast, dim=-1)
    assert torch.allclose(model.encode_text(["invasive carcinoma", "fat"]), ref_text, atol=1e-5)
    assert torch.allclose(model.encode_image(imgs), ref_img, atol=1e-5)


def test_conch_errors(conch_ckpt, tmp_path):
    path, arch, saved = conch_ckpt
    tok = path.parent / "conch_byte_level_bpe_uncased.json"
    with pytest.raises(FileNotFoundError, match="gated"):
        load_conch(tmp_path / "missing.bin", arch=arch)
    junk = tmp_path / "junk.bin"
    junk.write_text("not a checkpoint")
    with pytest.raises(WeightsError, match="not a readable"):
        load_conch(junk, arch=arch, tokenizer=tok)
    bad = dict(saved)
    del bad["text.cls_emb"]
    bad["visual.extra_head.weight"] = torch.zeros(2)
    bad["visual.proj_contrast"] = torch.zeros(3, 3)
    torch.save(bad, tmp_path / "bad.bin")
    with pytest.raises(WeightsError) as err:
        load_conch(tmp_path / "bad.bin", arch=arch, tokenizer=tok)
    msg = str(err.value)
    assert "missing keys: text.cls_emb" in msg and "unexpected keys: visual.extra_head.weight" in msg
    assert "visual.proj_contrast (3, 3) vs (16, 16)" in msg
    with pytest.raises(WeightsError, match="missing keys"):
        load_conch(path)  # the tiny checkpoint against the full ViT-B-16 architecture
    (tmp_path / "alone").mkdir()
    torch.save(saved, tmp_path / "alone" / "pytorch_model.bin")
    with pytest.raises(FileNotFoundError, match="tokenizer"):
        load_conch(tmp_path / "alone", arch=arch)  # a folder works, but the tokenizer is not beside it
    model = load_conch(tmp_path / "alone", arch=arch, tokenizer=tok)
    assert model.weights.endswith("pytorch_model.bin")
