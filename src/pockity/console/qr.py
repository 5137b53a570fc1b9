"""QR codes for crypto payments, drawn as inline SVG on the server (segno: pure Python, no image library).

What a code holds is what a wallet can act on without guessing: BTC a BIP 21 URI with the amount, ETH an
EIP-681 URI with the value in wei, USDC (a token transfer, whose URI would name a chain and a contract the
settings do not) the address alone — the page shows the amount beside it with a copy button.
"""

from __future__ import annotations

import io
from decimal import Decimal, InvalidOperation

import segno
from markupsafe import Markup

_WEI = Decimal(10) ** 18


def payment_uri(asset: str, address: str, amount: str | None) -> str:
    """The text to encode for paying `amount` of `asset` to `address` (the address alone when unsure)."""
    try:
        value = Decimal(amount) if amount else None
    except InvalidOperation:
        value = None
    if value is None or value <= 0:
        return address
    if asset == "BTC":
        return f"bitcoin:{address}?amount={value.normalize():f}"
    if asset == "ETH":
        wei = value * _WEI
        if wei == wei.to_integral_value():
            return f"ethereum:{address}?value={int(wei)}"
    return address


def svg(text: str, label: str) -> Markup:
    """The code as an inline SVG element, labelled for screen readers; no script, no external reference."""
    code = segno.make(text, error="m")
    out = io.BytesIO()
    code.save(out, kind="svg", scale=4, border=4, xmldecl=False, svgns=True, title=label, dark="#000", light="#fff")
    drawing = out.getvalue().decode("ascii").replace("<svg ", '<svg role="img" ', 1)
    return Markup(drawing)  # noqa: S704 - segno's own output: modules as paths, the label escaped by segno
