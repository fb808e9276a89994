"""The released contract is guarded: ``buf breaking`` (in ``make lint``) passes on protos/
and fails on a change that would break a client built from the release."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
IMAGE = ROOT / "protos" / "released" / "smolmesh-v1.binpb"
PROTO = Path("smolmesh") / "v1" / "agent.proto"


def breaking(protos: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["npx", "--no-install", "buf", "breaking", str(protos), "--against", str(IMAGE)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_the_contract_is_compatible_with_its_release() -> None:
    result = breaking(ROOT / "protos")
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("change", "complaint"),
    [
        (("  string reason = 1;\n", "  string code = 1;\n"), "reason"),  # a renamed field
        (("  bool retryable = 2;\n", "  int32 retryable = 2;\n"), "type"),  # a changed type
        (("  rpc GetRun(GetRunRequest) returns (GetRunResponse);\n", ""), "GetRun"),  # removed
    ],
)
def test_a_breaking_change_is_caught(
    tmp_path: Path, change: tuple[str, str], complaint: str
) -> None:
    protos = tmp_path / "protos"
    shutil.copytree(ROOT / "protos", protos, ignore=shutil.ignore_patterns("released"))
    text = (protos / PROTO).read_text()
    assert change[0] in text
    (protos / PROTO).write_text(text.replace(change[0], change[1], 1))
    result = breaking(protos)
    assert result.returncode != 0 and complaint in result.stdout + result.stderr
