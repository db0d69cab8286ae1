"""Serve the fake upstream standalone: ``python -m tierwise.testing --port 8700 --script F.toml``.

Prints the base URLs, then serves until Ctrl-C. Without ``--script`` every model echoes;
``--example`` prints the bundled example script.
"""

from __future__ import annotations

import argparse
import sys
import threading
from collections.abc import Sequence
from importlib import resources


def main(argv: Sequence[str] | None = None) -> int:
    """Run the fake upstream until interrupted; returns the exit code."""
    parser = argparse.ArgumentParser(
        prog="python -m tierwise.testing",
        description="Serve a fake Anthropic/OpenAI upstream on loopback (simulated models).",
        epilog="Example: python -m tierwise.testing --port 8700 --script example.toml",
    )
    parser.add_argument("--port", type=int, default=0, help="port to listen on (0: a free one)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback)")
    parser.add_argument("--script", help="TOML script file (format: the module docstring)")
    parser.add_argument(
        "--example", action="store_true", help="print the bundled example script and exit"
    )
    args = parser.parse_args(argv)
    if not 0 <= args.port <= 65535:
        parser.error(f"--port must be 0-65535, got {args.port}")

    from tierwise.testing import FakeUpstream, Script, load_script

    if args.example:
        sys.stdout.write(resources.files("tierwise.testing").joinpath("example.toml").read_text())
        return 0
    try:
        script = load_script(args.script) if args.script else Script()
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    up = FakeUpstream(script, host=args.host, port=args.port)
    try:
        up.start()
    except (OSError, RuntimeError, OverflowError) as exc:
        print(f"error: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 2
    try:
        models = ", ".join(up.models) or "(none; the default script answers)"
        print(f"fake upstream (simulated models) listening on {up.base_url}", flush=True)
        print(f"  Anthropic base_url: {up.anthropic_base_url}", flush=True)
        print(f"  OpenAI base_url:    {up.openai_base_url}", flush=True)
        print(f"  scripted models:    {models}", flush=True)
        print("Ctrl-C to stop.", flush=True)
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        up.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
