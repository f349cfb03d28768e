"""``twistd imgshare``: options and service wiring, nothing else."""

from __future__ import annotations

from typing import Any

from twisted.python import usage

from imgshare.options import SERVER_OPTIONS, build_config, resolve


class Options(usage.Options):
    """``twistd imgshare`` options (SPEC section 2); each also reads ``IMGSHARE_<OPTION>``."""

    optParameters = [[name, None, None, help_text] for name, help_text in SERVER_OPTIONS]

    def __init__(self) -> None:
        super().__init__()
        self["listen"] = []

    def opt_listen(self, description: str) -> None:
        """Endpoint to listen on, repeatable: tcp:8080, ssl:8443:privateKey=KEY:certKey=CERT
        [default: tcp:8080:interface=127.0.0.1]"""
        self["listen"].append(description)

    def postOptions(self) -> None:
        try:
            self.config = build_config(resolve(self))
        except ValueError as e:
            raise usage.UsageError(str(e)) from e


def makeService(options: Options) -> Any:
    from twisted.internet import reactor

    from imgshare.service import ImgshareService

    return ImgshareService(options.config, reactor)
