"""Errors meant for the user: the CLI prints their message on one line and exits with code 2."""


class BenchError(Exception):
    """A problem the user can fix; the message names the problem and the fix."""


def one_line_cause(exc: BaseException) -> str:
    """``TypeName: first line of the message`` (at most 300 characters), for a one-line error about ``exc``.

    A first line that only introduces the next ones (ends with ':', as torch's "Error(s) in loading state_dict for
    CLIP:") takes the first of them along, where the detail is; an empty message (``KeyError()``) gives the type
    name alone, not a dangling ``KeyError: ``."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = " ".join(lines[:2]) if len(lines) > 1 and lines[0].endswith(":") else (lines or [""])[0]
    return f"{type(exc).__name__}: {text[:300]}" if text else type(exc).__name__


class UnknownNameError(BenchError, KeyError):
    """A name that no plugin registered."""

    def __str__(self):  # KeyError would wrap the message in quotes
        return str(self.args[0])


class PluginError(BenchError):
    """A plugin that cannot be loaded or registers something wrong."""


class ContractError(BenchError):
    """What a factory made breaks its hook's contract (docs/plugins.md), such as an ArrayDataset of the wrong arrays;
    the registry's ``Entry.create`` adds which entry and plugin made it."""


class Interrupted(Exception):
    """Ctrl-C or SIGTERM stopped a run between steps; the message says where its checkpoint is and how to resume.

    Not a KeyboardInterrupt, which click would turn into a bare "Aborted!". ``quiet``: the CLI prints nothing, as
    for a torchrun rank other than 0, which stops at the step every rank agreed on while rank 0 says so once.
    """

    def __init__(self, message: str = "", quiet: bool = False):
        super().__init__(message)
        self.quiet = quiet
