"""A real IEC 104 outstation for interoperability tests: lib60870-C through the c104 package."""

import socket
import threading
import time

import c104

# monitor points per station: (type, value setter) cycling over the IOAs
MONITOR = [
    (c104.Type.M_SP_NA_1, lambda i: bool(i % 2), lambda i: float(i % 2)),
    (c104.Type.M_DP_NA_1, lambda i: c104.Double.ON if i % 2 else c104.Double.OFF,
     lambda i: 2.0 if i % 2 else 1.0),
    (c104.Type.M_ME_NB_1, lambda i: c104.Int16(i * 7 - 500), lambda i: float(i * 7 - 500)),
    (c104.Type.M_ME_NC_1, lambda i: i * 0.25, lambda i: i * 0.25),
]
COMMANDS = {  # ioa: (type, command mode)
    5001: (c104.Type.C_SC_NA_1, c104.CommandMode.DIRECT),
    5002: (c104.Type.C_SC_NA_1, c104.CommandMode.SELECT_AND_EXECUTE),
    5003: (c104.Type.C_DC_NA_1, c104.CommandMode.DIRECT),
    5004: (c104.Type.C_RC_NA_1, c104.CommandMode.DIRECT),
    5005: (c104.Type.C_SE_NA_1, c104.CommandMode.DIRECT),
    5006: (c104.Type.C_SE_NB_1, c104.CommandMode.DIRECT),
    5007: (c104.Type.C_SE_NC_1, c104.CommandMode.DIRECT),
    5008: (c104.Type.C_BO_NA_1, c104.CommandMode.DIRECT),
    5009: (c104.Type.C_SE_NC_1, c104.CommandMode.SELECT_AND_EXECUTE),
    5011: (c104.Type.C_SC_TA_1, c104.CommandMode.DIRECT),
    5012: (c104.Type.C_DC_TA_1, c104.CommandMode.DIRECT),
    5013: (c104.Type.C_SE_TC_1, c104.CommandMode.DIRECT),
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class C104Outstation:
    """Stations CA 1..``stations`` with ``points`` monitor points each (IOA 1..points,
    types cycling over MONITOR) and the command points of COMMANDS; records commands."""

    def __init__(self, *, stations=3, points=100, port=None):
        self.port = port or free_port()
        self.server = c104.Server(ip="127.0.0.1", port=self.port, select_timeout_ms=5000)
        # lib60870 drops GI data when its send window is full: raise k for big images
        self.server.protocol_parameters.send_window_size = 2000
        self.expected = {}                      # (ca, ioa) -> (type_id, value)
        self.received = []                      # commands: dicts
        self._lock = threading.Lock()
        for ca in range(1, stations + 1):
            st = self.server.add_station(common_address=ca)
            for ioa in range(1, points + 1):
                typ, setter, expect = MONITOR[(ioa - 1) % len(MONITOR)]
                p = st.add_point(io_address=ioa, type=typ)
                p.value = setter(ioa)
                self.expected[(ca, ioa)] = (int(typ), expect(ioa))
            for ioa, (typ, mode) in COMMANDS.items():
                p = st.add_point(io_address=ioa, type=typ, command_mode=mode)
                p.on_receive(callable=self._on_command)

    def _on_command(self, point: c104.Point, previous_info: c104.Information,
                    message: c104.IncomingMessage) -> c104.ResponseState:
        with self._lock:
            self.received.append({"ca": point.station.common_address, "ioa": point.io_address,
                                  "type": int(point.type), "value": point.value,
                                  "cot": int(message.cot)})
        return c104.ResponseState.SUCCESS

    def __enter__(self):
        self.server.start()
        deadline = time.monotonic() + 5
        while not self.server.is_running and time.monotonic() < deadline:
            time.sleep(0.01)
        return self

    def __exit__(self, *exc):
        self.server.stop()
