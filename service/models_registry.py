"""Imports every domain's models so Base.metadata knows all tables (Alembic, tests)."""

from service.auth import models as _auth  # noqa: F401
from service.jobs import models as _jobs  # noqa: F401
from service.ledger import models as _ledger  # noqa: F401
from service.quotas import models as _quotas  # noqa: F401
from service.registry import models as _registry  # noqa: F401
from service.release import models as _release  # noqa: F401
