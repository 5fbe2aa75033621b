"""FaceGallery: the people FaceGraph remembers between requests (model.py), their store
(store.py, sqlite.py, postgres.py) and the in-memory exact search (index.py)."""
