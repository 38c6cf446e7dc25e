"""TLS (IEC 62351-3) between our master and our simulator, the failed handshakes, and interop
with a lib60870 (c104) TLS outstation. Certificates are made by trustme at test time; no key
is committed. Every async test runs on asyncio and on uvloop (conftest)."""
import asyncio
import datetime as dt
import ssl
import time

import pytest

trustme = pytest.importorskip("trustme")

import iec104
from iec104.errors import ConnectError, SettingsError
from iec104.outstation import Outstation
from iec104.tls import TLS, fingerprint

from waiting import wait_for
from waiting import quick_broadcast_settle  # noqa: F401 (autouse: 0.02 s settle)

HOST = "127.0.0.1"
FAST = dict(t0=5.0, reconnect=False, gi_on_start=False)



class PKI:
    """A CA, an outstation certificate for 127.0.0.1 and a master certificate, as files."""

    def __init__(self, path):
        self.path = path
        self.ca = trustme.CA(organization_name="iec104 test CA")
        self.ca_pem = self.write(self.ca.cert_pem, "ca.pem")
        self.server = self.leaf("server", HOST, common_name="rtu-7")
        self.client = self.leaf("client", "master.example", common_name="master-1")

    def write(self, blob, name):
        p = self.path / name
        blob.write_to_path(str(p))
        return str(p)

    def leaf(self, name, *ids, ca=None, **kw):
        cert = (ca or self.ca).issue_cert(*ids, **kw)
        pem = self.write(cert.private_key_and_cert_chain_pem, f"{name}.pem")
        self.write(cert.cert_chain_pems[0], f"{name}.crt")
        return pem

    def der(self, name):
        return ssl.PEM_cert_to_DER_cert((self.path / f"{name}.crt").read_text())

    def crl(self, *revoked, name="ca.crl"):
        """A CRL of the CA (PEM) revoking the certificates named ``revoked``."""
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        ca_cert = x509.load_pem_x509_certificate(self.ca.cert_pem.bytes())
        key = serialization.load_pem_private_key(self.ca.private_key_pem.bytes(), None)
        now = dt.datetime.now(dt.timezone.utc)
        b = (x509.CertificateRevocationListBuilder().issuer_name(ca_cert.subject)
             .last_update(now - dt.timedelta(hours=1)).next_update(now + dt.timedelta(days=1)))
        for r in revoked:
            serial = x509.load_der_x509_certificate(self.der(r)).serial_number
            b = b.add_revoked_certificate(x509.RevokedCertificateBuilder().serial_number(serial)
                                          .revocation_date(now - dt.timedelta(minutes=5)).build())
        p = self.path / name
        p.write_bytes(b.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM))
        return str(p)

    def server_tls(self, **kw):
        return TLS(cert=self.server, ca=self.ca_pem, **kw)

    def client_tls(self, **kw):
        kw.setdefault("cert", self.client)
        return TLS(ca=self.ca_pem, **kw)


@pytest.fixture
def pki(tmp_path):
    return PKI(tmp_path)


async def _refused(out_tls, master_tls, **kw) -> tuple[str, Outstation]:
    """Connect once with ``master_tls`` to a simulator serving ``out_tls``: the ConnectError's
    text (and the simulator) -- bounded in time."""
    async with Outstation(stations=1, points=10, tls=out_tls) as out, \
            iec104.Master(**FAST) as m:
        t = time.monotonic()
        with pytest.raises(ConnectError) as e:
            await asyncio.wait_for(m.connect(HOST, out.port, tls=master_tls, **kw), 8)
        assert time.monotonic() - t < 6
        assert "\n" not in str(e.value)
        print("refused:", e.value)
        await asyncio.sleep(0.05)
        return str(e.value), out


# ---- working links ------------------------------------------------------------------------

