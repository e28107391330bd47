"""A tiny randomly initialised LLaVA (CLIP vision + Llama text) saved as a transformers folder,
with a word-level tokenizer, a CLIP image processor and a chat template: what the caption tool
loads, at a size that generates in milliseconds. Its captions are gibberish."""

from __future__ import annotations

WORDS = ["<pad>", "<unk>", "<s>", "</s>", "<image>", "USER:", "ASSISTANT:", *(
    "a man woman in red blue shirt trousers with bag describe the person this image one "
    "sentence gender age upper lower clothing shoes and any other accessories").split()]
CHAT = ("{% for m in messages %}USER: {% for c in m['content'] %}{% if c['type'] == 'image' %}"
        "<image> {% else %}{{ c['text'] }}{% endif %}{% endfor %}{% endfor %}"
        "{% if add_generation_prompt %} ASSISTANT:{% endif %}")


def save_tiny_llava(folder: str) -> None:
  import torch
  import transformers as T
  from tokenizers import Tokenizer, models, pre_tokenizers

  vocab = {w: i for i, w in enumerate(WORDS)}
  tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
  tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
  fast = T.PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                                   pad_token="<pad>", unk_token="<unk>",
                                   extra_special_tokens={"image_token": "<image>"})
  image_processor = T.CLIPImageProcessor(size={"shortest_edge": 16},
                                         crop_size={"height": 16, "width": 16})
  processor = T.LlavaProcessor(image_processor=image_processor, tokenizer=fast, patch_size=8,
                               vision_feature_select_strategy="default", chat_template=CHAT,
                               num_additional_image_tokens=1)
  config = T.LlavaConfig(
      vision_config=T.CLIPVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                       num_attention_heads=2, image_size=16, patch_size=8),
      text_config=T.LlamaConfig(vocab_size=len(WORDS), hidden_size=16, intermediate_size=32,
                                num_hidden_layers=1, num_attention_heads=2,
                                num_key_value_heads=2, max_position_embeddings=128,
                                bos_token_id=2, eos_token_id=3, pad_token_id=0),
      image_token_index=vocab["<image>"], vision_feature_layer=-1,
      vision_feature_select_strategy="default")
  torch.manual_seed(0)
  model = T.LlavaForConditionalGeneration(config)
  # Never the special tokens (an early end-of-text would give empty captions): words only.
  model.generation_config.suppress_tokens = [vocab[w] for w in WORDS[:7]]
  model.save_pretrained(folder)
  processor.save_pretrained(folder)
