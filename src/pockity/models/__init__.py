"""All models, imported here so Alembic sees the whole metadata."""

from pockity.models.api_key import ApiKey
from pockity.models.audit import AuditEvent
from pockity.models.base import Base
from pockity.models.login_throttle import LoginThrottle
from pockity.models.tier import Tier
from pockity.models.user import Role, User

__all__ = ["ApiKey", "AuditEvent", "Base", "LoginThrottle", "Role", "Tier", "User"]
