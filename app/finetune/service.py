"""Fine-tuning jobs: validate, queue, train in a separate process, register the result.

A job trains a LoRA adapter (``supervised`` / ``lora``), an AdaLoRA, LoHa, LoKr or IA3 adapter
(served as a converted LoRA, its agreement with PEFT's own model checked at registration:
``app.adapters.service``) or a soft prompt (``prompt_tuning``, ``p_tuning``, ``prefix_tuning``). One job trains at a time (the others wait, ``queued``, in
order). The trainer is a child process (``app.finetune.worker``) so serving goes on; its progress
lines become the job's progress and events. On success its output is validated like any adapter or
soft prompt and registered under the job's ``fine_tuned_model`` name: callable at once. A failed,
cancelled or killed job leaves nothing behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import re
import shutil
import sys
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from app.adapters import agreement
from app.adapters.errors import AdapterError
from app.adapters.service import AdapterService
from app.config import Settings
from app.engine import Engine
from app.finetune.dataset import DatasetError
from app.finetune.examples import Tokenized, tokenize_file
from app.finetune.files import FileStore
from app.finetune.hyperparameters import (
    AUTO_SPLIT_MIN,
    CONVERTED_METHODS,
    SOFT_PROMPT_METHODS,
    FineTuneError,
    adapter_kind,
    job_method,
    resolve_hyperparameters,
)
from app.jobs import Job, JobManager, JobRunner
from app.protocol.finetune import FineTuningJobCreate
from app.protocol.profiles import DomainProfile
from app.soft_prompt_registry.service import SoftPromptProblem, SoftPromptService

log = logging.getLogger(__name__)


def adapter_name(model: str, suffix: str | None, job_id: str) -> str:
    """``ft-<suffix or model>-<8 hex>``: a valid adapter name, unique per job."""
    stem = re.sub(r"[^a-z0-9._-]+", "-", (suffix or model).lower()).strip("-._") or "model"
    return f"ft-{stem[:50]}-{job_id.removeprefix('ftjob-')[:8]}"


class FineTuner:
    def __init__(
        self,
        settings: Settings,
        jobs: JobManager,
        runner: JobRunner,
        files: FileStore,
        adapters: AdapterService,
        soft_prompts: SoftPromptService,
        engine: Callable[[], Engine | None],
        resolve_model: Callable[[str], tuple[str, DomainProfile | None]],
        documents: Callable[[str, int], list[str]] = lambda domain, limit: [],
    ) -> None:
        self.settings = settings
        self.jobs = jobs
        self.runner = runner
        self.files = files
        self.adapters = adapters
        self.soft_prompts = soft_prompts
        self._engine = engine
        self._resolve_model = resolve_model
        self._documents = documents
        self.root = settings.data_dir / "fine_tuning"
        self.root.mkdir(parents=True, exist_ok=True)
        self._turn = asyncio.Lock()  # one job trains at a time; waiters are served in order

    # -- creating ------------------------------------------------------------------------------
    def _file(self, file_id: str, param: str) -> bytes:
        record = self.files.get(file_id)
        if record is None or record.purpose != "fine-tune":
            raise FineTuneError(
                400,
                f"{param}: no fine-tune file '{file_id}' (upload one with POST /v1/files).",
                code="invalid_file",
                param=param,
            )
        data = self.files.content(file_id)
        assert data is not None
        return data

    def _tokenize(self, data: bytes, profile: DomainProfile | None, param: str) -> list[Tokenized]:
        engine = self._engine()
        if engine is None or not engine.ready:
            raise FineTuneError(503, "The model is not ready; retry shortly.", code="engine_unavailable")
        t = self.settings.training
        try:
            return tokenize_file(data, engine, profile, t.max_examples, t.max_example_tokens)
        except DatasetError as exc:
            raise FineTuneError(400, f"{param}: {exc}", code="invalid_training_file", param=param) from exc

    def _document_examples(self, domain: str) -> list[Tokenized]:
        """A domain's ingested chunks as language-modelling examples (all tokens carry the loss)."""
        engine = self._engine()
        if engine is None or not engine.ready:
            raise FineTuneError(503, "The model is not ready; retry shortly.", code="engine_unavailable")
        t = self.settings.training
        texts = self._documents(domain, t.max_examples)

        def batch(chunk: list[str]) -> list[Tokenized]:
            tok = engine.tokenizer
            return [Tokenized([], tok.literal_ids(text)[: t.max_example_tokens]) for text in chunk]

        out: list[Tokenized] = []
        for start in range(0, len(texts), 16):  # the owner thread serves chats between batches
            out += engine.tokens.call(batch, texts[start : start + 16])
        out = [e for e in out if len(e.answer_ids) >= 2]
        if not out:
            raise FineTuneError(
                400,
                f"training_file: omitted, and domain '{domain}' has no ingested text to train on "
                "(ingest documents first, or upload a training file).",
                code="invalid_training_file",
                param="training_file",
            )
        return out

    def _check_window(self, examples: list[Tokenized], virtual: int, param: str) -> None:
        engine = self._engine()
        window = engine.max_model_len if engine is not None else 0
        for i, e in enumerate(examples, 1):
            size = len(e.prompt_ids) + len(e.answer_ids) + virtual
            if window and size > window:
                raise FineTuneError(
                    400,
                    f"{param}: example {i} takes {size} positions with {virtual} virtual tokens; the "
                    f"model's window is {window}.",
                    code="invalid_training_file",
                    param=param,
                )

    async def create(self, req: FineTuningJobCreate) -> Job:
        kind, hp_in = job_method(req)
        base_name, profile = self._resolve_model(req.model)
        if req.training_file is None:
            if profile is None:
                raise FineTuneError(
                    400,
                    "training_file is required unless `model` is a domain (whose documents are then the data).",
                    code="invalid_training_file",
                    param="training_file",
                )
            train = await asyncio.to_thread(self._document_examples, profile.name)
        else:
            train_data = await asyncio.to_thread(self._file, req.training_file, "training_file")
            train = await asyncio.to_thread(self._tokenize, train_data, profile, "training_file")
        valid_data = (
            await asyncio.to_thread(self._file, req.validation_file, "validation_file")
            if req.validation_file
            else None
        )
        valid = (
            await asyncio.to_thread(self._tokenize, valid_data, profile, "validation_file")
            if valid_data
            else []
        )
        seed = req.seed if req.seed is not None else int.from_bytes(os.urandom(3), "big")
        split = 0.0
        if not valid and kind in SOFT_PROMPT_METHODS and len(train) >= AUTO_SPLIT_MIN:
            # hold out 10 % (at most 100) for validation loss and early stopping
            order = list(range(len(train)))
            random.Random(seed).shuffle(order)
            held = set(order[: min(100, max(2, len(train) // 10))])
            valid = [e for i, e in enumerate(train) if i in held]
            train = [e for i, e in enumerate(train) if i not in held]
            split = round(len(valid) / (len(valid) + len(train)), 3)
        hp = resolve_hyperparameters(kind, hp_in, len(train), self.settings, profile)
        virtual = int(hp.get("num_virtual_tokens") or 0)
        self._check_window(train, virtual, "training_file")
        self._check_window(valid, virtual, "validation_file")
        if split:
            hp["validation_split"] = split
        job_id = f"ftjob-{uuid.uuid4().hex[:24]}"
        public_hp = {k: v for k, v in hp.items() if k != "soft_prompt"}
        info = {
            "model": req.model,
            "base_model": base_name,
            "domain": profile.name if profile else None,
            "training_file": req.training_file or f"documents:{profile.name}",
            "validation_file": req.validation_file,
            "suffix": req.suffix,
            "seed": seed,
            "hyperparameters": public_hp,
            "method": {"type": kind, kind: {"hyperparameters": public_hp}},
            "metadata": req.metadata,
            "fine_tuned_model": None,
            "trained_tokens": None,
            "finished_at": None,
            "error_code": None,
        }
        progress = {"step": 0, "total_steps": 0, "epoch": 0, "n_epochs": hp["n_epochs"], "trained_tokens": 0}
        job = await asyncio.to_thread(
            self.jobs.create, "train", profile.name if profile else None, progress, job_id=job_id, result=info
        )
        folder = self.root / job_id
        folder.mkdir(parents=True, exist_ok=True)
        await asyncio.to_thread(self._write_examples, folder / "train.jsonl", train)
        if valid:
            await asyncio.to_thread(self._write_examples, folder / "valid.jsonl", valid)
        source = "training examples" if req.training_file else f"document chunks of domain '{profile.name}'"
        self._event(
            job,
            f"Validated {len(train)} {source}"
            + (f" and {len(valid)} validation examples" if valid else "")
            + (f" (held out {split:.0%} of the training data)" if split else ""),
        )
        self._event(job, "Fine-tuning job queued")
        self.runner.start(
            job,
            lambda: self._run(job, kind, hp, seed, bool(valid)),
            self._describe(job),
            starts_running=False,
        )
        return job

    @staticmethod
    def _write_examples(path: Path, examples: list[Tokenized]) -> None:
        with open(path, "w", encoding="utf-8") as f:
            for e in examples:
                f.write(json.dumps(asdict(e)) + "\n")

    def _event(self, job: Job, message: str, level: str = "info", data: dict | None = None) -> None:
        self.jobs.add_event(job.id, message, level=level, data=data)

    def _describe(self, job: Job) -> Callable[[BaseException], str]:
        def describe(exc: BaseException) -> str:
            code = (
                "adapter_rejected" if isinstance(exc, AdapterError | SoftPromptProblem) else "training_failed"
            )
            message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
            self.jobs.update(job, result={**job.result, "error_code": code, "finished_at": int(time.time())})
            self._event(job, f"Fine-tuning failed: {message}", "error")
            return message

        return describe

    # -- running -------------------------------------------------------------------------------
    def _threads(self) -> int:
        t = self.settings.training.threads
        return t if t > 0 else max(1, (os.cpu_count() or 2) // 2)

    async def _run(
        self, job: Job, kind: str, hp: dict[str, Any], seed: int, has_valid: bool
    ) -> dict[str, Any]:
        async with self._turn:
            self.jobs.update(job, status="running")
            self._event(job, "Fine-tuning job started")
            folder = self.root / job.id
            soft = kind in SOFT_PROMPT_METHODS
            output = self.adapters.incoming() if not soft else folder / "soft_prompt"
            engine = self._engine()
            if engine is None:
                raise RuntimeError("the model is not loaded")
            spec = {
                "model_path": engine.model,
                # the served RoPE scaling and window: what is learnt is what is served
                "config_overrides": engine.transformers_overrides(),
                "train_path": str(folder / "train.jsonl"),
                "valid_path": str(folder / "valid.jsonl") if has_valid else None,
                "pad_id": engine.tokenizer.pad_token_id or engine.tokenizer.eos_token_id or 0,
                "seed": seed,
                "threads": self._threads(),
                "method": kind if soft else adapter_kind(kind),
                "soft_prompt": hp.get("soft_prompt"),
                "hyperparameters": hp,
                "output_dir": str(output),
            }
            if kind in CONVERTED_METHODS:
                spec["conversion"] = {
                    "method": kind,
                    "model_path": engine.model,
                    "energy": self.settings.conversion.energy,
                    "max_rank": self.adapters.converter.rank(engine),
                    "prompts": await asyncio.to_thread(self._agreement_prompts, folder),
                    "max_new_tokens": self.settings.conversion.tokens,
                }
            (folder / "spec.json").write_text(json.dumps(spec), encoding="utf-8")
            try:
                trained_tokens = await self._train(job, folder)
                name = adapter_name(job.result["base_model"], job.result["suffix"], job.id)
                await self._engine_ready()
                if soft:
                    meta = {"source": "fine-tune", "domain": job.result["domain"], "fine_tuning_job": job.id}
                    await asyncio.to_thread(self.soft_prompts.adopt, name, output, meta)
                else:
                    await self.adapters.adopt(name, output, "fine-tune", domain=job.result["domain"])
            finally:
                shutil.rmtree(output, ignore_errors=True)
                for data in ("train.jsonl", "valid.jsonl"):
                    (folder / data).unlink(missing_ok=True)
            entry = self.adapters.registry.get(name) if not soft else None
            conversion = None
            if entry is not None and entry.conversion:
                conversion = {k: v for k, v in entry.conversion.items() if k != "modules"}
                c = entry.conversion
                how = (
                    f"served by vLLM as a LoRA of rank {c['rank']}"
                    if c["served_by"] == "vllm"
                    else f"below {c['min_agreement']}: served by PEFT's own model on the transformers path"
                )
                self._event(
                    job,
                    f"Agreement with PEFT's own model: {c['tokens_equal']}/{c['tokens_total']} greedy tokens "
                    f"({c['agreement']}); {how}",
                    data={
                        k: c[k]
                        for k in (
                            "rank",
                            "fidelity",
                            "agreement",
                            "tokens_equal",
                            "tokens_total",
                            "served_by",
                        )
                    },
                )
            self._event(job, f"New fine-tuned model created: {name}")
            self._event(job, "The job has successfully completed")
            return {
                "fine_tuned_model": name,
                "trained_tokens": trained_tokens,
                "finished_at": int(time.time()),
                "conversion": conversion,
            }

    def _agreement_prompts(self, folder: Path) -> list[list[int]]:
        """Half the fixed agreement prompts, then the job's first distinct training prompts."""
        engine = self._engine()
        assert engine is not None
        total = self.settings.conversion.prompts
        prompts = agreement.fixed_prompt_ids(engine, max(1, total // 2))
        with open(folder / "train.jsonl", encoding="utf-8") as f:
            for line in f:
                if len(prompts) >= total:
                    break
                ids = json.loads(line)["prompt_ids"]
                if ids and ids not in prompts:
                    prompts.append(ids)
        return prompts

    async def _engine_ready(self, timeout: float = 600) -> None:
        """Wait out an engine restart before registering: a finished training is not thrown away."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            engine = self._engine()
            if engine is not None and engine.ready:
                return
            await asyncio.sleep(1)
        raise RuntimeError("the engine did not come back within 10 minutes to load the trained adapter")

    async def _train(self, job: Job, folder: Path) -> int:
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
        env["OMP_NUM_THREADS"] = str(self._threads())
        log_path = folder / "trainer.log"
        with open(log_path, "wb") as errors:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "app.finetune.worker",
                str(folder / "spec.json"),
                stdout=asyncio.subprocess.PIPE,
                stderr=errors,
                env=env,
            )
            trained = 0
            try:
                assert proc.stdout is not None
                async for raw in proc.stdout:
                    trained = self._progress(job, raw) or trained
                code = await proc.wait()
            finally:
                if proc.returncode is None:
                    with contextlib.suppress(ProcessLookupError):
                        proc.terminate()
                    try:
                        await asyncio.wait_for(proc.wait(), 10)
                    except asyncio.TimeoutError:
                        with contextlib.suppress(ProcessLookupError):
                            proc.kill()
                        await proc.wait()
        if code != 0:
            tail = deque(log_path.read_text(encoding="utf-8", errors="replace").splitlines(), maxlen=1)
            raise RuntimeError(f"the trainer exited with status {code}: {tail[0] if tail else 'no output'}")
        return trained

    def _progress(self, job: Job, raw: bytes) -> int | None:
        try:
            msg = json.loads(raw)
        except ValueError:
            return None
        kind = msg.get("type")
        p = dict(job.progress)
        if kind == "start":
            p.update(total_steps=msg["total_steps"], n_epochs=msg["n_epochs"])
            self._event(
                job,
                f"Training {msg['examples']} examples for {msg['n_epochs']} epochs ({msg['total_steps']} steps) on {msg['device']}",
            )
        elif kind == "step":
            p.update(
                step=msg["step"],
                total_steps=msg["total_steps"],
                epoch=msg["epoch"],
                train_loss=msg["train_loss"],
                trained_tokens=msg["trained_tokens"],
            )
            data = {k: msg[k] for k in ("step", "total_steps", "epoch", "train_loss")}
            self._event(
                job, f"Step {msg['step']}/{msg['total_steps']}: training loss={msg['train_loss']}", data=data
            )
        elif kind == "epoch":
            p.update(valid_loss=msg["valid_loss"])
            valid = "" if msg["valid_loss"] is None else f", validation loss={msg['valid_loss']}"
            self._event(
                job,
                f"Epoch {msg['epoch']} done in {msg['seconds']} s{valid}",
                data={"epoch": msg["epoch"], "seconds": msg["seconds"], "valid_loss": msg["valid_loss"]},
            )
        elif kind == "positions":
            rope = msg.get("rope_parameters") or {}
            how = f"RoPE {rope.get('rope_type', 'default')}"
            if "factor" in rope:
                how += f" x{rope['factor']:g}"
            if "rope_theta" in rope:
                how += f", base {rope['rope_theta']:g}"
            self._event(
                job,
                f"Training with the served positions: {how}, {msg['max_position_embeddings']} positions",
                data={"rope_parameters": rope, "max_position_embeddings": msg["max_position_embeddings"]},
            )
            return None
        elif kind == "converting":
            self._event(job, "Converting the adapter to a LoRA for vLLM")
            return None
        elif kind == "converted":
            self._event(
                job,
                f"Converted to a LoRA of rank {msg['rank']} (fidelity {msg['fidelity']:.4f} in the weakest "
                "module); checking its agreement with PEFT's own model",
                data={"rank": msg["rank"], "fidelity": msg["fidelity"]},
            )
            return None
        elif kind == "stopped":
            self._event(
                job,
                f"Early stop after epoch {msg['epoch']}: validation loss has not improved since epoch "
                f"{msg['best_epoch']} ({msg['best_valid_loss']}); keeping that epoch's weights",
                data={k: msg[k] for k in ("epoch", "best_epoch", "best_valid_loss")},
            )
            return None
        elif kind == "done":
            self.jobs.update(job, progress=p, force=True)
            return int(msg["trained_tokens"])
        else:
            return None
        self.jobs.update(job, progress=p)
        return None

    async def cancel(self, job_id: str) -> Job | None:
        job = self.jobs.get(job_id)
        if job is None or job.kind != "train":
            return None
        if await self.runner.cancel(job_id):
            self._event(job, "Fine-tuning job cancelled")
            done = self.jobs.get(job_id)
            self.jobs.update(done, result={**done.result, "finished_at": int(time.time())}, force=True)
        return self.jobs.get(job_id)
