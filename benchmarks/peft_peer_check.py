"""Peer check: HF PEFT LoRA on the same MiniLM files, split and budget.

Shows that the LoRA baseline and AdaLink in benchmarks/evidence.py are in
the range a user gets from the tool they already know. Same MiniLM
checkpoint (loaded offline by transformers from the folder keras-adalink
uses), the library's fixed Rotten Tomatoes split, first 1,500 training
examples, 3 epochs, batch 32, sequence length 48, mean-pooled linear head,
Adam with the same warmup + rsqrt-decay schedule, LoRA rank 4 on query and
value with alpha = rank (scale 1, as Keras' `enable_lora`), no LoRA dropout,
biases frozen; peak learning rate = the one evidence.py tuned for its LoRA.

    .venv/bin/pip install transformers peft   # not library dependencies
    .venv/bin/python benchmarks/peft_peer_check.py

Writes results/peft_peer_check.{json,md}.
"""

import argparse
import json
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("KERAS_BACKEND", "torch")

import numpy as np  # noqa: E402
import peft  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402

from keras_adalink import datasets  # noqa: E402

RESULTS = os.path.join(os.path.dirname(__file__), "results")
# PEER_TRAIN shrinks the training set for a quick check of the script.
TRAIN = int(os.environ.get("PEER_TRAIN", 1500))
EPOCHS, BATCH, SEQ = 3, 32, 48


def encode(tokenizer, texts):
    out = tokenizer(
        list(texts),
        max_length=SEQ,
        truncation=True,
        padding="max_length",
        return_tensors="pt",
    )
    return out["input_ids"], out["attention_mask"]


class Classifier(torch.nn.Module):
    def __init__(self, encoder):
        super().__init__()
        self.encoder = encoder
        self.head = torch.nn.Linear(encoder.config.hidden_size, 2)

    def forward(self, ids, mask):
        tokens = self.encoder(input_ids=ids, attention_mask=mask)[0]
        weights = mask.unsqueeze(-1).float()
        pooled = (tokens * weights).sum(1) / weights.sum(1).clamp(min=1)
        return self.head(pooled)


def schedule(peak, warmup):
    # WarmupRsqrtDecay: linear warmup, then peak * sqrt(warmup / step).
    def factor(step):
        step = step + 1
        if step <= warmup:
            return step / warmup
        return (warmup / step) ** 0.5

    return factor


def run(seed, lr, path, data):
    torch.manual_seed(seed)
    np.random.seed(seed)
    encoder = transformers.AutoModel.from_pretrained(path)
    config = peft.LoraConfig(
        r=4,
        lora_alpha=4,
        lora_dropout=0.0,
        target_modules=["query", "value"],
        bias="none",
    )
    encoder = peft.get_peft_model(encoder, config)
    model = Classifier(encoder)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    (ids, mask, y), (test_ids, test_mask, test_y) = data
    steps = EPOCHS * -(-len(y) // BATCH)
    optimizer = torch.optim.Adam(
        [p for p in model.parameters() if p.requires_grad], lr=lr
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, schedule(lr, max(1, steps // 10))
    )
    start = time.perf_counter()
    model.train()
    rng = np.random.default_rng(seed)
    for _ in range(EPOCHS):
        order = torch.as_tensor(rng.permutation(len(y)))
        for i in range(0, len(y), BATCH):
            batch = order[i : i + BATCH]
            loss = torch.nn.functional.cross_entropy(
                model(ids[batch], mask[batch]), y[batch]
            )
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
    seconds = time.perf_counter() - start
    model.eval()
    with torch.no_grad():
        logits = torch.cat(
            [
                model(test_ids[i : i + 256], test_mask[i : i + 256])
                for i in range(0, len(test_y), 256)
            ]
        )
    accuracy = float((logits.argmax(-1) == test_y).float().mean())
    return dict(
        seed=seed,
        test=accuracy,
        trainable_with_head=trainable,
        train_seconds=seconds,
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--out", default="peft_peer_check")
    args = parser.parse_args()
    path = datasets.minilm_path()
    tokenizer = transformers.AutoTokenizer.from_pretrained(path)
    texts, y = datasets.rotten_tomatoes("train")
    test_texts, test_y = datasets.rotten_tomatoes("test")
    data = (
        (*encode(tokenizer, texts[:TRAIN]), torch.as_tensor(y[:TRAIN]).long()),
        (*encode(tokenizer, test_texts), torch.as_tensor(test_y).long()),
    )
    runs_path = os.path.join(RESULTS, "evidence_runs.jsonl")
    with open(runs_path) as f:
        runs = [json.loads(line) for line in f if line.strip()]
    lora_tune = [r for r in runs if r["key"].startswith("tune|LoRA q,v r4|")]
    lr = max(lora_tune, key=lambda r: r["validation"])["learning_rate"]
    rows = []
    for seed in [int(s) for s in args.seeds.split(",")]:
        rows.append(run(seed, lr, path, data))
        print(json.dumps(rows[-1]), flush=True)
    ours = {}
    for method in ("LoRA q,v r4", "AdaLink r4", "full fine-tuning"):
        scores = [
            r["test"]
            for r in runs
            if r["key"].startswith(f"single|{method}|rotten_tomatoes|")
        ]
        if scores:
            ours[method] = scores
    peer = [r["test"] for r in rows]
    result = dict(
        command="KERAS_BACKEND=torch .venv/bin/python "
        "benchmarks/peft_peer_check.py",
        versions=dict(
            transformers=transformers.__version__,
            peft=peft.__version__,
            torch=torch.__version__,
        ),
        learning_rate=lr,
        peft_lora=rows,
        keras_adalink=ours,
    )
    with open(os.path.join(RESULTS, f"{args.out}.json"), "w") as f:
        json.dump(result, f, indent=2)

    def fmt(values):
        values = 100 * np.asarray(values)
        std = values.std(ddof=1) if len(values) > 1 else 0.0
        return f"{values.mean():.1f} ± {std:.1f} (n={len(values)})"

    lines = [
        "# Peer check: HF PEFT LoRA vs keras-adalink (Rotten Tomatoes test)",
        "",
        f"`{result['command']}` (transformers {transformers.__version__}, "
        f"peft {peft.__version__}); same checkpoint, split, budget and "
        f"schedule as benchmarks/evidence.py, peak lr {lr:g}.",
        "",
        "| method | trainable incl. head | test accuracy x100 |",
        "|---|---|---|",
        f"| HF PEFT LoRA q,v r4 (torch) | {rows[0]['trainable_with_head']:,} "
        f"| {fmt(peer)} |",
    ]
    for method, scores in ours.items():
        row = f"| keras-adalink: {method} (jax) | see evidence.md |"
        lines.append(f"{row} {fmt(scores)} |")
    with open(os.path.join(RESULTS, f"{args.out}.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