@pytest.mark.parametrize("version", ["1.2", "1.3"])
async def test_gi_and_command_over_mutual_tls(pki, version):
    tls_out = pki.server_tls(min_version=version, max_version=version)
    async with Outstation(stations=2, points=50, tls=tls_out) as out, \
            iec104.Master(gi_on_start=False) as m:
        rtu = await m.connect(HOST, out.port, tls=pki.client_tls(), t0=5)
        assert await rtu.interrogate() > 0
        assert len(m.points()) > 0
        res = await rtu.command(1, 3, "C_SE_NC_1", 42.0, wait_term=True)
        assert res.ioa == 3
        assert out.commands and out.commands[-1]["ioa"] == 3
        st = rtu.status()["tls"]
        assert st["version"] == f"TLSv{version}"
        assert st["cipher"] and st["peer_subject"] and "rtu-7" in st["peer_subject"]
        assert st["on"] is True and st["peer_not_after"]
        expires = ssl.cert_time_to_seconds(st["peer_not_after"])
        assert st["peer_expires"] == expires and expires > time.time() + 86400
        if version == "1.2":
            assert "GCM" in st["cipher"] and "ECDHE" in st["cipher"]   # IEC 62351-3 suites
        assert out.counts["tls_failures"] == 0


async def test_plain_session_status_says_no_tls():
    async with Outstation(stations=1, points=5) as out, iec104.Master(gi_on_start=False) as m:
        rtu = await m.connect(HOST, out.port)
        assert rtu.status()["tls"] is None


async def test_ready_ssl_contexts_on_both_sides(pki):
    server_ctx = pki.server_tls().server_context()
    client_ctx = pki.client_tls().client_context()
    assert server_ctx.verify_mode == ssl.CERT_REQUIRED
    async with Outstation(stations=1, points=10, tls=server_ctx) as out, \
            iec104.Master(gi_on_start=False, tls=client_ctx) as m:
        rtu = await m.connect(HOST, out.port)
        assert await rtu.interrogate() > 0


async def test_allow_list_admits_a_listed_peer_on_both_sides(pki, tmp_path):
    out_tls = pki.server_tls(allowed=[str(tmp_path / "client.crt")])
    master_tls = pki.client_tls(allowed=[fingerprint(pki.der("server"))])
    async with Outstation(stations=1, points=10, tls=out_tls) as out, \
            iec104.Master(gi_on_start=False) as m:
        rtu = await m.connect(HOST, out.port, tls=master_tls)
        assert await rtu.interrogate() > 0


# ---- failed handshakes: each a one-line ConnectError naming the reason ----------------------

async def test_expired_outstation_certificate(pki):
    past = dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=1)
    expired = pki.leaf("old", HOST, not_before=past - dt.timedelta(days=30), not_after=past)
    msg, _ = await _refused(TLS(cert=expired, ca=pki.ca_pem), pki.client_tls())
    assert "expired" in msg


async def test_expired_master_certificate_is_refused_by_the_outstation(pki):
    past = dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=1)
    expired = pki.leaf("oldc", "master.example", not_before=past - dt.timedelta(days=30),
                       not_after=past)
    msg, out = await _refused(pki.server_tls(), pki.client_tls(cert=expired))
    assert "expired" in msg or "refused our certificate" in msg
    assert out.counts["tls_failures"] == 1


async def test_unknown_ca(pki):
    other = trustme.CA()
    foreign = pki.leaf("foreign", HOST, ca=other)
    msg, _ = await _refused(TLS(cert=foreign, ca=pki.ca_pem), pki.client_tls())
    assert "unknown CA" in msg


async def test_wrong_host_name(pki):
    elsewhere = pki.leaf("elsewhere", "rtu-9.example")
    msg, _ = await _refused(TLS(cert=elsewhere, ca=pki.ca_pem), pki.client_tls())
    assert "wrong host name" in msg


async def test_server_hostname_overrides_the_host(pki):
    named = pki.leaf("named", "rtu-9.example")
    async with Outstation(stations=1, points=5, tls=TLS(cert=named, ca=pki.ca_pem)) as out, \
            iec104.Master(gi_on_start=False) as m:
        rtu = await m.connect(HOST, out.port, tls=pki.client_tls(server_hostname="rtu-9.example"))
        assert rtu.status()["tls"]["version"]


async def test_no_client_certificate_refused_and_other_clients_undisturbed(pki):
    async with Outstation(stations=1, points=10, tls=pki.server_tls()) as out, \
            iec104.Master(**FAST) as m:
        good = await m.connect(HOST, out.port, tls=pki.client_tls(), name="good")
        with pytest.raises(ConnectError) as e:
            await asyncio.wait_for(m.connect(HOST, out.port, tls=pki.client_tls(cert=None),
                                             name="anonymous"), 8)
        assert "client certificate" in str(e.value) or "refused our certificate" in str(e.value)
        await asyncio.sleep(0.05)
        assert out.counts["tls_failures"] == 1
        assert good.data_transfer == "started"
        assert await good.interrogate() > 0


