"""The only module that touches Dynaconf: YAML file, then environment variables, into ``Settings``.

Order of precedence (later wins): built-in defaults, the YAML file, environment variables under the
configuration guide's names (``HTTP_PORT``, ``OPENAI_API_KEY``, ...; nested keys with ``__``, e.g.
``UPSTREAM__READ_TIMEOUT_S``). The YAML file is the first of: the ``--config`` flag,
``AILB_CONFIG``, ``ailb.yaml`` beside the executable (for the single binary), ``config/ailb.yaml``
under the working directory. With none, the built-in defaults apply.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

from ailb.config.parse import parse_mapping
from ailb.config.schema import TOP_LEVEL_DEFAULTS, Settings
from ailb.errors import ConfigError


def find_config_file(flag: str | None, environ: Mapping[str, str]) -> Path | None:
    """Return the YAML file to read, or None. Raises ConfigError if a named file does not exist."""
    named = flag or environ.get("AILB_CONFIG")
    if named:
        path = Path(named).expanduser()
        if not path.is_file():
            source = "--config" if flag else "AILB_CONFIG"
            raise ConfigError(source, f"names {str(path)!r}, which is not a readable file")
        return path
    candidates = []
    if getattr(sys, "frozen", False):  # the single binary: a config file beside it
        candidates.append(Path(sys.executable).parent / "ailb.yaml")
    candidates.append(Path.cwd() / "config" / "ailb.yaml")
    return next((c for c in candidates if c.is_file()), None)


def load_raw(path: Path | None) -> dict[str, Any]:
    """Defaults, then YAML, then environment, merged by Dynaconf into a plain dict."""
    from dynaconf import Dynaconf  # the only dynaconf import in the package

    # Sections carry every key with its default: Dynaconf applies ``SECTION__KEY`` variables only
    # to keys it already has.
    defaults = {key: (dict(v) if isinstance(v, Mapping) else v)
                for key, v in TOP_LEVEL_DEFAULTS.items() if key not in _LAYERED_HERE}
    try:
        conf = Dynaconf(
            settings_files=[str(path)] if path else [],
            envvar_prefix=False,
            ignore_unknown_envvars=True,
            environments=False,
            load_dotenv=False,
            merge_enabled=True,
            core_loaders=["YAML"],
            **defaults,
        )
        data = conf.as_dict()
    except Exception as exc:  # dynaconf and the YAML parser raise many types; report them as config
        raise ConfigError(str(path or "configuration"), f"cannot be read: {exc}") from exc
    # Dynaconf echoes some of its own options back as keys; everything else is the user's.
    return {k: v for k, v in data.items() if k.upper() not in _DYNACONF_OWN}


_DYNACONF_OWN = frozenset({"LOAD_DOTENV", "ENVIRONMENTS", "ENVVAR_PREFIX", "SETTINGS_FILE",
                           "IGNORE_UNKNOWN_ENVVARS", "MERGE_ENABLED", "CORE_LOADERS"})


# Keys Dynaconf would take as its own options (``REDIS_URL`` is read as its
# ``REDIS_URL_FOR_DYNACONF`` when passed as a default): the environment is layered over the YAML
# for them here instead.
_LAYERED_HERE: Final = frozenset({"REDIS_URL"})


def load_settings(flag: str | None, environ: Mapping[str, str], *,
                  need_secrets: bool = True) -> Settings:
    """Find, read and validate the configuration. Raises ConfigError on any bad value (but an
    unset secret variable only when ``need_secrets``: see :func:`parse_mapping`)."""
    path = find_config_file(flag, environ)
    raw = load_raw(path)
    for key in _LAYERED_HERE:
        if key in environ:
            raw[key] = environ[key]
    return parse_mapping(raw, environ, config_path=path, need_secrets=need_secrets)
