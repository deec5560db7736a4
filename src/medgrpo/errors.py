"""Errors for bad input. Each message names the offending key, field or file and what was expected."""


class MedgrpoError(ValueError):
    """Base class: an input problem the user can fix (as opposed to a bug)."""


class ConfigError(MedgrpoError):
    """A config value is invalid. Raised before any model is loaded."""

    def __init__(self, key: str, problem: str):
        self.key = key
        super().__init__(f"config key '{key}': {problem}")


class DataError(MedgrpoError):
    """A data source, file, field or row is invalid."""


class ConfigErrors(ConfigError):
    """Several input problems at once: validation reports all of them, so that one launch shows every typo.
    `key` is the first one's, `keys` all of them (None for a data file problem)."""

    def __init__(self, errors: list[MedgrpoError]):
        self.errors = errors
        self.keys = [getattr(error, "key", None) for error in errors]
        self.key = self.keys[0]
        MedgrpoError.__init__(self, f"{len(errors)} problems in the config:\n" +
                              "\n".join(f"  - {e}" for e in errors))
