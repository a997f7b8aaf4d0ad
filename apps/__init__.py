"""ponder.apps: the applications, the top layer. They parse, validate and call library code.

    cli       the `ponder` console script (eval, signals, demo)
    evaluate  the offline evaluation runner behind `ponder eval` (resumable JSONL run files)
    signals   the training-signal runner behind `ponder signals`
    demo      sampled arith solutions with the exact verifiers' verdicts

Nothing below this package imports it.
"""
