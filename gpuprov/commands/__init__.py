"""Each module registers its commands on :data:`gpuprov.app.app` when imported."""

from gpuprov.commands import stack  # noqa: F401
from gpuprov.commands import sandbox  # noqa: F401
from gpuprov.commands import ci  # noqa: F401
from gpuprov.commands import reap  # noqa: F401
from gpuprov.commands import deploy  # noqa: F401
from gpuprov.commands import cost  # noqa: F401
