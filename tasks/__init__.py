"""ponder.tasks: data sets, their answer formats, and offline evaluation.

`arith` is the embedded world (seeded problems, the tiny model, its tokenizer); `evaluate` runs a
strategy over a task's problems for `ponder eval`.
"""
