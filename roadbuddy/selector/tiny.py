"""A tiny random-weight SigLIP (or SigLIP 2 NaFlex) checkpoint, built from a config, for tests and the tiny task.

    write_tiny_selector(DIR)                        # model_type siglip: 32 px frames, 8 px patches
    write_tiny_selector(DIR, model_type="siglip2")  # NaFlex: at most 16 patches, the frame's aspect kept

Real files, loaded like a published checkpoint (roadbuddy.selector.model.load_selector): config.json,
model.safetensors, tokenizer.json with its config, preprocessor_config.json. The tokenizer is a byte-level
BPE (any text encodes: every byte is in its alphabet) with SigLIP 2's lowercasing, trained on Vietnamese
traffic questions so the words they use are single tokens or few; the siglip2 one is SigLIP 2's own tokenizer
class (byte fallback) with a vocabulary trained the same way. The logit scale and bias start where
SigLIP's paper starts them (10 and -10), so the few positives among many negatives do not swamp the loss.
"""
from __future__ import annotations

import math
from pathlib import Path

PAD, EOS, UNK = "<pad>", "</s>", "<unk>"
TEXT_LENGTH = 24  # tokens per question (the text tower's positions)

# The words the tiny task's questions and the real train questions use, enough for BPE merges.
_CORPUS = [
    "Video đang có đèn giao thông màu gì? Đèn giao thông trong video có màu đỏ, đúng hay sai?",
    "Đèn giao thông trong video có màu xanh, đúng hay sai? Đèn giao thông trong video có màu vàng, đúng hay sai?",
    "Biển báo trong video có hình gì? Trong video có biển báo hình tròn, đúng hay sai?",
    "Trong video có biển báo hình tam giác, đúng hay sai? Hình chữ nhật. Không có biển báo. Không có đèn.",
    "Trong video, đối tượng nào xuất hiện đầu tiên? Video được quay vào thời điểm nào trong ngày?",
    "Phần đường trong video cho phép các phương tiện đi theo hướng nào khi đến nút giao?",
    "Biển cấm quay đầu, biển giới hạn tốc độ 80 km/h, biển chỉ dẫn, làn đường, xe máy, ô tô, người đi bộ.",
    "Nếu xe ô tô đang chạy ở làn ngoài cùng bên phải trong video này thì xe đó chỉ được phép rẽ phải?",
]


def build_tokenizer(vocab_size: int = 400):
    """A byte-level BPE tokenizer that lowercases, ends a text with </s> and pads with <pad>."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.Sequence([normalizers.NFC(), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[PAD, EOS, UNK], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([line.lower() for line in _CORPUS] * 4, trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(single=f"$A {EOS}", special_tokens=[(EOS, tok.token_to_id(EOS))])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=PAD, eos_token=EOS, unk_token=UNK,
                                   model_max_length=TEXT_LENGTH)


def build_naflex_tokenizer(vocab_size: int = 400):
    """SigLIP 2's tokenizer class (Gemma's pipeline: lowercase, spaces as "▁", BPE with byte fallback) with a
    small vocabulary trained here: AutoTokenizer rebuilds that pipeline for any siglip2 checkpoint."""
    import json

    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
    from transformers.models.siglip2.tokenization_siglip2 import Siglip2Tokenizer

    specials = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>"] + [f"<0x{b:02X}>" for b in range(256)]
    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
    tok.normalizer = normalizers.Sequence([normalizers.Lowercase(), normalizers.Replace(" ", "▁")])
    tok.pre_tokenizer = pre_tokenizers.Split("▁", behavior="merged_with_next")  # merges learned within words
    trainer = trainers.BpeTrainer(vocab_size=len(specials) + vocab_size, special_tokens=specials, show_progress=False)
    tok.train_from_iterator(_CORPUS * 4, trainer=trainer)
    bpe = json.loads(tok.to_str())["model"]
    return Siglip2Tokenizer(vocab=bpe["vocab"], merges=[tuple(m) for m in bpe["merges"]],
                            model_max_length=TEXT_LENGTH)


def tiny_config(tokenizer, *, model_type: str = "siglip", image_size: int = 32, patch_size: int = 8,
                hidden: int = 32, layers: int = 2, max_num_patches: int = 16):
    """SiglipConfig (or Siglip2Config) with two small towers sharing one width."""
    text = {"vocab_size": len(tokenizer), "hidden_size": hidden, "intermediate_size": 2 * hidden,
            "num_hidden_layers": layers, "num_attention_heads": 2, "max_position_embeddings": TEXT_LENGTH,
            "projection_size": hidden, "pad_token_id": tokenizer.pad_token_id, "bos_token_id": None,
            "eos_token_id": tokenizer.eos_token_id}
    vision = {"hidden_size": hidden, "intermediate_size": 2 * hidden, "num_hidden_layers": layers,
              "num_attention_heads": 2, "patch_size": patch_size}
    if model_type == "siglip2":
        from transformers import Siglip2Config

        return Siglip2Config(text_config=text, vision_config={**vision, "num_patches": max_num_patches})
    if model_type != "siglip":
        raise ValueError(f"model_type must be siglip or siglip2, got {model_type!r}")
    from transformers import SiglipConfig

    return SiglipConfig(text_config=text, vision_config={**vision, "image_size": image_size})


def image_processor(model_type: str = "siglip", *, image_size: int = 32, patch_size: int = 8,
                    max_num_patches: int = 16):
    """The checkpoint's image processor: SigLIP's fixed square size, or NaFlex's patch budget (the PIL backends:
    what loads everywhere; AutoImageProcessor picks the backend when the folder is read)."""
    if model_type == "siglip2":
        from transformers.models.siglip2.image_processing_pil_siglip2 import Siglip2ImageProcessorPil

        return Siglip2ImageProcessorPil(patch_size=patch_size, max_num_patches=max_num_patches)
    from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil

    return SiglipImageProcessorPil(size={"height": image_size, "width": image_size})


def write_tiny_selector(directory: Path | str, *, seed: int = 0, model_type: str = "siglip", **config) -> Path:
    """Write a random-weight tiny selector checkpoint to `directory` (created) and return it."""
    import torch
    from transformers import Siglip2Model, SiglipModel

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = build_naflex_tokenizer() if model_type == "siglip2" else build_tokenizer()
    cfg = tiny_config(tokenizer, model_type=model_type, **config)
    torch.manual_seed(seed)
    model = (Siglip2Model if model_type == "siglip2" else SiglipModel)(cfg).eval()
    with torch.no_grad():
        model.logit_scale.fill_(math.log(10.0))
        model.logit_bias.fill_(-10.0)
    model.save_pretrained(directory, safe_serialization=True)
    tokenizer.save_pretrained(directory)
    sizes = {k: v for k, v in config.items() if k in ("image_size", "patch_size", "max_num_patches")}
    image_processor(model_type, **sizes).save_pretrained(directory)
    return directory
