"""Errors the user can fix: bad configs and bad data. Entry points print them as one line."""


class TwinInputError(ValueError):
    """Invalid user input (config, recipe or data). ``str(error)`` is meant for the user.

    ``problems`` holds one line per problem when several were found at once (e.g. every bad row
    of a CSV file); the message then lists them all.
    """

    def __init__(self, message: str, problems: list[str] | None = None):
        self.problems = list(problems) if problems else [message]
        super().__init__(message if problems is None else "\n".join(self.problems))
