"""Checks the Dockerfile, .dockerignore and docker-compose.yml without a Docker engine.

Static checks: the compose file parses, and so does each commented block it offers to
uncomment, landing where it belongs; the image and the compose service agree on paths, user,
port and environment; the healthcheck runs only what the image has; the build context holds
what the Dockerfile copies and not target/.

Then the service itself runs the way the image runs it: the binary from the image's path, as an
unprivileged user, in a copy of the image's directories (the data directory as the Dockerfile
leaves it), with the image's and the compose file's environment. It must start, write its
instance id and key file there, pass the compose healthcheck, accept the inspection the
LocalStack hint describes and stop cleanly on SIGTERM. As a control, a data directory the way
Docker makes a mount point the image lacks (owned by root) must stop it from starting.

Usage: python scripts/check-container.py [BINARY]   (default target/debug/cloudtrail-inspector)
Needs PyYAML (scripts/tools-requirements.txt); the image's base must be Debian, like the host,
whose dpkg tells which commands every Debian image has.
"""

import json
import os
import pwd
import re
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
SERVICE = "inspector"
failures: list[str] = []


def check(ok: bool, what: str) -> bool:
    print(("ok    " if ok else "FAIL  ") + what)
    if not ok:
        failures.append(what)
    return ok


# ---------------------------------------------------------------- Dockerfile


def dockerfile_stages(text: str) -> list[dict]:
    """Instructions per stage: [{"from": image, "ins": [(KEYWORD, args)]}]."""
    lines, buf = [], ""
    for raw in text.splitlines():
        if not buf and (not raw.strip() or raw.lstrip().startswith("#")):
            continue
        if buf and raw.lstrip().startswith("#"):
            continue  # Docker drops comment lines inside a continued instruction
        if raw.rstrip().endswith("\\"):
            buf += raw.rstrip()[:-1] + " "
            continue
        lines.append(buf + raw)
        buf = ""
    stages: list[dict] = []
    for line in lines:
        keyword, _, args = line.strip().partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            stages.append({"from": args.split()[0], "ins": []})
        elif stages:
            stages[-1]["ins"].append((keyword, args.strip()))
    return stages


def env_pairs(args: str) -> dict[str, str]:
    words = shlex.split(args)
    if words and "=" not in words[0]:  # legacy `ENV KEY value`
        return {words[0]: " ".join(words[1:])}
    return dict(w.split("=", 1) for w in words)


def port_of(addr: str) -> int:
    return int(addr.rsplit(":", 1)[1])


# ---------------------------------------------------------------- compose comments


BLOCK_LINE = re.compile(r"^(\s*)# ?(\s*)(- |[A-Za-z_][\w.-]*:(\s|$))")


def commented_blocks(text: str) -> list[tuple[int, int]]:
    """Line ranges [start, end) of commented-out YAML: runs of comment lines that read as
    `key: value` or `- item`, the way the file offers settings and services to uncomment. A
    comment line that continues an unfinished sentence of prose is prose, whatever it reads as."""
    lines = text.splitlines()
    blocks, start = [], None
    for i, line in enumerate(lines + [""]):
        prev = lines[i - 1].strip() if i else ""
        continues_prose = prev.startswith("#") and not prev.endswith((".", ":")) and start is None
        if BLOCK_LINE.match(line) and not continues_prose:
            if start is None:
                start = i
        elif start is not None:
            blocks.append((start, i))
            start = None
    return blocks


def uncomment(text: str, blocks: list[tuple[int, int]]) -> str:
    lines = text.splitlines()
    for start, end in blocks:
        for i in range(start, end):
            lines[i] = re.sub(r"^(\s*)# ?", r"\1", lines[i], count=1)
    return "\n".join(lines) + "\n"


def where(doc, key: str, path: tuple = ()) -> list[tuple]:
    """Paths of the mappings that hold `key`."""
    found = []
    if isinstance(doc, dict):
        if key in doc:
            found.append(path)
        for k, v in doc.items():
            found += where(v, key, path + (k,))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            found += where(v, key, path + (i,))
    return found


