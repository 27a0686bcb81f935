"""A real headless ComfyUI for tests and `make demo`: start/stop a server, run prompts over HTTP, convert
UI-format workflows to the API format. Standard library only (runs under any Python).

The server comes from scripts/setup_comfy.sh (.comfy/ComfyUI + .comfy/venv, --base-directory .comfy/base with
this pack linked into custom_nodes).
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMFY_DIR = Path(os.environ.get("COMFY_DIR", ROOT / ".comfy"))
PACK_LINK_NAME = "comfyui-lumiere"  # as a registry install names it: not the repo's folder name


def server_threads() -> int:
    """torch CPU threads for a server the harness starts: OMP_NUM_THREADS where the caller set it, else half the
    cores (at least one), the default of the project's own commands. torch's default (one per core) on the 2-core
    CI machine with another process busy ran the test server's workflows ~4x slower (54.8 s against 13.1 s)."""
    try:
        return max(1, int(os.environ["OMP_NUM_THREADS"]))
    except (KeyError, ValueError):
        return max(1, (os.cpu_count() or 2) // 2)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def is_set_up(comfy_dir: Path = COMFY_DIR) -> bool:
    return (comfy_dir / "ComfyUI" / "main.py").is_file() and (comfy_dir / "venv" / "bin" / "python").exists()


class ComfyServer:
    """`python main.py --cpu` on a free loopback port, stopped by its own PID. Use as a context manager."""

    def __init__(self, comfy_dir: Path = COMFY_DIR, base_dir: Path | None = None, port: int | None = None,
                 extra_args: tuple[str, ...] = (), log_path: Path | None = None, link: bool = True,
                 threads: int | None = None):
        """link=False: leave custom_nodes/ as it is (a pack installed there otherwise, e.g. by ComfyUI-Manager).
        threads: torch CPU threads of the server (OMP_NUM_THREADS; default server_threads())."""
        self.comfy_dir = Path(comfy_dir)
        self.link = link
        self.base_dir = Path(base_dir or self.comfy_dir / "base")
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.extra_args = list(extra_args)
        self.log_path = Path(log_path or self.comfy_dir / f"server-{self.port}.log")
        self.threads = threads or server_threads()
        self.proc: subprocess.Popen | None = None

    def link_pack(self) -> None:
        nodes = self.base_dir / "custom_nodes"
        nodes.mkdir(parents=True, exist_ok=True)
        for d in ("input", "output", "temp", "user", "models/lumiere"):
            (self.base_dir / d).mkdir(parents=True, exist_ok=True)
        for other in nodes.iterdir():  # a second link to this repo would register every node twice
            if other.is_symlink() and other.name != PACK_LINK_NAME and other.resolve() == ROOT:
                other.unlink()
        link = nodes / PACK_LINK_NAME
        if not (link.is_symlink() and link.resolve() == ROOT):
            if link.is_symlink():
                link.unlink()
            link.symlink_to(ROOT, target_is_directory=True)

    def start(self, timeout: float = 120) -> "ComfyServer":
        if not is_set_up(self.comfy_dir):
            raise RuntimeError(f"no ComfyUI in {self.comfy_dir}: run scripts/setup_comfy.sh first")
        if self.link:
            self.link_pack()
        cmd = [str(self.comfy_dir / "venv" / "bin" / "python"), "main.py", "--cpu", "--listen", "127.0.0.1",
               "--port", str(self.port), "--disable-auto-launch", "--base-directory", str(self.base_dir),
               *self.extra_args]
        # torch reads OMP_NUM_THREADS at import (ComfyUI never sets its threads); MKL's own pool likewise
        env = {**os.environ, "OMP_NUM_THREADS": str(self.threads), "MKL_NUM_THREADS": str(self.threads)}
        self._log = open(self.log_path, "w")
        self._log.write(f"[comfy_harness] OMP_NUM_THREADS={self.threads}\n")
        self._log.flush()
        self.proc = subprocess.Popen(cmd, cwd=self.comfy_dir / "ComfyUI", stdout=self._log, stderr=subprocess.STDOUT,
                                     env=env)
        end = time.time() + timeout
        while time.time() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ComfyUI exited with {self.proc.returncode}:\n{self.log()[-4000:]}")
            try:
                if http(self.url + "/system_stats", timeout=2)[0] == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"ComfyUI did not answer within {timeout}s:\n{self.log()[-4000:]}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if getattr(self, "_log", None):
            self._log.close()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # ---- HTTP API -----------------------------------------------------------------------------------------------
    def get(self, path: str, timeout: float = 60):
        status, body = http(self.url + path, timeout=timeout)
        return status, (json.loads(body) if body[:1] in (b"{", b"[") else body)

    def object_info(self) -> dict:
        return self.get("/object_info", timeout=120)[1]

    def queue(self, prompt: dict, client_id: str | None = None) -> tuple[int, dict]:
        """POST /prompt -> (HTTP status, JSON body): 200 with prompt_id, or 400 with error / node_errors."""
        status, body = http(self.url + "/prompt", {"prompt": prompt, "client_id": client_id or uuid.uuid4().hex})
        return status, json.loads(body)

    def wait(self, prompt_id: str, timeout: float = 600) -> dict:
        """Poll /history until the prompt finished; returns its history entry (status, outputs)."""
        end = time.time() + timeout
        while time.time() < end:
            status, hist = self.get(f"/history/{prompt_id}")
            entry = hist.get(prompt_id) if status == 200 else None
            if entry and entry.get("status", {}).get("status_str") in ("success", "error"):
                return entry
            time.sleep(0.25)
        raise TimeoutError(f"prompt {prompt_id} not finished after {timeout}s")

    def run(self, prompt: dict, timeout: float = 600) -> dict:
        status, body = self.queue(prompt)
        if status != 200:
            raise PromptError(f"POST /prompt -> HTTP {status}: {json.dumps(body)[:3000]}", body)
        entry = self.wait(body["prompt_id"], timeout)
        if entry["status"]["status_str"] != "success":
            err = execution_error(entry) or {}
            raise PromptError(f"prompt failed in node {err.get('node_id')} ({err.get('node_type')}): "
                              f"{err.get('exception_type')}: {err.get('exception_message')}", entry)
        return entry

    def output_files(self, entry: dict) -> list[Path]:
        """Paths on disk of every file a prompt's history lists under type 'output'."""
        return [self.base_dir / "output" / f.get("subfolder", "") / f["filename"]
                for f in iter_output_files(entry) if f.get("type") == "output"]


class PromptError(RuntimeError):
    def __init__(self, message: str, body):
        super().__init__(message)
        self.body = body


def http(url: str, data=None, timeout: float = 60) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=None if data is None else json.dumps(data).encode(),
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def execution_error(entry: dict) -> dict | None:
    """The execution_error message of a history entry (node_id, node_type, exception_message), if any."""
    for kind, data in entry.get("status", {}).get("messages", []):
        if kind == "execution_error":
            return data
    return None


def iter_output_files(entry: dict):
    for out in entry.get("outputs", {}).values():
        for items in out.values():
            for item in items if isinstance(items, list) else []:
                if isinstance(item, dict) and "filename" in item:
                    yield item


# ---- UI workflow -> API prompt -------------------------------------------------------------------------------------

DYNAMIC_COMBO = "COMFY_DYNAMICCOMBO_V3"  # a combo whose chosen option brings its own widgets (newer cores)
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO", DYNAMIC_COMBO}


def widget_default(spec):
    """The value the front-end gives a widget the saved workflow has no value for (one a newer core added)."""
    kind, opts = spec[0], (spec[1] if len(spec) > 1 else {}) or {}
    if "default" in opts:
        return opts["default"]
    options = kind if isinstance(kind, list) else opts.get("options")
    if options:
        return options[0]["key"] if isinstance(options[0], dict) else options[0]
    raise KeyError("no default")


def is_widget(spec) -> bool:
    kind, opts = spec[0], (spec[1] if len(spec) > 1 else {}) or {}
    return (isinstance(kind, list) or kind in WIDGET_TYPES) and not opts.get("forceInput")


def has_control_widget(spec) -> bool:
    """A seed's 'control after generate' value follows it in widgets_values."""
    return bool(((spec[1] if len(spec) > 1 else {}) or {}).get("control_after_generate"))


def has_upload_widget(spec) -> bool:
    """An image/video upload button adds a value at the end of widgets_values."""
    return any(k.endswith("_upload") and v for k, v in (((spec[1] if len(spec) > 1 else {}) or {}).items()))


def take_widget(node: dict, name: str, spec, values: list) -> tuple:
    """(this widget's value, the values after it); a widget the saved workflow predates (the last ones, a newer
    core's addition) takes its default, as the front-end does."""
    if values:
        return values[0], values[1 + has_control_widget(spec):]
    try:
        return widget_default(spec), values
    except KeyError:
        raise ValueError(f"node {node['id']} ({node['type']}): no widget value for {name!r}") from None


def workflow_to_api(workflow: dict, object_info: dict) -> dict:
    """What the front-end's graphToPrompt sends for a UI-format workflow (nodes, links, positional widgets_values).
    Muted/bypassed nodes, groups and subgraphs are not supported (the bundled workflows use none)."""
    links = {link[0]: link for link in workflow.get("links", [])}  # [id, from, from_slot, to, to_slot, type]
    prompt = {}
    for node in workflow["nodes"]:
        if node.get("mode", 0) != 0:
            raise ValueError(f"node {node['id']} ({node['type']}): muted/bypassed nodes are not supported")
        if node["type"] not in object_info:
            raise KeyError(f"node {node['id']}: type {node['type']!r} is not installed")
        info = object_info[node["type"]]
        values = list(node.get("widgets_values") or [])
        linked = {i["name"]: i.get("link") for i in node.get("inputs", [])}
        inputs = {}
        uploads = 0
        for section in ("required", "optional"):
            for name in info.get("input_order", {}).get(section, info["input"].get(section, {}).keys()):
                spec = info["input"][section][name]
                value = None
                nested = {}
                if is_widget(spec):
                    value, values = take_widget(node, name, spec, values)
                    uploads += has_upload_widget(spec)
                    if spec[0] == DYNAMIC_COMBO:  # the chosen option's widgets follow it, sent as "name.sub"
                        option = next((o for o in spec[1]["options"] if o["key"] == value), {"inputs": {}})
                        for sub_section in ("required", "optional"):
                            for sub, sub_spec in option["inputs"].get(sub_section, {}).items():
                                if is_widget(sub_spec):
                                    nested[f"{name}.{sub}"], values = take_widget(node, sub, sub_spec, values)
                link = links.get(linked.get(name))
                if link is not None:
                    inputs[name] = [str(link[1]), link[2]]
                elif is_widget(spec):
                    inputs[name] = value
                    inputs.update(nested)
        values = values[:len(values) - uploads] if uploads else values
        if values:
            raise ValueError(f"node {node['id']} ({node['type']}): {len(values)} widget values left over: {values}")
        prompt[str(node["id"])] = {"class_type": node["type"], "inputs": inputs,
                                   "_meta": {"title": node.get("title") or info.get("display_name", node["type"])}}
    return prompt


def load_workflow(path: str | Path) -> dict:
    return json.loads(Path(path).read_text())
