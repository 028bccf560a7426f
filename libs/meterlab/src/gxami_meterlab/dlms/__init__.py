"""The meter side of DLMS/COSEM (a gurux server with our association and security), for simulators."""
