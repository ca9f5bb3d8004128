"""The app registry: every built-in app folder here, and every folder named in ``GPUPROV_APP_PATH``.

Each folder is loaded the same way, by path (``app.py``'s ``APP``), and checked before anything
uses it: its name is its folder's, its compose files and stand-in routes exist, its services,
containers and ports are its own. A broken descriptor stops gpuprov with one line (exit 2).

``GPUPROV_APP_PATH`` (colon-separated app folders) is read at the edges only (the command line,
the Fabric tasks, the Pulumi program) and handed to :func:`use_app_path`.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import yaml

from gpuprov.apps.base import App, AppError, Service

APP_PATH_ENV = "GPUPROV_APP_PATH"
BUILTIN_DIR = Path(__file__).resolve().parent
DEFAULT_APPS: tuple[str, ...] = ("vllm_cxr", "monai_label")
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
_NAME_VOLUME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")  # a compose volume name gpuprov puts in a shell word
HOW = "see the README section 'Extending gpuprov: add an app'"


@dataclass(frozen=True)
class Registry:
    """Every known app, in load order (built-ins first)."""

    apps: dict[str, App]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.apps)

    def app(self, name: str) -> App:
        try:
            return self.apps[name]
        except KeyError:
            raise AppError(f"no app is named {name!r}; known apps: {', '.join(self.apps)} "
                           f"(an app of your own needs its folder in {APP_PATH_ENV})") from None

    def selected(self, names: Iterable[str]) -> list[App]:
        return [self.app(n) for n in names]

    def services(self, names: Iterable[str] | None = None) -> list[Service]:
        """The services of the named apps (all apps when None), in order."""
        apps = self.apps.values() if names is None else self.selected(names)
        return [s for a in apps for s in a.services]

    def service(self, name: str) -> tuple[App, Service]:
        """The app declaring service ``name`` and the service; AppError naming the known ones otherwise."""
        for app in self.apps.values():
            for s in app.services:
                if s.name == name:
                    return app, s
        known = ", ".join(s.name for s in self.services())
        raise AppError(f"no app declares a service named {name!r}; known services: {known} "
                       f"(an app of your own must be in {APP_PATH_ENV})")

    def ports(self, names: Iterable[str] | None = None) -> dict[str, int]:
        """Service -> host port, for the named apps (all when None)."""
        return {s.name: s.port for s in self.services(names)}


# --- loading and checking one folder ---------------------------------------------------------------


def load_app(folder: Path) -> App:
    """Load ``folder/app.py``'s ``APP`` by path and check the folder; AppError (one line) when broken."""
    folder = folder.resolve()
    where = f"app folder {folder}"
    if not folder.is_dir():
        raise AppError(f"{where} does not exist; fix {APP_PATH_ENV} or create it ({HOW})")
    source = folder / "app.py"
    if not source.is_file():
        raise AppError(f"{where} has no app.py; an app folder holds app.py (APP = App(...)) and compose.yaml ({HOW})")
    module_name = f"gpuprov_app_{folder.name}"
    spec = importlib.util.spec_from_file_location(module_name, source)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # dataclasses defined in app.py look their module up by name
    try:
        spec.loader.exec_module(module)
    except Exception as err:  # an app's own code: whatever it raises, say where and what
        sys.modules.pop(module_name, None)
        raise AppError(f"{source} failed to load: {type(err).__name__}: {err}") from None
    app = getattr(module, "APP", None)
    if not isinstance(app, App):
        raise AppError(f"{source} defines no APP = App(...) (found {type(app).__name__}); {HOW}")
    app = replace(app, folder=folder)
    _check(app)
    return app