async def test_outstation_not_in_the_masters_allow_list(pki):
    other = pki.leaf("other", HOST)
    msg, _ = await _refused(pki.server_tls(),
                            pki.client_tls(allowed=[fingerprint(pki.der("other"))]))
    assert "not in the allow-list" in msg
    assert other


async def test_master_not_in_the_outstations_allow_list(pki):
    pki.leaf("client2", "master2.example")
    msg, out = await _refused(pki.server_tls(allowed=[fingerprint(pki.der("client2"))]),
                              pki.client_tls())
    assert out.counts["tls_failures"] == 1


async def test_tls_master_against_a_plain_outstation_fails_cleanly(pki):
    msg, _ = await _refused(None, pki.client_tls(), t0=2.0)
    assert "TLS" in msg or "t0" in msg


async def test_plain_master_against_a_tls_outstation_fails_cleanly(pki):
    async with Outstation(stations=1, points=10, tls=pki.server_tls()) as out, \
            iec104.Master(**FAST) as m:
        t = time.monotonic()
        with pytest.raises(ConnectError):
            await asyncio.wait_for(m.connect(HOST, out.port, t0=2.0), 8)
        assert time.monotonic() - t < 4
        await asyncio.sleep(0.05)
        assert out.counts["tls_failures"] == 1


# ---- settings ---------------------------------------------------------------------------------

def test_key_password_never_shows(pki, tmp_path):
    from cryptography.hazmat.primitives import serialization
    key = serialization.load_pem_private_key(
        pki.ca.issue_cert("x.example").private_key_pem.bytes(), None)
    enc = tmp_path / "enc.key"
    enc.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                      serialization.PrivateFormat.PKCS8,
                                      serialization.BestAvailableEncryption(b"hunter2-secret")))
    t = TLS(cert=pki.client, key=str(enc), ca=pki.ca_pem, password="not-the-password")
    assert "not-the-password" not in repr(t)
    with pytest.raises(SettingsError) as e:
        t.client_context()
    assert "not-the-password" not in str(e.value) and "hunter2" not in str(e.value)
    assert e.value.__context__ is None or "not-the-password" not in repr(e.value.__context__)


def test_settings_checks(pki):
    with pytest.raises(SettingsError):
        TLS(min_version="1.3", max_version="1.2")
    with pytest.raises(SettingsError):
        TLS(ca=pki.ca_pem).server_context()             # an outstation needs a certificate
    with pytest.raises(SettingsError):
        iec104.SessionSettings.of(tls="yes")
    ctx = pki.client_tls(crl=None).client_context()
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2
    assert ctx.check_hostname and ctx.verify_mode == ssl.CERT_REQUIRED


def test_target_file_and_cli_tls_keys(pki, tmp_path):
    from iec104.cli import _parser, _session_settings
    from iec104.targets import parse_targets
    f = tmp_path / "rtus.toml"
    f.write_text(f'[[rtu]]\nhost = "127.0.0.1"\nport = 2405\ntls_cert = "{pki.client}"\n'
                 f'tls_ca = "{pki.ca_pem}"\n\n[[rtu]]\nhost = "127.0.0.2"\n')
    a, b = parse_targets([str(f)])
    assert isinstance(a.settings["tls"], TLS) and a.settings["tls"].ca == pki.ca_pem
    assert "tls" not in b.settings
    f.write_text('[[rtu]]\nhost = "h"\ntls_ca = "/nonexistent/ca.pem"\n')
    with pytest.raises(SettingsError, match="tls_ca"):
        parse_targets([str(f)])
    args = _parser().parse_args(["poll", "h", "--tls-cert", pki.client, "--tls-ca", pki.ca_pem])
    assert _session_settings(args)["tls"].cert == pki.client
    args = _parser().parse_args(["simulate", "--tls-cert", pki.server, "--tls-ca", pki.ca_pem])
    assert _session_settings(args)["tls"].cert == pki.server


async def test_revoked_outstation_certificate_is_refused_by_the_crl(pki):
    msg, _ = await _refused(pki.server_tls(), pki.client_tls(crl=pki.crl("server")))
    assert "revoked" in msg


