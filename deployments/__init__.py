"""The model tier: one folder per model (deployments/<model>/model.py holds the model class
and its config; beside it the model's light interface, loaders and exporters), each a plain
class usable without Ray that meets the contract in base.py. Shared beside them: types.py
and geometry.py (light, for the pipelines too), runtime.py (torch, ONNX Runtime, OpenVINO
and the `auto` resolver) and serving.py (the Serve adapter and the Ray Data callable)."""
