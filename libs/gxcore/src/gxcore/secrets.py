"""Secret values (passwords, keys) that never show in reprs, logs or exceptions."""

from __future__ import annotations

from typing import Final


class Secret:
    """A password or key. ``str()`` and ``repr()`` hide it; ``reveal()`` is the one way in."""

    __slots__ = ("_value",)

    _MASK: Final = "Secret('**********')"

    def __init__(self, value: bytes | str) -> None:
        self._value = value.encode() if isinstance(value, str) else bytes(value)

    @classmethod
    def from_hex(cls, text: str) -> Secret:
        """Parse a hex key; a malformed one is reported without echoing it."""
        try:
            return cls(bytes.fromhex(text.strip()))
        except ValueError:
            raise ValueError("key is not valid hex (value not shown)") from None

    def reveal(self) -> bytes:
        return self._value

    def __repr__(self) -> str:
        return self._MASK

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(("Secret", len(self._value)))

    def __reduce__(self) -> tuple[object, ...]:
        # Refuse pickling: a secret must not travel by accident (multiprocessing, caches).
        raise TypeError("Secret values cannot be pickled")
