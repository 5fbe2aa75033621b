"""A small runner for the Ultra-Light masked-face detector (asset
`ultralight-rfb-640-masked-face`): the independent judge of mask augmentation in the
tests. It is not one of the project's models: it only says, per face, whether a
detector trained on real masked faces (WIDER + MAFA) sees a face or a masked face."""

from __future__ import annotations

import cv2
import numpy as np

INPUT_W, INPUT_H = 640, 480
CLASSES = ("background", "face", "masked_face")


class MaskedFaceDetector:
    def __init__(self, model_path: str, score_threshold: float = 0.5, nms_iou: float = 0.3):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        self.session = ort.InferenceSession(model_path, options, providers=["CPUExecutionProvider"])
        self.score_threshold = score_threshold
        self.nms_iou = nms_iou

    def detect(self, image_rgb: np.ndarray) -> list[tuple[np.ndarray, str, float]]:
        """[(box x1,y1,x2,y2 in image pixels, "face" | "masked_face", score)], after NMS
        over both classes together (a face is one or the other, not both)."""
        height, width = image_rgb.shape[:2]
        x = cv2.resize(image_rgb, (INPUT_W, INPUT_H)).astype(np.float32)
        x = ((x - 127.0) / 128.0).transpose(2, 0, 1)[None]
        scores, boxes = self.session.run(["scores", "boxes"], {"input": x})
        scores, boxes = scores[0], boxes[0] * np.array([width, height, width, height], np.float32)
        label = scores[:, 1:].argmax(axis=1) + 1
        best = scores[np.arange(len(scores)), label]
        keep = best > self.score_threshold
        boxes, label, best = boxes[keep], label[keep], best[keep]
        xywh = [[float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])] for b in boxes]
        chosen = cv2.dnn.NMSBoxes(xywh, best.tolist(), self.score_threshold, self.nms_iou) if xywh else []
        return [(boxes[i], CLASSES[label[i]], float(best[i])) for i in np.asarray(chosen).reshape(-1)]
