"""All models, imported here so Alembic sees the whole metadata."""

from pockity.models.account import AccountToken, AccountTokenPurpose, AuthSession, RecoveryCode
from pockity.models.api_key import ApiKey
from pockity.models.audit import AuditEvent
from pockity.models.base import Base
from pockity.models.billing import (
    Invoice,
    InvoiceStatus,
    RequestStatus,
    Subscription,
    SubscriptionStatus,
    TierRequest,
)
from pockity.models.job import JobRun
from pockity.models.login_throttle import LoginThrottle
from pockity.models.mail import MailPreference, OutboxMessage, OutboxStatus
from pockity.models.payments import CreditAccount, CreditEntry, CryptoRate, Payment, PaymentEvent, PaymentStatus
from pockity.models.rate_limit import RateBucket
from pockity.models.storage import ReconciliationReport, Reservation, StorageEvent, StorageObject, UsageCounter
from pockity.models.tier import Tier
from pockity.models.usage import Notification, UsageDay, UsageState
from pockity.models.user import Role, User

__all__ = [
    "AccountToken",
    "AccountTokenPurpose",
    "ApiKey",
    "AuditEvent",
    "AuthSession",
    "Base",
    "CreditAccount",
    "CreditEntry",
    "CryptoRate",
    "Invoice",
    "InvoiceStatus",
    "JobRun",
    "LoginThrottle",
    "MailPreference",
    "Notification",
    "OutboxMessage",
    "OutboxStatus",
    "Payment",
    "PaymentEvent",
    "PaymentStatus",
    "RateBucket",
    "ReconciliationReport",
    "RecoveryCode",
    "RequestStatus",
    "Reservation",
    "Role",
    "StorageEvent",
    "StorageObject",
    "Subscription",
    "SubscriptionStatus",
    "Tier",
    "TierRequest",
    "UsageCounter",
    "UsageDay",
    "UsageState",
    "User",
]