async def test_a_crl_that_does_not_list_the_peer_lets_it_in(pki):
    async with Outstation(stations=1, points=10, tls=pki.server_tls()) as out, \
            iec104.Master(**FAST) as m:
        rtu = await m.connect(HOST, out.port, tls=pki.client_tls(crl=pki.crl("client")))
        assert await rtu.interrogate() > 0


async def test_revoked_master_certificate_is_refused_by_the_outstation(pki):
    msg, out = await _refused(pki.server_tls(crl=pki.crl("client")), pki.client_tls())
    assert out.counts["tls_failures"] >= 1 and "TLS" in msg


def test_cli_and_target_crl_and_allow_list(pki, tmp_path):
    from iec104.cli import _parser, _session_settings
    from iec104.targets import parse_targets
    crl, fp = pki.crl(), fingerprint(pki.der("server"))
    args = _parser().parse_args(["poll", "h", "--tls-cert", pki.client, "--tls-ca", pki.ca_pem,
                                 "--tls-crl", crl, "--tls-allow", fp,
                                 "--tls-allow", str(tmp_path / "client.crt")])
    tls = _session_settings(args)["tls"]
    assert tls.crl == crl and tls.fingerprints == {fp, fingerprint(pki.der("client"))}
    args = _parser().parse_args(["simulate", "--tls-cert", pki.server, "--tls-allow", fp])
    assert _session_settings(args)["tls"].fingerprints == {fp}
    f = tmp_path / "rtus.toml"
    f.write_text(f'[[rtu]]\nhost = "h"\ntls_crl = "{crl}"\ntls_allow = ["{fp}"]\n')
    assert parse_targets([str(f)])[0].settings["tls"].fingerprints == {fp}
    f.write_text(f'[[rtu]]\nhost = "h"\ntls_allow = "{fp}, {tmp_path / "none.crt"}"\n')
    with pytest.raises(SettingsError, match="tls_allow.*none.crt"):
        parse_targets([str(f)])
    args = _parser().parse_args(["poll", "h", "--tls-crl", str(tmp_path / "no.crl")])
    with pytest.raises(SettingsError, match="tls_crl"):
        _session_settings(args)


def test_allow_list_takes_a_pem_whose_key_comes_first(pki, tmp_path):
    """An allow-list file is read for its CERTIFICATE blocks only: a key before the
    certificate (the key+chain PEM --tls-cert takes), openssl's "Bag Attributes" lines and
    other blocks are ignored, every certificate of a chain is allowed, and a DER file is
    taken as one. A file with no certificate or a corrupt one, or a str that is not a file,
    is a SettingsError naming the file, never its content: no key material in the message;
    a str that looks like PEM text is not echoed at all."""
    server, client = fingerprint(pki.der("server")), fingerprint(pki.der("client"))
    assert TLS(allowed=[pki.server]).fingerprints >= {server}      # key first, then the chain
    pem = (tmp_path / "server.pem").read_text()
    key = pem[:pem.index("-----BEGIN CERTIFICATE")]
    bag = tmp_path / "bags.pem"
    bag.write_text("Bag Attributes\n    localKeyID: 01 02 03\nsubject=/CN=rtu-7\nissuer=/O=x\n"
                   + (tmp_path / "server.crt").read_text()
                   + "Bag Attributes\n    friendlyName: m\n" + (tmp_path / "client.crt").read_text()
                   + key)
    assert TLS(allowed=[str(bag)]).fingerprints == {server, client}
    der = tmp_path / "client.der"
    der.write_bytes(pki.der("client"))
    assert TLS(allowed=[der]).fingerprints == {client}

    secret = key.splitlines()[1]                        # a line of the private key
    only_key = tmp_path / "only.key"
    only_key.write_text(key)
    with pytest.raises(SettingsError, match="only.key.*no certificate") as e:
        TLS(allowed=[str(only_key)]).fingerprints
    assert secret not in str(e.value) and "PRIVATE" not in str(e.value)
    corrupt = tmp_path / "corrupt.pem"
    corrupt.write_text(key + "-----BEGIN CERTIFICATE-----\n" + secret[:40] + "!!\n"
                       "-----END CERTIFICATE-----\n")
    with pytest.raises(SettingsError, match="corrupt.pem.*corrupt") as e:
        TLS(allowed=[str(corrupt)]).fingerprints
    assert secret[:20] not in str(e.value)
    junk = tmp_path / "junk.der"
    junk.write_bytes(b"\x30\x82\x05\x00 truncated")
    with pytest.raises(SettingsError, match="junk.der"):
        TLS(allowed=[str(junk)]).fingerprints
    with pytest.raises(SettingsError, match="none.crt"):
        TLS(allowed=[str(tmp_path / "none.crt")]).fingerprints
    with pytest.raises(SettingsError, match="not a file \\(PEM text\\?\\)") as e:
        TLS(allowed=[key]).fingerprints                 # the key itself given as a str
    assert secret not in str(e.value) and "BEGIN" not in str(e.value)


