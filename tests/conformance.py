"""The conformance corpus (a copy of ../shared/conformance, so that CI needs nothing beside the
repository): frames from lib60870-C and scapy with Wireshark's reading of each."""
import json
from pathlib import Path

CORPUS = Path(__file__).resolve().parent / "data" / "conformance"
PCAP = CORPUS / "lib60870_capture.pcap"


def frames(name: str | None = None) -> list[dict]:
    names = [name] if name else ["lib60870_capture.jsonl", "scapy_built.jsonl"]
    return [json.loads(line) for n in names for line in (CORPUS / n).read_text().splitlines() if line]
