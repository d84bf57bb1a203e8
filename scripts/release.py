"""Release artifacts of the single binary: ``make release`` (run with the build venv's Python).

    python scripts/release.py [--rebuild]   dist/release/: binary, .sha256, CycloneDX SBOM,
                                            BUILD_INFO.json, proto/ (the gRPC contract)
                                            (builds dist/ailb when needed)
    python scripts/release.py binary        dist/ailb with build info inside (what `make binary`
                                            can run): writes ailb/_build.json, runs PyInstaller
                                            on build_binary.spec, removes the file again
    python scripts/release.py build-info    only write ailb/_build.json

dist/ailb is rebuilt when it is missing, older than a source file, or carries build info from
another commit. The SBOM starts from ``cyclonedx-py environment`` (the whole build venv) and
keeps only the distributions that have a module or file inside the binary's archive, plus
CPython and the system shared libraries PyInstaller bundled (with their Debian packages when
dpkg knows them). Standard library only, apart from PyInstaller (archive reader) and
cyclonedx-bom (SBOM), both in the ``dev`` extra.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SPEC = ROOT / "build_binary.spec"
BINARY = ROOT / "dist" / "ailb"
OUT = ROOT / "dist" / "release"
BUILD_FILE = ROOT / "ailb" / "_build.json"
PROTO = ROOT / "proto"
# Files whose change means the binary must be rebuilt.
INPUT_GLOBS = ("ailb/**/*.py", "build_binary.spec", "pyproject.toml")
CYCLONEDX_REQUIREMENT = "cyclonedx-bom>=7,<8"
CDX_SPEC_VERSION = "1.6"


def log(message: str) -> None:
    print(f"release: {message}", flush=True)


# --- build info ------------------------------------------------------------------------------

def git_commit() -> str:
    """Short HEAD, ``-dirty`` when tracked files differ from it; ``unknown`` without git."""
    try:
        sha = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain",
                                "--untracked-files=no"],
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return sha + ("-dirty" if dirty else "") if sha else "unknown"


def project_version() -> str:
    try:
        return metadata.version("ailb")
    except metadata.PackageNotFoundError:  # not installed in this interpreter: read the source
        text = (ROOT / "ailb" / "__init__.py").read_text(encoding="utf-8")
        found = re.search(r'^__version__\s*=\s*"([^"]+)"', text, re.M)
        if not found:
            raise SystemExit("release: cannot determine the ailb version") from None
        return found.group(1)


def utc_now() -> str:
    return dt.datetime.now(dt.UTC).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def new_build_info() -> dict[str, str]:
    """$AILB_BUILD_COMMIT / $AILB_BUILD_DATE win (a Docker build has no .git to ask)."""
    return {"version": project_version(),
            "commit": os.environ.get("AILB_BUILD_COMMIT") or git_commit(),
            "build_date": os.environ.get("AILB_BUILD_DATE") or utc_now(),
            "python": platform.python_version()}


def write_build_file(info: dict[str, str]) -> None:
    BUILD_FILE.write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    log(f"wrote {BUILD_FILE.relative_to(ROOT)}: commit {info['commit']}, {info['build_date']}")


def build_binary() -> dict[str, str]:
    """ailb/_build.json, then PyInstaller exactly as `make binary`; the file is removed after, so
    a source checkout never reports a stale commit. Returns the build info written."""
    info = new_build_info()
    write_build_file(info)
    try:
        subprocess.run([sys.executable, "-m", "PyInstaller", "--noconfirm", "--clean",
                        "--log-level", "WARN", str(SPEC)], cwd=ROOT, check=True)
    finally:
        BUILD_FILE.unlink(missing_ok=True)
    if not BINARY.is_file():
        raise SystemExit(f"release: PyInstaller did not produce {BINARY}")
    if Archive(BINARY).build_info() is None:
        log("warning: the binary does not carry ailb/_build.json: build_binary.spec must bundle "
            "it (datas) for `ailb --version` to show the commit and build date")
    return info


# --- the binary's archive --------------------------------------------------------------------

class Archive:
    """Names inside a PyInstaller one-file executable (via PyInstaller's own reader)."""

    def __init__(self, binary: Path) -> None:
        from PyInstaller.archive.readers import CArchiveReader  # type: ignore[import-untyped]

        self._reader = CArchiveReader(str(binary))
        # name -> (offset, length, uncompressed length, compressed?, type code)
        self.entries: dict[str, tuple[Any, ...]] = dict(self._reader.toc)
        pyz = [name for name, entry in self.entries.items() if entry[-1] == "z"]
        self.modules: set[str] = set()
        for name in pyz:
            self.modules |= set(self._reader.open_embedded_archive(name).toc)
        # Binaries ('b') and data files ('x'): paths as they unpack under sys._MEIPASS.
        self.files = {name for name, entry in self.entries.items() if entry[-1] in "bx"}

    def read(self, name: str) -> bytes:
        data: bytes = self._reader.extract(name)
        return data

    def build_info(self) -> dict[str, Any] | None:
        if "ailb/_build.json" not in self.entries:
            return None
        try:
            data = json.loads(self.read("ailb/_build.json"))
        except ValueError:
            return None
        return data if isinstance(data, dict) else None


def newest_input() -> tuple[float, str]:
    newest = (0.0, "")
    for pattern in INPUT_GLOBS:
        for path in ROOT.glob(pattern):
            newest = max(newest, (path.stat().st_mtime, str(path.relative_to(ROOT))))
    return newest


def why_rebuild(commit: str) -> str | None:
    """Why dist/ailb cannot be reused, or None when it can."""
    if not BINARY.is_file():
        return f"{BINARY.relative_to(ROOT)} does not exist"
    mtime, newest = newest_input()
    if mtime > BINARY.stat().st_mtime:
        return f"{newest} is newer than the binary"
    embedded = Archive(BINARY).build_info()
    if embedded is None:
        log("warning: the binary carries no ailb/_build.json (build_binary.spec does not bundle "
            "it yet?); commit and build date come from git and the file's time")
        return None
    if embedded.get("commit") != commit or commit.endswith("-dirty"):
        return f"the binary was built from {embedded.get('commit')}, the checkout is {commit}"
    return None


# --- SBOM ------------------------------------------------------------------------------------

def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def module_of(path: str) -> str | None:
    """``pkg/sub/mod.py`` -> ``pkg.sub.mod``; ``pkg/__init__.py`` -> ``pkg``."""
    if not path.endswith(".py") or "__pycache__" in path:
        return None
    parts = path[:-3].split("/")
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts) if parts and all(p.isidentifier() for p in parts) else None


