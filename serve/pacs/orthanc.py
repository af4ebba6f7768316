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
temporary storage folder (the life cycle is serve.process.ManagedProcess's). Bad input
raises PacsError with one line: the binary or the plugin missing (with the install
command) or a port in use.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from clients.errors import PacsError
from serve.process import LaunchError, Listen, ManagedProcess

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


class Orthanc(ManagedProcess):
    """An Orthanc child process (serve.process.ManagedProcess). Use as a context manager.

    `environ` is the child's environment; Orthanc is looked for on its PATH, and in
    /usr/sbin too unless `environ` is given (a test hides the binary by passing one).
    """

    name = "Orthanc"
    failure = PacsError
    poll_interval_s = 0.2
    startup_timeout_s: float = 30.0
    stop_timeout_s = 20.0

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
        self.binary = ""

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

    def listens(self) -> list[Listen]:
        return [
            Listen(HOST, self.http_port, "PACS HTTP port", "(--http-port N)"),
            Listen(HOST, self.dicom_port, "PACS DICOM port", "(--dicom-port N)"),
        ]

    def check(self) -> None:
        """The binary, the plugin, then both ports. Raises PacsError."""
        self.binary = find_binary(self.path)
        if not self.plugin.exists():
            raise PacsError(
                f"Orthanc's DICOMweb plugin is not installed ({self.plugin} is missing); "
                f"install it with: {install_hint(os.geteuid())}"
            )
        super().check()

    def prepare(self) -> None:
        """A storage folder (a new temporary one unless given) holding the configuration."""
        if self.storage is None:
            self.storage = Path(tempfile.mkdtemp(prefix="orthanc-"))
        self.folder.mkdir(parents=True, exist_ok=True)
        self.log_path = self.folder / "orthanc.log"
        self.cwd = self.folder
        config = orthanc_config(self.http_port, self.dicom_port, self.folder, self.plugin)
        self.config_path.write_text(json.dumps(config, indent=2))

    def command_and_env(self) -> tuple[list[str], dict[str, str]]:
        return [self.binary, str(self.config_path)], self.environ

    def ready_urls(self) -> list[str]:
        return [f"{self.url}/system", f"{self.dicomweb_url}/studies"]

    def abandon(self, exc: BaseException) -> None:
        """A failed start keeps a throwaway storage folder: its log is named in the error."""
        self.stop(keep=isinstance(exc, LaunchError))

    def stop(self, timeout_s: float | None = None, *, keep: bool = False) -> int | None:
        """SIGTERM, wait, then SIGKILL the group; remove a throwaway storage folder unless
        `keep`. Returns the exit status."""
        code = super().stop(timeout_s)
        if self.throwaway and self.storage is not None and not keep:
            shutil.rmtree(self.storage, ignore_errors=True)
        return code
