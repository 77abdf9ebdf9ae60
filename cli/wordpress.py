"""A throwaway, real WordPress for tests and the demo: Debian's, served by PHP's built-in server.

Publishing must be tested against the real REST API (its auth, slugs and media handling
are what break in the field), yet nothing on the default path may need Docker or a
network. So an instance is Debian's WordPress tree copied into a data folder, a
`wp-config.php` of our own, a database on the local MariaDB, and `php -S` as a child
process. `deploy/wordpress/setup.sh` installs the packages and unpacks the tree once;
this module only starts and stops instances, so tests and the CLI share one path.

Facts this relies on (measured, see the project notes): Application Passwords over plain
HTTP need `WP_ENVIRONMENT_TYPE` 'local'; Debian's tree has relative symlinks that break in
a copy; the installer must not make HTTP requests (the site is not serving yet); PHP's
server needs several workers because WordPress calls itself.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

HELPERS_DIR = Path(__file__).resolve().parent.parent / "deploy" / "wordpress"
DEBIAN_TREE = Path("/usr/share/wordpress")  # where Debian installs it, and where its links point
DEFAULT_DIST_ROOT = Path("/opt/igny8-wordpress")  # setup.sh's `dpkg-deb -x` target
ADMIN_USER = "igny8"
DEFAULT_DB_HOST = "127.0.0.1:3306"
SERVER_WORKERS = 4
_DB_NAME = re.compile(r"^[A-Za-z0-9_]{1,64}$")
_CREDENTIALS_FILE = "igny8-wordpress.json"
_SETUP_HINT = "run deploy/wordpress/setup.sh"

# The server's parent, in the server's process group: PHP's workers outlive a killed master,
# so this stays to take the whole group down when the master exits, when it is told to
# stop, or (Linux, PR_SET_PDEATHSIG = option 1) when the process that started it dies
# without stopping it (SIGKILL, the OOM killer). argv: starter pid, "guard"/"", php argv.
_SUPERVISOR = """\
import os, signal, subprocess, sys
def stop(*_):
    os.killpg(0, signal.SIGKILL)
for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
    signal.signal(sig, stop)
if sys.argv[2] == "guard":
    try:
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):
        pass
    if os.getppid() != int(sys.argv[1]):
        stop()
subprocess.Popen(sys.argv[3:]).wait()
stop()
"""


class WordPressStartError(RuntimeError):
    """The instance could not be prepared or did not come up; the message says why."""


@dataclass(frozen=True)
class DatabaseConfig:
    """Where the instance's database lives; root with no password is the local default."""

    name: str
    host: str = DEFAULT_DB_HOST
    user: str = "root"
    password: str = field(default="", repr=False)

    def env(self) -> dict[str, str]:
        """For the PHP helpers: passwords travel in the environment, never in argv."""
        return {
            "IGNY8_WP_DB_NAME": self.name,
            "IGNY8_WP_DB_HOST": self.host,
            "IGNY8_WP_DB_USER": self.user,
            "IGNY8_WP_DB_PASSWORD": self.password,
        }


@dataclass
class WordPressInstance:
    """A running WordPress: where it answers, how to log in to its REST API, how to stop it."""

    base_url: str
    username: str
    app_password: str = field(repr=False)
    admin_password: str = field(repr=False)
    port: int
    data_dir: Path
    database: DatabaseConfig
    process: subprocess.Popen[bytes] = field(repr=False)
    started_in_s: float = 0.0

    @property
    def db_name(self) -> str:
        return self.database.name

    @property
    def docroot(self) -> Path:
        return self.data_dir / "htdocs"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "server.log"

    def running(self) -> bool:
        return self.process.poll() is None

    def stop(self, *, drop_database: bool = False, timeout_s: float = 5.0) -> None:
        """Stop the server (its workers too) and optionally drop the database; idempotent."""
        _stop_process_group(self.process, timeout_s)
        atexit.unregister(self._stop_at_exit)
        if drop_database:
            drop_wordpress_database(self.database)

    def _stop_at_exit(self) -> None:
        _stop_process_group(self.process, 2.0)

    def __enter__(self) -> WordPressInstance:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --------------------------------------------------------------------------- availability


def wordpress_tree() -> Path | None:
    """The WordPress tree to copy from: $IGNY8_WORDPRESS_TREE, Debian's install, or setup.sh's."""
    return next((tree for tree in _tree_candidates() if (tree / "wp-load.php").is_file()), None)


