"""Fault and overload rehearsals: python -m bench NAME, NAME a module here with main()."""
