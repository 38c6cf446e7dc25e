"""A c104 (lib60870-C) outstation for the benchmarks: argv port stations points k."""
import sys
import time

import c104

port, stations, points, k = (int(a) for a in sys.argv[1:5])
server = c104.Server(ip="127.0.0.1", port=port, tick_rate_ms=50)
# lib60870 drops GI data when its send window is full: raise k as the benchmark asks
server.protocol_parameters.send_window_size = k
for ca in range(1, stations + 1):
    st = server.add_station(common_address=ca)
    for ioa in range(1, points + 1):
        p = st.add_point(io_address=ioa, type=c104.Type.M_ME_NC_1)
        p.value = ioa * 0.5
server.start()
while True:
    time.sleep(3600)
