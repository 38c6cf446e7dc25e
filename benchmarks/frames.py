"""Large buffers of realistic IEC 104 traffic, built with numpy (no encoder needed)."""
import numpy as np


def _apdus(type_id: int, elem: np.ndarray, n_frames: int, per_frame: int, cot=3) -> bytes:
    """``n_frames`` I-frames of ``per_frame`` SQ=0 objects each, element octets ``elem``."""
    elen = elem.shape[1]
    asdu_len = 6 + per_frame * (3 + elen)
    frame = np.zeros((n_frames, 6 + asdu_len), np.uint8)
    frame[:, 0] = 0x68
    frame[:, 1] = asdu_len + 4
    ns = (np.arange(n_frames) % 32768) << 1
    frame[:, 2] = ns & 0xFF
    frame[:, 3] = ns >> 8
    frame[:, 6] = type_id
    frame[:, 7] = per_frame
    frame[:, 8] = cot
    frame[:, 10] = 1
    objs = frame[:, 12:].reshape(n_frames, per_frame, 3 + elen)
    ioa = np.arange(n_frames * per_frame).reshape(n_frames, per_frame) % 16_000_000 + 1
    objs[:, :, 0] = ioa & 0xFF
    objs[:, :, 1] = (ioa >> 8) & 0xFF
    objs[:, :, 2] = ioa >> 16
    objs[:, :, 3:] = np.resize(elem, (n_frames * per_frame, elen)).reshape(n_frames, per_frame, elen)
    return frame.tobytes()


def _float_elems(n, with_time):
    rng = np.random.default_rng(1)
    v = rng.normal(100, 30, n).astype("<f4").view(np.uint8).reshape(n, 4)
    q = np.zeros((n, 1), np.uint8)
    parts = [v, q]
    if with_time:
        cp56 = np.frombuffer(bytes.fromhex("3930110917 0b1a".replace(" ", "")), np.uint8)
        parts.append(np.tile(cp56, (n, 1)))
    return np.hstack(parts)


def m_me_nc(n_objects: int, per_frame: int = 30) -> bytes:
    """M_ME_NC_1 (short float), 30 objects per ASDU, SQ=0."""
    return _apdus(13, _float_elems(4096, False), n_objects // per_frame, per_frame)


def m_me_tf(n_objects: int, per_frame: int = 16) -> bytes:
    """M_ME_TF_1 (short float with CP56Time2a), as many as fit an APDU."""
    return _apdus(36, _float_elems(4096, True), n_objects // per_frame, per_frame)


def mix(n_objects: int) -> bytes:
    """A realistic mix: floats, scaled, single/double points, counters, time-tagged events."""
    share = n_objects // 10
    parts = [
        m_me_nc(4 * share),
        _apdus(11, np.tile(np.array([[0x10, 0x27, 0]], np.uint8), (64, 1)), share // 40, 40),
        _apdus(1, np.array([[1], [0]], np.uint8), share // 60, 60),
        _apdus(3, np.array([[2], [1]], np.uint8), share // 60, 60),
        _apdus(15, np.tile(np.array([[1, 2, 3, 4, 5]], np.uint8), (8, 1)), share // 30, 30),
        _apdus(30, np.tile(np.frombuffer(bytes.fromhex("01393011090b0b1a"), np.uint8), (8, 1)),
               share // 22, 22),
        m_me_tf(3 * share),
    ]
    # interleave frames of each kind so that the decoder's branches alternate
    return b"".join(parts)
