"""What the `ponder` subcommands share: key=value options, and turning setup into usage errors.

Values of `--option`, `--task-option` and `--verifier-option` parse as JSON when they parse
(`tau=0.5` is a number, `adaptive=true` a bool) and stay strings otherwise (`path=data.jsonl`);
`--config FILE` reads a JSON object with any of "options", "task_options" and
"verifier_options" for long option sets (flags given on the command line win). The strategy,
task or verifier checks each value against its signature, so a bad key or value is a usage error
that names it, raised before any model loads.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

OPTION_GROUPS = ("options", "task_options", "verifier_options")


def parse_pairs(pairs: tuple[str, ...], flag: str) -> dict:
    """key=value pairs, values parsed as JSON when they parse, else kept as strings."""
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected key=value, got {pair!r}", param_hint=flag)
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    return options


def read_config(path: str | None) -> dict[str, dict]:
    """The option groups of a --config JSON file ({} each when absent)."""
    if path is None:
        return {group: {} for group in OPTION_GROUPS}
    try:
        config = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise click.BadParameter(f"cannot read {path}: {exc}", param_hint="--config") from None
    if not isinstance(config, dict) or set(config) - set(OPTION_GROUPS):
        raise click.BadParameter(
            f"{path} must be a JSON object with keys among {', '.join(OPTION_GROUPS)}",
            param_hint="--config",
        )
    for group in OPTION_GROUPS:
        if not isinstance(config.setdefault(group, {}), dict):
            raise click.BadParameter(f"{group} in {path} must be an object", param_hint="--config")
    return config


def collect_options(
    config_path: str | None,
    task_pairs: tuple[str, ...],
    level: int | None,
    verifier_pairs: tuple[str, ...],
    option_pairs: tuple[str, ...] = (),
) -> dict[str, dict]:
    """options / task_options / verifier_options from --config, then the flags (which win)."""
    config = read_config(config_path)
    task_options = {**config["task_options"], **parse_pairs(task_pairs, "--task-option")}
    if level is not None:
        task_options["level"] = level
    return {
        "options": {**config["options"], **parse_pairs(option_pairs, "--option")},
        "task_options": task_options,
        "verifier_options": {
            **config["verifier_options"],
            **parse_pairs(verifier_pairs, "--verifier-option"),
        },
    }


def model_label(model_path: str | None) -> str:
    return "embedded" if model_path is None else str(Path(model_path).resolve())


def load_engine(model_path: str | None):
    """The engine, or a usage error saying why the folder is not a model (no traceback)."""
    from ponder.engine import Engine

    try:
        return Engine.from_pretrained(model_path)
    except (ValueError, OSError) as exc:
        message = f"cannot load a model from {model_path}: {exc}"
        raise click.BadParameter(message, param_hint="--model") from None


BACKENDS = ("torch", "vllm", "sglang", "remote")


def load_backend(
    backend: str, model_path: str | None, url: str | None = None, api_key: str | None = None
):
    """The backend `ponder eval` / `signals` search on: ponder's own engine (torch), vLLM or
    SGLang in process, or any OpenAI-compatible server at --url (remote). Each needs the
    model's folder for its tokenizer (the embedded model by default); a missing package or a
    bad flag is a usage error, not a traceback."""
    if (url is not None) != (backend == "remote"):
        raise click.BadParameter("--url goes with --backend remote (and only with it)")
    if backend == "torch":
        return load_engine(model_path)
    try:
        if backend == "vllm":
            from ponder.engine.vllm_backend import VLLMBackend

            return VLLMBackend(model_path)
        if backend == "sglang":
            from ponder.engine.sglang_backend import SGLangBackend

            return SGLangBackend(model_path)
        if backend == "remote":
            from ponder.engine.remote_backend import RemoteBackend

            return RemoteBackend(url, api_key=api_key, model_path=model_path)
    except ImportError as exc:
        raise click.BadParameter(
            f"--backend {backend} needs {exc.name} (README, Backends): {exc}",
            param_hint="--backend",
        ) from None
    raise click.BadParameter(f"unknown backend {backend!r}; known: {', '.join(BACKENDS)}")
