"""Evidence bundles: one ZIP per organization and date range that the SDK's verifier checks
offline, in an environment without Django, and that fails naming the event when one byte moves."""

from __future__ import annotations

import importlib.metadata
import io
import json
import os
import subprocess
import venv
import zipfile
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from packaging.requirements import Requirement

from audit.models import Checkpoint
from tests.conftest import Tenant, create_escalation
from tests.console.helpers import signed_in

pytestmark = pytest.mark.django_db

SDK_SOURCE = Path(__file__).resolve().parents[2] / "sdk" / "src"
RANGE = ("--since", "2000-01-01", "--until", "2999-01-01")


def _distributions(name: str, extras: tuple[str, ...] = ()) -> set[str]:
    """``name`` and everything it requires (with ``extras``), as installed here."""
    found: set[str] = set()
    wanted = [(name, extras)]
    while wanted:
        current, current_extras = wanted.pop()
        distribution = importlib.metadata.distribution(current)
        key = distribution.metadata["Name"].lower()
        if key in found:
            continue
        found.add(key)
        for line in distribution.requires or []:
            requirement = Requirement(line)
            environments = [{"extra": extra} for extra in current_extras] or [{"extra": ""}]
            if requirement.marker and not any(
                requirement.marker.evaluate(environment) for environment in environments
            ):
                continue
            wanted.append((requirement.name, tuple(requirement.extras)))
    return found


