"""Tokenizer goldens: the ids StableDiffusionPipeline feeds its text encoder, for awkward prompts."""

import os

from transformers import CLIPTokenizer

from .common import write_json

# Chosen to exercise normalisation (case, NFC, whitespace), the byte-level fallback (emoji, CJK),
# the BPE merges (long and rare words), special-token text, and truncation at 77.
PROMPTS = [
    "",
    "a photo of a cat",
    "a photograph of an astronaut riding a horse",
    "A Photo Of A Cat",
    "A PHOTO OF A CAT, HIGHLY DETAILED, 8K",
    "masterpiece, best quality, 1girl, solo, looking at viewer",
    "(masterpiece:1.2), [blurry], {colorful}, <lora:foo:0.8>",
    "portrait of a woman, by greg rutkowski and alphonse mucha, trending on artstation",
    "hello, world!!! ??? ... --- ;;; :::",
    "a/b\\c|d~e`f^g_h=i+j*k%l$m#n@o",
    "\"quoted text\" and 'single quotes'",
    "it's a dog's life; they're here, we'll see, I'd go",
    "it\u2019s a dog\u2019s life \u2018curly\u2019 \u201cdouble\u201d",
    "don't DON'T Don'T",
    "3 cats, 12 dogs, 1234567890, 3.14159, 1e10, -42, 50%",
    "2024-01-01 12:30:45",
    "version 1.5 vs v2.1, sd15, SDXL",
    "\U0001f431 cat emoji \U0001f436\U0001f525\u2728",
    "\U0001f468\u200d\U0001f469\u200d\U0001f467 family emoji with zero width joiners",
    "\u732b\u306e\u5199\u771f",
    "\u4e00\u53ea\u53ef\u7231\u7684\u5c0f\u732b\u5728\u8349\u5730\u4e0a",
    "\ud55c\uad6d\uc5b4 \ud14d\uc2a4\ud2b8",
    "\u0444\u043e\u0442\u043e\u0433\u0440\u0430\u0444\u0438\u044f \u043a\u043e\u0448\u043a\u0438",
    "\u03c6\u03c9\u03c4\u03bf\u03b3\u03c1\u03b1\u03c6\u03af\u03b1 \u03b3\u03ac\u03c4\u03b1\u03c2",
    "\u0635\u0648\u0631\u0629 \u0642\u0637\u0629",
    "caf\u00e9 na\u00efve r\u00e9sum\u00e9 \u00fcber se\u00f1or fa\u00e7ade",
    "cafe\u0301 with a combining acute accent",
    "CAF\u00c9 \u00c9T\u00c9 \u00d1AND\u00da",
    "Stra\u00dfe \u00e6sir \u00f8re \u0153uvre \u0131stanbul",
    "\ufb01ne \ufb02ower ligatures",
    "\uff21\uff22\uff23 full width letters \uff11\uff12\uff13",
    "a  cat   with    many     spaces",
    "  leading and trailing spaces  ",
    "a cat\non a\nnew line",
    "a cat\ton a\ttab",
    "mixed \t\n\r whitespace \u00a0 nbsp \u3000 ideographic space",
    "fish &amp; chips &lt;b&gt; &quot;bold&quot; &#39;x&#39;",
    "&nbsp;&copy;&reg; &#8217; &#x2019;",
    "<|startoftext|> literal special tokens <|endoftext|> in text",
    "<|endoftext|>",
    "supercalifragilisticexpialidocious antidisestablishmentarianism",
    "pneumonoultramicroscopicsilicovolcanoconiosis",
    "xyzzy qwertyuiop asdfghjkl zxcvbnm",
    "photorealistic hyperdetailed ultrasharp octane-render unreal-engine-5",
    "a red-haired, blue-eyed, left-handed person",
    "https://example.com/path?query=1&other=2#frag",
    "user@example.com #hashtag @mention",
    "\u00a9 \u00ae \u2122 \u00b0C \u00b1 \u00d7 \u00f7 \u2260 \u2264 \u2192 \u2022 \u2026",
    "\u266a\u266b music notes \u2665 hearts \u2605 stars",
    "a" * 100,
    "cat " * 80,
    "a very long prompt " + ", ".join(f"detail number {i}" for i in range(40)),
    ", ".join(["beautiful landscape", "mountains", "lake", "sunset", "clouds"] * 12),
    "one two three four five six seven eight nine ten " * 8,
    "exactly seventy five words " * 18 + "end",
    "token " * 75,
    "token " * 76,
    "a",
    " ",
    "\n",
    ".",
    "!!!",
    "A",
    "\u00e9",
    "\U0001f600",
    "The Quick Brown Fox Jumps Over The Lazy Dog 0123456789",
]

MAX_LENGTH = 77


def write_goldens(fixtures_dir, goldens_dir):
    """goldens/tokenizer.json: padded (pipeline) and raw ids for every prompt, for both pipelines
    (they share the tokenizer files, which is checked here)."""
    tokenizers = {
        name: CLIPTokenizer.from_pretrained(os.path.join(fixtures_dir, name, "tokenizer"))
        for name in ("tiny-sd", "tiny-sd-alt")
    }
    tokenizer = tokenizers["tiny-sd"]
    assert tokenizer.model_max_length == MAX_LENGTH
    cases = []
    for prompt in PROMPTS:
        # Exactly StableDiffusionPipeline.encode_prompt's call.
        padded = tokenizer(
            prompt, padding="max_length", max_length=tokenizer.model_max_length, truncation=True
        ).input_ids
        # The untruncated ids (the pipeline computes these to warn about truncation).
        raw = tokenizer(prompt, padding="longest").input_ids
        for other in tokenizers.values():
            assert other(prompt, padding="max_length", max_length=MAX_LENGTH, truncation=True).input_ids == padded
        assert len(padded) == MAX_LENGTH
        cases.append({"prompt": prompt, "input_ids": padded, "untruncated_ids": raw, "truncated": len(raw) > MAX_LENGTH})
    write_json(
        os.path.join(goldens_dir, "tokenizer.json"),
        {
            "description": "CLIPTokenizer (transformers 5, fast) ids for tiny-sd and tiny-sd-alt (same "
            "tokenizer files). input_ids: padding='max_length', max_length=77, truncation=True, as "
            "StableDiffusionPipeline calls it (padded with <|endoftext|> = 49407). untruncated_ids: "
            "no padding, no truncation.",
            "max_length": MAX_LENGTH,
            "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id,
            "cases": cases,
        },
    )
