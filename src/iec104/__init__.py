"""iec104: a fast IEC 60870-5-104 master."""