def distributions_in(archive: Archive) -> tuple[dict[str, list[str]], set[str]]:
    """{canonical distribution name: evidence} for every installed distribution with a module
    or file inside the archive (matched against each distribution's RECORD, which also tells
    namespace packages like google.protobuf apart); and the archive's top-level modules that no
    distribution claimed."""
    found: dict[str, list[str]] = {}
    claimed: set[str] = set()
    for dist in metadata.distributions():
        name = dist.metadata["Name"]
        if not name or canonical(name) == "ailb":
            continue
        evidence = []
        for file in dist.files or ():
            path = str(file)
            module = module_of(path)
            if module is not None and module in archive.modules:
                evidence.append(module)
                claimed.add(module.split(".")[0])
            elif path in archive.files:
                evidence.append(path)
                claimed.add(path.split("/")[0].split(".")[0])
        if evidence:
            found.setdefault(canonical(name), []).extend(evidence)
    stdlib = set(sys.stdlib_module_names) | {"ailb"}
    tops = {m.split(".")[0] for m in archive.modules}
    unclaimed = {t for t in tops if t not in stdlib and t not in claimed
                 and not t.startswith(("_sysconfigdata", "pyimod", "pyi_"))}
    return found, unclaimed


def environment_sbom(python: str) -> dict[str, Any]:
    """``cyclonedx-py environment`` of the build venv, installing cyclonedx-bom when missing."""
    try:
        metadata.version("cyclonedx-bom")
    except metadata.PackageNotFoundError:
        log(f"installing {CYCLONEDX_REQUIREMENT} (it belongs in the dev extra)")
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet",
                        CYCLONEDX_REQUIREMENT], check=True)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "env.cdx.json"
        subprocess.run([sys.executable, "-m", "cyclonedx_py", "environment",
                        "--pyproject", str(ROOT / "pyproject.toml"), "--sv", CDX_SPEC_VERSION,
                        "--of", "JSON", "-o", str(out), python], check=True)
        sbom: dict[str, Any] = json.loads(out.read_text(encoding="utf-8"))
        return sbom


