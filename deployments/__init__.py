"""One module per model; each is a plain class usable without Ray (see DESIGN.md)."""
