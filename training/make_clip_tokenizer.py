"""Build CLIP's BPE tokenizer files (the HF `openai/clip-vit-large-patch14` layout) for single-file checkpoints.

Single-file Stable Diffusion checkpoints carry no tokenizer; diffusers downloads openai/clip-vit-large-patch14's.
This script rebuilds its vocab.json / merges.txt exactly as transformers' CLIP conversion did, from OpenAI's
`bpe_simple_vocab_16e6.txt.gz` (shipped inside open-clip-torch):

    pip install --no-deps --target /tmp/oc open-clip-torch      # only for the .gz; nothing of it is committed
    python3 training/make_clip_tokenizer.py --bpe /tmp/oc/open_clip/bpe_simple_vocab_16e6.txt.gz

  vocab = the 256 byte symbols (GPT-2's bytes_to_unicode order), the same with `</w>`, then one token per merge of
  merges[1 : 49152 - 256 - 2 + 1] (48,894 merges), then <|startoftext|> (49406) and <|endoftext|> (49407);
  merges.txt = "#version: 0.2" + those merges.

It writes models/clip-tokenizer/ (pads with <|endoftext|>: SD-1.x, SD-XL's tokenizer; SD-2.x's tokenizer and SD-XL's
tokenizer_2 are the same vocabulary padding with "!" (id 0), as on the Hub, which atedm gets by overriding pad_token
rather than shipping the 1.4 MB twice), and test/golden/single-file/tokenizer_ids.json: transformers' CLIPTokenizer
ids for a few tricky strings, with each padding ("clip-tokenizer", and "openclip-tokenizer" = pad_token "!").
"""

import argparse
import gzip
import json
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def bytes_to_unicode():
    """GPT-2's / CLIP's reversible byte -> printable-unicode map (openai/CLIP simple_tokenizer.py)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(2**8):
        if b not in bs:
            bs.append(b)
            cs.append(2**8 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def added(content):
    return {"__type": "AddedToken", "content": content, "lstrip": False, "normalized": True, "rstrip": False, "single_word": False}


def special_map(pad):
    strip = lambda t: {k: v for k, v in t.items() if k != "__type"}  # noqa: E731 (special_tokens_map.json has no __type)
    return {"bos_token": strip(added("<|startoftext|>")), "eos_token": strip(added("<|endoftext|>")), "pad_token": pad,
            "unk_token": strip(added("<|endoftext|>"))}


def tokenizer_config(pad):
    return {"add_prefix_space": False, "bos_token": added("<|startoftext|>"), "clean_up_tokenization_spaces": True,
            "do_lower_case": True, "eos_token": added("<|endoftext|>"), "errors": "replace", "model_max_length": 77,
            "pad_token": pad, "tokenizer_class": "CLIPTokenizer", "unk_token": added("<|endoftext|>")}


STRINGS = [
    "a photo of a cat",
    "A PHOTO of a Cat!!",
    "hour!! what a day!",
    "it's 2024... don't stop, you'll see; I'm here & we'd go",
    "  multiple   spaces\tand\nnewlines  ",
    "café naïve résumé Ångström",
    "emoji 🐱🚀 and symbols ©®™ ½",
    "日本語のテキスト 中文 한국어",
    "<|startoftext|>inside<|endoftext|> tokens",
    "hello,world;foo:bar--baz__qux",
    "1234567890 3.14159 1e-5",
    " ".join(f"word{i}" for i in range(60)),
]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bpe", required=True, help="open_clip's bpe_simple_vocab_16e6.txt.gz")
    args = ap.parse_args()
    lines = gzip.open(args.bpe).read().decode("utf-8").split("\n")
    merges = [tuple(m.split()) for m in lines[1 : 49152 - 256 - 2 + 1]]
    byte_symbols = list(bytes_to_unicode().values())
    vocab = byte_symbols + [v + "</w>" for v in byte_symbols] + ["".join(m) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    assert len(vocab) == 49408 and len(set(vocab)) == 49408
    encoder = {t: i for i, t in enumerate(vocab)}
    d = os.path.join(ROOT, "models", "clip-tokenizer")
    pad = "<|endoftext|>"
    if True:
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, "vocab.json"), "w", encoding="utf-8") as f:
            json.dump(encoder, f, ensure_ascii=False, separators=(",", ":"))
        with open(os.path.join(d, "merges.txt"), "w", encoding="utf-8") as f:
            f.write("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
        with open(os.path.join(d, "special_tokens_map.json"), "w") as f:
            json.dump(special_map(pad), f, indent=2)
        with open(os.path.join(d, "tokenizer_config.json"), "w") as f:
            json.dump(tokenizer_config(pad), f, indent=2)

    from transformers import CLIPTokenizer

    golden = {"strings": STRINGS}
    plain = CLIPTokenizer(os.path.join(d, "vocab.json"), os.path.join(d, "merges.txt"))
    for folder, overrides in (("clip-tokenizer", {}), ("openclip-tokenizer", {"pad_token": "!"})):
        tok = CLIPTokenizer.from_pretrained(d, **overrides)
        ids = [tok(s).input_ids for s in STRINGS]
        padded = [tok(s, padding="max_length", max_length=77, truncation=True).input_ids for s in STRINGS]
        if folder == "clip-tokenizer":
            assert ids == [plain(s).input_ids for s in STRINGS], "from_pretrained and CLIPTokenizer(vocab, merges) differ"
        golden[folder] = {"input_ids": ids, "padded": padded, "pad_token_id": tok.pad_token_id}
    assert golden["clip-tokenizer"]["input_ids"][0] == [49406, 320, 1125, 539, 320, 2368, 49407]
    with open(os.path.join(ROOT, "test", "golden", "single-file", "tokenizer_ids.json"), "w", encoding="utf-8") as f:
        json.dump(golden, f, ensure_ascii=False)
        f.write("\n")
    print("vocab", len(vocab), "merges", len(merges), "pad ids", {k: v["pad_token_id"] for k, v in golden.items() if k != "strings"})


if __name__ == "__main__":
    main()