def deb_package(soname: str) -> tuple[str, str, str] | None:
    """(package, version, architecture) of the Debian package shipping this library, if dpkg
    and ldconfig know it (the build host's copy is what PyInstaller bundled)."""
    if not (shutil.which("ldconfig") or Path("/sbin/ldconfig").exists()) or \
            not shutil.which("dpkg-query"):
        return None
    try:
        cache = subprocess.run([shutil.which("ldconfig") or "/sbin/ldconfig", "-p"],
                               capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    paths = re.findall(rf"^\s*{re.escape(soname)} \(.*\) => (\S+)$", cache, re.M)
    for path in paths:
        # usrmerge: dpkg records /usr/lib/... even where ldconfig says /lib/...
        for candidate in (path, "/usr" + path, os.path.realpath(path)):
            owner = subprocess.run(["dpkg-query", "-S", candidate], capture_output=True,
                                   text=True)
            if owner.returncode == 0:
                package = owner.stdout.split(":")[0].strip()
                meta = subprocess.run(["dpkg-query", "-W", "-f", "${Version} ${Architecture}",
                                       package], capture_output=True, text=True)
                if meta.returncode == 0 and meta.stdout.strip():
                    version, arch = meta.stdout.split()
                    return package, version, arch
    return None


def native_components(archive: Archive) -> list[dict[str, Any]]:
    """Shared libraries at the archive's top level (libssl.so.3, libpython3.11.so.1.0, ...):
    not Python distributions, but inside the binary and worth tracking for CVEs."""
    components = []
    for name in sorted(archive.files):
        if "/" in name or ".so" not in name or ".cpython-" in name or ".abi3." in name:
            continue
        component: dict[str, Any] = {
            "type": "library", "bom-ref": f"native:{name}", "name": name,
            "hashes": [{"alg": "SHA-256", "content": hashlib.sha256(archive.read(name))
                        .hexdigest()}],
            "properties": [{"name": "ailb:origin", "value": "shared library from the build host"}],
        }
        deb = deb_package(name)
        if name.startswith("libpython"):  # the interpreter's own library, not from a package
            component["version"] = platform.python_version()
        elif deb is not None:
            package, version, arch = deb
            component["version"] = version
            component["purl"] = f"pkg:deb/debian/{package}@{version}?arch={arch}"
            component["properties"].append({"name": "ailb:deb-package", "value": package})
        components.append(component)
    return components


def binary_sbom(archive: Archive, info: dict[str, Any], binary_sha256: str,
                python: str) -> dict[str, Any]:
    sbom = environment_sbom(python)
    found, unclaimed = distributions_in(archive)
    if unclaimed:
        log(f"warning: modules in the binary from no known distribution: {sorted(unclaimed)}")
    kept = [c for c in sbom.get("components", []) if canonical(c.get("name", "")) in found]
    dropped = sorted(c.get("name", "") for c in sbom.get("components", []) if c not in kept)
    missing = sorted(set(found) - {canonical(c.get("name", "")) for c in kept})
    if missing:
        log(f"warning: distributions in the binary but not in the environment SBOM: {missing}")
    for component in kept:
        evidence = found[canonical(component["name"])]
        component.setdefault("properties", []).append(
            {"name": "ailb:archive-evidence", "value": ", ".join(sorted(evidence)[:5])
             + (f" (+{len(evidence) - 5} more)" if len(evidence) > 5 else "")})
    cpython = {
        "type": "platform", "bom-ref": "cpython", "name": "cpython",
        "version": platform.python_version(),
        "purl": f"pkg:generic/cpython@{platform.python_version()}",
        "properties": [{"name": "ailb:origin",
                        "value": f"interpreter and standard library of {sys.executable} "
                                 f"({sysconfig.get_platform()})"}],
    }
    natives = native_components(archive)
    sbom["components"] = [*kept, cpython, *natives]
    refs = {c["bom-ref"] for c in sbom["components"]} | {"root-component"}
    deps = []
    for dep in sbom.get("dependencies", []):
        if dep.get("ref") in refs:
            dep["dependsOn"] = [r for r in dep.get("dependsOn", []) if r in refs]
            deps.append(dep)
    root = next((d for d in deps if d["ref"] == "root-component"), None)
    if root is not None:  # the pyproject's direct deps, narrowed; plus what the binary embeds
        root["dependsOn"] = sorted({*root["dependsOn"], "cpython",
                                    *(n["bom-ref"] for n in natives)})
    sbom["dependencies"] = deps
    meta = sbom.setdefault("metadata", {})
    component = meta.setdefault("component", {"type": "application", "name": "ailb"})
    component["version"] = info["version"]
    component["hashes"] = [{"alg": "SHA-256", "content": binary_sha256}]
    meta["properties"] = [
        {"name": "ailb:commit", "value": str(info["commit"])},
        {"name": "ailb:build-date", "value": str(info["build_date"])},
        {"name": "ailb:scope", "value": "distributions with a module or file inside the "
                                        "PyInstaller archive of the binary"},
    ]
    log(f"SBOM: {len(kept)} distributions in the binary, {len(natives)} shared libraries; "
        f"{len(dropped)} build-only ones left out")
    validate(sbom)
    return sbom


def validate(sbom: dict[str, Any]) -> None:
    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator

    error = JsonStrictValidator(SchemaVersion.from_version(sbom["specVersion"])) \
        .validate_str(json.dumps(sbom))
    if error is not None:
        raise SystemExit(f"release: the SBOM is not valid CycloneDX: {error}")


# --- release ---------------------------------------------------------------------------------

def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write(path: Path, text: str) -> None:
    path.write_text(text, encoding="utf-8")
    log(f"wrote {path.relative_to(ROOT)}")


def copy_protos(out: Path, source: Path = PROTO) -> list[str]:
    """The gRPC contract next to the binary: every ``.proto`` under ``source`` (and its notes,
    ``.md``) copied to ``out/proto/`` with its path kept, so ``protoc -I proto`` and clients
    without reflection build from the release alone. An older ``out/proto`` is replaced.
    Returns the copied paths, relative to ``out/proto``."""
    target = out / "proto"
    shutil.rmtree(target, ignore_errors=True)
    copied = []
    for path in sorted(source.rglob("*")):
        if path.is_file() and path.suffix in (".proto", ".md"):
            relative = path.relative_to(source)
            (target / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target / relative)
            copied.append(relative.as_posix())
    return copied


def release(rebuild: bool) -> int:
    commit = os.environ.get("AILB_BUILD_COMMIT") or git_commit()
    reason = "--rebuild" if rebuild else why_rebuild(commit)
    built: dict[str, str] = {}
    if reason:
        log(f"building the binary: {reason}")
        built = build_binary()
    else:
        log(f"reusing {BINARY.relative_to(ROOT)} (up to date)")
    archive = Archive(BINARY)
    # What the binary says about itself, else what this run built it with, else git and mtime.
    embedded = archive.build_info() or built
    mtime = dt.datetime.fromtimestamp(BINARY.stat().st_mtime, dt.UTC)
    info = {
        "version": embedded.get("version") or project_version(),
        "commit": embedded.get("commit") or commit,
        "build_date": embedded.get("build_date") or mtime.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "python": embedded.get("python") or platform.python_version(),
    }
    arch = platform.machine().lower() or "unknown"
    OUT.mkdir(parents=True, exist_ok=True)
    name = f"ailb-{info['version']}-linux-{arch}"
    target = OUT / name
    shutil.copy2(BINARY, target)
    target.chmod(0o755)
    log(f"wrote {target.relative_to(ROOT)} ({target.stat().st_size / 1e6:.1f} MB)")
    digest = sha256_of(target)
    write(OUT / f"{name}.sha256", f"{digest}  {name}\n")  # `sha256sum -c` format
    sbom = binary_sbom(archive, info, digest, str(Path(sys.executable)))
    write(OUT / f"ailb-{info['version']}.cdx.json", json.dumps(sbom, indent=2) + "\n")
    protos = copy_protos(OUT)
    log(f"wrote {(OUT / 'proto').relative_to(ROOT)}/: {', '.join(protos)}")
    write(OUT / "BUILD_INFO.json", json.dumps(
        {**info, "artifact": name, "sha256": digest, "platform": f"linux-{arch}"},
        indent=2) + "\n")
    return 0


def main(argv: Iterable[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", nargs="?", default="release",
                        choices=["release", "binary", "build-info"])
    parser.add_argument("--rebuild", action="store_true", help="build dist/ailb even if current")
    args = parser.parse_args(list(argv) if argv is not None else None)
    if args.command == "build-info":
        write_build_file(new_build_info())
        return 0
    if args.command == "binary":
        build_binary()
        return 0
    return release(args.rebuild)


if __name__ == "__main__":
    sys.exit(main())