def check_comment_blocks(text: str, doc: dict) -> None:
    blocks = commented_blocks(text)
    check(len(blocks) >= 2, f"docker-compose.yml offers {len(blocks)} commented blocks to uncomment")
    for start, end in blocks:
        first = re.sub(r"^\s*# ?\s*", "", text.splitlines()[start]).split(":")[0]
        label = f"commented block at lines {start + 1}-{end} ({first}…)"
        try:
            new = yaml.safe_load(uncomment(text, [(start, end)]))
        except yaml.YAMLError as e:
            check(False, f"{label} is valid YAML once uncommented: {e}")
            continue
        paths = where(new, first)
        if first.isupper():
            # Environment variables belong in a service's environment.
            want = [p for p in paths if len(p) == 3 and p[0] == "services" and p[2] == "environment"]
            check(bool(want) and not where(doc, first), f"{label} uncommented lands in services.*.environment")
        else:
            # A service belongs under services, with an image or a build.
            svc = new.get("services", {}).get(first)
            check(
                ("services",) in paths and isinstance(svc, dict) and ("image" in svc or "build" in svc),
                f"{label} uncommented is a service with an image",
            )
    try:
        every = yaml.safe_load(uncomment(text, blocks))
        ok = isinstance(every, dict) and set(every.get("services", {})) >= set(doc["services"])
    except yaml.YAMLError:
        ok = False
    check(ok, "docker-compose.yml is valid YAML with every commented block uncommented at once")


def localstack_hint(text: str) -> dict | None:
    """The `"aws": {...}` object the LocalStack comment tells users to give an inspection."""
    prose = " ".join(re.sub(r"^\s*#", "", l) for l in text.splitlines() if l.lstrip().startswith("#"))
    m = re.search(r'"aws":\s*(\{[^{}]*\})', prose)
    return json.loads(m.group(1)) if m else None


# ---------------------------------------------------------------- .dockerignore


def ignored(path: str, rules: list[tuple[bool, re.Pattern]]) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parents decides."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    verdict = False
    for negated, pattern in rules:
        if any(pattern.fullmatch(p) for p in prefixes):
            verdict = not negated
    return verdict


def dockerignore_rules(text: str) -> list[tuple[bool, re.Pattern]]:
    rules = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        pat = line.lstrip("!").strip("/")
        rx = "".join(
            ".*" if tok == "**" else "[^/]*" if tok == "*" else "[^/]" if tok == "?" else re.escape(tok)
            for tok in re.findall(r"\*\*|\*|\?|[^*?]+", pat)
        )
        rules.append((negated, re.compile(rx)))
    return rules


# ---------------------------------------------------------------- the image's commands


def debian_has(command: str, apt_installed: set[str]) -> str | None:
    """Why every image built FROM a Debian base has `command`, or None."""
    kind = subprocess.run(["bash", "-c", f"type -t {shlex.quote(command)}"], capture_output=True, text=True)
    if kind.stdout.strip() in ("builtin", "keyword"):
        return "a bash builtin"
    path = shutil.which(command)
    if path is None:
        return None
    real = os.path.realpath(path)
    # dpkg records /bin/… or /usr/bin/… as packaged, whichever the merged /usr now shows.
    names = [path, real]
    names += [n.removeprefix("/usr") if n.startswith("/usr/") else "/usr" + n for n in names]
    for candidate in dict.fromkeys(names):
        owner = subprocess.run(["dpkg", "-S", candidate], capture_output=True, text=True)
        if owner.returncode == 0:
            package = owner.stdout.split(":")[0].strip()
            if package in apt_installed:
                return f"from {package}, installed by the Dockerfile"
            essential = subprocess.run(
                ["dpkg-query", "-W", "-f=${Essential}", package], capture_output=True, text=True
            ).stdout.strip()
            if essential == "yes":
                return f"from {package}, an Essential package every Debian image has"
            return None
    return None


def shell_commands(script: str) -> list[str]:
    """First word of each simple command in a one-line shell script."""
    words = []
    for part in re.split(r"&&|\|\||[|;]", script):
        tokens = shlex.split(part)
        while tokens and re.match(r"^\w+=", tokens[0]):
            tokens = tokens[1:]
        if tokens:
            words.append(tokens[0])
    return words


