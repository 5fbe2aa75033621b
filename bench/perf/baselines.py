"""The baselines perf/all.py's ratios are measured against.

PlainLoop, the P1 baseline: insightface's own detector and recogniser classes in the
usual loop users run: read the file, detect, then embed face by face, one image at a time.

SeedFaceMask, the P2 baseline: the seed-style face-mask service: one plain HTTP server (the
standard library's HTTPServer, not threaded) that handles one request at a time and
runs the models itself, serially: decode, LBP detector, the parser once per face ROI,
merge, encode the mask / RGBA / overlay PNGs, answer JSON. No batching, no Ray, no
other process: what "one FastAPI container per model handling one request at a time"
amounts to, with the same model classes, weights and config as the served graph.

POST /v1/face-mask with the image file as the raw body (no multipart: its parsing is
not what is compared). Runs in a background thread of the calling process.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import cv2


class PlainLoop:
    """insightface's own classes, the usual loop: read the file, detect, then get() per
    face, one image at a time; ONNX Runtime's default threads (every core)."""

    def __init__(self, detector: str, recogniser: str):
        from insightface.model_zoo import get_model

        from serve_app.config.assets import resolve

        self.det = get_model(str(resolve(detector)), providers=["CPUExecutionProvider"])
        self.det.prepare(-1, input_size=(640, 640), det_thresh=0.5)
        self.rec = get_model(str(resolve(recogniser)), providers=["CPUExecutionProvider"])

    def run(self, paths) -> int:
        """-> faces embedded."""
        from insightface.app.common import Face

        faces = 0
        for path in paths:
            img = cv2.imread(str(path))  # the loop reads its files, as the server decodes its requests
            boxes, kpss = self.det.detect(img, input_size=(640, 640))
            for box, kps in zip(boxes, kpss):
                self.rec.get(img, Face(bbox=box[:4], kps=kps, det_score=box[4]))
                faces += 1
        return faces


class SeedFaceMask:
    """Start with `SeedFaceMask(detector, parser).start()`; `.url` is the POST URL."""

    def __init__(self, detector, parser, outputs=("mask", "rgba", "overlay")):
        self.detector, self.parser, self.outputs = detector, parser, frozenset(outputs)
        service = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (the stdlib's name)
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                try:
                    payload, status = json.dumps(service.handle(body)).encode(), 200
                except Exception as exc:  # the seed answered 500 with the message
                    payload, status = json.dumps({"error": repr(exc)}).encode(), 500
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args):  # quiet
                pass

        HTTPServer.request_queue_size = 64  # clients wait in the backlog, one request served at a time
        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1/face-mask"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def handle(self, data: bytes) -> dict:
        import numpy as np

        from deployments.types import ParseRequest
        from serve_app.imaging import decode_image, encode_outputs
        from serve_app.pipelines.face_mask import FaceMaskParams, face_rois, merge_masks

        params = FaceMaskParams()
        rgb = decode_image(data)
        (faces,) = self.detector.predict([cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)])
        boxes = np.array([f.box for f in faces], np.float32).reshape(-1, 4)
        rois = face_rois(rgb, boxes, params)
        probs = [self.parser.predict([ParseRequest(small, params.labels)])[0] for _, small in rois]
        mask = merge_masks(rgb.shape[:2], [box for box, _ in rois], probs, params.threshold)
        return {
            "width": rgb.shape[1],
            "height": rgb.shape[0],
            "boxes": boxes.round(1).tolist(),
            **encode_outputs(rgb, mask, self.outputs),
        }

    def start(self) -> SeedFaceMask:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
