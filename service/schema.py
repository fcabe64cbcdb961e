"""Every domain's tables, and sessions over them. Importing this module puts every model on
Base.metadata (Alembic, the schema test) and every mapper in SQLAlchemy's registry, so a session
made here can load any row and resolve any foreign key."""

from __future__ import annotations

from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from service.approvals import models as _approvals  # noqa: F401
from service.auth import models as _auth  # noqa: F401
from service.db import track_writes
from service.jobs import models as _jobs  # noqa: F401
from service.ledger import models as _ledger  # noqa: F401
from service.policies import models as _policies  # noqa: F401
from service.quotas import models as _quotas  # noqa: F401
from service.registry import models as _registry  # noqa: F401
from service.release import models as _release  # noqa: F401
from service.reproductions import models as _reproductions  # noqa: F401
from service.sanctions import models as _sanctions  # noqa: F401
from service.site import models as _site  # noqa: F401
from service.transparency import models as _transparency  # noqa: F401
from service.twins import models as _twins  # noqa: F401


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return track_writes(sessionmaker(bind=engine, expire_on_commit=False))