# ---------------------------------------------------------------- running the binary


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Layout:
    """The image's directories under a scratch root, for one unprivileged user."""

    def __init__(self, binary: Path, final: dict, data_dir_created: bool):
        self.root = Path(tempfile.mkdtemp(prefix="image-"))
        os.chmod(self.root, 0o755)
        if os.geteuid() == 0:
            user = pwd.getpwnam("nobody")
            self.uid, self.gid, self.name = user.pw_uid, user.pw_gid, "nobody"
        else:
            self.uid, self.gid, self.name = os.geteuid(), os.getegid(), pwd.getpwuid(os.geteuid()).pw_name
        self.binary = self.path("/usr/local/bin/cloudtrail-inspector")
        self.binary.parent.mkdir(parents=True)
        shutil.copy2(binary, self.binary)
        os.chmod(self.binary, 0o755)
        self.workdir = self.path(final["workdir"])
        self.workdir.mkdir(parents=True)
        self.chown(self.workdir)
        self.data = self.path(final["env"]["DATA_DIR"])
        self.data.mkdir(parents=True, exist_ok=True)
        if data_dir_created:
            os.chmod(self.data, 0o700)
            self.chown(self.data)
        elif os.geteuid() != 0:
            os.chmod(self.data, 0o555)  # as good as root's for a user who is not root
        # else: root-owned 0755, what Docker makes of a mount point missing from the image

    def path(self, image_path: str) -> Path:
        return self.root / image_path.lstrip("/")

    def chown(self, p: Path) -> None:
        if os.geteuid() == 0:
            os.chown(p, self.uid, self.gid)

    def start(self, env: dict, args: list[str], log: Path) -> subprocess.Popen:
        as_user = {"user": self.uid, "group": self.gid, "extra_groups": []} if os.geteuid() == 0 else {}
        with open(log, "wb") as out:
            return subprocess.Popen(
                [str(self.binary), *args], cwd=self.workdir, env=env, stdout=out, stderr=subprocess.STDOUT, **as_user
            )

    def run(self, argv: list[str], env: dict) -> subprocess.CompletedProcess:
        as_user = {"user": self.uid, "group": self.gid, "extra_groups": []} if os.geteuid() == 0 else {}
        return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=10, **as_user)

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def service_env(final: dict, compose_env: dict, layout: Layout, port: int, token: str) -> dict:
    env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": str(layout.workdir)}
    env.update(final["env"])
    for key, value in compose_env.items():
        if value is not None:
            env[key] = str(value)
    env["DATA_DIR"] = str(layout.data)
    env["API_TOKEN"] = token
    env["LISTEN_ADDR"] = f"0.0.0.0:{port}"
    env.pop("DATABASE_URL", None)  # the compose file's Postgres host; SQLite in the data directory instead
    return env


def run_checks(binary: Path, final: dict, data_dir_created: bool, compose_env: dict, health: list, hint) -> None:
    port, token = free_port(), secrets.token_hex(16)
    health_script = health[3].replace("/8080", f"/{port}") if health[:3] == ["CMD", "bash", "-c"] else None

    layout = Layout(binary, final, data_dir_created)
    log = Path(tempfile.mkdtemp()) / "service.log"
    proc = None
    try:
        env = service_env(final, compose_env, layout, port, token)
        print(f"       running {final['entrypoint'] + final['cmd']} as {layout.name} (uid {layout.uid}),"
              f" DATA_DIR={layout.data}, listening on {env['LISTEN_ADDR']}")
        proc = layout.start(env, final["cmd"], log)
        ready = False
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            if health_script:
                ready = layout.run(["bash", "-c", health_script], env).returncode == 0
            else:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as resp:
                        ready = resp.status == 200
                except OSError:
                    pass
            if ready:
                break
            time.sleep(0.25)
        probe = "the compose healthcheck passes against it" if health_script else "/readyz answers 200"
        if not check(ready, f"the service starts and {probe}"):
            print(log.read_text()[-3000:])
        files = {p.name: p for p in layout.data.iterdir()} if layout.data.is_dir() else {}
        for name in ("instance-id", "encryption.key", "cloudtrail-inspector.db"):
            p = files.get(name)
            check(p is not None and p.stat().st_uid == layout.uid, f"it wrote {name} in the data directory, as {layout.name}")
        key = files.get("encryption.key")
        check(key is not None and key.stat().st_mode & 0o077 == 0, "encryption.key is readable by its owner only")

        if hint is not None and ready:
            body = json.dumps({"name": "localstack", "log_groups": ["cloudtrail"], "aws": hint}).encode()
            req = urllib.request.Request(
                f"http://127.0.0.1:{port}/api/v1/inspections", data=body, method="POST",
                headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
            )
            try:
                with urllib.request.urlopen(req, timeout=10) as resp:
                    status, answer = resp.status, resp.read().decode()
            except urllib.error.HTTPError as e:
                status, answer = e.code, e.read().decode()
            check(status == 201, f"the LocalStack hint is an inspection the API accepts (HTTP {status})")
            if status != 201:
                print("       " + answer[:500])

        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                code = proc.wait(timeout=35)
            except subprocess.TimeoutExpired:
                proc.kill()
                code = "killed"
            check(code == 0, f"SIGTERM stops it cleanly (exit {code})")
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
        layout.remove()

    # Control: the data directory Docker makes when the image has none.
    layout = Layout(binary, final, data_dir_created=False)
    try:
        env = service_env(final, compose_env, layout, free_port(), token)
        proc = layout.start(env, final["cmd"], log)
        try:
            code = proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = None
        said = log.read_text()
        check(
            code not in (None, 0) and str(layout.data) in said,
            "control: with the data directory owned by root the service refuses to start, naming it",
        )
    finally:
        layout.remove()
        shutil.rmtree(log.parent, ignore_errors=True)


