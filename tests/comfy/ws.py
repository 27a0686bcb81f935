"""A websocket listener for one ComfyUI client id (aiohttp, from the ComfyUI venv), in a background thread."""
from __future__ import annotations

import asyncio
import json
import struct
import threading
import time
import uuid

from comfy_harness import http  # scripts/ (on the path: tests/comfy/comfy_fixtures.py)


class WsListener(threading.Thread):
    """Collects text messages (dicts) and binary previews (event type, image type, image bytes)."""

    def __init__(self, url: str, client_id: str):
        super().__init__(daemon=True)
        self.url = url.replace("http", "ws", 1) + "/ws?clientId=" + client_id
        self.messages: list[dict] = []
        self.previews: list[tuple[int, int, bytes]] = []
        self.ready = threading.Event()
        self._halt = None

    def run(self):
        import aiohttp

        async def main():
            self._halt = asyncio.Event()
            async with aiohttp.ClientSession() as s, s.ws_connect(self.url) as ws:
                self.ready.set()
                while not self._halt.is_set():
                    try:
                        m = await ws.receive(timeout=0.2)
                    except asyncio.TimeoutError:
                        continue
                    if m.type == aiohttp.WSMsgType.TEXT:
                        self.messages.append(json.loads(m.data))
                    elif m.type == aiohttp.WSMsgType.BINARY:
                        event, kind = struct.unpack(">II", m.data[:8])
                        self.previews.append((event, kind, m.data[8:]))
                    elif m.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
                        break

        self.loop = asyncio.new_event_loop()
        self.loop.run_until_complete(main())

    def start(self):
        super().start()
        if not self.ready.wait(10):
            raise RuntimeError(f"websocket {self.url} did not connect")
        return self

    def stop(self):
        if self._halt is not None:
            self.loop.call_soon_threadsafe(self._halt.set)
        self.join(5)

    def of_type(self, kind: str) -> list[dict]:
        return [m["data"] for m in self.messages if m.get("type") == kind]

    def wait_for(self, predicate, timeout: float = 60):
        end = time.time() + timeout
        while time.time() < end:
            for m in list(self.messages):
                if predicate(m):
                    return m
            time.sleep(0.05)
        raise TimeoutError("websocket message not seen")


def cancel_when(server, prompt: dict, started, timeout: float = 120) -> tuple[dict, WsListener]:
    """Queue `prompt` with a websocket listening, press Cancel (POST /interrupt, as the UI does) at the first
    message for which `started(message)` holds, and wait for the prompt to end; checks that it ended interrupted.
    -> (its history entry, the listener with every message it received)"""
    client = uuid.uuid4().hex
    ws = WsListener(server.url, client).start()
    try:
        status, body = server.queue(prompt, client_id=client)
        assert status == 200, body
        ws.wait_for(started, timeout=timeout)
        assert http(server.url + "/interrupt", {})[0] == 200
        entry = server.wait(body["prompt_id"], timeout=120)
    finally:
        ws.stop()
    kinds = [k for k, _ in entry["status"]["messages"]]
    assert entry["status"]["status_str"] == "error" and "execution_interrupted" in kinds, kinds
    return entry, ws
