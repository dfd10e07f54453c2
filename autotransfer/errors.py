"""Errors the user can act on. The CLI prints them as one line, never a traceback."""


class UserError(Exception):
    """A mistake in the user's input: the message names the file or field and what to do."""


class PluginError(UserError):
    """A plugin misbehaved: the message names the plugin."""


class TrialFailed(Exception):
    """A trial failed for a recorded reason; the search goes on."""


class OutOfTime(Exception):
    """The budget (or a trial's time cap) ran out; raised between batches, so a trial stops cleanly."""
