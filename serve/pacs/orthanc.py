"""Run Debian's Orthanc with its DICOMweb plugin as a local, throwaway PACS; wait; stop it.

`orthanc_config(http_port, dicom_port, storage)` is the configuration (pure): DICOMweb at
/dicom-web/ from the plugin Debian's `orthanc-dicomweb` installs, HTTP for this machine
only (RemoteAccessAllowed false: Orthanc 1.10 has no bind address, it refuses other
hosts), no authentication (a local test instance), no C-STORE from unknown modalities,
database and files under `storage`.

`Orthanc(http_port, dicom_port).start()` writes that configuration into its storage
folder (a new temporary folder unless `storage` is given), starts the binary, logging to
`orthanc.log` there, and waits until /system and /dicom-web/studies answer.
`stop()` sends SIGTERM, then SIGKILL if Orthanc has not exited in time, and removes a
temporary storage folder. Bad input raises PacsError with one line: the binary or the
plugin missing (with the install command) or a port in use.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from clients.errors import PacsError
from serve.process import LaunchError, port_in_use, terminate, wait_until_ready

DEFAULT_HTTP_PORT = 8042
DEFAULT_DICOM_PORT = 4242
HOST = "127.0.0.1"
BINARY = "Orthanc"
DICOMWEB_ROOT = "/dicom-web/"
DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
PACKAGES = "orthanc orthanc-dicomweb"
SBIN = "/usr/sbin"  # where Debian puts Orthanc, not on a normal user's PATH


def install_hint(euid: int) -> str:
    """The command that installs Debian's Orthanc and its DICOMweb plugin (pure)."""
    if euid == 0:
        return f"apt-get install {PACKAGES} (or make install)"
    return f"sudo apt-get install {PACKAGES} (installing needs root; you are not root)"


def orthanc_config(
    http_port: int,
    dicom_port: int,
    storage: Path,
    plugin: Path = DICOMWEB_PLUGIN,
) -> dict[str, Any]:
    """Orthanc's JSON configuration for a local throwaway PACS with DICOMweb (pure)."""
    return {
        "Name": "medgemma-serve-pacs",
        "StorageDirectory": str(storage / "storage"),
        "IndexDirectory": str(storage / "index"),
        "Plugins": [str(plugin)],
        "HttpServerEnabled": True,
        "HttpPort": http_port,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "DicomServerEnabled": True,
        "DicomAet": "MEDGEMMA",
        "DicomPort": dicom_port,
        "DicomAlwaysAllowStore": False,
        "DicomModalities": {},
        "OrthancPeers": {},
        "ExecuteLuaEnabled": False,
        "DeidentifyLogs": True,
        "SaveJobs": False,
        "DicomWeb": {
            "Enable": True,
            "Root": DICOMWEB_ROOT,
            "EnableWado": False,
            "Host": f"{HOST}:{http_port}",
            "Ssl": False,
        },
    }


def search_path(environ: Mapping[str, str]) -> str:
    """PATH, with /usr/sbin after it when missing (Debian installs Orthanc there)."""
    path = environ.get("PATH", "")
    return path if SBIN in path.split(os.pathsep) else os.pathsep.join(filter(None, [path, SBIN]))


def find_binary(path: str) -> str:
    """The Orthanc binary on `path`. Raises PacsError with the install command."""
    found = shutil.which(BINARY, path=path)
    if found is None:
        raise PacsError(
            f"Orthanc is not installed (no {BINARY} on PATH or in {SBIN}); install it with: "
            f"{install_hint(os.geteuid())}"
        )
    return found


class Orthanc:
    """An Orthanc child process in its own process group. Use as a context manager.

    `environ` is the child's environment; Orthanc is looked for on its PATH, and in
    /usr/sbin too unless `environ` is given (a test hides the binary by passing one).
    """

    def __init__(
        self,
        http_port: int = DEFAULT_HTTP_PORT,
        dicom_port: int = DEFAULT_DICOM_PORT,
        *,
        storage: Path | None = None,
        environ: Mapping[str, str] | None = None,
        plugin: Path = DICOMWEB_PLUGIN,
        startup_timeout_s: float = 30,
    ) -> None:
        self.http_port, self.dicom_port, self.plugin = http_port, dicom_port, plugin
        self.storage, self.throwaway = storage, storage is None
        self.environ = dict(os.environ if environ is None else environ)
        self.path = search_path(self.environ) if environ is None else self.environ.get("PATH", "")
        self.startup_timeout_s = startup_timeout_s
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.http_port}"

    @property
    def dicomweb_url(self) -> str:
        """The DICOMweb base URL (QIDO-RS, WADO-RS and STOW-RS live under it)."""
        return self.url + DICOMWEB_ROOT.rstrip("/")

    @property
    def folder(self) -> Path:
        if self.storage is None:
            raise PacsError("Orthanc has not been started: it has no storage folder yet")
        return self.storage

    @property
    def config_path(self) -> Path:
        return self.folder / "orthanc.json"

    @property
    def log_path(self) -> Path:
        return self.folder / "orthanc.log"

    def check(self) -> str:
        """The binary, once the binary, the plugin and both ports are there. Raises PacsError."""
        binary = find_binary(self.path)
        if not self.plugin.exists():
            raise PacsError(
                f"Orthanc's DICOMweb plugin is not installed ({self.plugin} is missing); "
                f"install it with: {install_hint(os.geteuid())}"
            )
        for what, port, flag in (
            ("HTTP", self.http_port, "--http-port"),
            ("DICOM", self.dicom_port, "--dicom-port"),
        ):
            if port_in_use(HOST, port):
                raise PacsError(
                    f"PACS {what} port {port} on {HOST} is already in use: stop what listens "
                    f"there or choose another ({flag} N)"
                )
        return binary

    def start(self) -> Orthanc:
        """Start Orthanc and wait until DICOMweb answers. Raises PacsError."""
        binary = self.check()
        if self.storage is None:
            self.storage = Path(tempfile.mkdtemp(prefix="orthanc-"))
        self.folder.mkdir(parents=True, exist_ok=True)
        config = orthanc_config(self.http_port, self.dicom_port, self.folder, self.plugin)
        self.config_path.write_text(json.dumps(config, indent=2))
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [binary, str(self.config_path)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.environ,
                cwd=self.folder,
                start_new_session=True,
            )
        try:
            wait_until_ready(
                self.proc,
                [f"{self.url}/system", f"{self.dicomweb_url}/studies"],
                timeout_s=self.startup_timeout_s,
                log_path=self.log_path,
                name="Orthanc",
                interval_s=0.2,
            )
        except LaunchError as exc:
            self.stop(keep=True)
            raise PacsError(str(exc)) from None
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self, timeout_s: float = 20, *, keep: bool = False) -> int | None:
        """SIGTERM, wait, then SIGKILL the group; remove a throwaway storage folder unless
        `keep` (a failed start keeps it: its log is named in the error). Returns the exit
        status."""
        code = None
        if self.proc is not None:
            code = terminate(self.proc, timeout_s)
        if self.throwaway and self.storage is not None and not keep:
            shutil.rmtree(self.storage, ignore_errors=True)
        return code

    def __enter__(self) -> Orthanc:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