def _tree_candidates() -> list[Path]:
    explicit = os.environ.get("IGNY8_WORDPRESS_TREE")
    if explicit:
        return [Path(explicit)]
    dist_root = Path(os.environ.get("IGNY8_WORDPRESS_DIST_ROOT", DEFAULT_DIST_ROOT))
    return [DEBIAN_TREE, dist_root / DEBIAN_TREE.relative_to("/")]


def php_binary() -> str | None:
    return shutil.which("php") or shutil.which("php8.2")


def wordpress_available(db_host: str = DEFAULT_DB_HOST) -> str | None:
    """None if an instance can start here, else the reason it cannot (for a skip message)."""
    php = php_binary()
    if php is None:
        return f"no php on PATH ({_SETUP_HINT})"
    if wordpress_tree() is None:
        places = " or ".join(str(tree) for tree in _tree_candidates())
        return f"no WordPress tree in {places} ({_SETUP_HINT})"
    missing = _missing_php_extensions(php)
    if missing:
        return f"PHP lacks {', '.join(missing)} ({_SETUP_HINT})"
    if not _tcp_reachable(db_host):
        return f"MariaDB/MySQL not reachable at {db_host}"
    return None


def _missing_php_extensions(php: str) -> list[str]:
    code = "foreach (['mysqli', 'gd'] as $e) { if (!extension_loaded($e)) echo $e, ' '; }"
    try:
        done = subprocess.run([php, "-r", code], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return [f"a working php ({exc})"]
    return done.stdout.split() if done.returncode == 0 else [f"a working php: {done.stderr[:200]}"]


def _tcp_reachable(host_port: str, timeout_s: float = 1.0) -> bool:
    host, _, port = host_port.partition(":")
    try:
        with socket.create_connection((host, int(port or 3306)), timeout=timeout_s):
            return True
    except OSError:
        return False


# --------------------------------------------------------------------------- start


def start_wordpress(
    data_dir: Path,
    port: int,
    db_name: str,
    *,
    host: str = "127.0.0.1",
    db_host: str = DEFAULT_DB_HOST,
    db_user: str = "root",
    db_password: str = "",
    timeout_s: float = 30.0,
) -> WordPressInstance:
    """Prepare (first time) or reuse `data_dir`, install into `db_name` if empty, and serve.

    Returns once `/wp-json/` answers as WordPress. A data folder and database used before
    keep their posts, media and application password (the stored one is reused).
    """
    started = time.monotonic()
    reason = wordpress_available(db_host)
    if reason:
        raise WordPressStartError(reason)
    if not _DB_NAME.match(db_name):
        raise WordPressStartError(f"invalid database name {db_name!r} (letters, digits, _)")
    _require_free_port(host, port)
    data_dir = Path(data_dir).resolve()
    database = DatabaseConfig(db_name, db_host, db_user, db_password)
    base_url = f"http://{host}:{port}"
    docroot = _prepare_docroot(data_dir)
    credentials = _load_credentials(data_dir)
    _write_wp_config(docroot, base_url, database, credentials["salts"])
    router = data_dir / "router.php"
    shutil.copyfile(HELPERS_DIR / "router.php", router)
    credentials["app_password"] = _run_installer(docroot, base_url, database, credentials)
    _save_credentials(data_dir, credentials)
    process = _spawn_server(docroot, router, host, port, data_dir / "server.log")
    instance = WordPressInstance(
        base_url=base_url,
        username=ADMIN_USER,
        app_password=credentials["app_password"],
        admin_password=credentials["admin_password"],
        port=port,
        data_dir=data_dir,
        database=database,
        process=process,
    )
    atexit.register(instance._stop_at_exit)
    try:
        _wait_ready(instance, timeout_s)
    except BaseException:
        instance.stop()
        raise
    instance.started_in_s = time.monotonic() - started
    return instance


def _require_free_port(host: str, port: int) -> None:
    """php -S would fail on a taken port, but another WordPress there could fool the wait.
    SO_REUSEADDR as php sets it: connections left in TIME_WAIT by a stopped server are fine."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise WordPressStartError(f"port {host}:{port} is taken ({exc})") from exc


def _prepare_docroot(data_dir: Path) -> Path:
    """Copy the tree once (later starts keep uploads), then repoint Debian's symlinks."""
    docroot = data_dir / "htdocs"
    if (docroot / "wp-load.php").is_file():
        return docroot
    tree = wordpress_tree()
    assert tree is not None  # checked by wordpress_available
    data_dir.mkdir(parents=True, exist_ok=True)
    partial = data_dir / "htdocs.partial"
    shutil.rmtree(partial, ignore_errors=True)
    _copy_tree(tree, partial)
    _fix_symlinks(partial)
    (partial / "wp-content" / "uploads").mkdir(parents=True, exist_ok=True)
    partial.rename(docroot)
    return docroot


def _copy_tree(source: Path, target: Path) -> None:
    """`cp -a` is several times faster than shutil for WordPress's thousands of files."""
    if shutil.which("cp"):
        subprocess.run(["cp", "-a", f"{source}/.", str(target)], check=True)
    else:  # pragma: no cover - every Debian has cp
        shutil.copytree(source, target, symlinks=True)


def _fix_symlinks(docroot: Path) -> None:
    """Debian's links are relative to /usr/share/wordpress (getID3, cropper, underscore):
    point them at the same absolute places. `.htaccess` (Apache only) is dropped."""
    for dirpath, dirnames, filenames in os.walk(docroot):
        for name in (*dirnames, *filenames):
            link = Path(dirpath, name)
            if not link.is_symlink():
                continue
            target = os.readlink(link)
            relative = link.relative_to(docroot)
            if relative == Path(".htaccess"):
                link.unlink()
            elif not os.path.isabs(target):
                absolute = os.path.normpath(DEBIAN_TREE / relative.parent / target)
                link.unlink()
                link.symlink_to(absolute)


def _load_credentials(data_dir: Path) -> dict[str, Any]:
    """Admin password, application password and salts persist with the data folder."""
    path = data_dir / _CREDENTIALS_FILE
    stored = json.loads(path.read_text()) if path.is_file() else {}
    stored.setdefault("admin_password", secrets.token_urlsafe(18))
    stored.setdefault("app_password", "")
    stored.setdefault("salts", {key: secrets.token_urlsafe(48) for key in _SALT_KEYS})
    return stored


def _save_credentials(data_dir: Path, credentials: dict[str, Any]) -> None:
    path = data_dir / _CREDENTIALS_FILE
    path.touch(mode=0o600, exist_ok=True)
    path.write_text(json.dumps(credentials, indent=1))


_SALT_KEYS = (
    "AUTH_KEY",
    "SECURE_AUTH_KEY",
    "LOGGED_IN_KEY",
    "NONCE_KEY",
    "AUTH_SALT",
    "SECURE_AUTH_SALT",
    "LOGGED_IN_SALT",
    "NONCE_SALT",
)


def _php_string(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _write_wp_config(
    docroot: Path, base_url: str, database: DatabaseConfig, salts: dict[str, str]
) -> None:
    """Ours replaces Debian's (which reads /etc/wordpress/config-<host>.php); rewritten at
    every start because the port may differ."""
    constants = {
        "DB_NAME": database.name,
        "DB_USER": database.user,
        "DB_PASSWORD": database.password,
        "DB_HOST": database.host,
        "DB_CHARSET": "utf8mb4",
        "DB_COLLATE": "",
        **salts,
        "WP_HOME": base_url,
        "WP_SITEURL": base_url,
        # Application Passwords over plain HTTP are refused unless the site is 'local'.
        "WP_ENVIRONMENT_TYPE": "local",
        # Offline: no update checks or pings to wordpress.org; the site's own host is allowed.
        "WP_HTTP_BLOCK_EXTERNAL": True,
        "AUTOMATIC_UPDATER_DISABLED": True,
        "WP_AUTO_UPDATE_CORE": False,
        # We publish with status=publish (DESIGN §8), never rely on WP-cron; without it no
        # page load spawns a loopback request that ties up a server worker.
        "DISABLE_WP_CRON": True,
        "FS_METHOD": "direct",
        "WP_DEBUG": False,
    }
    lines = ["<?php", "// Written by igny8 (cli/wordpress.py) at every start; edits are lost."]
    for name, value in constants.items():
        php = ("true" if value else "false") if isinstance(value, bool) else _php_string(value)
        lines.append(f"define({_php_string(name)}, {php});")
    lines += [
        "$table_prefix = 'wp_';",
        "if (!defined('ABSPATH')) { define('ABSPATH', __DIR__ . '/'); }",
        "require_once ABSPATH . 'wp-settings.php';",
    ]
    config = docroot / "wp-config.php"
    config.unlink(missing_ok=True)  # never write through to a file shared with the tree
    config.write_text("\n".join(lines) + "\n")


def _run_installer(
    docroot: Path, base_url: str, database: DatabaseConfig, credentials: dict[str, Any]
) -> str:
    """Create the database, install WordPress if needed; returns the application password."""
    env = {
        **os.environ,
        **database.env(),
        "IGNY8_WP_URL": base_url,
        "IGNY8_WP_ADMIN_USER": ADMIN_USER,
        "IGNY8_WP_ADMIN_PASSWORD": credentials["admin_password"],
        "IGNY8_WP_APP_PASSWORD": credentials.get("app_password", ""),
        "IGNY8_WP_APP_NAME": "igny8",
    }
    php = php_binary() or "php"
    try:
        done = subprocess.run(
            [php, str(HELPERS_DIR / "install.php"), str(docroot)],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
    except subprocess.TimeoutExpired as exc:
        raise WordPressStartError("the WordPress installer took over 120 s") from exc
    if done.returncode != 0:
        detail = (done.stderr or done.stdout).strip()[-800:]
        raise WordPressStartError(f"the WordPress installer failed: {detail}")
    try:
        return str(json.loads(done.stdout.strip().splitlines()[-1])["app_password"])
    except (IndexError, ValueError, KeyError, TypeError) as exc:
        detail = (done.stdout + done.stderr).strip()[-800:]
        raise WordPressStartError(f"the WordPress installer answered oddly: {detail}") from exc


def _spawn_server(
    docroot: Path, router: Path, host: str, port: int, log_path: Path
) -> subprocess.Popen[bytes]:
    """php -S under its supervisor, in a session of its own (so stop() can take the whole
    group), logging to a file."""
    php = php_binary() or "php"
    args = [
        php,
        "-d", "post_max_size=64M",
        "-d", "upload_max_filesize=64M",
        "-S", f"{host}:{port}",
        "-t", str(docroot),
        str(router),
    ]  # fmt: skip
    # PR_SET_PDEATHSIG follows the spawning thread, so only the main thread may ask for it.
    guard = "guard" if threading.current_thread() is threading.main_thread() else ""
    args = [sys.executable, "-I", "-S", "-c", _SUPERVISOR, str(os.getpid()), guard, *args]
    env = {**os.environ, "PHP_CLI_SERVER_WORKERS": str(SERVER_WORKERS)}
    with log_path.open("ab") as log:
        return subprocess.Popen(
            args,
            cwd=docroot,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _wait_ready(instance: WordPressInstance, timeout_s: float) -> None:
    """Until /wp-json/ is WordPress's REST index; fail early if the server exits."""
    deadline = time.monotonic() + timeout_s
    last = "no answer yet"
    with httpx.Client(timeout=2.0) as client:
        while time.monotonic() < deadline:
            if not instance.running():
                raise WordPressStartError(f"php -S exited: {_log_tail(instance.log_path)}")
            try:
                response = client.get(f"{instance.base_url}/wp-json/")
                if response.status_code == 200 and "wp/v2" in response.json().get("namespaces", []):
                    return
                last = f"HTTP {response.status_code}"
            except (httpx.HTTPError, ValueError, AttributeError) as exc:
                last = f"{type(exc).__name__}: {exc}"
            time.sleep(0.05)
    raise WordPressStartError(f"WordPress not ready within {timeout_s:.0f} s ({last})")


def _log_tail(path: Path, chars: int = 800) -> str:
    try:
        return path.read_text(errors="replace")[-chars:].strip() or "(empty log)"
    except OSError:
        return "(no log)"


# --------------------------------------------------------------------------- stop


def _stop_process_group(process: subprocess.Popen[bytes], timeout_s: float) -> None:
    """SIGTERM the server's group (supervisor, master, workers), then SIGKILL what is left."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, sig)
        try:
            process.wait(timeout=timeout_s)
            break
        except subprocess.TimeoutExpired:
            continue
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)  # workers may outlive a master that exited


def drop_wordpress_database(database: DatabaseConfig) -> None:
    """DROP DATABASE IF EXISTS, through PHP's mysqli (no MySQL client or driver needed)."""
    php = php_binary() or "php"
    done = subprocess.run(
        [php, str(HELPERS_DIR / "drop-database.php")],
        env={**os.environ, **database.env()},
        capture_output=True,
        text=True,
        timeout=60,
    )
    if done.returncode != 0:
        raise WordPressStartError(f"could not drop database {database.name}: {done.stderr[-400:]}")
