"""Configuration files for the services: ``--config FILE`` (TOML) applied to an argparse parser.

One format for every service (``filetracker-node``, ``filetracker-gateway``,
``filetracker-server``)::

    # /etc/filetracker/node-1.toml
    dir = "/srv/filetracker/node-1"
    port = 9401
    peers = ["http://10.0.0.2:9401", "http://10.0.0.3:9401"]
    cluster-secret-file = "/etc/filetracker/cluster.secret"
    log-format = "json"

Rules:

* keys are the service's long option names without ``--``; dashes and
  underscores are interchangeable (``log_format`` = ``log-format``);
* a string or number is the option's value, exactly as on the command line;
  a list gives a repeatable option once per item and joins the items with
  commas for any other option (``nodes = ["http://a:1", "http://b:2"]``);
  ``true``/``false`` turn a flag (an option without a value) on/off;
* options given on the command line override the file (a repeatable option
  too: ``--peers`` on the command line replaces the file's ``peers``);
* everything is validated before the service starts: an unknown key, a
  nested table, or a value the option refuses prints ONE line naming the
  file and the key on standard error and exits with status 2, as does a
  later usage error about an option the file set.

Implemented once, here: a service calls :func:`parse_args` instead of
``parser.parse_args``.
"""

import argparse
import os
import re
import sys
import tomllib

#: Options a file may not set.
_RESERVED = {"help", "config"}


class ConfigError(Exception):
    """A configuration file that cannot be used (the message names the key)."""


def add_config_option(parser):
    """Add ``--config FILE`` to ``parser`` (once)."""
    if "--config" not in parser._option_string_actions:
        parser.add_argument("--config", metavar="FILE",
                            help="TOML file of options (keys = long option names); flags override it")


def _long_options(parser):
    """``{normalised key: (action, option string)}`` for every long option of ``parser``."""
    keys = {}
    for action in parser._actions:
        for opt in action.option_strings:
            if opt.startswith("--"):
                keys[opt[2:].replace("_", "-")] = (action, opt)
    return keys


def _is_flag(action):
    return action.nargs == 0


def _check_value(parser, key, action, text):
    """Run ``text`` through the option's type and choices as argparse would; ConfigError if refused."""
    convert = parser._registry_get("type", action.type, action.type) or str
    try:
        value = convert(text)
    except argparse.ArgumentTypeError as e:
        raise ConfigError("key '%s': %s" % (key, e)) from None
    except (TypeError, ValueError):
        kind = getattr(action.type, "__name__", "value")
        raise ConfigError("key '%s': invalid %s value: %r" % (key, kind, text)) from None
    if action.choices is not None and value not in action.choices:
        raise ConfigError("key '%s': %r is not one of %s" % (key, text, ", ".join(map(str, action.choices))))


def _scalar(key, value):
    if isinstance(value, bool) or isinstance(value, dict | list):
        raise ConfigError("key '%s': expected a string or a number, got %s" % (key, _kind(value)))
    if not isinstance(value, str | int | float):
        # TOML dates and times: not an option value of any service
        raise ConfigError("key '%s': expected a string or a number, got %s" % (key, _kind(value)))
    return str(value)


def _kind(value):
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "a list"
    return type(value).__name__


