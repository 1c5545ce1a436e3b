"""What an eval or a calibration runs, checked before any prefill: lengths, tasks, start layers and each length's
cases."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tmixcli.errors import TmixError

if TYPE_CHECKING:
    from tmixcli.config import AttentionConfig


def check_tasks(tasks: list[str]) -> None:
    """Refuse an unknown task, or none at all."""
    from tmixcli.tasks import TASKS

    bad = [t for t in tasks if t not in TASKS]
    if bad or not tasks:
        raise TmixError(f"unknown task(s) {', '.join(bad) or '(none)'}: choose from {', '.join(TASKS)}")


def check_triangle_lengths(lengths: list[tuple[str, int]], n_init: int, n_local: int, last_n: int,
                           purpose: str) -> None:
    """Refuse a prompt length, given as (option, tokens), at which the triangle is dense attention: nothing to
    `purpose` ("compare", "calibrate")."""
    from tmixcli.config import triangle_span

    span = triangle_span(n_init, n_local, last_n)
    for option, n in lengths:
        if n <= span:
            raise TmixError(f"{option} {n} is too short to {purpose}: up to n_init + n_local + last_n = {span} "
                            f"tokens the triangle is dense attention; give at least {span + 1}")


def check_lengths(lengths: list[int], context: int | None, answer_tokens: int, option: str = "--lengths") -> None:
    """Refuse a prompt length that leaves the answer no room in the model's context (None: not known yet)."""
    for n in lengths:
        if context is not None and n + answer_tokens > context:
            raise TmixError(f"{option} {n}: {n} prompt tokens + {answer_tokens} for the answer exceed the model's "
                            f"context ({context})")


def plan_cases(tokenizer, lengths: list[int], cases: int, tasks: list[str], seed: int, context: int,
               answer_tokens: int, option: str = "--lengths") -> list[list]:
    """Every length's cases, refused before any prefill where a length is below the tasks' bare prompt or its
    longest prompt and answer do not fit the model's context."""
    from tmixcli.tasks import bare_prompt_tokens, make_cases

    check_lengths(lengths, context, answer_tokens, option)  # before tokenizing a haystack of that length
    floor = bare_prompt_tokens(tokenizer, tasks)
    plan = []
    for n in lengths:
        if n < floor:
            raise TmixError(f"{option} {n}: too short for the {'/'.join(tasks)} task: its facts and question alone "
                            f"take {floor} tokens; give at least {floor}")
        made = make_cases(tokenizer, tasks, cases, n, seed)
        longest = max((c.tokens for c in made), default=0)
        if longest + answer_tokens > context:
            raise TmixError(f"{option} {n}: its prompts take up to {longest} tokens + {answer_tokens} for the answer, "
                            f"past the model's context ({context})")
        plan.append(made)
    return plan


def method_name(cfg: AttentionConfig) -> str:
    """The label of a method in eval's reports: "dense", or "trimix@N" for a start layer N."""
    return "dense" if cfg.method == "dense" else f"trimix@{cfg.start_layer}"


def trimix_configs(starts: list[int], n_init: int, n_local: int, last_n: int,
                   num_layers: int | None) -> list[AttentionConfig]:
    """One trimix AttentionConfig per start layer (validated against the model's depth where it is known)."""
    from tmixcli.config import AttentionConfig

    out = []
    for s in starts:
        if s < 0:
            raise TmixError(f"start layer {s} is negative")
        if num_layers is not None and s >= num_layers:
            raise TmixError(f"start layer {s} is outside the model's {num_layers} layers")
        try:
            out.append(AttentionConfig("trimix", n_init, n_local, last_n, s))
        except ValueError as err:
            raise TmixError(str(err)) from None
    return out