# ---------------------------------------------------------------- main


def main() -> int:
    binary = Path(sys.argv[1] if len(sys.argv) > 1 else ROOT / "target/debug/cloudtrail-inspector").resolve()
    compose_text = (ROOT / "docker-compose.yml").read_text()
    stages = dockerfile_stages((ROOT / "Dockerfile").read_text())
    readme = (ROOT / "README.md").read_text()

    try:
        doc = yaml.safe_load(compose_text)
    except yaml.YAMLError as e:
        check(False, f"docker-compose.yml is valid YAML: {e}")
        return 1
    check(True, "docker-compose.yml is valid YAML")
    check_comment_blocks(compose_text, doc)

    # The image.
    last = stages[-1]
    ins = last["ins"]
    final = {"base": last["from"], "env": {}, "user": None, "workdir": "/", "expose": [], "runs": [], "cmd": [],
             "entrypoint": []}
    user_seen_at = None
    for i, (kw, args) in enumerate(ins):
        if kw == "ENV":
            final["env"].update(env_pairs(args))
        elif kw == "USER":
            final["user"], user_seen_at = args.split(":")[0], i
        elif kw == "WORKDIR":
            final["workdir"] = args
        elif kw == "EXPOSE":
            final["expose"] += [int(p.split("/")[0]) for p in args.split()]
        elif kw == "RUN" and user_seen_at is None:
            final["runs"].append(args)
        elif kw in ("CMD", "ENTRYPOINT"):
            final[kw.lower()] = json.loads(args)
    user, data_dir = final["user"], final["env"].get("DATA_DIR")
    root_runs = " && ".join(final["runs"])
    check(final["base"].startswith("debian:"), f"the image's base is Debian ({final['base']})")
    check(user not in (None, "root", "0"), f"the image runs as an unprivileged user ({user})")
    check(bool(re.search(rf"useradd\b[^&]*\b{re.escape(str(user))}\b", root_runs)), f"the Dockerfile creates the user {user}")
    check(data_dir is not None and data_dir.startswith("/"), f"the image sets DATA_DIR ({data_dir})")
    commands = [c.split() for c in re.split(r"&&|;", root_runs)]

    def makes(c: list[str]) -> bool:
        return bool(c) and c[0] in ("install", "mkdir") and data_dir in (a.rstrip("/") for a in c)

    def owns(c: list[str]) -> bool:
        by_install = c[:1] == ["install"] and "-o" in c and c[c.index("-o") + 1 : c.index("-o") + 2] == [user]
        by_chown = c[:1] == ["chown"] and any(a.split(":")[0] == user for a in c[1:-1])
        return (by_install or by_chown) and data_dir in (a.rstrip("/") for a in c)

    created = bool(data_dir) and any(makes(c) for c in commands) and any(owns(c) for c in commands)
    check(created, f"the Dockerfile creates DATA_DIR owned by {user} before switching to it")
    listen = final["env"].get("LISTEN_ADDR", "127.0.0.1:8080")
    port = port_of(listen)
    check(listen.startswith("0.0.0.0:"), f"the image listens beyond loopback ({listen})")
    check(final["expose"] == [port], f"EXPOSE {final['expose']} is the LISTEN_ADDR port {port}")
    check(final["entrypoint"][-1:] == ["cloudtrail-inspector"] and final["cmd"] == ["serve"], "the image runs `serve`")

    # The build context.
    rules = dockerignore_rules((ROOT / ".dockerignore").read_text()) if (ROOT / ".dockerignore").exists() else []
    check(bool(rules) and ignored("target/debug/cloudtrail-inspector", rules), ".dockerignore keeps target/ out of the build context")
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    copied = [w for st in stages for kw, args in st["ins"] if kw == "COPY" and "--from" not in args
              for w in shlex.split(args)[:-1]]
    for src in copied:
        files = [f for f in tracked if f == src or f.startswith(src.rstrip("/") + "/")]
        check(bool(files) and not any(ignored(f, rules) for f in files), f"COPY {src}: all of it is in the build context")
    sent = [f for f in tracked if not ignored(f, rules)]
    print(f"       build context: {len(sent)} files, {sum((ROOT / f).stat().st_size for f in sent) // 1024} KiB")

    # The compose service.
    svc = doc["services"][SERVICE]
    env = svc.get("environment", {})
    check(svc.get("build") in (".", {"context": "."}), "the compose service builds this Dockerfile")
    check(svc.get("restart") in ("always", "unless-stopped", "on-failure"), f"the service restarts ({svc.get('restart')})")
    mounts = [v for v in svc.get("volumes", []) if isinstance(v, str)]
    volume = next((v.split(":")[0] for v in mounts if v.split(":")[1:2] == [data_dir]), None)
    check(volume in (doc.get("volumes") or {}), f"a named volume is mounted at DATA_DIR ({data_dir})")
    check(any(str(p).split(":")[-1] == str(port) for p in svc.get("ports", [])), f"the service publishes port {port}")
    if "LISTEN_ADDR" in env:
        check(port_of(env["LISTEN_ADDR"]) == port and env["LISTEN_ADDR"].startswith("0.0.0.0:"),
              f"compose's LISTEN_ADDR agrees with the image ({env['LISTEN_ADDR']})")
    if "DATA_DIR" in env:
        check(env["DATA_DIR"] == data_dir, "compose's DATA_DIR agrees with the image")
    check(str(env.get("API_TOKEN", "")).startswith("${API_TOKEN:?"), "compose requires API_TOKEN from the environment")
    lines = readme.splitlines()
    told = [i for i, l in enumerate(lines) if "docker compose up" in l and "API_TOKEN=" in " ".join(lines[max(0, i - 2) : i + 1])]
    check(bool(told), "README sets API_TOKEN for `docker compose up`")
    grace = str(svc.get("stop_grace_period", "10s"))
    check(grace.endswith("s") and int(grace[:-1]) > 30, f"stop_grace_period ({grace}) outlasts SHUTDOWN_GRACE_SECS (30)")

    # Every variable the service is given, or offered, is one the binary reads.
    known = set(re.findall(r"\[env: (\w+)", subprocess.run([str(binary), "serve", "--help"], capture_output=True,
                                                             text=True, check=True).stdout))
    try:
        offered = yaml.safe_load(uncomment(compose_text, commented_blocks(compose_text)))["services"][SERVICE]["environment"]
    except (yaml.YAMLError, KeyError, TypeError):
        offered = env  # already reported above
    unknown = [k for k in offered if k not in known and not k.startswith("AWS_") and k != "RUST_LOG"]
    check(not unknown, f"the service reads every variable the compose file sets or offers {unknown or ''}")

    # The healthcheck.
    health = (svc.get("healthcheck") or {}).get("test") or []
    check(health[:3] == ["CMD", "bash", "-c"] and len(health) == 4, "the service has a healthcheck (bash -c …)")
    if len(health) == 4:
        check(bool(re.search(rf"/127\.0\.0\.1/{port}\b", health[3]) and re.search(r"GET /(readyz|healthz) ", health[3])),
              f"the healthcheck asks /readyz or /healthz on port {port}")
        apt = {w for c in commands if c[:2] == ["apt-get", "install"] for w in c[2:] if not w.startswith("-")}
        for command in ["bash"] + shell_commands(health[3]):
            why = debian_has(command, apt)
            check(why is not None, f"the image has `{command}` for the healthcheck ({why or 'not found'})")

    hint = localstack_hint(compose_text)
    check(hint is not None, "the LocalStack comment gives an \"aws\" object")

    run_checks(binary, final, created, env, health, hint)

    if failures:
        print(f"\n{len(failures)} container check(s) failed")
        return 1
    print("\ncontainer checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
