from __future__ import annotations

from pydantic import Field

from pockity.kit.schemas import InputModel, OutputModel
from pockity.users.schemas import NAME_MAX, PASSWORD_MAX, UserOut

TOKEN_MAX = 200  # an action link's token: a 26-character id, a dot, 24 characters of signature


class TokenIn(InputModel):
    token: str = Field(min_length=1, max_length=TOKEN_MAX)


class PasswordResetRequestIn(InputModel):
    # Not EmailStr: a malformed address gets the same answer as an unknown one.
    email: str = Field(min_length=1, max_length=320)


class PasswordResetIn(InputModel):
    token: str = Field(min_length=1, max_length=TOKEN_MAX)
    new_password: str = Field(max_length=PASSWORD_MAX)  # the length rule is the service's


class EmailChangeIn(InputModel):
    new_email: str = Field(min_length=1, max_length=320)
    password: str = Field(min_length=1, max_length=PASSWORD_MAX)


class AcceptedOut(OutputModel):
    message: str


class CodeIn(InputModel):
    code: str = Field(min_length=1, max_length=40)  # six digits, or a recovery code


class SecondStepIn(InputModel):
    challenge: str = Field(min_length=1, max_length=2000)
    code: str = Field(min_length=1, max_length=40)


class TwoFactorDisableIn(InputModel):
    password: str = Field(min_length=1, max_length=PASSWORD_MAX)
    code: str = Field(min_length=1, max_length=40)


class TwoFactorSetupOut(OutputModel):
    secret: str  # base32, for typing into an app
    otpauth_uri: str  # for a QR code


class RecoveryCodesOut(OutputModel):
    recovery_codes: list[str]  # shown once: each works one time in place of a code


class TwoFactorStatusOut(OutputModel):
    enabled: bool
    recovery_codes_left: int


class AccountUpdateIn(InputModel):
    name: str | None = Field(None, max_length=NAME_MAX)  # the rule (1 to 200 after trimming) is the service's
    notify_new_sign_in: bool | None = None


class AccountOut(UserOut):
    notify_new_sign_in: bool