def test_tls_is_a_public_name():
    assert iec104.TLS is TLS and "TLS" in iec104.__all__


# ---- interop: lib60870 (c104) ------------------------------------------------------------------

@pytest.mark.interop
@pytest.mark.parametrize("version", ["1.2", "1.3"])
async def test_c104_tls_outstation_interrogated_by_our_master(pki, version):
    c104 = pytest.importorskip("c104")
    from c104_peer import C104Outstation, free_port
    sec = c104.TransportSecurity(validate=True, only_known=False)
    cert = pki.path / "server.crt"
    key = pki.path / "server.key"
    key.write_text(pki.path.joinpath("server.pem").read_text().split("-----BEGIN CERTIFICATE")[0])
    sec.set_certificate(cert=str(cert), key=str(key))
    sec.set_ca_certificate(cert=pki.ca_pem)
    v = c104.TlsVersion.TLS_1_2 if version == "1.2" else c104.TlsVersion.TLS_1_3
    sec.set_version(min=v, max=v)
    peer = C104Outstation(stations=1, points=20, port=free_port())
    peer.server = _tls_server(c104, peer, sec)
    with peer:
        # t2 0.05 s, and the S-frame out before close()'s STOPDT act: sent together (one TLS
        # record), lib60870 acted on the S-frame alone and never answered the STOPDT (about
        # one run in three), and close() waited out its 2 s for the STOPDT con
        async with iec104.Master(gi_on_start=False, t2=0.05) as m:
            rtu = await m.connect(HOST, peer.port, tls=pki.client_tls(), t0=5)
            assert await rtu.interrogate() == 20
            assert rtu.status()["tls"]["version"] == f"TLSv{version}"
            await wait_for(lambda: rtu.status()["link"]["unacked_received"] == 0, 5)
        # and without a client certificate lib60870 refuses us: a ConnectError, not a hang
        async with iec104.Master(**FAST) as m:
            with pytest.raises(ConnectError):
                await asyncio.wait_for(m.connect(HOST, peer.port, tls=pki.client_tls(cert=None),
                                                 t0=3), 8)


def _tls_server(c104, peer, sec):
    """c104_peer's outstation image again, on a c104.Server with ``sec``."""
    server = c104.Server(ip=HOST, port=peer.port, select_timeout_ms=5000, transport_security=sec)
    server.protocol_parameters.send_window_size = 2000
    from c104_peer import MONITOR
    st = server.add_station(common_address=1)
    for ioa in range(1, 21):
        typ, setter, _ = MONITOR[(ioa - 1) % len(MONITOR)]
        st.add_point(io_address=ioa, type=typ).value = setter(ioa)
    return server


@pytest.mark.interop
def test_c104_tls_master_against_our_simulator():
    pytest.skip("c104 2.2.1's TLS client fails every handshake on this platform (mbedtls "
                "-0x5D80; it cannot be given a host name): the c104-master direction is not "
                "tested yet (issue 14 suggests a small TLS relay in the test)")


async def test_a_missing_allow_list_file_fails_connect_not_hangs(tmp_path):
    """A TLS allow-list file that is not there fails connect with one ConnectError naming it
    (it used to kill the connect task and leave connect() waiting for ever)."""
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with iec104.Master(reconnect=False, gi_on_start=False) as m:
            tls = TLS(verify=False, allowed=[str(tmp_path / "gone.crt")])
            with pytest.raises((ConnectError, SettingsError), match="gone.crt"):
                await asyncio.wait_for(m.connect("127.0.0.1", port, tls=tls), 3)
    finally:
        server.close()
