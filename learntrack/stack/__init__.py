"""The local stack: real (or wire-compatible) servers started without Docker."""
