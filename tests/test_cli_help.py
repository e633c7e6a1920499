"""`zoo --help` and every subcommand: each command, option and argument says what it does."""

from __future__ import annotations

import argparse

from exporters.cli import parser


def _commands() -> argparse._SubParsersAction:  # type: ignore[type-arg]
    (commands,) = [a for a in parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return commands


def test_every_subcommand_and_option_has_help() -> None:
    commands = _commands()
    helps = {choice.dest: choice.help for choice in commands._choices_actions}
    assert {"list", "info", "export", "import", "tune", "manifest"} <= set(helps)
    missing = [f"zoo {name}" for name, text in helps.items() if not (text or "").strip()]
    for name, command in commands.choices.items():
        for action in command._actions:
            if not isinstance(action, argparse._HelpAction) and not (action.help or "").strip():
                missing.append(f"zoo {name} {'/'.join(action.option_strings) or action.dest}")
    assert missing == []


def test_the_softmax_switch_says_which_is_which() -> None:
    (softmax,) = [a for a in _commands().choices["import"]._actions if "--softmax" in a.option_strings]
    assert "--softmax" in softmax.help and "--no-softmax" in softmax.help