def file_arguments(parser, path):
    """The command-line arguments equivalent to the TOML file at ``path`` (validated).

    Returns ``(argv, keys, appended)``: ``argv`` to put before the real command line
    (so real flags override), ``keys`` maps each option string set (and each
    value text of 3+ characters) to the key that set it, ``appended`` maps the
    ``dest`` of each repeatable option set to the number of values the file gave it
    (:func:`parse_args` drops them when the command line gives the option too).
    Raises :class:`ConfigError` with a one-line message.
    """
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as e:
        raise ConfigError("cannot read: %s" % (e.strerror or e)) from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError("not valid TOML: %s" % e) from None
    except UnicodeDecodeError as e:  # TOML is UTF-8 text; tomllib lets the decoding error through
        raise ConfigError("not valid TOML: not UTF-8 text (byte 0x%02x at offset %d)"
                          % (e.object[e.start], e.start)) from None
    options = _long_options(parser)
    argv = []
    keys = {}
    values = {}
    appended = {}
    for raw_key, value in data.items():
        key = raw_key.replace("_", "-")
        action, opt = options.get(key, (None, None))
        if action is None or key in _RESERVED or action.help == argparse.SUPPRESS:
            if isinstance(value, dict):
                raise ConfigError("key '%s': unknown table (the file is flat: key = value)" % raw_key)
            raise ConfigError("key '%s': unknown key" % raw_key)
        for o in action.option_strings:
            keys[o] = raw_key
        if _is_flag(action):
            if not isinstance(value, bool):
                raise ConfigError("key '%s': expected true or false, got %s" % (raw_key, _kind(value)))
            if value:
                argv.append(opt)
            continue
        if isinstance(value, list):
            items = [_scalar(raw_key, v) for v in value]
            if isinstance(action, argparse._AppendAction) or action.nargs in ("*", "+"):
                texts = items
            else:
                texts = [",".join(items)]
        else:
            texts = [_scalar(raw_key, value)]
        for text in texts:
            _check_value(parser, raw_key, action, text)
            if len(text) >= 3:
                values.setdefault(text, raw_key)
        if isinstance(action, argparse._AppendAction):
            argv += [opt + "=" + text for text in texts]
            appended[action.dest] = len(texts)
        elif action.nargs in ("*", "+"):
            argv += [opt] + texts
        else:
            argv += [opt + "=" + texts[0]]
    keys.update(values)   # a later error quoting a value from the file (e.g. a path) names its key
    return argv, keys, appended


def _one_line_errors(parser, path, keys):
    """Make ``parser.error`` print one line that names the file (and the key, when it set one)."""
    def error(message):
        named = [k for opt, k in keys.items() if opt.startswith("-") and _names_option(message, opt)] or \
            [k for text, k in keys.items() if not text.startswith("-") and text in message]
        where = "%s: key '%s'" % (path, named[0]) if named else path
        sys.stderr.write("%s: error: %s (config %s)\n" % (parser.prog, message, where))
        sys.exit(2)

    parser.error = error


def _names_option(message, opt):
    """True when ``message`` names the option ``opt`` as a whole word (``-p`` is not named
    by ``--peer-timeout``)."""
    return re.search(r"(?<![\w-])%s(?![\w-])" % re.escape(opt), message) is not None


def parse_args(parser, argv=None):
    """``parser.parse_args(argv)`` with ``--config FILE`` applied first.

    A bad file prints one line ``PROG: error: config FILE: key 'K': ...`` and
    exits with status 2.  Later usage errors (a service's own checks calling
    ``parser.error``) are one line too when a file is in use.
    """
    add_config_option(parser)
    argv = list(sys.argv[1:] if argv is None else argv)
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config")
    known, _ = pre.parse_known_args(argv)
    if not known.config:
        return parser.parse_args(argv)
    path = os.path.expanduser(known.config)
    try:
        extra, keys, appended = file_arguments(parser, path)
    except ConfigError as e:
        sys.stderr.write("%s: error: config %s: %s\n" % (parser.prog, path, e))
        sys.exit(2)
    _one_line_errors(parser, path, keys)
    args = parser.parse_args(extra + argv)
    for dest, from_file in appended.items():
        _command_line_replaces(parser, args, dest, from_file)
    return args


def _command_line_replaces(parser, args, dest, from_file):
    """Drop the ``from_file`` values a file gave the repeatable option ``dest`` when the
    command line gave it values too: they follow the default's and the file's, in order."""
    default = parser.get_default(dest) or []
    values = getattr(args, dest)
    if len(values) > len(default) + from_file:
        setattr(args, dest, list(default) + values[len(default) + from_file:])