@pytest.fixture(scope="session")
def sdk_python(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A fresh venv holding only the SDK and what ``awaithuman-sdk[receipts]`` requires (linked
    from this environment, nothing downloaded): no Django, no app code."""
    root = tmp_path_factory.mktemp("sdk-venv")
    venv.EnvBuilder(with_pip=False).create(root / "venv")
    python = str(root / "venv" / "bin" / "python")
    site_packages = subprocess.check_output(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], text=True
    ).strip()
    packages = root / "packages"
    packages.mkdir()
    for name in _distributions("awaithuman-sdk", ("receipts",)) - {"awaithuman-sdk"}:
        for file in importlib.metadata.distribution(name).files or []:
            top = file.parts[0]
            source = Path(file.locate()).resolve()
            if top.endswith(".dist-info") or top in ("..", "__pycache__"):
                continue
            target = packages / top
            if not target.exists():
                target.symlink_to(
                    source if len(file.parts) == 1 else source.parents[len(file.parts) - 2]
                )
    Path(site_packages, "awaithuman-sdk.pth").write_text(f"{SDK_SOURCE}\n{packages}\n")
    check = subprocess.run([python, "-c", "import django"], capture_output=True, env=_clean_env())
    assert check.returncode != 0, "the verifier's environment must not have Django"
    return python


def _clean_env() -> dict[str, str]:
    return {"PATH": os.environ.get("PATH", ""), "LANG": "C.UTF-8"}


def verify(python: str, bundle: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [python, "-m", "awaithuman_sdk.verify", str(bundle)],
        capture_output=True,
        text=True,
        env=_clean_env(),
        timeout=120,
    )


def answer(tenant: Tenant, escalation_id: str, **body: object) -> None:
    response = tenant.client_for("bob").post(
        f"/api/v1/escalations/{escalation_id}/responses", body, format="json"
    )
    assert response.status_code == 201, response.content


@pytest.fixture
def history(acme: Tenant, globex: Tenant) -> dict[str, str]:
    """Acme: an edited approval, a rejection, a pending one, a checkpoint in the middle."""
    ids = {"edited": create_escalation(acme)["id"]}
    answer(acme, ids["edited"], outcome="approve", edited_arguments={"order": 1042, "amount": 500})
    call_command("audit_checkpoint", "--org", "acme", stdout=io.StringIO())
    ids["rejected"] = create_escalation(acme)["id"]
    answer(acme, ids["rejected"], outcome="reject", comment="Already refunded.")
    ids["pending"] = create_escalation(acme)["id"]
    ids["globex"] = create_escalation(globex)["id"]
    return ids


def make_bundle(tmp_path: Path, slug: str = "acme") -> Path:
    path = tmp_path / f"{slug}.zip"
    call_command(
        "evidence_bundle", "--org", slug, *RANGE, "--output", str(path), stdout=io.StringIO()
    )
    return path


def rewrite(bundle: Path, name: str, old: bytes, new: bytes) -> Path:
    """A copy of the bundle with ``old`` replaced by ``new`` (once) in entry ``name``."""
    tampered = bundle.with_name("tampered.zip")
    with zipfile.ZipFile(bundle) as source, zipfile.ZipFile(tampered, "w") as target:
        for info in source.infolist():
            data = source.read(info)
            if info.filename == name:
                assert old in data
                data = data.replace(old, new, 1)
            target.writestr(info.filename, data)
    return tampered


def test_a_bundle_holds_the_range_with_its_audit_segment_checkpoints_and_keys(
    acme, history, tmp_path
):
    with zipfile.ZipFile(make_bundle(tmp_path)) as bundle:
        names = set(bundle.namelist())
        escalations = [json.loads(line) for line in bundle.read("escalations.jsonl").splitlines()]
        events = [json.loads(line) for line in bundle.read("audit/events.jsonl").splitlines()]
        manifest = json.loads(bundle.read("manifest.json"))
        notes = bundle.read("audit/checkpoints.txt").decode()

    assert names == {
        "README.txt",
        "manifest.json",
        "jwks.json",
        "escalations.jsonl",
        "audit/events.jsonl",
        "audit/checkpoints.txt",
    }
    assert [e["id"] for e in escalations] == [history[n] for n in ("edited", "rejected", "pending")]
    edited = escalations[0]
    assert edited["context"]["messages"] == [{"role": "user", "content": "I was charged twice!"}]
    assert edited["decision"]["edited_arguments"] == {"order": 1042, "amount": 500}
    assert edited["decision"]["receipt"].count(".") == 2
    assert [r["outcome"] for r in edited["responses"]] == ["approve"]
    assert [e["seq"] for e in events] == list(
        range(events[0]["seq"], manifest["audit"]["last_seq"] + 1)
    )
    assert {e["organization_id"] for e in events} == {acme.organization.pk}
    assert notes.count("\n----\n") == 1  # the one signed mid-way, and the bundle's anchor
    assert Checkpoint.objects.filter(organization_id=acme.organization.pk).count() == 2
    assert history["globex"] not in json.dumps(escalations)


def test_the_sdk_verifier_passes_a_bundle_without_django(acme, history, tmp_path, sdk_python):
    result = verify(sdk_python, make_bundle(tmp_path))

    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("PASS: ")
    assert "3 escalations, 1 receipts verified" in result.stdout
    assert "2 signed checkpoints" in result.stdout


def test_one_byte_changed_in_a_context_fails_naming_the_event(acme, history, tmp_path, sdk_python):
    tampered = rewrite(
        make_bundle(tmp_path), "escalations.jsonl", b"charged twice", b"charged twicf"
    )

    result = verify(sdk_python, tampered)

    assert result.returncode == 1
    assert result.stdout.startswith("FAIL:")
    assert (
        f"escalation {history['edited']} (audit event seq " in result.stdout
        and "escalation.created): the context does not match the digest" in result.stdout
    )


def test_one_byte_changed_in_an_audit_event_fails_naming_it(acme, history, tmp_path, sdk_python):
    bundle = make_bundle(tmp_path)
    with zipfile.ZipFile(bundle) as source:
        events = [json.loads(line) for line in source.read("audit/events.jsonl").splitlines()]
    first = next(e for e in events if e["data"].get("comment") == "Already refunded.")
    tampered = rewrite(
        bundle,
        "audit/events.jsonl",
        b'"comment":"Already refunded."',
        b'"comment":"Already refunded!"',
    )

    result = verify(sdk_python, tampered)

    assert result.returncode == 1
    assert result.stdout.splitlines()[:2] == [
        "FAIL:",
        f"  audit event seq {first['seq']} ({first['action']}): "
        "hash mismatch: the event was changed",
    ]


def test_a_forged_checkpoint_or_receipt_fails(acme, history, tmp_path):
    from awaithuman_sdk.verify import verify_bundle

    bundle = make_bundle(tmp_path)
    with zipfile.ZipFile(bundle) as source:
        edited = json.loads(source.read("escalations.jsonl").splitlines()[0])
    receipt = edited["decision"]["receipt"]
    forged = receipt[:-4] + ("AAAA" if not receipt.endswith("AAAA") else "BBBB")
    report = verify_bundle(
        str(rewrite(bundle, "escalations.jsonl", receipt.encode(), forged.encode()))
    )
    assert (
        f"escalation {history['edited']}: the receipt's signature does not verify"
        in report.problems
    )

    with zipfile.ZipFile(bundle) as source:
        keys = source.read("jwks.json")
    other_key = b'"x": "' + b"A" * 43 + b'"'
    report = verify_bundle(
        str(rewrite(bundle, "jwks.json", keys[keys.index(b'"x": "') :][:50], other_key))
    )
    assert not report.ok
    assert any("not signed by a key of jwks.json" in problem for problem in report.problems)


def test_the_bundle_api_is_for_admins_and_owners_with_a_personal_key(acme, history, tmp_path):
    response = acme.client_for("alice").get(
        "/api/v1/audit/bundle", {"since": "2000-01-01", "until": "2999-01-01"}
    )
    assert response.status_code == 200
    assert response["Content-Type"] == "application/zip"
    assert response.streaming
    path = tmp_path / "api.zip"
    path.write_bytes(b"".join(response.streaming_content))
    from awaithuman_sdk.verify import verify_bundle

    assert verify_bundle(str(path)).ok
    for client in (acme.client_for("bob"), acme.agent_client()):
        refused = client.get("/api/v1/audit/bundle", {"since": "2000-01-01", "until": "2999-01-01"})
        assert refused.status_code == 403


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"until": "2999-01-01"}, "since"),
        ({"since": "yesterday", "until": "2999-01-01"}, "since"),
        ({"since": "2026-02-01", "until": "2026-01-01"}, "until"),
    ],
)
def test_a_bad_range_is_a_400_naming_the_field(acme, query, field):
    response = acme.client_for("alice").get("/api/v1/audit/bundle", query)

    assert response.status_code == 400
    assert response["Content-Type"] == "application/problem+json"
    assert list(response.json()["errors"]) == [field]


def test_another_organizations_bundle_holds_none_of_ours(acme, globex, history, tmp_path):
    with zipfile.ZipFile(make_bundle(tmp_path, "globex")) as bundle:
        content = b"".join(bundle.read(name) for name in bundle.namelist())
    for name in ("edited", "rejected", "pending"):
        assert history[name].encode() not in content
    assert history["globex"].encode() in content
    assert acme.organization.public_id.encode() not in content


def test_an_admin_downloads_a_bundle_from_the_console(acme, history):
    client = signed_in(acme.members["alice"].user)
    assert b'href="/org/evidence/"' in client.get("/org/audit/").content
    page = client.get("/org/evidence/")
    assert page.status_code == 200
    assert b'data-testid="evidence-form"' in page.content

    download = client.get(
        "/org/evidence/", {"since": "2000-01-01", "until": "2999-01-01", "download": "1"}
    )
    assert download.status_code == 200
    with zipfile.ZipFile(io.BytesIO(b"".join(download.streaming_content))) as bundle:
        assert history["edited"].encode() in bundle.read("escalations.jsonl")

    bad = client.get("/org/evidence/", {"since": "nope", "until": "2999-01-01", "download": "1"})
    assert bad.status_code == 400
    assert b"Must be an ISO 8601 date" in bad.content


def test_the_command_refuses_a_bad_range(acme, tmp_path):
    with pytest.raises(CommandError, match="until"):
        call_command(
            "evidence_bundle",
            "--org",
            "acme",
            "--since",
            "2026-02-01",
            "--until",
            "2026-01-01",
            "--output",
            str(tmp_path / "x.zip"),
        )
