# twistd -ny tac/imgshare.tac: the same service as `twistd imgshare`, configured
# from IMGSHARE_* environment variables only.
from twisted.application import service

from imgshare.tap import Options, makeService

options = Options()
options.parseOptions([])
application = service.Application("imgshare")
makeService(options).setServiceParent(application)