def _check(app: App) -> None:
    where = f"app '{app.name}' ({app.folder})"
    if app.name != app.folder.name:
        raise AppError(f"{where}: APP.name must be its folder's name, {app.folder.name!r}; rename one of them")
    if not _NAME.match(app.name):
        raise AppError(f"{where}: the name must be 1-40 lower-case letters, digits or underscores, starting with a letter")
    if not app.services:
        raise AppError(f"{where}: declares no services; list at least one Service(...)")
    compose = app.folder / "compose.yaml"
    if not compose.is_file():
        raise AppError(f"{where}: compose.yaml is missing; every app folder needs one beside app.py ({HOW})")
    try:
        parsed = yaml.safe_load(compose.read_text()) or {}
        declared = parsed.get("services") or {}
        volumes = parsed.get("volumes") or {}
    except (yaml.YAMLError, AttributeError) as err:
        raise AppError(f"{where}: compose.yaml is not a compose file ({' '.join(str(err).split())})") from None
    for volume in app.backup_volumes:
        if volume not in volumes or not _NAME_VOLUME.match(volume):
            raise AppError(f"{where}: backup volume {volume!r} is not a named volume of compose.yaml "
                           f"(it has: {', '.join(volumes) or 'none'})")
    names = [s.name for s in app.services]
    if len(set(names)) != len(names):
        raise AppError(f"{where}: a service is declared twice in {names}")
    for s in app.services:
        if not _NAME.match(s.name):
            raise AppError(f"{where}: service name {s.name!r} must be lower-case letters, digits or underscores, "
                           "starting with a letter (it names its .env keys: NAME_IMAGE, NAME_BIND, ...)")
        if s.name not in declared:
            raise AppError(f"{where}: service '{s.name}' is not in compose.yaml (it has: {', '.join(declared) or 'none'})")
        container = (declared[s.name] or {}).get("container_name")
        if container != s.container:
            raise AppError(f"{where}: service '{s.name}' declares container {s.container!r}, compose.yaml names it "
                           f"{container!r}; make them the same (the idle agent and `fab logs` address it by name)")
        if not 1 <= s.port <= 65535 or s.port == 22:
            raise AppError(f"{where}: service '{s.name}' port {s.port} must be 1-65535 and not 22 (SSH)")
        if not (app.folder / "standin" / f"{s.name}.sh").is_file():
            raise AppError(f"{where}: standin/{s.name}.sh is missing: the routes the sandbox's stand-in image of "
                           f"'{s.name}' answers ({HOW})")
    if app.build is not None and app.build.service not in names:
        raise AppError(f"{where}: build is for service '{app.build.service}', which the app does not declare")
    secret_names = {x.name for x in app.secrets}
    if app.login is not None:
        missing = [n for n in app.login.secrets if n not in secret_names]
        if app.login.service not in names or missing:
            raise AppError(f"{where}: login names service '{app.login.service}' and secrets {list(app.login.secrets)}; "
                           "each must be declared by the app")


def _check_together(apps: Sequence[App]) -> None:
    """Names, services, containers, ports and build inputs belong to one app each."""
    seen: dict[str, dict[object, str]] = {"service": {}, "container": {}, "port": {}, "build input": {}}
    names: set[str] = set()

    def claim(kind: str, value: object, app: App) -> None:
        if value in seen[kind]:
            raise AppError(f"{kind} {value!r} is declared twice: by app '{seen[kind][value]}' and by app '{app.name}' "
                           f"({app.folder}); give one of them another")
        seen[kind][value] = app.name

    for app in apps:
        if app.name in names:
            raise AppError(f"two app folders are named '{app.name}' (one is {app.folder}); rename one")
        names.add(app.name)
        for s in app.services:
            claim("service", s.name, app)
            claim("container", s.container, app)
            claim("port", s.port, app)
        for i in app.build.inputs if app.build else ():
            claim("build input", i.name, app)


def load_apps(extra: Sequence[Path] = ()) -> Registry:
    """The built-in apps, then the apps in ``extra`` folders, each loaded and checked the same way."""
    builtin = sorted((p for p in BUILTIN_DIR.iterdir() if (p / "app.py").is_file()),
                     key=lambda p: (DEFAULT_APPS.index(p.name) if p.name in DEFAULT_APPS else len(DEFAULT_APPS), p.name))
    apps = [load_app(p) for p in [*builtin, *extra]]
    _check_together(apps)
    return Registry({a.name: a for a in apps})


# --- the process's registry ------------------------------------------------------------------------

_extra: tuple[Path, ...] = ()
_registry: Registry | None = None


def app_dirs(setting: str | None) -> tuple[Path, ...]:
    """The folders a ``GPUPROV_APP_PATH`` value names (colon-separated; empty parts ignored)."""
    return tuple(Path(p).expanduser() for p in (setting or "").split(":") if p.strip())


def use_app_path(setting: str | None) -> None:
    """Use the app folders ``setting`` (a ``GPUPROV_APP_PATH`` value) names besides the built-ins."""
    global _extra, _registry
    _extra, _registry = app_dirs(setting), None


def registry() -> Registry:
    """The registry of this process (loaded once)."""
    global _registry
    if _registry is None:
        _registry = load_apps(_extra)
    return _registry
