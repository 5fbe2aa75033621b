"""A SAM2 stand-in: a real HTTP server on 127.0.0.1 (a background thread of the test
process) that reads the prompts it receives and answers with a mask computed from
them: the ellipse inscribed in the box prompt, after checking the request is well
formed (image decodes, points inside it, labels 0/1, box inside it).

Behaviour is chosen per server with `.mode`, or per request by the URL path
(`<url>/rle` answers RLE whatever `.mode` says), so one deployment can be pointed at
one URL and the test flips modes between requests.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import cv2
import numpy as np

MODES = (
    "png",
    "png01",
    "png_half",
    "rle",
    "rle_list",
    "masks",
    "masks_noscores",
    "masks_prob",
    "masks_bool",
    "empty",
    "error500",
    "flaky",
    "slow",
    "garbage",
    "wrong_json",
    "bad_rle",
    "bad_request",
    "auth",
    "drop",
)
DEFAULT_FIELDS = {
    "image": "image_base64",
    "points": "points",
    "box": "box",
    "multimask": "multimask",
    "return_prob": "return_prob",
}


def ellipse_mask(height: int, width: int, box) -> np.ndarray:
    """uint8 0/1: the ellipse inscribed in box [x1, y1, x2, y2]."""
    x1, y1, x2, y2 = (float(v) for v in box)
    mask = np.zeros((height, width), np.uint8)
    cv2.ellipse(mask, (((x1 + x2) / 2, (y1 + y2) / 2), (x2 - x1, y2 - y1), 0.0), 1, -1)
    return mask


def rle_encode(mask: np.ndarray) -> list[int]:
    """Column-major runs, starting with background (uncompressed COCO RLE)."""
    flat = mask.flatten(order="F").astype(np.uint8)
    change = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    runs = np.diff(bounds).tolist()
    return ([0] + runs) if flat[0] else runs


def png_b64(mask: np.ndarray) -> str:
    ok, buf = cv2.imencode(".png", mask)
    assert ok
    return base64.b64encode(buf.tobytes()).decode()


class BadRequest(ValueError):
    pass


class Sam2StandIn:
    def __init__(
        self,
        mode: str = "png",
        token: str | None = None,
        fields: dict | None = None,
        slow_s: float = 5.0,
        fail_first: int = 1,
        port: int = 0,
    ):
        self.mode = mode
        self.token = token
        self.fields = dict(DEFAULT_FIELDS, **(fields or {}))
        self.slow_s = slow_s
        self.fail_first = fail_first  # "flaky": this many 500s, then answers
        self.received: list[dict] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        self._port = port
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    def start(self) -> Sam2StandIn:
        standin = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def do_POST(self):
                standin._handle(self)

        self._server = ThreadingHTTPServer(("127.0.0.1", self._port), Handler)
        self._server.daemon_threads = True
        self._port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening (the port refuses connections until start() again)."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def calls(self, mode: str | None = None) -> int:
        return sum(1 for r in self.received if mode is None or r["mode"] == mode)

    # ---- one request ------------------------------------------------------------

    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        with self._lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            self._respond(h)
        finally:
            with self._lock:
                self.in_flight -= 1

    def _respond(self, h: BaseHTTPRequestHandler) -> None:
        path_mode = h.path.strip("/").split("?")[0]
        mode = path_mode if path_mode in MODES else self.mode
        length = int(h.headers.get("Content-Length") or 0)
        raw = h.rfile.read(length)
        record = {"mode": mode, "auth": h.headers.get("Authorization"), "time": time.monotonic()}
        with self._lock:
            self.received.append(record)
            count = self.calls(mode)
        if mode == "drop":
            h.close_connection = True
            h.connection.shutdown(2)  # no answer at all
            return
        if mode == "auth" and h.headers.get("Authorization") != f"Bearer {self.token}":
            return self._send(h, 401, {"detail": "invalid token"})
        if mode == "error500" or (mode == "flaky" and count <= self.fail_first):
            return self._send(h, 500, {"detail": "internal error"})
        if mode == "bad_request":
            return self._send(h, 400, {"detail": "refused"})
        try:
            req = json.loads(raw)
            image, box, points, multimask = self._read(req)
        except (BadRequest, ValueError, KeyError, TypeError) as exc:
            return self._send(h, 400, {"detail": f"bad request: {exc}"})
        record.update(
            image_shape=image.shape,
            box=box,
            points=points,
            multimask=multimask,
            keys=sorted(req),
            image_b64_len=len(req[self.fields["image"]]),
        )
        if mode == "slow":
            time.sleep(self.slow_s)
        hgt, wid = image.shape[:2]
        mask = ellipse_mask(hgt, wid, box)
        self._send(h, 200, self._answer(mode, mask, multimask))

    def _read(self, req: dict):
        f = self.fields
        if set(req) != {f["image"], f["points"], f["box"], f["multimask"], f["return_prob"]}:
            raise BadRequest(f"unexpected fields {sorted(req)}")
        buf = np.frombuffer(base64.b64decode(req[f["image"]], validate=True), np.uint8)
        image = cv2.imdecode(buf, cv2.IMREAD_COLOR)
        if image is None:
            raise BadRequest("image does not decode")
        hgt, wid = image.shape[:2]
        box, points = req[f["box"]], req[f["points"]]
        x1, y1, x2, y2 = box
        if not (0 <= x1 < x2 <= wid and 0 <= y1 < y2 <= hgt):
            raise BadRequest(f"box {box} outside the {wid}x{hgt} image")
        for p in points:
            x, y, label = p
            if label not in (0, 1) or not (0 <= x <= wid and 0 <= y <= hgt):
                raise BadRequest(f"bad point {p}")
        if not isinstance(req[f["multimask"]], bool) or not isinstance(req[f["return_prob"]], bool):
            raise BadRequest("multimask/return_prob must be booleans")
        return image, box, points, req[f["multimask"]]

    def _answer(self, mode: str, mask: np.ndarray, multimask: bool):
        hgt, wid = mask.shape
        if mode == "garbage":
            return b"<html>this is not json"
        if mode == "wrong_json":
            return {"result": "ok"}
        if mode == "empty":
            return {"mask_png_base64": png_b64(np.zeros_like(mask))}
        if mode == "png01":
            return {"mask_png_base64": png_b64(mask)}
        if mode == "png_half":
            half = cv2.resize(mask * 255, (wid // 2, hgt // 2), interpolation=cv2.INTER_LINEAR)
            return {"mask_png_base64": png_b64(half)}
        if mode == "rle":
            return {"mask_rle": {"counts": rle_encode(mask), "size": [hgt, wid]}}
        if mode == "rle_list":
            return {"mask_rle": [rle_encode(mask), [hgt, wid]]}
        if mode == "bad_rle":
            return {"mask_rle": {"counts": [1, 2, 3], "size": [hgt, wid]}}
        if mode.startswith("masks"):
            smaller = cv2.erode(mask, np.ones((9, 9), np.uint8))
            bigger = np.ones_like(mask)
            if mode == "masks":  # best score is not the largest: the score must win
                masks, scores = [smaller, mask, bigger], [0.2, 0.9, 0.5]
            elif mode == "masks_noscores":  # no scores: the largest must win
                masks, scores = [smaller, mask], None
            elif mode == "masks_bool":
                masks, scores = [mask.astype(bool)], [0.9]
            else:  # probabilities
                masks, scores = [np.where(mask > 0, 0.8, 0.1).astype(np.float32)], [0.9]
            if not multimask:
                masks, scores = masks[1:2] if len(masks) > 1 else masks, None
            doc = {"masks": [m.tolist() for m in masks]}
            if scores is not None:
                doc["scores"] = scores
            return doc
        return {"mask_png_base64": png_b64(mask * 255)}  # png, slow, flaky, auth

    @staticmethod
    def _send(h: BaseHTTPRequestHandler, status: int, body) -> None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        try:
            h.send_response(status)
            h.send_header("Content-Type", "application/json")
            h.send_header("Content-Length", str(len(data)))
            h.end_headers()
            h.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout)
            pass
