"""Pure protocol cores: framers, codecs and state machines, with no I/O.

Nothing under this package imports ``asyncio``, ``socket`` or ``serial`` (ruff TID251 and
``tests/test_layering.py`` enforce it). A core is driven by bytes in, bytes out, ``now`` and its
next deadline; :mod:`gxcore.drivers` joins it to a :mod:`gxcore.media` medium.
"""
