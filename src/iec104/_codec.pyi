import numpy as np
from typing_extensions import disjoint_base

from iec104.types import FRAME_DTYPE as FRAME_DTYPE, POINT_DTYPE as POINT_DTYPE

SMALL: int

@disjoint_base
class Workspace:
    def __init__(self, points: int = 4096, frames: int = 0) -> None: ...
    @property
    def points(self) -> np.ndarray: ...
    @property
    def frames(self) -> np.ndarray: ...

@disjoint_base
class Decoder:
    workspace: Workspace
    n_points: int
    n_frames: int
    total_frames: int
    total_points: int
    bad_frames: int
    status_counts: np.ndarray | None
    station: int
    def __init__(self, *, cot_size: int = 2, ca_size: int = 2, ioa_size: int = 3,
                 station: int = 0, tz: object = None, capacity: int = 4096,
                 workspace: Workspace | None = None, frames: int = 0) -> None: ...
    @property
    def points(self) -> np.ndarray: ...
    @property
    def frames(self) -> np.ndarray: ...
    def feed(self, data: bytes | bytearray | memoryview, recv_ns: int | None = None, *,
             final: bool = False) -> int: ...

def rebase_cp24(points: np.ndarray) -> None: ...
def decode_all(data: bytes | bytearray | memoryview, *, cot_size: int = 2, ca_size: int = 2,
               ioa_size: int = 3, station: int = 0, tz: object = None,
               recv_ns: int | None = None) -> tuple[np.ndarray, np.ndarray]: ...
def decode(data: bytes | bytearray | memoryview, *, cot_size: int = 2, ca_size: int = 2,
           ioa_size: int = 3, station: int = 0, tz: object = None,
           recv_ns: int | None = None) -> np.ndarray: ...
def decode_frames(data: bytes | bytearray | memoryview, *, cot_size: int = 2, ca_size: int = 2,
                  ioa_size: int = 3, tz: object = None, recv_ns: int | None = None) -> np.ndarray: ...
def element_lengths() -> dict[int, int]: ...
def struct_sizes() -> tuple[int, int]: ...
