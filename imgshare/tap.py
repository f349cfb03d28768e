"""``twistd imgshare``: options and service wiring, nothing else."""

from __future__ import annotations

import sys
from typing import Any

from twisted.python import usage

from imgshare import __version__
from imgshare.options import SERVER_OPTIONS, build_config, check_listen, env_name, origins, resolve


class Options(usage.Options):
    """``twistd imgshare`` options (SPEC section 2); each also reads ``IMGSHARE_<OPTION>``."""

    synopsis = "Usage: twistd [twistd options] imgshare [options]"
    longdesc = (f"IMGSHARE {__version__}, a self-hosted image host. Every option can also be set "
                "in the environment as IMGSHARE_<OPTION> (--max-size: IMGSHARE_MAX_SIZE, --listen: "
                "IMGSHARE_LISTEN, several separated by spaces); the command line wins.")
    optParameters = [[name, None, None, f"{help_text} (env {env_name(name)})"]
                     for name, help_text in SERVER_OPTIONS]

    def __init__(self) -> None:
        super().__init__()
        self["listen"] = []

    def opt_listen(self, description: str) -> None:
        """Endpoint to listen on, repeatable: tcp:8080, ssl:8443:privateKey=KEY:certKey=CERT
        [default: tcp:8080:interface=127.0.0.1]"""
        self["listen"].append(description)

    def opt_version(self) -> None:
        """Print IMGSHARE's version (and Twisted's) and exit"""
        import twisted

        print(f"IMGSHARE {__version__} (Twisted {twisted.__version__}, Python {sys.version.split()[0]})")
        sys.exit(0)

    def postOptions(self) -> None:
        """A bad value is one line on stderr and exit status 2, not the whole help."""
        from twisted.internet import reactor

        try:
            self.config = build_config(resolve(self), origins(self))
            check_listen(reactor, self.config.listen)
            if self.config.metrics_listen is not None:
                check_listen(reactor, (self.config.metrics_listen,), "--metrics")
            from imgshare import backends

            backends.check_urls(self.config.db, self.config.storage)
        except ValueError as e:
            print(f"twistd imgshare: {e}", file=sys.stderr)
            sys.exit(2)


def makeService(options: Options) -> Any:
    from twisted.internet import reactor

    from imgshare.service import ImgshareService

    try:
        return ImgshareService(options.config, reactor, launch=getattr(options, "parent", None))
    except ValueError as e:  # a --db or --storage URL its backend cannot use
        print(f"twistd imgshare: {e}", file=sys.stderr)
        sys.exit(2)
