"""Start a server: build its config from command-line values (before the model loads), then run
the app under uvicorn until SIGTERM or Ctrl-C.

uvicorn owns the signals: on SIGTERM it stops accepting connections, lets in-flight requests
finish for up to `grace_s` seconds, then cancels what is left (each cancelled search releases
its KV) and returns; the caller then closes the engine, so the process exits cleanly.
"""

from __future__ import annotations

from ponder.apps.serve.config import Limits, ServerConfig
from ponder.tasks.registry import make_verifier

ANSWER_FORMATS = ("arith", "text")


def split_verifier_options(names: list[str], options: dict) -> dict[str, dict]:
    """`key=value` applies to the only verifier; `name.key=value` to the one named."""
    per = {name: {} for name in names}
    for key, value in options.items():
        name, dot, option = key.rpartition(".")
        if dot and name in per:
            per[name][option] = value
        elif len(names) == 1:
            per[names[0]][key] = value
        else:
            raise ValueError(
                f"--verifier-option {key}: with several verifiers write <verifier>.{key}=<value>"
            )
    return per


def build_config(
    *, model_label: str, verifiers: list[str], verifier_options: dict, api_key: str | None,
    answer_format: str, limits: dict,
) -> ServerConfig:  # fmt: skip
    """ValueError naming the bad flag value; loads the verifiers (small ones, or reward models
    the operator chose), never the language model."""
    if answer_format not in ANSWER_FORMATS:
        raise ValueError(f"unknown answer format {answer_format!r}; known: {ANSWER_FORMATS}")
    extract = None
    if answer_format == "arith":
        from ponder.tasks.arith.verifiers import extract_answer as extract
    per = split_verifier_options(verifiers, verifier_options)
    loaded = {name: make_verifier(name, **per[name]) for name in verifiers}
    return ServerConfig(
        model_name=model_label,
        api_key=api_key or None,
        verifiers=loaded,
        default_verifier=verifiers[0] if verifiers else None,
        extract_answer=extract,
        limits=Limits(**limits),
    )


def run_server(app, host: str, port: int, *, grace_s: float = 10.0, log_level: str = "info"):
    """Serve until SIGTERM/SIGINT, shut down gracefully, and return (the caller closes the
    engine, and the process exits 0)."""
    import uvicorn

    class Server(uvicorn.Server):
        def handle_exit(self, sig, frame) -> None:
            super().handle_exit(sig, frame)
            # uvicorn re-raises a captured signal once it has shut down, which would kill the
            # process before the engine closes; forget it so run() returns normally.
            self._captured_signals.clear()

    config = uvicorn.Config(
        app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=grace_s
    )
    Server(config).run()
